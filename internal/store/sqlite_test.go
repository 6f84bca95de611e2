package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/store/storetest"
)

func openSQLite(t testing.TB, dir string, opt store.Options) *store.DB {
	t.Helper()
	db, err := store.OpenSQLite(t.Context(), dir, opt)
	if err != nil {
		t.Fatalf("OpenSQLite(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

func TestSQLite_Conformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.DB {
		return openSQLite(t, t.TempDir(), store.Options{})
	})
}

func TestOpenSQLite_ReopenKeepsDataAndSchema(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	db, err := store.OpenSQLite(ctx, dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	version := db.SchemaVersion()
	if version < 1 {
		t.Fatalf("SchemaVersion = %d, want >= 1", version)
	}
	g, err := db.CreateGroup(ctx, store.GroupAll, "Servers")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateUser(ctx, &store.User{ID: "u1", Username: "alice", PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	tok := storetest.NewToken(t, db, g.ID, 3)
	c := storetest.Enroll(t, db, tok, storetest.T0, store.Computer{Name: "pc"})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	for i := range 2 { // reopening twice: migrations are idempotent
		db := openSQLite(t, dir, store.Options{})
		if v := db.SchemaVersion(); v != version {
			t.Fatalf("reopen %d: SchemaVersion = %d, want %d", i, v, version)
		}
		tree, err := db.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(tree.List()); n != 3 {
			t.Fatalf("reopen %d: %d groups, want All, Lost & Found and Servers once each", i, n)
		}
		if got, err := tree.Resolve("Servers"); err != nil || got.ID != g.ID {
			t.Fatalf("reopen %d: Resolve(Servers) = %+v, %v", i, got, err)
		}
		if _, err := db.UserByName(ctx, "alice"); err != nil {
			t.Fatalf("reopen %d: user lost: %v", i, err)
		}
		if got, err := db.EnrollmentTokenByID(ctx, tok.ID); err != nil || got.Uses != 1 {
			t.Fatalf("reopen %d: token = %+v, %v; want uses 1", i, got, err)
		}
		if got, err := db.ComputerByID(ctx, c.ID); err != nil || got.GroupID != g.ID {
			t.Fatalf("reopen %d: computer = %+v, %v", i, got, err)
		}
	}
}

func TestOpenSQLite_SynchronousOption(t *testing.T) {
	for _, tc := range []struct {
		sync string
		want errcode.Code
	}{
		{"", ""},
		{"FULL", ""},
		{"NORMAL", ""},
		{"normal", ""},
		{"OFF", errcode.Invalid},
		{"EXTRA", errcode.Invalid},
		{"FULL; DROP TABLE users", errcode.Invalid},
	} {
		t.Run(fmt.Sprintf("%q", tc.sync), func(t *testing.T) {
			db, err := store.OpenSQLite(t.Context(), t.TempDir(), store.Options{Synchronous: tc.sync})
			if db != nil {
				defer db.Close()
			}
			if got := errcode.Of(err); got != tc.want {
				t.Fatalf("OpenSQLite(Synchronous %q) error %v, want code %q", tc.sync, err, tc.want)
			}
			if tc.want == "" {
				if err := db.Ping(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestOpenSQLite_ObserverSeesOperationsAndErrors(t *testing.T) {
	type call struct {
		op   string
		code errcode.Code
	}
	var mu sync.Mutex
	var calls []call
	db := openSQLite(t, t.TempDir(), store.Options{Observer: func(op string, d time.Duration, err error) {
		if d < 0 {
			t.Errorf("%s: negative duration %v", op, d)
		}
		mu.Lock()
		calls = append(calls, call{op, errcode.Of(err)})
		mu.Unlock()
	}})
	if _, err := db.CreateGroup(t.Context(), store.GroupAll, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateGroup(t.Context(), store.GroupAll, "x"); errcode.Of(err) != errcode.Conflict {
		t.Fatalf("duplicate group: %v", err)
	}
	if _, err := db.ComputerByID(t.Context(), "nope"); errcode.Of(err) != errcode.NotFound {
		t.Fatalf("unknown computer: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []call{{"create_group", ""}, {"create_group", errcode.Conflict}, {"computer_by_id", errcode.NotFound}}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("observed %v, want %v", calls, want)
	}
}

// TestSQLite_SecondHandleWritesConcurrently is `mamori token create` writing
// while the server runs: two *store.DB on one directory, both writing at
// once, must never fail with "database is locked" or lose a write.
func TestSQLite_SecondHandleWritesConcurrently(t *testing.T) {
	dir := t.TempDir()
	server := openSQLite(t, dir, store.Options{})
	cli := openSQLite(t, dir, store.Options{})
	tok := storetest.NewToken(t, server, store.GroupLostFound, 0)
	c := storetest.Enroll(t, server, tok, storetest.T0, store.Computer{Name: "pc"})

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	var tokens, events atomic.Int64
	var wg sync.WaitGroup
	for h, db := range []*store.DB{server, cli} {
		for w := range 2 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					id := fmt.Sprintf("h%d-w%d-%d", h, w, i)
					err := db.CreateEnrollmentToken(t.Context(), &store.EnrollmentToken{ID: id, SecretHash: "hash-" + id,
						GroupID: store.GroupLostFound, ExpiresAt: storetest.T0.Add(time.Hour), CreatedBy: "test", CreatedAt: storetest.T0})
					if err != nil {
						t.Errorf("handle %d: CreateEnrollmentToken: %v", h, err)
						return
					}
					tokens.Add(1)
					n, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: storetest.T0,
						Sections: []store.InventorySection{{Section: "s", Hash: []byte(id), Data: "{}"}},
						Events:   []store.Event{{ID: id, Type: "test", OccurredAt: storetest.T0, Data: "{}"}}})
					if err != nil {
						t.Errorf("handle %d: ApplyCheckIn: %v", h, err)
						return
					}
					events.Add(int64(n))
					if _, _, err := db.ListComputers(t.Context(), store.ComputerFilter{}); err != nil {
						t.Errorf("handle %d: ListComputers: %v", h, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if tokens.Load() < 4 {
		t.Fatalf("only %d tokens written in a second", tokens.Load())
	}
	for name, db := range map[string]*store.DB{"server": server, "cli": cli} {
		all, err := db.ListEnrollmentTokens(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(all)) != tokens.Load()+1 {
			t.Errorf("%s handle sees %d tokens, want %d", name, len(all), tokens.Load()+1)
		}
		_, total, err := db.ComputerEvents(t.Context(), c.ID, store.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if int64(total) != events.Load() || events.Load() != tokens.Load() {
			t.Errorf("%s handle sees %d events, inserted %d, want %d", name, total, events.Load(), tokens.Load())
		}
	}
}

func TestSQLite_ConcurrentEnrollAcrossHandlesNeverExceedsUses(t *testing.T) {
	dir := t.TempDir()
	a := openSQLite(t, dir, store.Options{})
	b := openSQLite(t, dir, store.Options{})
	tok := storetest.NewToken(t, a, store.GroupLostFound, 5)
	storetest.ConcurrentEnroll(t, []*store.DB{a, b}, tok, 20, 5)
}

func TestApplyCheckIns_RecordsTheAgentsConfigurationReport(t *testing.T) {
	db := openSQLite(t, t.TempDir(), store.Options{})
	ctx := t.Context()
	tok := storetest.NewToken(t, db, store.GroupAll, 3)
	c := storetest.Enroll(t, db, tok, storetest.T0, store.Computer{Name: "pc"})
	if err := db.SetDesiredConfig(ctx, map[string]string{c.ID: "v2"}); err != nil {
		t.Fatal(err)
	}
	// A check-in without a report leaves the state alone.
	if _, err := db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c.ID, Now: storetest.T0}); err != nil {
		t.Fatal(err)
	}
	if st, _ := db.ComputerConfigState(ctx, c.ID); st.Applied != "" || !st.ReportedAt.IsZero() {
		t.Fatalf("state without a report %+v", st)
	}
	at := storetest.T0.Add(time.Minute)
	if _, err := db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c.ID, Now: at, Config: &store.ConfigReport{Applied: "v1", Error: "configuration v2 refused: agent.servers: bad"}}); err != nil {
		t.Fatal(err)
	}
	st, err := db.ComputerConfigState(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Desired != "v2" || st.Applied != "v1" || st.Error == "" || !st.ReportedAt.Equal(at) {
		t.Fatalf("state %+v", st)
	}
	if _, err := db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c.ID, Now: at, Config: &store.ConfigReport{Applied: "v2"}}); err != nil {
		t.Fatal(err)
	}
	if st, _ := db.ComputerConfigState(ctx, c.ID); st.Applied != "v2" || st.Error != "" {
		t.Fatalf("state after applying %+v", st)
	}
}
