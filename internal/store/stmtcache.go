package store

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxCachedStatements bounds the statement cache: queries built with a
// variable number of placeholders must not grow it without end.
const maxCachedStatements = 128

// stmtCache keeps prepared statements of the read pool for the queries run
// on every agent session (authentication, section hashes, pending task
// runs): SQLite parses and plans a statement each time it is prepared, and
// with a long column list that was a sixth of the server's CPU in a
// reconnect storm. database/sql prepares a cached *sql.Stmt once on each
// pooled connection it runs on.
type stmtCache struct {
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

// stmt returns the prepared statement for query on pool, preparing it the
// first time; ok is false when the cache is full (the caller then runs the
// query unprepared).
func (c *stmtCache) stmt(ctx context.Context, pool *sql.DB, query string) (_ *sql.Stmt, ok bool, err error) {
	c.mu.Lock()
	s, found := c.stmts[query]
	full := len(c.stmts) >= maxCachedStatements
	c.mu.Unlock()
	if found {
		return s, true, nil
	}
	if full {
		return nil, false, nil
	}
	// Prepared outside the lock: preparing may wait for a connection of
	// the pool, and cached lookups must not wait behind it.
	s, err = pool.PrepareContext(ctx, query)
	if err != nil {
		return nil, false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if other, found := c.stmts[query]; found {
		s.Close() // prepared twice at once: keep the first
		return other, true, nil
	}
	if len(c.stmts) >= maxCachedStatements {
		s.Close()
		return nil, false, nil
	}
	if c.stmts == nil {
		c.stmts = map[string]*sql.Stmt{}
	}
	c.stmts[query] = s
	return s, true, nil
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.Close())
		delete(c.stmts, q)
	}
	return errors.Join(errs...)
}

// queryRO runs a read query with a cached prepared statement.
func (db *DB) queryRO(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s, ok, err := db.roStmts.stmt(ctx, db.ro, query)
	if err != nil {
		return nil, err
	}
	if !ok {
		return db.ro.QueryContext(ctx, query, args...)
	}
	return s.QueryContext(ctx, args...)
}

// queryRowRO is queryRO for one row.
func (db *DB) queryRowRO(ctx context.Context, query string, args ...any) *sql.Row {
	s, ok, err := db.roStmts.stmt(ctx, db.ro, query)
	if err != nil || !ok {
		// An error to prepare shows again, as the row's error.
		return db.ro.QueryRowContext(ctx, query, args...)
	}
	return s.QueryRowContext(ctx, args...)
}
