// Package store is the server's persistent state behind one SQL
// implementation. OpenSQLite opens the embedded default (a single file in the
// data directory, WAL mode); OpenPostgres opens a PostgreSQL database, which
// several servers can share. The SQL is kept to what both speak ("?"
// placeholders are rewritten for PostgreSQL), each dialect has its own
// migrations with the same versions, and both pass the same conformance
// tests (storetest).
//
// Consumers declare the few methods they need as small interfaces next to
// their code; *DB implements them all. Errors carry errcode codes: not_found
// for a missing row, conflict for a unique violation; anything else is
// internal.
//
// Lifecycle: OpenSQLite or OpenPostgres (applies migrations) → use → Close.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/mamori/mamori/internal/errcode"
)

//go:embed migrations
var migrations embed.FS

// Observer receives the duration and outcome of every store operation (for
// metrics). op is a short stable name such as "apply_check_in".
type Observer func(op string, d time.Duration, err error)

// DB is the store.
type DB struct {
	rw       *sql.DB // writer: one connection, so SQLite never sees competing writers from this process
	ro       *sql.DB // readers
	observe  Observer
	version  int64
	filename string
	roStmts  stmtCache
	postgres bool    // the PostgreSQL dialect (OpenPostgres)
	locks    *sql.DB // PostgreSQL: connections holding advisory locks
}

// Options tune OpenSQLite and OpenPostgres.
type Options struct {
	// Observer, if set, is called after every operation.
	Observer Observer
	// Synchronous is SQLite's synchronous pragma: "FULL" (default; a commit
	// survives power loss, which the "write before acknowledge" rule needs)
	// or "NORMAL" (survives process crashes only). SQLite only.
	Synchronous string
	// MaxConns bounds PostgreSQL's pool of read connections; default 8
	// (writes go through one connection). PostgreSQL only.
	MaxConns int
}

// FileName is the database file inside a data directory.
const FileName = "mamori.db"

// OpenSQLite opens (creating if needed) the SQLite store in dir and applies
// pending schema migrations.
func OpenSQLite(ctx context.Context, dir string, opt Options) (*DB, error) {
	sync := strings.ToUpper(opt.Synchronous)
	if sync == "" {
		sync = "FULL"
	}
	if sync != "FULL" && sync != "NORMAL" {
		return nil, errcode.New(errcode.Invalid, "synchronous must be FULL or NORMAL")
	}
	path := filepath.Join(dir, FileName)
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(" + sync + ")"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	rw, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	rw.SetMaxOpenConns(1)
	rw.SetConnMaxIdleTime(0)
	q.Set("_txlock", "deferred")
	q.Add("_pragma", "query_only(1)")
	ro, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		rw.Close()
		return nil, err
	}
	ro.SetMaxOpenConns(max(4, runtime.NumCPU()*2))
	db := &DB{rw: rw, ro: ro, observe: opt.Observer, filename: path}
	if err := db.migrate(ctx, db.rw); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating %s: %w", path, err)
	}
	return db, nil
}

func (db *DB) migrate(ctx context.Context, pool *sql.DB) error {
	dir, dialect := "migrations/sqlite", goose.DialectSQLite3
	if db.postgres {
		dir, dialect = "migrations/postgres", goose.DialectPostgres
	}
	sub, err := fs.Sub(migrations, dir)
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(dialect, pool, sub)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return err
	}
	db.version, err = p.GetDBVersion(ctx)
	return err
}

// Location is where the store lives, for logs: the SQLite file, or the
// PostgreSQL host, port and database (never the password).
func (db *DB) Location() string { return db.filename }

// SchemaVersion is the schema version recorded in the database.
func (db *DB) SchemaVersion() int64 { return db.version }

// Ping checks that the database answers (for readiness).
func (db *DB) Ping(ctx context.Context) error {
	var one int
	return db.ro.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// Close closes the store.
func (db *DB) Close() error {
	errs := []error{db.roStmts.close(), db.ro.Close(), db.rw.Close()}
	if db.locks != nil {
		errs = append(errs, db.locks.Close())
	}
	return errors.Join(errs...)
}

func (db *DB) track(op string, start time.Time, err *error) {
	if db.observe != nil {
		db.observe(op, time.Since(start), *err)
	}
}

// tx runs fn in a write transaction and commits when it returns nil (see
// runTx: fn may run more than once on PostgreSQL).
func (db *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	return db.runTx(ctx, fn)
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

func nullMS(t time.Time) sql.NullInt64 {
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: !t.IsZero()}
}

func fromNullMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMS(v.Int64)
}

func notFound(err error, format string, args ...any) error {
	if errors.Is(err, sql.ErrNoRows) {
		return errcode.New(errcode.NotFound, format, args...)
	}
	return err
}
