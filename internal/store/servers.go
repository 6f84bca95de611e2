package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// RegisterServer records a running server (id is new at each start) and
// its first heartbeat.
func (db *DB) RegisterServer(ctx context.Context, id, name string, now time.Time) (err error) {
	defer db.track("register_server", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `INSERT INTO servers (id, name, started_at, seen_at) VALUES (?, ?, ?, ?)`, id, name, ms(now), ms(now))
	if isUniqueViolation(err) {
		return errcode.New(errcode.Conflict, "server %s is already registered", id)
	}
	return err
}

// HeartbeatServer records that a server is alive at now. not_found: the
// server was taken for dead (ReapServers) and its computers marked
// offline; it must register again.
func (db *DB) HeartbeatServer(ctx context.Context, id string, now time.Time) (err error) {
	defer db.track("heartbeat_server", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `UPDATE servers SET seen_at = ? WHERE id = ?`, ms(now), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errcode.New(errcode.NotFound, "server %s is not registered", id)
	}
	return nil
}

// ReapServers forgets the servers last seen before staleBefore and marks
// offline every computer no live server owns (it was connected to a
// server that died). It returns how many computers went offline.
func (db *DB) ReapServers(ctx context.Context, staleBefore time.Time) (offline int64, err error) {
	defer db.track("reap_servers", time.Now(), &err)
	err = db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM servers WHERE seen_at < ?`, ms(staleBefore)); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE computers SET status = 'offline', connected_since = NULL
			WHERE status <> 'offline' AND server_id NOT IN (SELECT id FROM servers)`)
		if err != nil {
			return err
		}
		offline, err = res.RowsAffected()
		return err
	})
	return offline, err
}

// RemoveServer forgets a server that stopped (after it took its computers
// offline).
func (db *DB) RemoveServer(ctx context.Context, id string) (err error) {
	defer db.track("remove_server", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `DELETE FROM servers WHERE id = ?`, id)
	return err
}

// Signal is a request from one server to the others.
type Signal struct {
	Seq    int64
	At     time.Time
	Origin string // the server that posted it
	Kind   string
	Data   string // kind-specific (JSON)
}

// MaxSignalBytes bounds a signal's data (a wake-up of 100,000 computers
// is about 4 MB of ids).
const MaxSignalBytes = 16 << 20

// PostSignal records a signal for the other servers.
func (db *DB) PostSignal(ctx context.Context, s *Signal) (err error) {
	defer db.track("post_signal", time.Now(), &err)
	if len(s.Data) > MaxSignalBytes {
		return errcode.New(errcode.Invalid, "signal of %d bytes exceeds %d", len(s.Data), MaxSignalBytes)
	}
	_, err = db.rw.ExecContext(ctx, `INSERT INTO server_signals (at, origin, kind, data) VALUES (?, ?, ?, ?)`, ms(s.At), s.Origin, s.Kind, s.Data)
	return err
}

// SignalsSince returns the signals posted at or after since, oldest
// first, without their data (see SignalData). Sequence numbers may commit
// out of order on PostgreSQL, so readers follow time, not sequence: they
// read a window and skip what they have seen.
func (db *DB) SignalsSince(ctx context.Context, since time.Time) (_ []Signal, err error) {
	defer db.track("signals_since", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT seq, at, origin, kind FROM server_signals WHERE at >= ? ORDER BY seq`, ms(since))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Signal
	for rows.Next() {
		var s Signal
		var at int64
		if err := rows.Scan(&s.Seq, &at, &s.Origin, &s.Kind); err != nil {
			return nil, err
		}
		s.At = fromMS(at)
		out = append(out, s)
	}
	return out, rows.Err()
}

// SignalData returns a signal's data.
func (db *DB) SignalData(ctx context.Context, seq int64) (data string, err error) {
	defer db.track("signal_data", time.Now(), &err)
	err = db.ro.QueryRowContext(ctx, `SELECT data FROM server_signals WHERE seq = ?`, seq).Scan(&data)
	return data, notFound(err, "signal %d not found", seq)
}

// DeleteSignalsBefore removes signals older than t.
func (db *DB) DeleteSignalsBefore(ctx context.Context, t time.Time) (n int64, err error) {
	defer db.track("delete_signals", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `DELETE FROM server_signals WHERE at < ?`, ms(t))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// OnlineElsewhere returns the computers online on a server other than
// serverID (servers sharing a PostgreSQL store), as a set.
func (db *DB) OnlineElsewhere(ctx context.Context, serverID string) (_ map[string]bool, err error) {
	defer db.track("online_elsewhere", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT id FROM computers WHERE status = 'online' AND server_id <> ?`, serverID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// Shared reports whether other servers may share this store
// (PostgreSQL): they then coordinate through servers and server_signals.
func (db *DB) Shared() bool { return db.postgres }
