package configs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/policy"
	"github.com/mamori/mamori/internal/store"
)

// countingStore is the real store, counting the loads (one per Recompute
// pass or world load) and the writes of desired versions.
type countingStore struct {
	*store.DB
	loads  atomic.Int64
	writes atomic.Int64
	fulls  atomic.Int64 // ComputerIDs calls: passes over every computer
	// gate, when set, holds every load until it is closed.
	gate atomic.Pointer[chan struct{}]
	// failComputer, when set, makes reading that computer fail with a
	// store error (not a not_found).
	failComputer  atomic.Pointer[string]
	computerReads atomic.Int64 // ComputersByID calls
}

func (c *countingStore) Policies(ctx context.Context) ([]*store.PolicyRow, error) {
	c.loads.Add(1)
	if g := c.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.DB.Policies(ctx)
}

func (c *countingStore) ComputerIDs(ctx context.Context, groupIDs []string) ([]string, error) {
	c.fulls.Add(1)
	return c.DB.ComputerIDs(ctx, groupIDs)
}

func (c *countingStore) SetDesiredConfig(ctx context.Context, versions map[string]string) error {
	c.writes.Add(1)
	return c.DB.SetDesiredConfig(ctx, versions)
}

func (c *countingStore) ComputerByID(ctx context.Context, id string) (*store.Computer, error) {
	if f := c.failComputer.Load(); f != nil && *f == id {
		return nil, errors.New("database is locked")
	}
	return c.DB.ComputerByID(ctx, id)
}

func (c *countingStore) ComputersByID(ctx context.Context, ids []string) (map[string]*store.Computer, error) {
	c.computerReads.Add(1)
	if f := c.failComputer.Load(); f != nil && slices.Contains(ids, *f) {
		return nil, errors.New("database is locked")
	}
	return c.DB.ComputersByID(ctx, ids)
}

// rig is a configuration service over a real SQLite store.
type rig struct {
	t   *testing.T
	db  *store.DB
	cs  *countingStore
	svc *Service
	now time.Time

	mu      sync.Mutex
	changes [][]string // every Changed call, in order
}

func newRig(t *testing.T) *rig {
	t.Helper()
	db, err := store.OpenSQLite(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &rig{t: t, db: db, cs: &countingStore{DB: db}, now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	r.svc = &Service{Store: r.cs, Changed: func(ids []string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.changes = append(r.changes, slices.Clone(ids))
	}}
	return r
}

// run starts Run until the test ends; Run has returned before the store is
// closed.
func (r *rig) run(log interface{ Error(string, ...any) }) {
	r.t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.svc.Run(ctx, r.db, log)
	}()
	r.t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			r.t.Error("Run did not return after its context ended")
		}
	})
}

func (r *rig) group(name, parent string) string {
	r.t.Helper()
	g, err := r.db.CreateGroup(context.Background(), parent, name)
	if err != nil {
		r.t.Fatal(err)
	}
	return g.ID
}

func (r *rig) computer(name, group string) string {
	r.t.Helper()
	ctx := context.Background()
	secret := uuid.NewString()
	if err := r.db.CreateEnrollmentToken(ctx, &store.EnrollmentToken{ID: uuid.NewString(), SecretHash: secret, GroupID: group,
		ExpiresAt: r.now.Add(time.Hour), CreatedBy: "t", CreatedAt: r.now}); err != nil {
		r.t.Fatal(err)
	}
	c := &store.Computer{ID: uuid.NewString(), Name: name, Hostname: name, HardwareFingerprint: uuid.NewString(), Platform: "linux"}
	if err := r.db.EnrollComputer(ctx, secret, r.now, c, &store.AgentCertificate{Serial: uuid.NewString(), ComputerID: c.ID,
		IssuedAt: r.now, NotAfter: r.now.Add(time.Hour)}); err != nil {
		r.t.Fatal(err)
	}
	return c.ID
}

func (r *rig) dynGroup(name, staticParent string) string {
	r.t.Helper()
	g := &store.DynamicGroup{ID: uuid.NewString(), Name: name, StaticParentID: staticParent,
		Template: `{"op":"and","rules":[{"field":"software","operator":"=","value":"nginx"}]}`}
	if err := r.db.CreateDynamicGroup(context.Background(), g); err != nil {
		r.t.Fatal(err)
	}
	return g.ID
}

// policy stores a policy of product with settings given as JSON, as is
// (the store does not validate them).
func (r *rig) policy(name, product, settings string) *store.PolicyRow {
	r.t.Helper()
	p := &store.PolicyRow{ID: uuid.NewString(), Name: name, Product: product, GroupID: store.GroupAll, Settings: settings}
	if err := r.db.CreatePolicy(context.Background(), p); err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *rig) update(p *store.PolicyRow, settings string) {
	r.t.Helper()
	p.Settings = settings
	if err := r.db.UpdatePolicy(context.Background(), p); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) assign(p *store.PolicyRow, targetType, targetID string, rank int) string {
	r.t.Helper()
	a := &store.PolicyAssignment{ID: uuid.NewString(), PolicyID: p.ID, TargetType: targetType, TargetID: targetID, Rank: rank}
	if err := r.db.AssignPolicy(context.Background(), a); err != nil {
		r.t.Fatal(err)
	}
	return a.ID
}

func (r *rig) recompute(ids []string) {
	r.t.Helper()
	if err := r.svc.Recompute(context.Background(), ids); err != nil {
		r.t.Fatal(err)
	}
}

// version is the desired configuration version recorded for a computer.
func (r *rig) version(id string) string {
	r.t.Helper()
	c, err := r.db.ComputerByID(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return c.ConfigVersion
}

func (r *rig) versions(ids ...string) map[string]string {
	r.t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		out[id] = r.version(id)
	}
	return out
}

// setting is a computer's effective setting product.key.
func (r *rig) setting(id, product, key string) policy.Effective {
	r.t.Helper()
	eff, _, err := r.svc.Effective(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range eff {
		if e.Product == product && e.Key == key {
			return e
		}
	}
	r.t.Fatalf("no effective setting %s.%s", product, key)
	return policy.Effective{}
}

func (r *rig) wantValue(id, product, key string, want any) policy.Effective {
	r.t.Helper()
	e := r.setting(id, product, key)
	if fmt.Sprint(e.Value) != fmt.Sprint(want) {
		r.t.Fatalf("%s.%s of %s = %v, want %v (source %+v)", product, key, id, e.Value, want, e.Source)
	}
	return e
}

// changeCount is how many times Changed was called.
func (r *rig) changeCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes)
}

// changedAfter returns the computers Changed reported in calls from index
// n on, sorted and deduplicated.
func (r *rig) changedAfter(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.changes[min(n, len(r.changes)):] {
		out = append(out, c...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// waitChanged waits until Changed, in calls from index n on, has reported
// every computer of want, and returns all it reported then.
func (r *rig) waitChanged(n int, want ...string) []string {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := r.changedAfter(n)
		if !slices.ContainsFunc(want, func(id string) bool { return !slices.Contains(got, id) }) {
			return got
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("Changed reported %v, want at least %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sorted(ids ...string) []string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

func TestRecompute_RecordsVersionsAndReportsOnlyChanges(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	srv := r.group("Servers", store.GroupAll)
	a := r.computer("a", srv)
	b := r.computer("b", srv)
	c := r.computer("c", store.GroupLostFound)

	// Fresh computers have no desired version: the first pass gives every
	// one its version and reports them all, in one write.
	r.recompute(nil)
	if got := r.changedAfter(0); !slices.Equal(got, sorted(a, b, c)) {
		t.Fatalf("first pass reported %v, want %v", got, sorted(a, b, c))
	}
	if n := r.changeCount(); n != 1 {
		t.Fatalf("Changed called %d times, want once", n)
	}
	if w := r.cs.writes.Load(); w != 1 {
		t.Fatalf("%d writes of desired versions, want 1", w)
	}
	v := r.versions(a, b, c)
	for id, ver := range v {
		_, doc, err := r.svc.Effective(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if ver == "" || ver != doc.Version {
			t.Fatalf("recorded version of %s = %q, want Effective's %q", id, ver, doc.Version)
		}
		if doc.Version != doc.Hash() {
			t.Fatalf("document version %q is not the hash of its content", doc.Version)
		}
	}
	// With no policy every computer gets the defaults: the same document.
	if v[a] != v[b] || v[a] != v[c] {
		t.Fatalf("computers without policies have different versions: %v", v)
	}

	// Nothing changed: no report, no write.
	r.recompute(nil)
	if got := r.changedAfter(1); len(got) != 0 {
		t.Fatalf("an idle pass reported %v", got)
	}
	if w := r.cs.writes.Load(); w != 1 {
		t.Fatalf("an idle pass wrote desired versions (%d writes)", w)
	}

	// A policy on Servers changes a and b only.
	p := r.policy("verbose", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"debug"}}`)
	r.assign(p, policy.TargetStatic, srv, 0)
	n := r.changeCount()
	r.recompute(nil)
	if got := r.changedAfter(n); !slices.Equal(got, sorted(a, b)) {
		t.Fatalf("reported %v after a policy on Servers, want %v", got, sorted(a, b))
	}
	if r.version(c) != v[c] {
		t.Fatal("the version of a computer outside Servers changed")
	}
	if r.version(a) == v[a] || r.version(a) != r.version(b) {
		t.Fatalf("versions after the policy: a %q (was %q), b %q", r.version(a), v[a], r.version(b))
	}

	// Recomputing some computers touches only those.
	r.update(p, `{"log_level":{"flag":"apply","value":"warn"}}`)
	before := r.versions(a, b)
	n = r.changeCount()
	r.recompute([]string{a})
	if got := r.changedAfter(n); !slices.Equal(got, []string{a}) {
		t.Fatalf("Recompute([a]) reported %v", got)
	}
	if r.version(b) != before[b] {
		t.Fatal("Recompute([a]) changed b's version")
	}
	n = r.changeCount()
	r.recompute(nil)
	if got := r.changedAfter(n); !slices.Equal(got, []string{b}) {
		t.Fatalf("the full pass after Recompute([a]) reported %v, want only b", got)
	}

	// Unknown computers are skipped; an empty list does nothing.
	n = r.changeCount()
	r.recompute([]string{"no-such-computer", a})
	r.recompute([]string{})
	if got := r.changedAfter(n); len(got) != 0 {
		t.Fatalf("reported %v with nothing changed", got)
	}

	// Without a Changed callback, Recompute still records versions.
	r.update(p, `{"log_level":{"flag":"apply","value":"error"}}`)
	r.svc.Changed = nil
	before = r.versions(a)
	r.recompute(nil)
	if r.version(a) == before[a] {
		t.Fatal("Recompute without Changed recorded nothing")
	}
}

func TestEffective_InheritanceOverridesAndForce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	srv := r.group("Servers", store.GroupAll)
	web := r.group("Web", srv)
	web1 := r.computer("web1", web)
	web2 := r.computer("web2", web)
	db1 := r.computer("db1", srv)
	lap := r.computer("laptop", store.GroupLostFound)

	// A policy on Servers reaches computers in its subgroups.
	verbose := r.policy("verbose", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"debug"}}`)
	asg := r.assign(verbose, policy.TargetStatic, srv, 0)
	for _, id := range []string{web1, web2, db1} {
		e := r.wantValue(id, policy.ProductAgent, "log_level", "debug")
		if e.Default || e.Source == nil || e.Source.PolicyID != verbose.ID || e.Source.AssignmentID != asg ||
			e.Source.TargetType != policy.TargetStatic || e.Source.TargetID != srv || e.Source.TargetName != "All/Servers" {
			t.Fatalf("provenance of log_level on %s: %+v default=%v", id, e.Source, e.Default)
		}
	}
	if e := r.wantValue(lap, policy.ProductAgent, "log_level", "info"); !e.Default || e.Source != nil {
		t.Fatalf("the laptop is outside Servers but got %+v", e.Source)
	}

	// A computer-level assignment overrides the group's.
	quiet := r.policy("quiet", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"error"}}`)
	r.assign(quiet, policy.TargetComputer, web2, 0)
	e := r.wantValue(web2, policy.ProductAgent, "log_level", "error")
	if e.Source.TargetType != policy.TargetComputer || e.Source.TargetName != "web2" {
		t.Fatalf("computer-level provenance: %+v", e.Source)
	}
	r.wantValue(web1, policy.ProductAgent, "log_level", "debug")

	// A deeper group's apply overrides a shallower one's.
	webPol := r.policy("web", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"warn"}}`)
	r.assign(webPol, policy.TargetStatic, web, 0)
	r.wantValue(web1, policy.ProductAgent, "log_level", "warn")
	r.wantValue(db1, policy.ProductAgent, "log_level", "debug")

	// Within a target, rank orders the policies (the later one wins).
	first := r.policy("rank1", policy.ProductUpdates, `{"rollback_depth":{"flag":"apply","value":5}}`)
	second := r.policy("rank2", policy.ProductUpdates, `{"rollback_depth":{"flag":"apply","value":7}}`)
	r.assign(second, policy.TargetStatic, srv, 2)
	r.assign(first, policy.TargetStatic, srv, 1)
	r.wantValue(db1, policy.ProductUpdates, "rollback_depth", 7)

	// A force higher up wins over any later apply, even the computer's own.
	lock := r.policy("report only", policy.ProductProtection, `{"action_on_detection":{"flag":"force","value":"report"}}`)
	r.assign(lock, policy.TargetStatic, store.GroupAll, 0)
	loose := r.policy("quarantine", policy.ProductProtection, `{"action_on_detection":{"flag":"apply","value":"quarantine"}}`)
	r.assign(loose, policy.TargetStatic, web, 0)
	r.assign(loose, policy.TargetComputer, web1, 0)
	for _, id := range []string{web1, web2, db1, lap} {
		e := r.wantValue(id, policy.ProductProtection, "action_on_detection", "report")
		if !e.Forced || e.Source.PolicyID != lock.ID || e.Source.TargetName != "All" {
			t.Fatalf("forced setting on %s: forced=%v source %+v", id, e.Forced, e.Source)
		}
	}
	_, doc, err := r.svc.Effective(context.Background(), web1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(doc.Forced, []string{"protection.action_on_detection"}) {
		t.Fatalf("document forced keys = %v", doc.Forced)
	}
	if got := doc.Settings[policy.ProductProtection]["action_on_detection"]; got != "report" {
		t.Fatalf("document value = %v", got)
	}
	if got := doc.Settings[policy.ProductAgent]["log_level"]; got != "warn" {
		t.Fatalf("document log_level = %v", got)
	}

	// Lists merge down the path: All's exclusions, then Web's appended.
	base := r.policy("base exclusions", policy.ProductProtection, `{"scan_exclusions":{"flag":"apply","value":["/tmp/*"]}}`)
	r.assign(base, policy.TargetStatic, store.GroupAll, 1)
	more := r.policy("web exclusions", policy.ProductProtection,
		`{"scan_exclusions":{"flag":"apply","value":["/var/cache/*"],"merge":"append"}}`)
	r.assign(more, policy.TargetStatic, web, 1)
	e = r.wantValue(web1, policy.ProductProtection, "scan_exclusions", []string{"/tmp/*", "/var/cache/*"})
	if len(e.Sources) != 2 || e.Sources[0].PolicyID != base.ID || e.Sources[1].PolicyID != more.ID {
		t.Fatalf("list sources: %+v", e.Sources)
	}
	r.wantValue(db1, policy.ProductProtection, "scan_exclusions", []string{"/tmp/*"})

	// Recompute records what Effective computes.
	r.recompute(nil)
	docs, err := r.svc.Documents(context.Background(), []string{web1, web2, db1, lap})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{web1, web2, db1, lap} {
		_, d, err := r.svc.Effective(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if v := r.version(id); v != d.Version || docs[id] == nil || docs[id].Version != v {
			t.Fatalf("%s: recorded %q, Effective %q, Documents %+v", id, v, d.Version, docs[id])
		}
	}
	if r.version(web1) == r.version(db1) || r.version(web2) == r.version(web1) {
		t.Fatal("computers with different configurations share a version")
	}

	// Unknown computers are an error for Effective.
	if _, _, err := r.svc.Effective(context.Background(), "no-such-computer"); err == nil {
		t.Fatal("Effective of an unknown computer succeeded")
	}
}

func TestRun_FollowsDynamicGroupMembership(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a := r.computer("a", store.GroupAll)
	b := r.computer("b", store.GroupAll)
	dg := r.dynGroup("nginx", store.GroupAll)
	p := r.policy("web servers", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"warn"}}`)
	r.assign(p, policy.TargetDynamic, dg, 0)

	// The first pass of Run covers every computer.
	r.run(nil)
	r.waitChanged(0, a, b)
	base := r.versions(a, b)
	fulls := r.cs.fulls.Load()
	r.wantValue(a, policy.ProductAgent, "log_level", "info")

	// Joining the group: Run sees the server event and recomputes a.
	n := r.changeCount()
	if err := r.db.ApplyMembership(ctx, dg, []string{a}, nil, r.now); err != nil {
		t.Fatal(err)
	}
	if got := r.waitChanged(n, a); !slices.Equal(got, []string{a}) {
		t.Fatalf("after a joined, Changed reported %v", got)
	}
	e := r.wantValue(a, policy.ProductAgent, "log_level", "warn")
	if e.Source.TargetType != policy.TargetDynamic || e.Source.TargetID != dg || e.Source.TargetName != "nginx" {
		t.Fatalf("dynamic provenance: %+v", e.Source)
	}
	_, doc, err := r.svc.Effective(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.version(a); got == base[a] || got != doc.Version {
		t.Fatalf("a's version after joining = %q (was %q, Effective %q)", got, base[a], doc.Version)
	}
	if r.version(b) != base[b] {
		t.Fatal("b's version changed though it joined nothing")
	}
	if r.cs.fulls.Load() != fulls {
		t.Fatal("a membership change recomputed every computer instead of the one that joined")
	}

	// Leaving reverts the value and the version.
	n = r.changeCount()
	if err := r.db.ApplyMembership(ctx, dg, nil, []string{a}, r.now); err != nil {
		t.Fatal(err)
	}
	if got := r.waitChanged(n, a); !slices.Equal(got, []string{a}) {
		t.Fatalf("after a left, Changed reported %v", got)
	}
	r.wantValue(a, policy.ProductAgent, "log_level", "info")
	if got := r.version(a); got != base[a] {
		t.Fatalf("a's version after leaving = %q, want the original %q", got, base[a])
	}
}

func TestDocuments_MatchRecordedVersionsAndInvalidation(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	srv := r.group("Servers", store.GroupAll)
	a := r.computer("a", srv)
	b := r.computer("b", store.GroupLostFound)
	dg := r.dynGroup("nginx", store.GroupAll)
	p := r.policy("verbose", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"debug"}}`)
	r.assign(p, policy.TargetStatic, srv, 0)
	dp := r.policy("dyn", policy.ProductUpdates, `{"interval":{"flag":"apply","value":"2h"}}`)
	r.assign(dp, policy.TargetDynamic, dg, 0)
	if err := r.db.ApplyMembership(ctx, dg, []string{b}, nil, r.now); err != nil {
		t.Fatal(err)
	}
	r.recompute(nil)

	start := time.Now()
	docs, err := r.svc.Documents(ctx, []string{a, b, "no-such-computer"})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || docs["no-such-computer"] != nil {
		t.Fatalf("Documents returned %d documents; unknown ids must be left out", len(docs))
	}
	for _, id := range []string{a, b} {
		_, d, err := r.svc.Effective(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if docs[id].Version != r.version(id) || docs[id].Version != d.Version {
			t.Fatalf("%s: Documents %q, recorded %q, Effective %q", id, docs[id].Version, r.version(id), d.Version)
		}
	}
	if got := docs[a].Settings[policy.ProductAgent]["log_level"]; got != "debug" {
		t.Fatalf("a's log_level = %v", got)
	}
	if got := docs[b].Settings[policy.ProductUpdates]["interval"]; got != "2h0m0s" {
		t.Fatalf("b's interval from its dynamic group = %v", got)
	}
	if empty, err := r.svc.Documents(ctx, nil); err != nil || len(empty) != 0 {
		t.Fatalf("Documents(nil) = %v, %v", empty, err)
	}

	// A policy change is seen by Documents at once after Queue(nil)...
	old := docs[a].Version
	r.update(p, `{"log_level":{"flag":"apply","value":"error"}}`)
	loads := r.cs.loads.Load()
	if stale, err := r.svc.Documents(ctx, []string{a}); err != nil {
		t.Fatal(err)
	} else if time.Since(start) < worldTTL/2 {
		// ...while without it the world loaded moments ago may be served.
		if stale[a].Version != old || r.cs.loads.Load() != loads {
			t.Fatalf("Documents reloaded the world within its time to live")
		}
	}
	r.svc.Queue(nil) // no Run: only invalidates (and leaves work queued)
	docs, err = r.svc.Documents(ctx, []string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if got := docs[a].Settings[policy.ProductAgent]["log_level"]; got != "error" || docs[a].Version == old {
		t.Fatalf("after Queue(nil) Documents still serves log_level %v (version %q)", got, docs[a].Version)
	}
	_, d, err := r.svc.Effective(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if docs[a].Version != d.Version {
		t.Fatalf("Documents %q and Effective %q disagree", docs[a].Version, d.Version)
	}
	// Membership is read fresh by every call, cached world or not.
	if err := r.db.ApplyMembership(ctx, dg, nil, []string{b}, r.now); err != nil {
		t.Fatal(err)
	}
	docs, err = r.svc.Documents(ctx, []string{b})
	if err != nil {
		t.Fatal(err)
	}
	// The default is not in the document: the agent applies it.
	if got, ok := docs[b].Settings[policy.ProductUpdates]["interval"]; ok {
		t.Fatalf("b's interval after leaving its dynamic group = %v, want the default (absent)", got)
	}
}

func TestDocuments_ConcurrentWithInvalidation(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		ids = append(ids, r.computer(fmt.Sprintf("c%d", i), store.GroupAll))
	}
	p := r.policy("p", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"debug"}}`)
	r.assign(p, policy.TargetStatic, store.GroupAll, 0)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			for range 10 {
				if g%2 == 0 {
					r.svc.Queue(nil)
				}
				docs, err := r.svc.Documents(ctx, ids)
				if err == nil && len(docs) != len(ids) {
					err = fmt.Errorf("got %d documents for %d computers", len(docs), len(ids))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestQueue_CoalescesBurstsAndNilCoversAll(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var ids []string
	for i := range 6 {
		ids = append(ids, r.computer(fmt.Sprintf("c%d", i), store.GroupAll))
	}
	p := r.policy("p", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"debug"}}`)
	r.assign(p, policy.TargetStatic, store.GroupAll, 0)

	// Queued before Run: done by its first pass with everything else.
	r.svc.Queue(ids[:1])
	r.run(nil)
	if got := r.waitChanged(0, ids...); !slices.Equal(got, sorted(ids...)) {
		t.Fatalf("first pass reported %v", got)
	}

	// Queue(ids) recomputes just those computers.
	r.update(p, `{"log_level":{"flag":"apply","value":"warn"}}`)
	n := r.changeCount()
	r.svc.Queue(ids[:2])
	if got := r.waitChanged(n, ids[0], ids[1]); !slices.Equal(got, sorted(ids[0], ids[1])) {
		t.Fatalf("Queue(2 ids) reported %v", got)
	}
	// Queue(nil) covers the rest.
	n = r.changeCount()
	r.svc.Queue(nil)
	if got := r.waitChanged(n, ids[2:]...); !slices.Equal(got, sorted(ids[2:]...)) {
		t.Fatalf("Queue(nil) reported %v, want the computers not yet recomputed", got)
	}

	// A burst of requests is done in few passes. Passes are held at their
	// load while the burst goes on, so that however slowly it goes, at
	// most the pass under way and one more take it all.
	r.update(p, `{"log_level":{"flag":"apply","value":"error"}}`)
	loads, writes := r.cs.loads.Load(), r.cs.writes.Load()
	n = r.changeCount()
	gate := make(chan struct{})
	r.cs.gate.Store(&gate)
	for i := range 200 {
		r.svc.Queue([]string{ids[i%len(ids)]})
		if i%50 == 0 {
			r.svc.Queue(nil)
		}
	}
	r.cs.gate.Store(nil)
	close(gate)
	if got := r.waitChanged(n, ids...); !slices.Equal(got, sorted(ids...)) {
		t.Fatalf("after the burst Changed reported %v", got)
	}
	if passes := r.cs.loads.Load() - loads; passes > 2 {
		t.Fatalf("a burst of 204 requests took %d passes", passes)
	}
	if w := r.cs.writes.Load() - writes; w > 2 {
		t.Fatalf("a burst of 204 requests made %d writes", w)
	}
	if c := r.changeCount() - n; c > 2 {
		t.Fatalf("Changed called %d times for one burst", c)
	}
	for _, id := range ids {
		r.wantValue(id, policy.ProductAgent, "log_level", "error")
	}
}

func TestBadPolicy_FailsWithoutChanging(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a := r.computer("a", store.GroupAll)
	good := r.policy("good", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"debug"}}`)
	r.assign(good, policy.TargetStatic, store.GroupAll, 0)
	r.recompute(nil)
	levels := []string{"warn", "error", "info", "debug"}
	for i, tc := range []struct{ name, product, settings string }{
		{"not JSON", policy.ProductAgent, `{"log_level":`},
		{"not an object", policy.ProductAgent, `["log_level"]`},
		{"unknown setting", policy.ProductAgent, `{"colour":{"flag":"apply","value":"red"}}`},
		{"bad value", policy.ProductAgent, `{"log_level":{"flag":"apply","value":"loud"}}`},
		{"bad flag", policy.ProductAgent, `{"log_level":{"flag":"maybe","value":"debug"}}`},
		{"unknown product", "firewall", `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, n, writes := r.version(a), r.changeCount(), r.cs.writes.Load()
			bad := r.policy("broken "+tc.name, tc.product, tc.settings)
			// Assigned or not, it is in the world every computation loads.
			if i%2 == 0 {
				r.assign(bad, policy.TargetComputer, a, 0)
			}
			// A change that would give a a new version if computed.
			r.update(good, `{"log_level":{"flag":"apply","value":"`+levels[i%len(levels)]+`"}}`)
			check := func(what string, err error) {
				t.Helper()
				if err == nil || !strings.Contains(err.Error(), bad.ID) {
					t.Fatalf("%s: error %v, want one naming policy %s", what, err, bad.ID)
				}
			}
			check("Recompute", r.svc.Recompute(ctx, nil))
			check("Recompute(ids)", r.svc.Recompute(ctx, []string{a}))
			r.svc.Queue(nil)
			docs, err := r.svc.Documents(ctx, []string{a})
			check("Documents", err)
			if docs != nil {
				t.Fatalf("Documents returned %v with an error", docs)
			}
			_, _, err = r.svc.Effective(ctx, a)
			check("Effective", err)
			if r.version(a) != before || r.changeCount() != n || r.cs.writes.Load() != writes {
				t.Fatal("a failed computation changed something")
			}

			// Removing the policy lets computations go on.
			if err := r.db.DeletePolicy(ctx, bad.ID, bad.Version); err != nil {
				t.Fatal(err)
			}
			r.recompute(nil)
			if got := r.changedAfter(n); !slices.Equal(got, []string{a}) {
				t.Fatalf("after the removal Changed reported %v", got)
			}
			r.wantValue(a, policy.ProductAgent, "log_level", levels[i%len(levels)])
		})
	}
}

// errorLog records Run's errors.
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *errorLog) Error(msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, fmt.Sprint(append([]any{msg}, args...)...))
}

func (l *errorLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.msgs, "\n")
}

func TestRun_LogsFailedPasses(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.computer("a", store.GroupAll)
	bad := r.policy("broken", policy.ProductAgent, `{"log_level":`)
	log := &errorLog{}
	r.run(log)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), bad.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("Run logged %q, want an error naming policy %s", log.String(), bad.ID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r.version(a) != "" || r.changeCount() != 0 {
		t.Fatal("a failed pass changed something")
	}
}

func TestRecompute_StoreErrorIsReported(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.computer("a", store.GroupAll)
	b := r.computer("b", store.GroupAll)
	r.cs.failComputer.Store(&b)
	// A computer that cannot be read is an error, not silently skipped
	// (it would keep a stale desired version with nobody told).
	if err := r.svc.Recompute(context.Background(), nil); err == nil {
		t.Fatal("Recompute succeeded though a computer could not be read")
	}
	if _, err := r.svc.Documents(context.Background(), []string{a, b}); err == nil {
		t.Fatal("Documents succeeded though a computer could not be read")
	}
	r.cs.failComputer.Store(nil)
	r.recompute(nil)
	if got := r.changedAfter(0); !slices.Equal(got, sorted(a, b)) {
		t.Fatalf("Changed reported %v", got)
	}
}

// A pass over every computer reads them 500 at a time, not one by one (a
// restart's first pass covers the whole fleet: 100,000 reads were 100,000
// round trips to a PostgreSQL store).
func TestRecompute_ReadsComputersInChunks(t *testing.T) {
	r := newRig(t)
	var ids []string
	for i := range 501 {
		ids = append(ids, r.computer("c"+strconv.Itoa(i), store.GroupAll))
	}
	r.recompute(nil)
	if n := r.cs.computerReads.Load(); n != 2 {
		t.Errorf("%d reads of computers for 501, want 2", n)
	}
	if got := r.changedAfter(0); !slices.Equal(got, sorted(ids...)) {
		t.Fatalf("Changed reported %d computers, want all 501", len(got))
	}
	for _, id := range []string{ids[0], ids[499], ids[500]} {
		if r.version(id) == "" {
			t.Errorf("computer %s has no desired version", id)
		}
	}
}
