package store

import (
	"context"
	"database/sql"
	"time"
)

// InventorySection is one hashed part of a computer's inventory, stored as
// JSON.
type InventorySection struct {
	Section   string
	Hash      []byte
	Data      string // JSON object
	UpdatedAt time.Time
}

// Event is something an agent reported, stored at most once per (computer,
// id).
type Event struct {
	Seq        int64
	ComputerID string
	ID         string
	Type       string
	OccurredAt time.Time
	ReceivedAt time.Time
	Data       string // JSON object
}

// ComputerSummary holds the inventory fields copied onto the computer row
// for listing, filtering and sorting. Empty fields are left unchanged.
type ComputerSummary struct {
	Hostname     string
	OSName       string
	OSVersion    string
	AgentVersion string
	// Engine, when set, replaces the computer's engine report.
	Engine *EngineReport
}

// CheckIn is everything one agent check-in writes.
type CheckIn struct {
	ComputerID string
	Now        time.Time
	Sections   []InventorySection
	Events     []Event
	Summary    ComputerSummary
	// Config, when not nil, is what the agent reports of its configuration:
	// the version in effect and why the last one was refused ("" none).
	Config *ConfigReport
}

// ConfigReport is an agent's report on its configuration.
type ConfigReport struct {
	Applied string
	Error   string
}

// ApplyCheckIn writes changed sections and new events in one transaction.
// Events already stored (same computer and id) are skipped, so a retried
// check-in never duplicates. It returns how many events were new.
func (db *DB) ApplyCheckIn(ctx context.Context, c *CheckIn) (int, error) {
	n, err := db.ApplyCheckIns(ctx, []*CheckIn{c})
	if err != nil {
		return 0, err
	}
	return n[0], nil
}

// ApplyCheckIns writes several check-ins in one transaction (group commit:
// one sync for the whole batch) and returns the new events of each. Either
// all are written or none.
func (db *DB) ApplyCheckIns(ctx context.Context, cs []*CheckIn) (inserted []int, err error) {
	defer db.track("apply_check_ins", time.Now(), &err)
	err = db.tx(ctx, func(tx *sql.Tx) error {
		inserted = make([]int, len(cs))
		var events *sql.Stmt
		for i, c := range cs {
			for _, s := range c.Sections {
				if _, err := tx.ExecContext(ctx, `INSERT INTO inventory_sections (computer_id, section, hash, data, updated_at) VALUES (?, ?, ?, ?, ?)
					ON CONFLICT (computer_id, section) DO UPDATE SET hash = excluded.hash, data = excluded.data, updated_at = excluded.updated_at`,
					c.ComputerID, s.Section, s.Hash, s.Data, ms(c.Now)); err != nil {
					return err
				}
			}
			if len(c.Events) > 0 && events == nil {
				var err error
				events, err = tx.PrepareContext(ctx, `INSERT INTO computer_events (computer_id, event_id, type, occurred_at, received_at, data)
					VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (computer_id, event_id) DO NOTHING`)
				if err != nil {
					return err
				}
				defer events.Close()
			}
			for _, e := range c.Events {
				res, err := events.ExecContext(ctx, c.ComputerID, e.ID, e.Type, ms(e.OccurredAt), ms(c.Now), e.Data)
				if err != nil {
					return err
				}
				n, _ := res.RowsAffected()
				inserted[i] += int(n)
				if n > 0 {
					switch e.Type {
					case DetectionEventType:
						repeat, err := indexDetection(ctx, tx, c, &e)
						if err != nil {
							return err
						}
						if repeat {
							break // counted on the unresolved detection; triggers fire for new ones
						}
						if err := addEventData(ctx, tx, c.Now, "detection.found", c.ComputerID, e.ID, "{}"); err != nil {
							return err
						}
					case EventTaskStarted, EventTaskFinished:
						if err := applyTaskEvent(ctx, tx, c, &e); err != nil {
							return err
						}
					case EventQuarantineRestored, EventQuarantineDeleted:
						if err := applyQuarantineEvent(ctx, tx, c, &e); err != nil {
							return err
						}
					}
				}
			}
			if len(c.Sections) > 0 || c.Summary != (ComputerSummary{}) || hasDetection(c.Events) {
				if err := bumpChange(ctx, tx, c.ComputerID); err != nil {
					return err
				}
			}
			if e := c.Summary.Engine; e != nil {
				var ok any
				if !e.LastSuccess.IsZero() {
					ok = ms(e.LastSuccess)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE computers SET engine_version = ?, engine_update_state = ?, engine_last_success = ?, engine_last_error = ? WHERE id = ?`,
					int64(min(e.Version, 1<<62)), clip(e.UpdateState, 32), ok, clip(e.LastError, 512), c.ComputerID); err != nil {
					return err
				}
			}
			if s := c.Summary; s.Hostname != "" || s.OSName != "" || s.OSVersion != "" || s.AgentVersion != "" {
				if _, err := tx.ExecContext(ctx, `UPDATE computers SET
					hostname = CASE WHEN ? <> '' THEN ? ELSE hostname END,
					os_name = CASE WHEN ? <> '' THEN ? ELSE os_name END,
					os_version = CASE WHEN ? <> '' THEN ? ELSE os_version END,
					agent_version = CASE WHEN ? <> '' THEN ? ELSE agent_version END
					WHERE id = ?`,
					s.Hostname, s.Hostname, s.OSName, s.OSName, s.OSVersion, s.OSVersion, s.AgentVersion, s.AgentVersion, c.ComputerID); err != nil {
					return err
				}
			}
			if r := c.Config; r != nil {
				if _, err := tx.ExecContext(ctx, `UPDATE computers SET config_applied_version = ?, config_error = ?, config_reported_at = ? WHERE id = ?`,
					clip(r.Applied, 64), clip(r.Error, 4096), ms(c.Now), c.ComputerID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return inserted, nil
}

// InventorySections returns all stored sections of a computer.
func (db *DB) InventorySections(ctx context.Context, computerID string) (_ []InventorySection, err error) {
	defer db.track("inventory_sections", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT section, hash, data, updated_at FROM inventory_sections WHERE computer_id = ? ORDER BY section`, computerID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []InventorySection
	for rows.Next() {
		var s InventorySection
		var updated int64
		if err := rows.Scan(&s.Section, &s.Hash, &s.Data, &updated); err != nil {
			return nil, err
		}
		s.UpdatedAt = fromMS(updated)
		out = append(out, s)
	}
	return out, rows.Err()
}

// SectionHashes returns the hash of every stored section of a computer.
func (db *DB) SectionHashes(ctx context.Context, computerID string) (_ map[string][]byte, err error) {
	defer db.track("section_hashes", time.Now(), &err)
	rows, err := db.queryRO(ctx, `SELECT section, hash FROM inventory_sections WHERE computer_id = ?`, computerID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var s string
		var h []byte
		if err := rows.Scan(&s, &h); err != nil {
			return nil, err
		}
		out[s] = h
	}
	return out, rows.Err()
}

// EventFilter selects a computer's events, newest first.
type EventFilter struct {
	Type   string // exact type, or a prefix ending in "." (e.g. "agent.")
	Limit  int
	Offset int
}

// ComputerEvents returns a page of a computer's events, newest first, and
// the total matching.
func (db *DB) ComputerEvents(ctx context.Context, computerID string, f EventFilter) (_ []Event, total int, err error) {
	defer db.track("computer_events", time.Now(), &err)
	cond, args := ` WHERE computer_id = ?`, []any{computerID}
	if f.Type != "" {
		if len(f.Type) > 1 && f.Type[len(f.Type)-1] == '.' {
			cond += ` AND type LIKE ? ESCAPE '\'`
			args = append(args, escapeLike(f.Type)+"%")
		} else {
			cond += ` AND type = ?`
			args = append(args, f.Type)
		}
	}
	if err := db.ro.QueryRowContext(ctx, `SELECT COUNT(*) FROM computer_events`+cond, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	limit, offset := pageBounds(f.Limit, f.Offset)
	rows, err := db.ro.QueryContext(ctx, `SELECT seq, computer_id, event_id, type, occurred_at, received_at, data FROM computer_events`+cond+
		` ORDER BY occurred_at DESC, seq DESC LIMIT ? OFFSET ?`, append(args, limit, offset)...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var occurred, received int64
		if err := rows.Scan(&e.Seq, &e.ComputerID, &e.ID, &e.Type, &occurred, &received, &e.Data); err != nil {
			return nil, 0, err
		}
		e.OccurredAt, e.ReceivedAt = fromMS(occurred), fromMS(received)
		out = append(out, e)
	}
	return out, total, rows.Err()
}

func hasDetection(es []Event) bool {
	for _, e := range es {
		if e.Type == DetectionEventType {
			return true
		}
	}
	return false
}
