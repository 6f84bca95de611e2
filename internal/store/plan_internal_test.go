package store

import (
	"strings"
	"testing"
	"time"
)

// The scheduler asks for deliverable runs every second. The query must be
// driven by the planned runs (an index range, empty when nothing is
// planned), not by a scan of every computer: at 19,500 agents the scan was
// 13 % of the server's CPU with no task in the database.
func TestDeliverableRuns_QueryPlanDoesNotScanComputers(t *testing.T) {
	db, err := OpenSQLite(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q, args := deliverableQuery(time.Now(), "", nil)
	joined := queryPlan(t, db, `SELECT `+runColumns+` FROM task_runs `+q+` ORDER BY not_before, id LIMIT 10`, args...)
	if strings.Contains(joined, "SCAN computers") || strings.Contains(joined, "SCAN c") || !strings.Contains(joined, "task_runs_pending") {
		t.Fatalf("deliverable runs query plan:\n%s", joined)
	}
	t.Logf("plan:\n%s", joined)
}

// Every agent session starts with AgentSession: primary key look-ups only.
func TestAgentSession_QueryPlanSearchesByKeys(t *testing.T) {
	db, err := OpenSQLite(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	joined := queryPlan(t, db, agentSessionQuery, "serial")
	for _, want := range []string{"SEARCH agent_certificates", "SEARCH computers", "SEARCH inventory_sections", "SEARCH d"} {
		if !strings.Contains(joined, want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	if strings.Contains(joined, "SCAN") {
		t.Errorf("plan scans a table")
	}
	t.Logf("plan:\n%s", joined)
}

// queryPlan returns SQLite's plan of q, one step a line.
func queryPlan(t *testing.T, db *DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.ro.QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

// Retention passes run every hour over the largest tables: each statement
// must find its rows through an index on its time column, never by
// reading the table.
func TestRetention_QueryPlansUseTheTimeIndexes(t *testing.T) {
	db, err := OpenSQLite(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UnixMilli()
	for _, tc := range []struct {
		q, table, index string
		args            []any
	}{
		{deleteComputerEventsQuery, "computer_events", "computer_events_received", []any{now, 1000}},
		{deleteServerEventsQuery, "server_events", "server_events_at", []any{now, 1000}},
		{deleteDetectionsQuery, "detections", "detections_resolved", []any{now, 1000}},
		{finishedRunsQuery, "task_runs", "task_runs_finished", []any{now, now, 1000}},
	} {
		plan := queryPlan(t, db, tc.q, tc.args...)
		for _, line := range strings.Split(plan, "\n") {
			if strings.HasPrefix(line, "SCAN "+tc.table) && !strings.Contains(line, "USING") {
				t.Errorf("%s: reads the whole table:\n%s", tc.table, plan)
			}
		}
		if !strings.Contains(plan, tc.index) {
			t.Errorf("%s: does not use %s:\n%s", tc.table, tc.index, plan)
		}
	}
}
