package scheduler

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/tasks"
)

// bench is a scheduler over a real SQLite store with a clock the test moves.
type bench struct {
	t     *testing.T
	db    *store.DB
	s     *Scheduler
	now   time.Time
	agent *fakeAgents
}

// fakeAgents stands for the agent endpoint: computers in online take
// deliveries.
type fakeAgents struct {
	mu     sync.Mutex
	online map[string]bool
	got    map[string][]string // computer -> run ids, in delivery order
}

func (f *fakeAgents) Deliver(id string, runs []*store.TaskRun) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.online[id] {
		return false
	}
	for _, r := range runs {
		f.got[id] = append(f.got[id], r.ID)
	}
	return true
}

func newBench(t *testing.T) *bench {
	t.Helper()
	db, err := store.OpenSQLite(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b := &bench{t: t, db: db, now: time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC),
		agent: &fakeAgents{online: map[string]bool{}, got: map[string][]string{}}}
	seed := int64(0)
	b.s = &Scheduler{Store: db, Deliver: b.agent, Now: func() time.Time { return b.now },
		Rand: func(n int64) int64 { seed = (seed*7 + 3) % n; return seed },
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil))}
	b.s.Server = &ServerTasks{Store: db, Now: func() time.Time { return b.now }}
	if err := b.s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *bench) step() {
	b.t.Helper()
	if err := b.s.Step(context.Background()); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bench) group(name, parent string) string {
	b.t.Helper()
	g, err := b.db.CreateGroup(context.Background(), parent, name)
	if err != nil {
		b.t.Fatal(err)
	}
	return g.ID
}

func (b *bench) computer(name, group string) string {
	b.t.Helper()
	ctx := context.Background()
	secret := uuid.NewString()
	if err := b.db.CreateEnrollmentToken(ctx, &store.EnrollmentToken{ID: uuid.NewString(), SecretHash: secret, GroupID: group,
		ExpiresAt: b.now.Add(time.Hour), CreatedBy: "t", CreatedAt: b.now}); err != nil {
		b.t.Fatal(err)
	}
	c := &store.Computer{ID: uuid.NewString(), Name: name, Hostname: name, HardwareFingerprint: uuid.NewString(), Platform: "linux"}
	if err := b.db.EnrollComputer(ctx, secret, b.now, c, &store.AgentCertificate{Serial: uuid.NewString(), ComputerID: c.ID,
		IssuedAt: b.now, NotAfter: b.now.Add(time.Hour)}); err != nil {
		b.t.Fatal(err)
	}
	return c.ID
}

// computers enrolls n computers in All, named prefix+a, prefix+b...
func (b *bench) computers(prefix string, n int) []string {
	b.t.Helper()
	var ids []string
	for i := range n {
		ids = append(ids, b.computer(prefix+string(rune('a'+i)), store.GroupAll))
	}
	return ids
}

func (b *bench) online(ids ...string) {
	b.t.Helper()
	var ups []store.PresenceUpdate
	for _, id := range ids {
		b.agent.online[id] = true
		ups = append(ups, store.PresenceUpdate{ComputerID: id, Status: store.StatusOnline, LastSeen: b.now, ConnectedSince: b.now})
	}
	if err := b.db.ApplyPresence(context.Background(), ups); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bench) task(typ tasks.Type, params string) *store.TaskRow {
	b.t.Helper()
	p, err := tasks.ParseParams(typ, json.RawMessage(params))
	if err != nil {
		b.t.Fatal(err)
	}
	raw, _ := json.Marshal(p)
	tk := &store.TaskRow{ID: uuid.NewString(), Name: string(typ) + " task", Type: string(typ), Params: string(raw), GroupID: store.GroupAll}
	if err := b.db.CreateTask(context.Background(), tk); err != nil {
		b.t.Fatal(err)
	}
	return tk
}

// trigger stores a trigger as the API does: validated, with its first
// firing time computed.
func (b *bench) trigger(taskID, spec string, targets ...tasks.Target) *store.TriggerRow {
	b.t.Helper()
	tr, err := tasks.ParseTrigger(spec)
	if err != nil {
		b.t.Fatal(err)
	}
	if targets == nil {
		targets = []tasks.Target{}
	}
	traw, _ := json.Marshal(targets)
	row := &store.TriggerRow{ID: uuid.NewString(), TaskID: taskID, Spec: spec, Targets: string(traw), Enabled: true, CreatedAt: b.now}
	if tr.IsTimed() {
		row.NextFireAt, _ = tr.Next(b.now.Add(-time.Millisecond), b.now)
	}
	if err := b.db.CreateTrigger(context.Background(), row); err != nil {
		b.t.Fatal(err)
	}
	return row
}

func (b *bench) runs(taskID string) []*store.TaskRun {
	b.t.Helper()
	rs, _, err := b.db.ListRuns(context.Background(), store.RunFilter{TaskID: taskID, Limit: 1000})
	if err != nil {
		b.t.Fatal(err)
	}
	slices.SortFunc(rs, func(x, y *store.TaskRun) int { return strings.Compare(x.ComputerID, y.ComputerID) })
	return rs
}

func computersOf(rs []*store.TaskRun) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ComputerID)
	}
	slices.Sort(out)
	return out
}

func sortedIDs(ids ...string) []string { slices.Sort(ids); return ids }

func TestScheduler_DailyTriggerFiresOnTargetsWithRandomDelayAndExpiry(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	srv := b.group("Servers", store.GroupAll)
	web := b.group("Web", srv)
	c1, c2 := b.computer("db1", srv), b.computer("web1", web)
	outside := b.computer("laptop", store.GroupLostFound)
	task := b.task(tasks.Scan, `{"paths":["/srv"]}`)
	// 09:00 in Berlin is 08:00 UTC in November.
	tr := b.trigger(task.ID, `{"kind":"daily","at":"09:00","time_zone":"Europe/Berlin","random_delay":"10m","expiry":"2h"}`,
		tasks.Target{Type: tasks.TargetStaticGroup, ID: srv})
	if want := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC); !tr.NextFireAt.Equal(want) {
		t.Fatalf("first firing %v, want %v", tr.NextFireAt, want)
	}

	b.now = time.Date(2026, 11, 22, 7, 59, 0, 0, time.UTC)
	b.step()
	if rs := b.runs(task.ID); len(rs) != 0 {
		t.Fatalf("fired early: %d runs", len(rs))
	}

	b.now = time.Date(2026, 11, 22, 8, 0, 1, 0, time.UTC)
	b.step()
	rs := b.runs(task.ID)
	if got, want := computersOf(rs), sortedIDs(c1, c2); !slices.Equal(got, want) {
		t.Fatalf("runs on %v, want %v (subgroups included, %s excluded)", got, want, outside)
	}
	for _, r := range rs {
		if r.NotBefore.Before(b.now.Truncate(time.Millisecond)) || !r.NotBefore.Before(b.now.Add(10*time.Minute)) {
			t.Errorf("not_before %v outside [now, now+10m)", r.NotBefore)
		}
		if !r.ExpiresAt.Equal(r.NotBefore.Add(2 * time.Hour)) {
			t.Errorf("expires %v, want not_before+2h", r.ExpiresAt)
		}
		if r.Type != "scan" || !strings.Contains(r.Params, "/srv") || r.TriggerID != tr.ID || r.State != store.RunPlanned {
			t.Errorf("run %+v", r)
		}
	}
	got, _ := b.db.TriggerByID(ctx, tr.ID)
	if want := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC); !got.NextFireAt.Equal(want) {
		t.Errorf("next firing %v, want %v", got.NextFireAt, want)
	}
	// A second step at the same time fires nothing more.
	b.step()
	if n := len(b.runs(task.ID)); n != 2 {
		t.Fatalf("%d runs after a second step, want 2", n)
	}

	// c1 connects; its run is delivered once due, c2 stays offline.
	b.online(c1)
	b.now = b.now.Add(10 * time.Minute)
	b.step()
	if got := b.agent.got[c1]; len(got) != 1 {
		t.Fatalf("c1 got %v", got)
	}
	if len(b.agent.got[c2]) != 0 {
		t.Fatal("offline computer got a run")
	}
	// Delivered runs are not delivered again by the clock.
	b.step()
	if got := b.agent.got[c1]; len(got) != 1 {
		t.Fatalf("c1 got %v after another step", got)
	}

	// Past the expiry both runs that never started expire (the delivered
	// one never reported a start either).
	b.now = b.now.Add(3 * time.Hour)
	b.step()
	for _, r := range b.runs(task.ID) {
		if r.State != store.RunExpired {
			t.Errorf("run on %s is %s, want expired", r.ComputerID, r.State)
		}
	}
}

func TestScheduler_RunStateFollowsAgentEventsAndIgnoresForeignOnes(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	c1, c2 := b.computer("a", store.GroupAll), b.computer("b", store.GroupAll)
	b.online(c1, c2)
	task := b.task(tasks.RunCommand, `{"command":"false"}`)
	b.trigger(task.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetComputer, ID: c1}, tasks.Target{Type: tasks.TargetComputer, ID: c2})
	b.step()
	rs := b.runs(task.ID)
	if len(rs) != 2 || len(b.agent.got[c1]) != 1 || len(b.agent.got[c2]) != 1 {
		t.Fatalf("runs %d, deliveries %v", len(rs), b.agent.got)
	}
	run1 := b.agent.got[c1][0]
	run2 := b.agent.got[c2][0]
	event := func(computer, typ, data string) {
		t.Helper()
		if _, err := b.db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: computer, Now: b.now, Events: []store.Event{
			{ID: uuid.NewString(), Type: typ, OccurredAt: b.now, Data: data}}}); err != nil {
			t.Fatal(err)
		}
	}
	// c2 claims c1's run: ignored.
	event(c2, store.EventTaskFinished, `{"run_id":"`+run1+`","state":"succeeded"}`)
	// Malformed data: ignored, the check-in still succeeds.
	event(c1, store.EventTaskStarted, `{"run_id":`)
	if r, _ := b.db.RunByID(ctx, run1); r.State != store.RunDelivered {
		t.Fatalf("run1 %s after foreign/malformed events, want delivered", r.State)
	}
	event(c1, store.EventTaskStarted, `{"run_id":"`+run1+`"}`)
	if r, _ := b.db.RunByID(ctx, run1); r.State != store.RunRunning || r.StartedAt.IsZero() {
		t.Fatalf("run1 %+v, want running", r)
	}
	event(c1, store.EventTaskFinished, `{"run_id":"`+run1+`","state":"failed","exit_code":1,"output":"boom`+"\xff"+`","error":"exit status 1"}`)
	r, _ := b.db.RunByID(ctx, run1)
	if r.State != store.RunFailed || r.ExitCode == nil || *r.ExitCode != 1 || !strings.HasPrefix(r.Output, "boom") || r.Error != "exit status 1" {
		t.Fatalf("run1 %+v", r)
	}
	// A late "started" does not move a finished run back.
	event(c1, store.EventTaskStarted, `{"run_id":"`+run1+`"}`)
	if r, _ := b.db.RunByID(ctx, run1); r.State != store.RunFailed {
		t.Fatalf("run1 moved back to %s", r.State)
	}
	event(c2, store.EventTaskFinished, `{"run_id":"`+run2+`","state":"succeeded","exit_code":0}`)
	if r, _ := b.db.RunByID(ctx, run2); r.State != store.RunSucceeded {
		t.Fatalf("run2 %s", r.State)
	}
	// Cancelling a finished run is a conflict; cancelling a planned one works
	// and it is never delivered.
	if err := b.db.CancelRun(ctx, run2, b.now); err == nil {
		t.Fatal("cancelled a finished run")
	}
	c3 := b.computer("c", store.GroupAll)
	tr := b.trigger(task.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetComputer, ID: c3})
	b.step()
	var run3 string
	for _, r := range b.runs(task.ID) {
		if r.TriggerID == tr.ID {
			run3 = r.ID
		}
	}
	if err := b.db.CancelRun(ctx, run3, b.now); err != nil {
		t.Fatal(err)
	}
	b.online(c3)
	b.s.Connected(c3)
	b.step()
	if len(b.agent.got[c3]) != 0 {
		t.Fatal("a cancelled run was delivered")
	}
}

func TestScheduler_ReconnectingAgentGetsPendingRunsAgain(t *testing.T) {
	b := newBench(t)
	c := b.computer("a", store.GroupAll)
	b.online(c)
	task := b.task(tasks.DisplayMessage, `{"title":"t","message":"m"}`)
	b.trigger(task.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	b.step()
	if len(b.agent.got[c]) != 1 {
		t.Fatalf("got %v", b.agent.got[c])
	}
	// The session dropped before the agent reported a start; on reconnect
	// the run is handed over again (the agent ignores duplicates).
	b.s.Connected(c)
	b.step()
	if got := b.agent.got[c]; len(got) != 2 || got[0] != got[1] {
		t.Fatalf("after reconnect got %v", got)
	}
}

func TestScheduler_MissedFiringWhileDownFiresOnceThenFollowsSchedule(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	c := b.computer("a", store.GroupAll)
	task := b.task(tasks.EngineUpdate, `{}`)
	tr := b.trigger(task.ID, `{"kind":"cron","cron":"0 * * * *"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	// The server was down for five hours.
	b.now = b.now.Add(5*time.Hour + 30*time.Minute)
	b.step()
	if n := len(b.runs(task.ID)); n != 1 {
		t.Fatalf("%d runs after downtime, want 1", n)
	}
	got, _ := b.db.TriggerByID(ctx, tr.ID)
	if want := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC); !got.NextFireAt.Equal(want) {
		t.Fatalf("next %v, want %v", got.NextFireAt, want)
	}
}

func TestScheduler_OnceAndASAPFireOnceAndDisabledNever(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	c := b.computer("a", store.GroupAll)
	task := b.task(tasks.EngineUpdate, `{}`)
	once := b.trigger(task.ID, `{"kind":"once","at":"2026-11-22T07:00:00Z"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	asap := b.trigger(task.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	off := b.trigger(task.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	off.Enabled = false
	if err := b.db.UpdateTrigger(ctx, off); err != nil {
		t.Fatal(err)
	}
	b.step()
	b.now = b.now.Add(2 * time.Hour)
	b.step()
	b.now = b.now.Add(48 * time.Hour)
	b.step()
	count := map[string]int{}
	for _, r := range b.runs(task.ID) {
		count[r.TriggerID]++
	}
	if count[once.ID] != 1 || count[asap.ID] != 1 || count[off.ID] != 0 {
		t.Fatalf("runs per trigger %v", count)
	}
	for _, id := range []string{once.ID, asap.ID} {
		got, _ := b.db.TriggerByID(ctx, id)
		if !got.NextFireAt.IsZero() || got.LastFiredAt.IsZero() {
			t.Errorf("trigger %s next %v last %v", id, got.NextFireAt, got.LastFiredAt)
		}
	}
}

func TestScheduler_EventTriggersRunOnTheCausingComputerWithinTargets(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	srv := b.group("Servers", store.GroupAll)
	in, out := b.computer("in", srv), b.computer("out", store.GroupAll)
	// An event before the scheduler started is history, not a cause.
	old := b.task(tasks.Scan, `{"paths":["/"]}`)
	b.trigger(old.ID, `{"kind":"event","event":"agent_connected"}`, tasks.Target{Type: tasks.TargetStaticGroup, ID: store.GroupAll})
	// Each call is a new detection (another file): the same file found again
	// while unresolved counts on the first and causes nothing.
	detect := func(id string) {
		t.Helper()
		if _, err := b.db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: id, Now: b.now, Events: []store.Event{{ID: uuid.NewString(),
			Type: store.DetectionEventType, OccurredAt: b.now, Data: `{"path":"/tmp/` + uuid.NewString() + `","signature":"EICAR","action":"quarantined","sha256":"` +
				strings.Repeat("a", 64) + `"}`}}}); err != nil {
			t.Fatal(err)
		}
	}
	scan := b.task(tasks.Scan, `{"paths":["/home"]}`)
	tr := b.trigger(scan.ID, `{"kind":"event","event":"detection_found","throttle":{"every_nth":2}}`, tasks.Target{Type: tasks.TargetStaticGroup, ID: srv})
	detect(in)
	detect(out)
	b.step()
	if rs := b.runs(scan.ID); len(rs) != 0 {
		t.Fatalf("first detection ran (every 2nd): %d", len(rs))
	}
	detect(in)
	b.step()
	if got := computersOf(b.runs(scan.ID)); !slices.Equal(got, []string{in}) {
		t.Fatalf("runs on %v, want only %s", got, in)
	}
	got, _ := b.db.TriggerByID(ctx, tr.ID)
	if got.LastFiredAt.IsZero() || !got.NextFireAt.IsZero() {
		t.Errorf("event trigger %+v", got)
	}
	// agent_connected after start fires the trigger made earlier.
	b.online(out)
	b.step()
	if got := computersOf(b.runs(old.ID)); !slices.Equal(got, []string{out}) {
		t.Fatalf("agent_connected runs on %v, want %s", got, out)
	}
}

func TestScheduler_StartIgnoresHistory(t *testing.T) {
	b := newBench(t)
	c := b.computer("a", store.GroupAll)
	b.online(c) // before the trigger and before the (new) scheduler starts
	task := b.task(tasks.EngineUpdate, `{}`)
	b.trigger(task.ID, `{"kind":"event","event":"agent_connected"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	// A scheduler starting on an existing database keeps its cursor; a
	// fresh cursor begins at the latest event.
	if err := b.db.SetSchedulerState(context.Background(), eventCursorKey, ""); err != nil {
		t.Fatal(err)
	}
	if err := b.s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.step()
	if n := len(b.runs(task.ID)); n != 0 {
		t.Fatalf("%d runs from history", n)
	}
}

func TestScheduler_JoinedDynamicGroupAndTaskFailedWithoutLoops(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	c := b.computer("a", store.GroupAll)
	dg := &store.DynamicGroup{ID: uuid.NewString(), Name: "Has nginx", StaticParentID: store.GroupAll, Template: `{"all":[]}`}
	if err := b.db.CreateDynamicGroup(ctx, dg); err != nil {
		t.Fatal(err)
	}
	scan := b.task(tasks.Scan, `{"paths":["/"]}`)
	b.trigger(scan.ID, `{"kind":"joined_dynamic_group","dynamic_group_id":"`+dg.ID+`"}`)
	if err := b.db.ApplyMembership(ctx, dg.ID, []string{c}, nil, b.now); err != nil {
		t.Fatal(err)
	}
	b.step()
	rs := b.runs(scan.ID)
	if len(rs) != 1 || rs[0].ComputerID != c {
		t.Fatalf("joined runs %v", computersOf(rs))
	}
	// A task that follows task failures on the same task would loop; one
	// that follows another task's failures runs.
	diag := b.task(tasks.Diagnostics, `{}`)
	b.trigger(diag.ID, `{"kind":"event","event":"task_failed"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	b.trigger(scan.ID, `{"kind":"event","event":"task_failed"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	if _, err := b.db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c, Now: b.now, Events: []store.Event{{ID: uuid.NewString(),
		Type: store.EventTaskFinished, OccurredAt: b.now, Data: `{"run_id":"` + rs[0].ID + `","state":"failed","error":"scan aborted"}`}}}); err != nil {
		t.Fatal(err)
	}
	b.step()
	if n := len(b.runs(diag.ID)); n != 1 {
		t.Fatalf("diagnostics runs %d, want 1", n)
	}
	if n := len(b.runs(scan.ID)); n != 1 {
		t.Fatalf("scan runs %d, want 1 (no self-trigger)", n)
	}
}

// PerStep bounds deliveries per Tick, not per step: steps that kicks add in
// between (agents connecting, runs created) share the budget, and an idle
// scheduler does not bank more than one Tick's worth.
func TestScheduler_DeliveryIsBoundedPerTick(t *testing.T) {
	b := newBench(t)
	b.s.PerStep = 3
	ids := b.computers("c", 7)
	b.online(ids...)
	task := b.task(tasks.EngineUpdate, `{}`)
	b.trigger(task.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetStaticGroup, ID: store.GroupAll})
	total := func() int {
		n := 0
		for _, v := range b.agent.got {
			n += len(v)
		}
		return n
	}
	b.step()
	if n := total(); n != 3 {
		t.Fatalf("%d delivered in the first step, want 3", n)
	}
	b.step() // kicked at once: the budget is spent
	if n := total(); n != 3 {
		t.Fatalf("%d delivered after a second step in the same instant, want 3", n)
	}
	b.now = b.now.Add(400 * time.Millisecond) // 1.2 runs' worth
	b.step()
	if n := total(); n != 4 {
		t.Fatalf("%d delivered 0.4s later, want 4", n)
	}
	b.now = b.now.Add(time.Second)
	b.step()
	if n := total(); n != 7 {
		t.Fatalf("%d delivered a second later, want 7", n)
	}
	// A long quiet time banks one Tick's worth, not more.
	b.now = b.now.Add(time.Minute)
	task2 := b.task(tasks.EngineUpdate, `{}`)
	b.trigger(task2.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetStaticGroup, ID: store.GroupAll})
	b.step()
	if n := total(); n != 10 {
		t.Fatalf("%d delivered after a quiet minute, want 10 (3 more)", n)
	}
}

func TestServerTasks_DeleteNotConnectingAndRename(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	srv := b.group("Servers", store.GroupAll)
	stale := b.computer("stale", srv)
	fresh := b.computer("fresh", srv)
	elsewhere := b.computer("elsewhere", store.GroupLostFound)
	b.now = b.now.Add(40 * 24 * time.Hour)
	b.online(fresh)
	del := b.task(tasks.DeleteNotConnecting, `{"group":"Servers","days":30}`)
	b.trigger(del.ID, `{"kind":"asap"}`)
	b.step()
	rs := b.runs(del.ID)
	if len(rs) != 1 || rs[0].ComputerID != "" || rs[0].State != store.RunSucceeded {
		t.Fatalf("server run %+v", rs)
	}
	if !strings.Contains(rs[0].Output, "stale") || !strings.Contains(rs[0].Output, "1 computer(s)") {
		t.Errorf("output %q", rs[0].Output)
	}
	for id, revoked := range map[string]bool{stale: true, fresh: false, elsewhere: false} {
		c, _ := b.db.ComputerByID(ctx, id)
		if !c.RevokedAt.IsZero() != revoked {
			t.Errorf("%s revoked=%v, want %v", c.Name, !c.RevokedAt.IsZero(), revoked)
		}
	}
	audit, _, err := b.db.ListAudit(ctx, store.AuditFilter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) != 1 || audit[0].Action != "revoke" || audit[0].ObjectID != stale || audit[0].Via != "system" {
		t.Fatalf("audit %+v", audit)
	}

	sys := `{"fqdn":"fresh.example.org","architecture":"amd64"}`
	if _, err := b.db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: fresh, Now: b.now, Sections: []store.InventorySection{
		{Section: "system", Hash: []byte(sys), Data: sys}}}); err != nil {
		t.Fatal(err)
	}
	ren := b.task(tasks.RenameComputers, `{"group":"All","pattern":"srv-{fqdn}"}`)
	b.trigger(ren.ID, `{"kind":"asap"}`)
	b.step()
	c, _ := b.db.ComputerByID(ctx, fresh)
	if c.Name != "srv-fresh.example.org" {
		t.Fatalf("renamed to %q", c.Name)
	}
	e, _ := b.db.ComputerByID(ctx, elsewhere)
	if e.Name != "srv-elsewhere" { // no inventory: the host name stands in
		t.Fatalf("elsewhere renamed to %q", e.Name)
	}
	if s, _ := b.db.ComputerByID(ctx, stale); s.Name != "stale" {
		t.Fatalf("a revoked computer was renamed to %q", s.Name)
	}

	// A server task on a group that no longer exists fails with a reason and
	// a task.failed event.
	bad := b.task(tasks.DeleteNotConnecting, `{"group":"Gone","days":1}`)
	b.trigger(bad.ID, `{"kind":"asap"}`)
	b.step()
	rs = b.runs(bad.ID)
	if len(rs) != 1 || rs[0].State != store.RunFailed || !strings.Contains(rs[0].Error, "Gone") {
		t.Fatalf("bad server run %+v", rs[0])
	}
}

func TestExpandName(t *testing.T) {
	c := &store.Computer{ID: "id1", Hostname: "host", Instance: "inst"}
	for _, tc := range []struct{ pattern, fqdn, want string }{
		{"{hostname}", "", "host"},
		{"{fqdn}", "", "host"},
		{"{fqdn}-{instance}-{id}", "h.example", "h.example-inst-id1"},
		{"  x\x01y  ", "", "xy"},
		{strings.Repeat("é", 200), "", strings.Repeat("é", 64)},
		{"{unknown}", "", "{unknown}"},
	} {
		if got := ExpandName(tc.pattern, c, tc.fqdn); got != tc.want {
			t.Errorf("ExpandName(%q) = %q, want %q", tc.pattern, got, tc.want)
		}
	}
}

func TestStopManaging_SuccessRevokesTheComputer(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	c := b.computer("a", store.GroupAll)
	b.online(c)
	task := b.task(tasks.StopManaging, `{}`)
	b.trigger(task.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	b.step()
	run := b.agent.got[c][0]
	if _, err := b.db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c, Now: b.now, Events: []store.Event{{ID: uuid.NewString(),
		Type: store.EventTaskFinished, OccurredAt: b.now, Data: `{"run_id":"` + run + `","state":"succeeded"}`}}}); err != nil {
		t.Fatal(err)
	}
	got, _ := b.db.ComputerByID(ctx, c)
	if got.RevokedAt.IsZero() {
		t.Fatal("an unenrolled computer is still managed")
	}
	evs, _ := b.db.ServerEventsAfter(ctx, 0, []string{"computer.unmanaged"}, 10)
	if len(evs) != 1 || evs[0].ComputerID != c {
		t.Fatalf("events %+v", evs)
	}
}

func TestScheduler_ServerStartedTriggerFiresOncePerStart(t *testing.T) {
	b := newBench(t)
	b.step() // the start's step, before the triggers exist
	c := b.computer("a", store.GroupAll)
	ren := b.task(tasks.RenameComputers, `{"pattern":"pc-{hostname}"}`)
	b.trigger(ren.ID, `{"kind":"server_started"}`)
	upd := b.task(tasks.EngineUpdate, `{}`)
	b.trigger(upd.ID, `{"kind":"server_started"}`, tasks.Target{Type: tasks.TargetComputer, ID: c})
	b.step()
	if n := len(b.runs(ren.ID)); n != 0 {
		t.Fatalf("%d runs before a start", n)
	}
	for range 2 { // two restarts
		if err := b.s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.step()
		b.step()
	}
	if n, m := len(b.runs(ren.ID)), len(b.runs(upd.ID)); n != 2 || m != 2 {
		t.Fatalf("server task runs %d, client runs %d; want 2 each", n, m)
	}
	if got, _ := b.db.ComputerByID(context.Background(), c); got.Name != "pc-a" {
		t.Fatalf("name %q", got.Name)
	}
}

// Computers that connect are served in the order they connected, each
// once, within the delivery budget; the ones over it wait for the next
// steps.
func TestScheduler_ConnectedComputersOverTheBudgetWaitTheirTurn(t *testing.T) {
	b := newBench(t)
	b.s.PerStep = 2
	ids := b.computers("c", 5)
	task := b.task(tasks.EngineUpdate, `{}`)
	b.trigger(task.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetStaticGroup, ID: store.GroupAll})
	b.step() // planned; no computer is online
	if len(b.agent.got) != 0 {
		t.Fatalf("delivered to offline computers: %v", b.agent.got)
	}
	// They connect last to first (the store does not list them online:
	// only the connections deliver), one of them twice.
	for i := len(ids) - 1; i >= 0; i-- {
		b.agent.online[ids[i]] = true
		b.s.Connected(ids[i])
	}
	b.s.Connected(ids[4])
	served := func() []string {
		var out []string
		for i := len(ids) - 1; i >= 0; i-- {
			switch n := len(b.agent.got[ids[i]]); n {
			case 0:
			case 1:
				out = append(out, ids[i])
			default:
				t.Fatalf("computer %d got %d runs, want 1", i, n)
			}
		}
		return out
	}
	for step, want := range [][]string{ids[3:], ids[3:], ids[1:], ids} {
		if step == 2 || step == 3 {
			b.now = b.now.Add(time.Second) // the budget refills
		}
		b.step()
		got := served()
		slices.Sort(got)
		if want = slices.Sorted(slices.Values(want)); !slices.Equal(got, want) {
			t.Fatalf("step %d: served %v, want %v (the last connected first)", step, got, want)
		}
	}
}

// countingStore counts the scheduler's steps (each ends reading the due
// server runs) and its pending-run queries.
type countingStore struct {
	*store.DB
	mu             sync.Mutex
	steps, pending int
	pendingIDs     []string
}

func (c *countingStore) DueServerRuns(ctx context.Context, now time.Time) ([]*store.TaskRun, error) {
	defer func() {
		c.mu.Lock()
		c.steps++
		c.mu.Unlock()
	}()
	return c.DB.DueServerRuns(ctx, now)
}

func (c *countingStore) PendingRuns(ctx context.Context, ids []string, now time.Time, per int) (map[string][]*store.TaskRun, error) {
	c.mu.Lock()
	c.pending++
	c.pendingIDs = append(c.pendingIDs, ids...)
	c.mu.Unlock()
	return c.DB.PendingRuns(ctx, ids, now, per)
}

func (c *countingStore) counts() (steps, pending int, ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.steps, c.pending, slices.Clone(c.pendingIDs)
}

// Agents connecting in a burst (a restart brings thousands a second) kick
// one step per KickGap, not one each: the step's fixed queries run once
// and one query reads every connected computer's pending runs.
func TestScheduler_KicksWithinTheGapAreServedByOneStep(t *testing.T) {
	b := newBench(t)
	cs := &countingStore{DB: b.db}
	b.s.Store = cs
	b.s.Tick = time.Hour
	b.s.KickGap = time.Second
	ids := b.computers("k", 3)
	task := b.task(tasks.EngineUpdate, `{}`)
	b.trigger(task.ID, `{"kind":"asap"}`, tasks.Target{Type: tasks.TargetStaticGroup, ID: store.GroupAll})
	b.step() // plans one run each; nobody online yet
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, func() bool { s, _, _ := cs.counts(); return s >= 2 }) // Run's first step
	b.agent.mu.Lock()
	for _, id := range ids {
		b.agent.online[id] = true
	}
	b.agent.mu.Unlock()
	for _, id := range ids {
		b.s.Connected(id)
	}
	waitFor(t, func() bool {
		b.agent.mu.Lock()
		defer b.agent.mu.Unlock()
		s, _, _ := cs.counts()
		return len(b.agent.got) == len(ids) && s >= 3
	})
	time.Sleep(1500 * time.Millisecond) // a kick left over would step again after the gap
	steps, pending, got := cs.counts()
	if steps != 3 || pending != 1 || !slices.Equal(got, ids) {
		t.Fatalf("%d steps, %d pending-run queries for %v; want 3 steps (one by hand, Run's first, one for the burst) and one query for %v",
			steps, pending, got, ids)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
	}
}
