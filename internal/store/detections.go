package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/errcode"
)

// DetectionEventType is the agent event a detection arrives as; such events
// are also indexed in the detections table when stored.
const DetectionEventType = "detection.found"

// Detection states.
const (
	DetectionUnresolved = "unresolved"
	DetectionResolved   = "resolved"
)

// Detection is one thing the protection module found.
type Detection struct {
	ID            string
	ComputerID    string
	OccurredAt    time.Time
	ReceivedAt    time.Time
	Signature     string
	Path          string
	Kind          string
	Action        string
	SHA256        string
	EngineVersion int64
	Data          string // the event's JSON
	State         string
	ResolvedBy    string
	ResolvedAt    time.Time
	// Occurrences counts the times it was found while unresolved (1 the
	// first time); LastSeenAt is when it was last found.
	Occurrences int64
	LastSeenAt  time.Time
}

// detectionFields is what the store reads from a detection event.
type detectionFields struct {
	Signature     string `json:"signature"`
	Path          string `json:"path"`
	Kind          string `json:"kind"`
	Action        string `json:"action"`
	SHA256        string `json:"sha256"`
	EngineVersion int64  `json:"engine_version"`
}

// indexDetection inserts the detection row of a detection.found event (in
// the event's transaction). Events without a signature and path are kept as
// events only. The same find (computer, signature, path, content) while an
// earlier one is unresolved counts on that one instead (repeat true): a
// scan that only reports finds the same file every day.
func indexDetection(ctx context.Context, tx *sql.Tx, c *CheckIn, e *Event) (repeat bool, err error) {
	var f detectionFields
	if json.Unmarshal([]byte(e.Data), &f) != nil || f.Signature == "" || f.Path == "" {
		return false, nil
	}
	sig, path, sum, action := clip(f.Signature, 256), clip(f.Path, 4096), clip(f.SHA256, 64), clip(f.Action, 32)
	seen := e.OccurredAt
	if seen.IsZero() {
		seen = c.Now
	}
	res, err := tx.ExecContext(ctx, `UPDATE detections SET occurrences = occurrences + 1, last_seen_at = ?, action = ?, engine_version = ?
		WHERE computer_id = ? AND state = 'unresolved' AND signature = ? AND path = ? AND sha256 = ? AND id <> ?`,
		ms(seen), action, f.EngineVersion, c.ComputerID, sig, path, sum, e.ID)
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return true, nil
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO detections (id, computer_id, occurred_at, received_at, signature, path, kind, action, sha256, engine_version, data, last_seen_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		e.ID, c.ComputerID, ms(e.OccurredAt), ms(c.Now), sig, path, clip(f.Kind, 32), action, sum, f.EngineVersion, e.Data, ms(seen))
	return false, err
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// DetectionFilter selects detections; zero values select all. Newest first.
type DetectionFilter struct {
	ComputerID string
	GroupIDs   []string // computers in any of these static groups
	State      string   // unresolved, resolved
	Signature  string   // case-insensitive substring of the signature name
	Since      time.Time
	Until      time.Time
	Limit      int
	Offset     int
}

const detectionColumns = `d.id, d.computer_id, d.occurred_at, d.received_at, d.signature, d.path, d.kind, d.action, d.sha256, d.engine_version,
	d.data, d.state, d.resolved_by, d.resolved_at, d.occurrences, d.last_seen_at`

func scanDetection(row interface{ Scan(...any) error }) (*Detection, error) {
	d := &Detection{}
	var occ, rec, last int64
	var resolved sql.NullInt64
	if err := row.Scan(&d.ID, &d.ComputerID, &occ, &rec, &d.Signature, &d.Path, &d.Kind, &d.Action, &d.SHA256, &d.EngineVersion,
		&d.Data, &d.State, &d.ResolvedBy, &resolved, &d.Occurrences, &last); err != nil {
		return nil, err
	}
	d.OccurredAt, d.ReceivedAt, d.ResolvedAt, d.LastSeenAt = fromMS(occ), fromMS(rec), fromNullMS(resolved), fromMS(last)
	if d.LastSeenAt.IsZero() { // stored before repeats were counted
		d.LastSeenAt = d.OccurredAt
	}
	return d, nil
}

// ListDetections returns a page of detections and the total matching.
// Returns invalid for an unknown state.
func (db *DB) ListDetections(ctx context.Context, f DetectionFilter) (_ []*Detection, total int, err error) {
	defer db.track("list_detections", time.Now(), &err)
	var where []string
	var args []any
	if f.ComputerID != "" {
		where, args = append(where, "d.computer_id = ?"), append(args, f.ComputerID)
	}
	if f.GroupIDs != nil {
		if len(f.GroupIDs) == 0 {
			return nil, 0, nil
		}
		where = append(where, "c.group_id IN ("+placeholders(len(f.GroupIDs))+")")
		for _, g := range f.GroupIDs {
			args = append(args, g)
		}
	}
	switch f.State {
	case "":
	case DetectionUnresolved, DetectionResolved:
		where, args = append(where, "d.state = ?"), append(args, f.State)
	default:
		return nil, 0, errcode.New(errcode.Invalid, "state must be unresolved or resolved")
	}
	if f.Signature != "" {
		where = append(where, `LOWER(d.signature) LIKE LOWER(?) ESCAPE '\'`)
		args = append(args, "%"+escapeLike(f.Signature)+"%")
	}
	if !f.Since.IsZero() {
		where, args = append(where, "d.occurred_at >= ?"), append(args, ms(f.Since))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "d.occurred_at < ?"), append(args, ms(f.Until))
	}
	from := ` FROM detections d JOIN computers c ON c.id = d.computer_id`
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	if err := db.ro.QueryRowContext(ctx, `SELECT COUNT(*)`+from+cond, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	limit, offset := pageBounds(f.Limit, f.Offset)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+detectionColumns+from+cond+` ORDER BY d.occurred_at DESC, d.id LIMIT ? OFFSET ?`,
		append(args, limit, offset)...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []*Detection
	for rows.Next() {
		d, err := scanDetection(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, d)
	}
	return out, total, rows.Err()
}

// DetectionByID returns not_found for an unknown id.
func (db *DB) DetectionByID(ctx context.Context, id string) (_ *Detection, err error) {
	defer db.track("detection_by_id", time.Now(), &err)
	d, err := scanDetection(db.ro.QueryRowContext(ctx, `SELECT `+detectionColumns+` FROM detections d WHERE d.id = ?`, id))
	return d, notFound(err, "detection not found")
}

// SetDetectionState marks a detection resolved (by whom, when) or
// unresolved again. Returns not_found for an unknown id.
func (db *DB) SetDetectionState(ctx context.Context, id, state, by string, now time.Time) (err error) {
	defer db.track("set_detection_state", time.Now(), &err)
	if state != DetectionResolved && state != DetectionUnresolved {
		return errcode.New(errcode.Invalid, "state must be unresolved or resolved")
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		var res sql.Result
		if state == DetectionResolved {
			res, err = tx.ExecContext(ctx, `UPDATE detections SET state = 'resolved', resolved_by = ?, resolved_at = ? WHERE id = ?`, by, ms(now), id)
		} else {
			res, err = tx.ExecContext(ctx, `UPDATE detections SET state = 'unresolved', resolved_by = '', resolved_at = NULL WHERE id = ?`, id)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errcode.New(errcode.NotFound, "detection not found")
		}
		_, err = tx.ExecContext(ctx, `UPDATE computers SET change_seq = (SELECT COALESCE(MAX(change_seq), 0) + 1 FROM computers)
			WHERE id = (SELECT computer_id FROM detections WHERE id = ?)`, id)
		return err
	})
}

// Events of a quarantined file released on its computer (an administrator
// there restored or deleted it).
const (
	EventQuarantineRestored = "quarantine.restored"
	EventQuarantineDeleted  = "quarantine.deleted"
)

// applyQuarantineEvent tells the detection whose file was quarantined as
// the event's item what became of it: its action turns restored or
// deleted (in the check-in's transaction). Other computers' detections are
// never touched.
func applyQuarantineEvent(ctx context.Context, tx *sql.Tx, c *CheckIn, e *Event) error {
	var q struct {
		QuarantineID string `json:"quarantine_id"`
	}
	if json.Unmarshal([]byte(e.Data), &q) != nil || q.QuarantineID == "" || len(q.QuarantineID) > 128 {
		return nil
	}
	action := "restored"
	if e.Type == EventQuarantineDeleted {
		action = "deleted"
	}
	item, _ := json.Marshal(q.QuarantineID)
	_, err := tx.ExecContext(ctx, `UPDATE detections SET action = ? WHERE computer_id = ? AND action = 'quarantined' AND data LIKE ? ESCAPE '\'`,
		action, c.ComputerID, `%"quarantine_id":`+escapeLike(string(item))+`%`)
	return err
}
