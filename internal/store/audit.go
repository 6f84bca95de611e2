package store

import (
	"context"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// AuditEntry is one record of the audit log.
type AuditEntry struct {
	Seq        int64
	At         time.Time
	UserID     string
	Username   string
	Via        string // session, api_token, cli, agent, system
	RemoteAddr string
	Domain     string
	Action     string
	ObjectID   string
	ObjectName string
	Diff       string // compact JSON: {"field":[before, after], ...}
	Result     string // success, failure
	Detail     string
}

// Audit results.
const (
	AuditSuccess = "success"
	AuditFailure = "failure"
)

// AppendAudit adds an entry. The log is append-only: nothing updates or
// deletes entries except DeleteAuditBefore (retention).
func (db *DB) AppendAudit(ctx context.Context, e *AuditEntry) (err error) {
	defer db.track("append_audit", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `INSERT INTO audit_log (at, user_id, username, via, remote_addr, domain, action, object_id, object_name, diff, result, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		ms(e.At), e.UserID, clip(e.Username, 256), e.Via, clip(e.RemoteAddr, 64), e.Domain, e.Action, clip(e.ObjectID, 256),
		clip(e.ObjectName, 512), clip(e.Diff, 16<<10), e.Result, clip(e.Detail, 1024))
	return err
}

// AuditFilter selects audit entries; zero values select all. Newest first.
type AuditFilter struct {
	Username string
	Domain   string
	Action   string
	Result   string
	Since    time.Time
	Until    time.Time
	Limit    int // at most MaxLimit; ListAuditAll ignores it
	Offset   int
}

func (f AuditFilter) where() (string, []any, error) {
	var w []string
	var args []any
	if f.Username != "" {
		w, args = append(w, "username = ?"), append(args, f.Username)
	}
	if f.Domain != "" {
		w, args = append(w, "domain = ?"), append(args, f.Domain)
	}
	if f.Action != "" {
		w, args = append(w, "action = ?"), append(args, f.Action)
	}
	switch f.Result {
	case "":
	case AuditSuccess, AuditFailure:
		w, args = append(w, "result = ?"), append(args, f.Result)
	default:
		return "", nil, errcode.New(errcode.Invalid, "result must be success or failure")
	}
	if !f.Since.IsZero() {
		w, args = append(w, "at >= ?"), append(args, ms(f.Since))
	}
	if !f.Until.IsZero() {
		w, args = append(w, "at < ?"), append(args, ms(f.Until))
	}
	if len(w) == 0 {
		return "", args, nil
	}
	return " WHERE " + strings.Join(w, " AND "), args, nil
}

// ListAudit returns a page of entries and the total matching.
func (db *DB) ListAudit(ctx context.Context, f AuditFilter) (_ []*AuditEntry, total int, err error) {
	defer db.track("list_audit", time.Now(), &err)
	cond, args, err := f.where()
	if err != nil {
		return nil, 0, err
	}
	if err := db.ro.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_log`+cond, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	limit, offset := pageBounds(f.Limit, f.Offset)
	out, err := db.auditRows(ctx, `SELECT seq, at, user_id, username, via, remote_addr, domain, action, object_id, object_name, diff, result, detail
		FROM audit_log`+cond+` ORDER BY seq DESC LIMIT ? OFFSET ?`, append(args, limit, offset), nil)
	return out, total, err
}

// EachAudit calls fn for every matching entry, newest first (CSV export).
func (db *DB) EachAudit(ctx context.Context, f AuditFilter, fn func(*AuditEntry) error) (err error) {
	defer db.track("each_audit", time.Now(), &err)
	cond, args, err := f.where()
	if err != nil {
		return err
	}
	_, err = db.auditRows(ctx, `SELECT seq, at, user_id, username, via, remote_addr, domain, action, object_id, object_name, diff, result, detail
		FROM audit_log`+cond+` ORDER BY seq DESC`, args, fn)
	return err
}

func (db *DB) auditRows(ctx context.Context, q string, args []any, fn func(*AuditEntry) error) ([]*AuditEntry, error) {
	rows, err := db.ro.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*AuditEntry
	for rows.Next() {
		e := &AuditEntry{}
		var at int64
		if err := rows.Scan(&e.Seq, &at, &e.UserID, &e.Username, &e.Via, &e.RemoteAddr, &e.Domain, &e.Action, &e.ObjectID,
			&e.ObjectName, &e.Diff, &e.Result, &e.Detail); err != nil {
			return nil, err
		}
		e.At = fromMS(at)
		if fn != nil {
			if err := fn(e); err != nil {
				return nil, err
			}
			continue
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteAuditBefore removes entries older than t (the retention setting is
// the only thing that deletes audit entries).
func (db *DB) DeleteAuditBefore(ctx context.Context, t time.Time) (n int64, err error) {
	defer db.track("delete_audit_before", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `DELETE FROM audit_log WHERE at < ?`, ms(t))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
