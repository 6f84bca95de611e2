package dyngroup

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/store"
)

type lab struct {
	t   *testing.T
	db  *store.DB
	ev  *Evaluator
	now time.Time
	tok string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	db, err := store.OpenSQLite(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l := &lab{t: t, db: db, now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	l.ev = &Evaluator{Store: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return l.now }}
	l.ev.init()
	return l
}

// computer enrolls a computer in group with packages and addresses.
func (l *lab) computer(name, group string, packages map[string]string, addrs ...string) string {
	l.t.Helper()
	ctx := context.Background()
	secret := uuid.NewString()
	if err := l.db.CreateEnrollmentToken(ctx, &store.EnrollmentToken{ID: uuid.NewString(), SecretHash: secret, GroupID: group,
		ExpiresAt: l.now.Add(time.Hour), CreatedBy: "t", CreatedAt: l.now}); err != nil {
		l.t.Fatal(err)
	}
	c := &store.Computer{ID: uuid.NewString(), Name: name, Hostname: name, HardwareFingerprint: uuid.NewString(), Platform: "linux"}
	if err := l.db.EnrollComputer(ctx, secret, l.now, c, &store.AgentCertificate{Serial: uuid.NewString(), ComputerID: c.ID, IssuedAt: l.now, NotAfter: l.now.Add(time.Hour)}); err != nil {
		l.t.Fatal(err)
	}
	l.inventory(c.ID, packages, addrs...)
	return c.ID
}

func (l *lab) inventory(id string, packages map[string]string, addrs ...string) {
	l.t.Helper()
	sw := `{"packages":[`
	first := true
	for n, v := range packages {
		if !first {
			sw += ","
		}
		first = false
		sw += fmt.Sprintf(`{"name":%q,"version":%q}`, n, v)
	}
	sw += `]}`
	net := `{"interfaces":[{"addresses":[`
	for i, a := range addrs {
		if i > 0 {
			net += ","
		}
		net += fmt.Sprintf("%q", a)
	}
	net += `]}]}`
	if _, err := l.db.ApplyCheckIn(context.Background(), &store.CheckIn{ComputerID: id, Now: l.now, Sections: []store.InventorySection{
		{Section: "software", Hash: []byte(sw), Data: sw}, {Section: "network", Hash: []byte(net), Data: net},
	}, Summary: store.ComputerSummary{OSName: "Debian GNU/Linux", OSVersion: "12"}}); err != nil {
		l.t.Fatal(err)
	}
}

func (l *lab) group(name, staticParent, dynamicParent, tpl string) string {
	l.t.Helper()
	g := &store.DynamicGroup{ID: uuid.NewString(), Name: name, StaticParentID: staticParent, DynamicParentID: dynamicParent, Template: tpl}
	if err := l.db.CreateDynamicGroup(context.Background(), g); err != nil {
		l.t.Fatal(err)
	}
	return g.ID
}

func (l *lab) members(g string) []string {
	l.t.Helper()
	m, err := l.db.DynamicGroupMembers(context.Background(), g)
	if err != nil {
		l.t.Fatal(err)
	}
	return m
}

func sorted(ids ...string) []string {
	slices.Sort(ids)
	if ids == nil {
		return []string{}
	}
	return ids
}

func (l *lab) want(g string, ids ...string) {
	l.t.Helper()
	if got := l.members(g); !slices.Equal(got, sorted(ids...)) {
		l.t.Fatalf("members of %s = %v, want %v", g, got, sorted(ids...))
	}
}

const (
	tplNginx   = `{"op":"and","rules":[{"field":"software","operator":"=","value":"nginx"}]}`
	tplNoSSH   = `{"op":"nor","rules":[{"field":"software","operator":"=","value":"openssh-server"}]}`
	tplOffice  = `{"op":"and","rules":[{"field":"ip","operator":"in_range","value":"10.2.0.0/16"}]}`
	tplOldSeen = `{"op":"and","rules":[{"field":"last_seen.age","operator":">","value":"7d"}]}`
)

func TestEvaluator_FullIncrementalNestedAndEvents(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	srv, err := l.db.CreateGroup(ctx, store.GroupAll, "Servers")
	if err != nil {
		t.Fatal(err)
	}
	web := l.computer("web", srv.ID, map[string]string{"nginx": "1.22"}, "10.2.0.5/24")
	db := l.computer("db", srv.ID, map[string]string{"postgresql": "15", "openssh-server": "9.2"}, "10.9.0.5/24")
	lap := l.computer("laptop", store.GroupLostFound, map[string]string{"nginx": "1.18"}, "10.2.3.4/24")

	nginxAll := l.group("nginx anywhere", store.GroupAll, "", tplNginx)
	nginxSrv := l.group("nginx on servers", srv.ID, "", tplNginx)
	noSSH := l.group("no ssh", store.GroupAll, "", tplNoSSH)
	officeNginx := l.group("office nginx", "", nginxAll, tplOffice) // nested: filters its parent's members

	if err := l.ev.full(ctx, nil); err != nil {
		t.Fatal(err)
	}
	l.want(nginxAll, web, lap)
	l.want(nginxSrv, web) // the laptop is not under Servers
	l.want(noSSH, web, lap)
	l.want(officeNginx, web, lap)
	l.ev.seq = l.ev.currentSeq(ctx)

	// The db server installs nginx; the laptop removes it: only they change.
	l.now = l.now.Add(time.Minute)
	l.inventory(db, map[string]string{"postgresql": "15", "openssh-server": "9.2", "nginx": "1.22"}, "10.9.0.5/24")
	l.inventory(lap, map[string]string{}, "10.2.3.4/24")
	if err := l.ev.incremental(ctx); err != nil {
		t.Fatal(err)
	}
	l.want(nginxAll, web, db)
	l.want(nginxSrv, web, db)
	l.want(officeNginx, web) // db is not in the office; the laptop left the parent

	evs, err := l.db.ServerEventsAfter(ctx, 0, []string{store.EventJoinedDynamicGroup, store.EventLeftDynamicGroup}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range evs {
		count[e.Type+" "+e.SubjectID+" "+e.ComputerID]++
	}
	for _, k := range []string{
		store.EventJoinedDynamicGroup + " " + nginxAll + " " + db,
		store.EventLeftDynamicGroup + " " + nginxAll + " " + lap,
		store.EventLeftDynamicGroup + " " + officeNginx + " " + lap,
	} {
		if count[k] != 1 {
			t.Errorf("event %q recorded %d times", k, count[k])
		}
	}
	// Nothing changed: nothing to do, no events.
	before := len(evs)
	if err := l.ev.incremental(ctx); err != nil {
		t.Fatal(err)
	}
	evs, _ = l.db.ServerEventsAfter(ctx, 0, nil, 1000)
	if len(evs) != before {
		t.Fatalf("an idle pass produced %d events", len(evs)-before)
	}

	// Moving a computer out of Servers takes it out of the Servers-scoped group.
	c, _ := l.db.ComputerByID(ctx, web)
	if err := l.db.MoveComputer(ctx, web, store.GroupLostFound, c.Version); err != nil {
		t.Fatal(err)
	}
	l.ev.incremental(ctx)
	l.want(nginxSrv, db)
	// A revoked computer leaves every group.
	if err := l.db.RevokeComputer(ctx, db, l.now); err != nil {
		t.Fatal(err)
	}
	l.ev.incremental(ctx)
	l.want(nginxAll, web)
	l.want(nginxSrv)
}

func TestEvaluator_TemplateChangeAndTimeRules(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	a := l.computer("a", store.GroupLostFound, map[string]string{"nginx": "1"})
	b := l.computer("b", store.GroupLostFound, map[string]string{"apache2": "2"})
	g := l.group("g", store.GroupAll, "", tplNginx)
	l.ev.full(ctx, nil)
	l.want(g, a)
	dg, _ := l.db.DynamicGroupByID(ctx, g)
	dg.Template = `{"op":"and","rules":[{"field":"software","operator":"=","value":"apache2"}]}`
	if err := l.db.UpdateDynamicGroup(ctx, dg); err != nil {
		t.Fatal(err)
	}
	l.ev.full(ctx, []string{g})
	l.want(g, b)

	old := l.group("not seen for a week", store.GroupAll, "", tplOldSeen)
	l.db.ApplyPresence(ctx, []store.PresenceUpdate{{ComputerID: a, LastSeen: l.now}, {ComputerID: b, LastSeen: l.now.Add(-6 * 24 * time.Hour)}})
	l.ev.full(ctx, nil)
	l.want(old)
	l.now = l.now.Add(2 * 24 * time.Hour) // time passes; nothing changes in the store
	if got := l.ev.timeGroups(ctx); !slices.Contains(got, old) || slices.Contains(got, g) {
		t.Fatalf("time groups %v", got)
	}
	l.ev.full(ctx, l.ev.timeGroups(ctx))
	l.want(old, b)
}

func TestEvaluator_PreviewDoesNotSave(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	a := l.computer("a", store.GroupLostFound, map[string]string{"nginx": "1"}, "10.2.0.1/16")
	l.computer("b", store.GroupLostFound, nil, "10.3.0.1/16")
	tpl, _ := Parse([]byte(tplOffice))
	got, err := l.ev.Preview(ctx, store.GroupAll, "", tpl)
	if err != nil || !slices.Equal(got, []string{a}) {
		t.Fatalf("preview %v %v", got, err)
	}
	if evs, _ := l.db.ServerEventsAfter(ctx, 0, nil, 10); len(evs) != 0 {
		t.Fatal("preview recorded events")
	}
}

func TestEvaluator_RunPicksUpChangesWithinAnInterval(t *testing.T) {
	l := newLab(t)
	l.ev.Interval = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := l.group("g", store.GroupAll, "", tplNginx)
	done := make(chan struct{})
	go func() { l.ev.Run(ctx); close(done) }()
	a := l.computer("a", store.GroupLostFound, map[string]string{"nginx": "1"})
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(l.members(g), []string{a}) {
		if time.Now().After(deadline) {
			t.Fatalf("members %v, want [%s]", l.members(g), a)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
