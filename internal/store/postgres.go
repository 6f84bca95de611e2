package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/mamori/mamori/internal/errcode"
)

// Open opens the store named by database: a PostgreSQL URL, or empty for
// the SQLite file in dataDir.
func Open(ctx context.Context, database, dataDir string, opt Options) (*DB, error) {
	if database == "" {
		return OpenSQLite(ctx, dataDir, opt)
	}
	return OpenPostgres(ctx, database, opt)
}

// IsPostgresURL reports whether s names a PostgreSQL database
// (postgres:// or postgresql://) rather than a data directory.
func IsPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// OpenPostgres opens the PostgreSQL store at url (a libpq-style URL:
// postgres://user@host:port/db?sslmode=verify-full) and applies pending
// schema migrations. Several servers may share one database: their write
// transactions take turns (LOCK TABLE write_lock first), so they keep the
// outcome SQLite's single writer gives; migrations and starts take an
// advisory lock so servers starting together do not race.
func OpenPostgres(ctx context.Context, url string, opt Options) (*DB, error) {
	if !IsPostgresURL(url) {
		return nil, errcode.New(errcode.Invalid, "postgres: URL must start with postgres:// or postgresql://")
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the URL; the password must not reach a log.
		return nil, errcode.New(errcode.Invalid, "postgres: cannot parse the database URL")
	}
	maxConns := opt.MaxConns
	if maxConns <= 0 {
		maxConns = 8
	}
	rwCfg := cfg.Copy()
	roCfg := cfg.Copy()
	roCfg.RuntimeParams["default_transaction_read_only"] = "on"
	rw := sql.OpenDB(rebindConnector{stdlib.GetConnector(*rwCfg)})
	ro := sql.OpenDB(rebindConnector{stdlib.GetConnector(*roCfg)})
	// One writer connection per server, as on SQLite: concurrent writers
	// of one process would only conflict (a token's use count, the change
	// sequence) and be run again; servers sharing the store still do.
	rw.SetMaxOpenConns(1)
	ro.SetMaxOpenConns(maxConns)
	ro.SetMaxIdleConns(maxConns)
	ro.SetConnMaxIdleTime(5 * time.Minute)
	// Session-level advisory locks (start, leadership) hold a connection
	// of their own for as long as they last.
	locks := stdlib.OpenDB(*cfg)
	locks.SetMaxOpenConns(4)
	db := &DB{rw: rw, ro: ro, locks: locks, observe: opt.Observer, postgres: true,
		filename: fmt.Sprintf("postgres://%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)}
	if err := db.migratePostgres(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating %s: %w", db.filename, err)
	}
	return db, nil
}

// advisoryKey is the two keys of the store's advisory locks: which lock,
// and the schema's hash, so servers sharing a schema take turns and
// databases in other schemas do not wait. ($1: goose's pool does not
// rewrite "?".)
const advisoryKey = `$1::int, hashtext(current_schema())`

// migrationLock is the advisory lock servers take while migrating and
// starting.
const migrationLock = 0x6d616d6f // "mamo"

// StartupLock serialises the start of servers sharing the store (taking
// the migrations' advisory lock): the first creates what the others then
// load (CA, keys, the first admin). On SQLite it does nothing.
func (db *DB) StartupLock(ctx context.Context) (unlock func(), err error) {
	if !db.postgres {
		return func() {}, nil
	}
	conn, _, err := db.sessionLock(ctx, migrationLock, false)
	if err != nil {
		return nil, err
	}
	return func() { unlockSession(conn, migrationLock) }, nil
}

// sessionLock takes the advisory lock id on a connection of its own from
// the locks pool, which holds it until unlockSession: waiting for it, or
// with try only if it is free (ok false otherwise, the connection closed).
func (db *DB) sessionLock(ctx context.Context, id int, try bool) (conn *sql.Conn, ok bool, err error) {
	conn, err = db.locks.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	if try {
		err = conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(`+advisoryKey+`)`, id).Scan(&ok)
	} else {
		_, err = conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+advisoryKey+`)`, id)
		ok = err == nil
	}
	if !ok {
		conn.Close()
		return nil, false, err
	}
	return conn, true, nil
}

func unlockSession(conn *sql.Conn, id int) {
	conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(`+advisoryKey+`)`, id)
	conn.Close()
}

// migratePostgres applies migrations under the start lock. goose runs on
// the locks pool, whose connections are plain pgx ones: its version table
// has a real boolean column, which the store's connections would pass as
// an integer.
func (db *DB) migratePostgres(ctx context.Context) error {
	unlock, err := db.StartupLock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return db.migrate(ctx, db.locks)
}

// rebindConnector gives pgx's database/sql driver the store's SQL, whose
// placeholders are "?" (SQLite's), rewritten to PostgreSQL's $1, $2, ...,
// and its flags as the 0/1 integers both schemas store them as.
type rebindConnector struct{ driver.Connector }

func (c rebindConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &rebindConn{conn.(*stdlib.Conn)}, nil
}

// rebindConn embeds pgx's connection so every optional driver interface
// it implements (transactions, named values, session reset) stays visible
// to database/sql; only the methods taking SQL are wrapped.
type rebindConn struct{ *stdlib.Conn }

func (c *rebindConn) Prepare(query string) (driver.Stmt, error) {
	return c.Conn.Prepare(rebind(query))
}

func (c *rebindConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.PrepareContext(ctx, rebind(query))
}

func (c *rebindConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.ExecContext(ctx, rebind(query), args)
}

func (c *rebindConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.QueryContext(ctx, rebind(query), args)
}

// CheckNamedValue passes a Go bool as 0 or 1: flags are integer columns
// in both dialects, and pgx will not encode a bool into BIGINT.
func (c *rebindConn) CheckNamedValue(nv *driver.NamedValue) error {
	if b, ok := nv.Value.(bool); ok {
		nv.Value = int64(0)
		if b {
			nv.Value = int64(1)
		}
		return nil
	}
	return c.Conn.CheckNamedValue(nv)
}

// rebind rewrites each "?" placeholder of query to $1, $2, ... in order,
// leaving question marks inside string literals, quoted identifiers and
// comments alone.
func rebind(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'' || c == '"':
			end := strings.IndexByte(query[i+1:], c)
			if end < 0 {
				b.WriteString(query[i:])
				return b.String()
			}
			b.WriteString(query[i : i+end+2])
			i += end + 1
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			end := strings.IndexByte(query[i:], '\n')
			if end < 0 {
				b.WriteString(query[i:])
				return b.String()
			}
			b.WriteString(query[i : i+end+1])
			i += end
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// pgRetryable reports whether err is PostgreSQL telling a transaction it
// lost to a concurrent one (serialization failure, deadlock): running it
// again is the documented answer.
func pgRetryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// maxTxAttempts bounds how often a write transaction is run when
// PostgreSQL keeps reporting conflicts (with retryPause, about 5 s).
const maxTxAttempts = 60

// retryPause is the jittered wait before attempt (1-based) of a conflicted
// transaction: 1–2 ms growing to at most 50–100 ms.
func retryPause(attempt int) time.Duration {
	d := min(time.Millisecond<<min(attempt, 6), 50*time.Millisecond)
	return d + rand.N(d)
}

// runTx runs fn in a write transaction and commits when it returns nil; on
// PostgreSQL a transaction that lost to a concurrent one is run again, so
// fn must not keep state across calls other than its return.
func (db *DB) runTx(ctx context.Context, fn func(*sql.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := db.txOnce(ctx, fn)
		if !db.postgres || !pgRetryable(err) || attempt == maxTxAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(retryPause(attempt)):
		}
	}
}

func (db *DB) txOnce(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.rw.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if db.postgres {
		// Writers take turns across servers (see migration 00009): the
		// lock comes before the first query, so the snapshot is taken
		// once it is held.
		if _, err := tx.ExecContext(ctx, `LOCK TABLE write_lock IN EXCLUSIVE MODE`); err != nil {
			tx.Rollback()
			return err
		}
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// leaderLock is the advisory lock the leading server holds.
const leaderLock = 0x6c656164 // "lead"

// Lead blocks until this process leads the servers sharing the store, or
// ctx ends. The leader runs what must run once (trigger firing, dynamic
// groups, reaping dead servers). lost is closed when leadership ends:
// the connection holding it broke, or release was called. On SQLite the
// process leads at once: nothing else can share the file.
func (db *DB) Lead(ctx context.Context, check time.Duration) (lost <-chan struct{}, release func(), err error) {
	done := make(chan struct{})
	if !db.postgres {
		var once sync.Once
		return done, func() { once.Do(func() { close(done) }) }, nil
	}
	var conn *sql.Conn
	for {
		c, ok, err := db.sessionLock(ctx, leaderLock, true)
		if ok {
			conn = c
			break
		}
		if err != nil && ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(check):
		}
	}
	stop := make(chan struct{})
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(stop)
			unlockSession(conn, leaderLock)
		})
	}
	go func() {
		defer close(done)
		t := time.NewTicker(check)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			cctx, cancel := context.WithTimeout(context.Background(), check)
			err := conn.PingContext(cctx)
			cancel()
			if err != nil {
				// The session, and the lock with it, is gone.
				conn.Raw(func(any) error { return driver.ErrBadConn })
				go release()
				return
			}
		}
	}()
	return done, release, nil
}
