package store

import (
	"context"
	"database/sql"
	"strings"
	"time"
	"unicode"

	"github.com/mamori/mamori/internal/errcode"
)

// MaxTagLen bounds a tag; MaxTagsPerComputer bounds how many one computer has.
const (
	MaxTagLen          = 64
	MaxTagsPerComputer = 64
)

// ValidateTag returns invalid for a tag that is empty, too long, or holds
// control characters, commas or surrounding spaces.
func ValidateTag(tag string) error {
	if tag == "" || len(tag) > MaxTagLen || strings.TrimSpace(tag) != tag || strings.Contains(tag, ",") ||
		strings.IndexFunc(tag, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return errcode.New(errcode.Invalid, "a tag is 1-%d printable characters without commas or surrounding spaces", MaxTagLen)
	}
	return nil
}

// AddTag tags a computer (adding a tag it has is a no-op).
func (db *DB) AddTag(ctx context.Context, computerID, tag string) (err error) {
	defer db.track("add_tag", time.Now(), &err)
	if err := ValidateTag(tag); err != nil {
		return err
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		var n int
		// The tag being added does not count: re-adding it stays a no-op at the limit.
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM computer_tags WHERE computer_id = ? AND tag <> ?`, computerID, tag).Scan(&n); err != nil {
			return err
		}
		if n >= MaxTagsPerComputer {
			return errcode.New(errcode.Invalid, "a computer has at most %d tags", MaxTagsPerComputer)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO computer_tags (computer_id, tag) VALUES (?, ?) ON CONFLICT DO NOTHING`, computerID, tag); err != nil {
			return err
		}
		return bumpChange(ctx, tx, computerID)
	})
}

// RemoveTag removes a tag from a computer; not_found if it did not have it.
func (db *DB) RemoveTag(ctx context.Context, computerID, tag string) (err error) {
	defer db.track("remove_tag", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM computer_tags WHERE computer_id = ? AND tag = ?`, computerID, tag)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errcode.New(errcode.NotFound, "the computer has no tag %q", tag)
		}
		return bumpChange(ctx, tx, computerID)
	})
}

// ComputerTags returns a computer's tags, sorted.
func (db *DB) ComputerTags(ctx context.Context, computerID string) (_ []string, err error) {
	defer db.track("computer_tags", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT tag FROM computer_tags WHERE computer_id = ? ORDER BY tag`, computerID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// TagCount is a tag with how many computers carry it.
type TagCount struct {
	Tag       string
	Computers int
}

// Tags lists the tags used on computers of the given groups (nil: all).
func (db *DB) Tags(ctx context.Context, groupIDs []string) (_ []TagCount, err error) {
	defer db.track("tags", time.Now(), &err)
	q := `SELECT t.tag, COUNT(*) FROM computer_tags t JOIN computers c ON c.id = t.computer_id WHERE c.revoked_at IS NULL`
	var args []any
	if groupIDs != nil {
		if len(groupIDs) == 0 {
			return []TagCount{}, nil
		}
		q += " AND c.group_id IN (" + placeholders(len(groupIDs)) + ")"
		for _, g := range groupIDs {
			args = append(args, g)
		}
	}
	rows, err := db.ro.QueryContext(ctx, q+` GROUP BY t.tag ORDER BY t.tag`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []TagCount{}
	for rows.Next() {
		var tc TagCount
		if err := rows.Scan(&tc.Tag, &tc.Computers); err != nil {
			return nil, err
		}
		out = append(out, tc)
	}
	return out, rows.Err()
}

// MoveComputer moves a computer to another static group.
func (db *DB) MoveComputer(ctx context.Context, id, groupID string, version int64) (err error) {
	defer db.track("move_computer", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, groupID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE computers SET group_id = ?, version = version + 1 WHERE id = ? AND version = ?`, groupID, id, version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, "computers", id, "computer")
		}
		return bumpChange(ctx, tx, id)
	})
}
