package store_test

import (
	"context"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/store/storetest"
)

func TestPostgres_Conformance(t *testing.T) {
	base := storetest.PostgresURL(t)
	storetest.Run(t, func(t *testing.T) *store.DB {
		return openPostgres(t, storetest.PostgresSchema(t, base))
	})
}

func openPostgres(t testing.TB, u string) *store.DB {
	t.Helper()
	db, err := store.OpenPostgres(t.Context(), u, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// Two servers sharing one PostgreSQL database race for the last uses of an
// enrollment token: their transactions take turns, so exactly the allowed
// number enroll and the rest are refused cleanly.
func TestPostgres_TwoServersShareOneDatabase(t *testing.T) {
	u := storetest.PostgresSchema(t, storetest.PostgresURL(t))
	a, b := openPostgres(t, u), openPostgres(t, u)
	if a.SchemaVersion() != b.SchemaVersion() || a.SchemaVersion() < 1 {
		t.Fatalf("schema versions %d and %d, want equal and >= 1", a.SchemaVersion(), b.SchemaVersion())
	}
	const workers, uses = 24, 7
	tok := storetest.NewToken(t, a, store.GroupLostFound, uses)
	storetest.ConcurrentEnroll(t, []*store.DB{a, b}, tok, workers, uses)
}

// Servers started together on an empty database migrate it once.
func TestPostgres_ConcurrentFirstStartsMigrateOnce(t *testing.T) {
	u := storetest.PostgresSchema(t, storetest.PostgresURL(t))
	const servers = 4
	dbs := make([]*store.DB, servers)
	errs := make([]error, servers)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() {
			dbs[i], errs[i] = store.OpenPostgres(t.Context(), u, store.Options{MaxConns: 2})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("server %d: OpenPostgres: %v", i, err)
		}
		t.Cleanup(func() { dbs[i].Close() })
		if dbs[i].SchemaVersion() != dbs[0].SchemaVersion() {
			t.Errorf("server %d schema version %d, server 0 %d", i, dbs[i].SchemaVersion(), dbs[0].SchemaVersion())
		}
	}
	tree, err := dbs[0].Groups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if groups := tree.List(); len(groups) != 2 { // the seeded All and Lost & Found, inserted once
		t.Errorf("%d groups after concurrent migrations, want the 2 seeded ones", len(groups))
	}
}

func TestOpenPostgres_RefusesBadURLsWithoutEchoingSecrets(t *testing.T) {
	for _, tc := range []struct{ name, url string }{
		{"not postgres", "mysql://u:hunter2secret@127.0.0.1/db"},
		{"data directory", "/var/lib/mamori"},
		{"unparsable", "postgres://u:hunter2secret@127.0.0.1:notaport/db"},
		{"bad option", "postgres://u:hunter2secret@127.0.0.1/db?sslmode=sometimes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := store.OpenPostgres(t.Context(), tc.url, store.Options{})
			storetest.WantCode(t, err, errcode.Invalid)
			if strings.Contains(err.Error(), "hunter2secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestOpenPostgres_UnreachableServerFailsWithoutEchoingSecrets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = store.OpenPostgres(t.Context(), "postgres://u:hunter2secret@"+addr+"/db?connect_timeout=5&sslmode=disable", store.Options{})
	if err == nil {
		t.Fatal("OpenPostgres succeeded with nothing listening")
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Errorf("error %q shows the password", err)
	}
}

// The PostgreSQL migrations are a hand-kept copy of SQLite's: both must
// give the same tables with the same columns in the same order.
func TestPostgres_SchemaMatchesSQLite(t *testing.T) {
	pg := openPostgres(t, storetest.PostgresSchema(t, storetest.PostgresURL(t)))
	lite := openSQLite(t, t.TempDir(), store.Options{})
	if pg.SchemaVersion() != lite.SchemaVersion() {
		t.Errorf("schema version: PostgreSQL %d, SQLite %d", pg.SchemaVersion(), lite.SchemaVersion())
	}
	pc, err := pg.Columns(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := lite.Columns(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	delete(pc, "goose_db_version") // goose's own table differs by dialect
	delete(sc, "goose_db_version")
	if len(sc) < 20 {
		t.Fatalf("SQLite has %d tables, expected the full schema", len(sc))
	}
	for table, cols := range sc {
		if got := pc[table]; !slices.Equal(got, cols) {
			t.Errorf("table %s:\n  SQLite     %v\n  PostgreSQL %v", table, cols, got)
		}
	}
	for table := range pc {
		if _, ok := sc[table]; !ok {
			t.Errorf("table %s exists only in PostgreSQL", table)
		}
	}
}

// One server leads at a time; when it lets go, a waiting one takes over.
func TestPostgres_OneLeaderAtATime(t *testing.T) {
	u := storetest.PostgresSchema(t, storetest.PostgresURL(t))
	a, b := openPostgres(t, u), openPostgres(t, u)
	lostA, releaseA, err := a.Lead(t.Context(), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, _, err := b.Lead(ctx, 50*time.Millisecond); err == nil {
		t.Fatal("a second server took the lead while the first held it")
	}
	got := make(chan error, 1)
	go func() {
		_, release, err := b.Lead(t.Context(), 50*time.Millisecond)
		if err == nil {
			defer release()
		}
		got <- err
	}()
	releaseA()
	select {
	case <-lostA:
	case <-time.After(5 * time.Second):
		t.Fatal("release did not end the first leadership")
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("the waiting server: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting server did not take the lead after the first let go")
	}
}

// A leader whose database session ends (here: terminated by an
// administrator) learns it lost the lead.
func TestPostgres_LeaderLearnsItsSessionEnded(t *testing.T) {
	base := storetest.PostgresURL(t)
	u := storetest.PostgresSchema(t, base)
	a := openPostgres(t, u)
	lost, release, err := a.Lead(t.Context(), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	conn, err := pgx.Connect(t.Context(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 2 AND objid = hashtext($1)::oid`, pu.Query().Get("search_path")).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminated %d sessions holding this schema's advisory locks, want the leader's 1 (%v)", n, err)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("leadership not reported lost after the session was terminated")
	}
}
