package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresURL returns the URL of the test PostgreSQL server, from
// MAMORI_TEST_POSTGRES (scripts/with-postgres.sh starts a private server
// and sets it; make test runs under it). Without it the test is skipped,
// or fails when MAMORI_REQUIRE_TOOLS is set (as in CI).
func PostgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("MAMORI_TEST_POSTGRES")
	if u == "" {
		msg := "MAMORI_TEST_POSTGRES not set (run under scripts/with-postgres.sh, as make test does)"
		if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
			t.Fatal(msg + " (MAMORI_REQUIRE_TOOLS is set)")
		}
		t.Skip(msg)
	}
	return u
}

// PostgresSchema creates an empty schema of its own in the database at
// base and returns a URL whose connections work in it, so parallel tests
// each see a fresh database; the schema is dropped when the test ends.
func PostgresSchema(t testing.TB, base string) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	exec := func(ctx context.Context, sql string) error {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec(t.Context(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("creating schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
