package store

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// Computer statuses.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
	// StatusRevoked is a filter only (ComputerFilter.Status): computers
	// whose certificate was revoked or which stopped being managed. Their
	// status stays offline; the list hides them unless asked.
	StatusRevoked = "revoked"
)

// Computer is a managed endpoint.
type Computer struct {
	ID                  string
	Name                string
	Hostname            string
	Instance            string
	GroupID             string
	Status              string
	LastSeen            time.Time
	ConnectedSince      time.Time
	Platform            string
	OSName              string
	OSVersion           string
	AgentVersion        string
	HardwareFingerprint string
	CloneSuspected      bool
	CloneReason         string
	EnrolledAt          time.Time
	RevokedAt           time.Time
	// UnresolvedDetections is filled by ListComputers and ComputerByID.
	UnresolvedDetections int
	Version              int64
	// ConfigVersion is the configuration version the server computed;
	// ConfigApplied the one the agent reported applied.
	ConfigVersion, ConfigApplied string
	// Engine is the detection engine the agent last reported.
	Engine EngineReport
	// ServerID is the server the computer was last connected to (servers
	// sharing a PostgreSQL store each own their connections).
	ServerID string
}

// EngineReport is an agent's detection engine and its updates.
type EngineReport struct {
	Version     uint64 // 0: not reported
	UpdateState string // idle, updating, held, failing, no_source
	LastSuccess time.Time
	LastError   string
}

// computerColumns are the columns scanComputer reads. They are qualified,
// so that a query may join other tables to computers (AgentSession).
const computerColumns = `computers.id, computers.name, computers.hostname, computers.instance, computers.group_id, computers.status,
	computers.last_seen, computers.connected_since, computers.platform, computers.os_name, computers.os_version,
	computers.agent_version, computers.hardware_fingerprint, computers.clone_suspected, computers.clone_reason,
	computers.enrolled_at, computers.revoked_at, computers.version, computers.config_version, computers.config_applied_version,
	computers.engine_version, computers.engine_update_state, computers.engine_last_success, computers.engine_last_error,
	computers.server_id,
	(SELECT COUNT(*) FROM detections d WHERE d.computer_id = computers.id AND d.state = 'unresolved')`

// computerRow receives a row of computerColumns: its dest are the scan
// destinations, in order, and computer finishes the Computer they filled.
type computerRow struct {
	c                                  Computer
	lastSeen, since, revoked, engineOK sql.NullInt64
	enrolled, engineVersion            int64
}

func (r *computerRow) dest() []any {
	c := &r.c
	return []any{&c.ID, &c.Name, &c.Hostname, &c.Instance, &c.GroupID, &c.Status, &r.lastSeen, &r.since, &c.Platform,
		&c.OSName, &c.OSVersion, &c.AgentVersion, &c.HardwareFingerprint, &c.CloneSuspected, &c.CloneReason, &r.enrolled, &r.revoked,
		&c.Version, &c.ConfigVersion, &c.ConfigApplied, &r.engineVersion, &c.Engine.UpdateState, &r.engineOK, &c.Engine.LastError,
		&c.ServerID, &c.UnresolvedDetections}
}

func (r *computerRow) computer() *Computer {
	c := r.c
	c.LastSeen, c.ConnectedSince, c.RevokedAt, c.EnrolledAt = fromNullMS(r.lastSeen), fromNullMS(r.since), fromNullMS(r.revoked), fromMS(r.enrolled)
	c.Engine.Version, c.Engine.LastSuccess = uint64(max(r.engineVersion, 0)), fromNullMS(r.engineOK)
	return &c
}

func scanComputer(row interface{ Scan(...any) error }) (*Computer, error) {
	var r computerRow
	if err := row.Scan(r.dest()...); err != nil {
		return nil, err
	}
	return r.computer(), nil
}

// ComputerByID returns not_found if there is no such computer.
func (db *DB) ComputerByID(ctx context.Context, id string) (_ *Computer, err error) {
	defer db.track("computer_by_id", time.Now(), &err)
	c, err := scanComputer(db.queryRowRO(ctx, `SELECT `+computerColumns+` FROM computers WHERE id = ?`, id))
	return c, notFound(err, "computer not found")
}

// ComputersByID returns the computers with the given ids that exist, by
// id: one query per 500 ids.
func (db *DB) ComputersByID(ctx context.Context, ids []string) (_ map[string]*Computer, err error) {
	defer db.track("computers_by_id", time.Now(), &err)
	out := make(map[string]*Computer, len(ids))
	for chunk := range slices.Chunk(ids, 500) {
		rows, err := db.ro.QueryContext(ctx, `SELECT `+computerColumns+` FROM computers WHERE id IN (`+placeholders(len(chunk))+`)`, toAny(chunk)...)
		if err != nil {
			return nil, err
		}
		err = scanInto(rows, out)
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func scanInto(rows *sql.Rows, out map[string]*Computer) error {
	for rows.Next() {
		c, err := scanComputer(rows)
		if err != nil {
			return err
		}
		out[c.ID] = c
	}
	return rows.Err()
}

// ComputerFilter selects and orders computers. Zero values select all.
type ComputerFilter struct {
	Name           string   // case-insensitive substring of the name or host name
	Status         string   // online, offline
	GroupIDs       []string // member of any of these static groups
	DynamicGroupID string   // member of this dynamic group
	Tag            string   // carries this tag
	// EngineBelow selects computers whose reported engine is older than
	// this version (0: no filter); computers that reported none are not
	// selected.
	EngineBelow    uint64
	IncludeRevoked bool
	// ExactName keeps only the computers named exactly so.
	ExactName string
	// Sort is a field name, optionally prefixed with "-" for descending:
	// name (default), last_seen, status, enrolled_at, os_name, engine.
	Sort   string
	Limit  int // default 100, at most 1000
	Offset int
}

var computerSorts = map[string]string{
	"name":        "name",
	"last_seen":   "COALESCE(last_seen, 0)",
	"status":      "status",
	"enrolled_at": "enrolled_at",
	"os_name":     "os_name",
	"engine":      "engine_version",
}

// ComputerSortFields lists the fields ListComputers sorts by.
func ComputerSortFields() []string {
	return []string{"name", "last_seen", "status", "enrolled_at", "os_name", "engine"}
}

// Pagination limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// ListComputers returns a page of computers and the total that match f.
// Returns invalid for an unknown sort field or status.
func (db *DB) ListComputers(ctx context.Context, f ComputerFilter) (_ []*Computer, total int, err error) {
	defer db.track("list_computers", time.Now(), &err)
	var where []string
	var args []any
	switch {
	case f.Status == StatusRevoked:
		where = append(where, "revoked_at IS NOT NULL")
	case !f.IncludeRevoked:
		where = append(where, "revoked_at IS NULL")
	}
	if f.ExactName != "" {
		where = append(where, "name = ?")
		args = append(args, f.ExactName)
	}
	if f.Name != "" {
		// Both sides are folded by the database's LOWER: folding the pattern
		// in Go (Unicode) while SQLite's LOWER folds ASCII only made a
		// non-ASCII name miss a search for itself.
		where = append(where, `(LOWER(name) LIKE LOWER(?) ESCAPE '\' OR LOWER(hostname) LIKE LOWER(?) ESCAPE '\')`)
		pat := "%" + escapeLike(f.Name) + "%"
		args = append(args, pat, pat)
	}
	switch f.Status {
	case "", StatusRevoked:
	case StatusOnline, StatusOffline:
		where = append(where, "status = ?")
		args = append(args, f.Status)
	default:
		return nil, 0, errcode.New(errcode.Invalid, "status must be online, offline or revoked")
	}
	if f.GroupIDs != nil {
		if len(f.GroupIDs) == 0 {
			return nil, 0, nil
		}
		where = append(where, "group_id IN ("+placeholders(len(f.GroupIDs))+")")
		for _, g := range f.GroupIDs {
			args = append(args, g)
		}
	}
	if f.Tag != "" {
		where = append(where, "id IN (SELECT computer_id FROM computer_tags WHERE tag = ?)")
		args = append(args, f.Tag)
	}
	if f.DynamicGroupID != "" {
		where = append(where, "id IN (SELECT computer_id FROM dynamic_group_members WHERE group_id = ?)")
		args = append(args, f.DynamicGroupID)
	}
	if f.EngineBelow > 0 {
		where = append(where, "engine_version > 0 AND engine_version < ?")
		args = append(args, int64(min(f.EngineBelow, 1<<62)))
	}
	order, err := orderBy(f.Sort, computerSorts, "name")
	if err != nil {
		return nil, 0, err
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	if err := db.ro.QueryRowContext(ctx, `SELECT COUNT(*) FROM computers`+cond, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	limit, offset := pageBounds(f.Limit, f.Offset)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+computerColumns+` FROM computers`+cond+` ORDER BY `+order+`, id LIMIT ? OFFSET ?`,
		append(args, limit, offset)...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []*Computer
	for rows.Next() {
		c, err := scanComputer(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, c)
	}
	return out, total, rows.Err()
}

func pageBounds(limit, offset int) (int, int) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	return min(limit, MaxLimit), max(offset, 0)
}

func orderBy(sort string, allowed map[string]string, def string) (string, error) {
	if sort == "" {
		sort = def
	}
	desc := strings.HasPrefix(sort, "-")
	expr, ok := allowed[strings.TrimPrefix(sort, "-")]
	if !ok {
		return "", errcode.New(errcode.Invalid, "cannot sort by %q", strings.TrimPrefix(sort, "-"))
	}
	if desc {
		return expr + " DESC", nil
	}
	return expr + " ASC", nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func escapeLike(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// ComputerIDs returns the ids of every computer in the given static groups
// (nil: all), revoked ones excluded; for bulk operations, unpaginated.
func (db *DB) ComputerIDs(ctx context.Context, groupIDs []string) (_ []string, err error) {
	defer db.track("computer_ids", time.Now(), &err)
	q, args := `SELECT id FROM computers WHERE revoked_at IS NULL`, []any{}
	if groupIDs != nil {
		if len(groupIDs) == 0 {
			return nil, nil
		}
		q += " AND group_id IN (" + placeholders(len(groupIDs)) + ")"
		for _, g := range groupIDs {
			args = append(args, g)
		}
	}
	rows, err := db.ro.QueryContext(ctx, q+" ORDER BY id", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// PresenceUpdate is one computer's connection state, written in batches.
type PresenceUpdate struct {
	ComputerID string
	// Status is online or offline; "" updates only LastSeen.
	Status         string
	LastSeen       time.Time
	ConnectedSince time.Time // with Status online
	// ServerID is the server reporting: online makes it the computer's
	// server; offline applies only while it still is (the agent may have
	// moved to another server meanwhile).
	ServerID string
}

// ApplyPresence writes a batch of presence updates in one transaction.
// last_seen never moves backwards.
func (db *DB) ApplyPresence(ctx context.Context, ups []PresenceUpdate) (err error) {
	if len(ups) == 0 {
		return nil
	}
	defer db.track("apply_presence", time.Now(), &err)
	if db.postgres {
		return db.tx(ctx, func(tx *sql.Tx) error { return applyPresenceSets(ctx, tx, ups) })
	}
	return db.tx(ctx, func(tx *sql.Tx) error { return applyPresenceRows(ctx, tx, ups) })
}

// applyPresenceRows is ApplyPresence for SQLite: statements prepared once
// for the batch and run per computer (SQLite runs in-process: no round
// trips to save, but parsing a statement per computer cost more than
// running it). Changed computers take consecutive sequence numbers past
// every earlier one, as bumpChange gives them (SQLite has one writer).
func applyPresenceRows(ctx context.Context, tx *sql.Tx, ups []PresenceUpdate) error {
	var stmts [5]*sql.Stmt
	for i, q := range []string{
		`UPDATE computers SET last_seen = ? WHERE id = ? AND (last_seen IS NULL OR last_seen < ?)`,
		`UPDATE computers SET status = 'online', connected_since = ?, server_id = ? WHERE id = ? AND revoked_at IS NULL`,
		`UPDATE computers SET status = 'offline', connected_since = NULL WHERE id = ? AND server_id = ?`,
		`UPDATE computers SET change_seq = ? WHERE id = ?`,
		`INSERT INTO server_events (at, type, computer_id, subject_id, data) VALUES (?, 'agent.connected', ?, '', '{}')`,
	} {
		st, err := tx.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		defer st.Close()
		stmts[i] = st
	}
	seen, online, offline, bump, connected := stmts[0], stmts[1], stmts[2], stmts[3], stmts[4]
	var seq int64
	if slices.ContainsFunc(ups, func(u PresenceUpdate) bool { return u.Status != "" }) {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(change_seq), 0) FROM computers`).Scan(&seq); err != nil {
			return err
		}
	}
	for _, u := range ups {
		var err error
		if !u.LastSeen.IsZero() {
			if _, err := seen.ExecContext(ctx, ms(u.LastSeen), u.ComputerID, ms(u.LastSeen)); err != nil {
				return err
			}
		}
		switch u.Status {
		case StatusOnline:
			_, err = online.ExecContext(ctx, nullMS(u.ConnectedSince), u.ServerID, u.ComputerID)
		case StatusOffline:
			_, err = offline.ExecContext(ctx, u.ComputerID, u.ServerID)
		}
		if err != nil {
			return err
		}
		if u.Status != "" {
			seq++
			if _, err := bump.ExecContext(ctx, seq, u.ComputerID); err != nil {
				return err
			}
		}
		if u.Status == StatusOnline {
			if _, err := connected.ExecContext(ctx, ms(u.ConnectedSince), u.ComputerID); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyPresenceSets is ApplyPresence for PostgreSQL: one UPDATE for the
// whole batch (arrays), not one per computer; a server's batch holds
// thousands of computers, and statements sent one by one over the
// connection, while other servers' writers wait their turn, made presence
// the bottleneck of servers sharing the store. Each computer's row is
// written once (its last-seen time, status and change number together: a
// row updated three times in a transaction is three new row versions and
// three sets of index entries). A computer with a second status in the
// batch starts another round, so the batch means what the updates would
// one after the other.
func applyPresenceSets(ctx context.Context, tx *sql.Tx, ups []PresenceUpdate) error {
	for len(ups) > 0 {
		n, err := applyPresenceRound(ctx, tx, ups)
		if err != nil {
			return err
		}
		ups = ups[n:]
	}
	return nil
}

// applyPresenceRound writes the longest prefix of ups in which no computer
// has two statuses, and returns its length.
func applyPresenceRound(ctx context.Context, tx *sql.Tx, ups []PresenceUpdate) (int, error) {
	type row struct {
		ls, cs, ord int64
		st, srv     string
	}
	rows := map[string]*row{}
	var order, connIDs []string
	var connAt []int64
	var changes int64
	n := 0
	for _, u := range ups {
		r := rows[u.ComputerID]
		if r != nil && r.st != "" && u.Status != "" {
			break // a second status: the next round's
		}
		n++
		if r == nil {
			r = &row{}
			rows[u.ComputerID] = r
			order = append(order, u.ComputerID)
		}
		if !u.LastSeen.IsZero() {
			r.ls = max(r.ls, ms(u.LastSeen))
		}
		if u.Status != "" {
			changes++
			r.st, r.cs, r.srv, r.ord = u.Status, ms(u.ConnectedSince), u.ServerID, changes
			if u.Status == StatusOnline {
				connIDs, connAt = append(connIDs, u.ComputerID), append(connAt, ms(u.ConnectedSince))
			}
		}
	}
	ids, st, srv := make([]string, len(order)), make([]string, len(order)), make([]string, len(order))
	ls, cs, ord := make([]int64, len(order)), make([]int64, len(order)), make([]int64, len(order))
	for i, id := range order {
		r := rows[id]
		ids[i], ls[i], st[i], cs[i], srv[i], ord[i] = id, r.ls, r.st, r.cs, r.srv, r.ord
	}
	// Online applies unless the computer was revoked; offline only while
	// the computer is still this server's (the agent may have moved on).
	// One change number per status change, past every earlier one
	// (writers take turns, see txOnce), as bumpChange gives.
	if _, err := tx.ExecContext(ctx, `UPDATE computers c SET
			last_seen = CASE WHEN v.ls > 0 AND (c.last_seen IS NULL OR c.last_seen < v.ls) THEN v.ls ELSE c.last_seen END,
			status = CASE WHEN v.st = 'online' AND c.revoked_at IS NULL THEN 'online'
				WHEN v.st = 'offline' AND c.server_id = v.srv THEN 'offline' ELSE c.status END,
			connected_since = CASE WHEN v.st = 'online' AND c.revoked_at IS NULL THEN NULLIF(v.cs, 0)
				WHEN v.st = 'offline' AND c.server_id = v.srv THEN NULL ELSE c.connected_since END,
			server_id = CASE WHEN v.st = 'online' AND c.revoked_at IS NULL THEN v.srv ELSE c.server_id END,
			change_seq = CASE WHEN v.ord > 0 THEN m.base + v.ord ELSE c.change_seq END
		FROM (SELECT COALESCE(MAX(change_seq), 0) AS base FROM computers) m,
			unnest(?::text[], ?::bigint[], ?::text[], ?::bigint[], ?::text[], ?::bigint[]) AS v(id, ls, st, cs, srv, ord)
		WHERE c.id = v.id AND (v.st <> '' OR c.last_seen IS NULL OR c.last_seen < v.ls)`,
		ids, ls, st, cs, srv, ord); err != nil {
		return 0, err
	}
	if len(connIDs) > 0 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO server_events (at, type, computer_id, subject_id, data)
			SELECT v.at, 'agent.connected', v.id, '', '{}' FROM unnest(?::text[], ?::bigint[]) WITH ORDINALITY AS v(id, at, ord) ORDER BY v.ord`,
			connIDs, connAt); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// MarkCloneSuspected flags a computer as a suspected clone with a reason.
func (db *DB) MarkCloneSuspected(ctx context.Context, id, reason string) (err error) {
	defer db.track("mark_clone", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE computers SET clone_suspected = 1, clone_reason = ? WHERE id = ?`, reason, id); err != nil {
			return err
		}
		return bumpChange(ctx, tx, id)
	})
}
