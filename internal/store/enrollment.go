package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// EnrollmentToken lets agents enroll. Only a hash of its secret is kept.
type EnrollmentToken struct {
	ID         string
	SecretHash string
	GroupID    string // where computers enrolled with the token land
	// AccessGroupID is the static group the token itself lives in (who may
	// see and revoke it); default All.
	AccessGroupID string
	Description   string
	ExpiresAt     time.Time
	UsesAllowed   int // 0: unlimited
	Uses          int
	CreatedBy     string
	CreatedAt     time.Time
	RevokedAt     time.Time
}

// CreateEnrollmentToken stores t.
func (db *DB) CreateEnrollmentToken(ctx context.Context, t *EnrollmentToken) (err error) {
	defer db.track("create_enrollment_token", time.Now(), &err)
	if t.AccessGroupID == "" {
		t.AccessGroupID = GroupAll
	}
	_, err = db.rw.ExecContext(ctx, `INSERT INTO enrollment_tokens (id, secret_hash, group_id, access_group_id, description, expires_at, uses_allowed, uses, created_by, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)`,
		t.ID, t.SecretHash, t.GroupID, t.AccessGroupID, t.Description, ms(t.ExpiresAt), t.UsesAllowed, t.CreatedBy, ms(t.CreatedAt))
	if isUniqueViolation(err) {
		return errcode.New(errcode.Conflict, "enrollment token already exists")
	}
	return err
}

const tokenColumns = `id, secret_hash, group_id, access_group_id, description, expires_at, uses_allowed, uses, created_by, created_at, revoked_at`

func scanToken(row interface{ Scan(...any) error }) (*EnrollmentToken, error) {
	t := &EnrollmentToken{}
	var exp, created int64
	var revoked sql.NullInt64
	if err := row.Scan(&t.ID, &t.SecretHash, &t.GroupID, &t.AccessGroupID, &t.Description, &exp, &t.UsesAllowed, &t.Uses, &t.CreatedBy, &created, &revoked); err != nil {
		return nil, err
	}
	t.ExpiresAt, t.CreatedAt, t.RevokedAt = fromMS(exp), fromMS(created), fromNullMS(revoked)
	return t, nil
}

// ListEnrollmentTokens returns all tokens, newest first.
func (db *DB) ListEnrollmentTokens(ctx context.Context) (_ []*EnrollmentToken, err error) {
	defer db.track("list_enrollment_tokens", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+tokenColumns+` FROM enrollment_tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*EnrollmentToken
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// EnrollmentTokenByID returns not_found if there is no such token.
func (db *DB) EnrollmentTokenByID(ctx context.Context, id string) (_ *EnrollmentToken, err error) {
	defer db.track("enrollment_token_by_id", time.Now(), &err)
	t, err := scanToken(db.ro.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM enrollment_tokens WHERE id = ?`, id))
	return t, notFound(err, "enrollment token not found")
}

// RevokeEnrollmentToken stops a token from enrolling more computers.
func (db *DB) RevokeEnrollmentToken(ctx context.Context, id string, now time.Time) (err error) {
	defer db.track("revoke_enrollment_token", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, ms(now), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errcode.New(errcode.NotFound, "enrollment token not found")
	}
	return nil
}

// CheckEnrollmentToken returns the usable token with this secret hash, or
// unauthorized saying why it cannot be used. It changes nothing; Enroll
// checks again inside its transaction.
func (db *DB) CheckEnrollmentToken(ctx context.Context, secretHash string, now time.Time) (_ *EnrollmentToken, err error) {
	defer db.track("check_enrollment_token", time.Now(), &err)
	t, err := scanToken(db.ro.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM enrollment_tokens WHERE secret_hash = ?`, secretHash))
	if err != nil {
		return nil, tokenNotFound(err)
	}
	return t, usable(t, now)
}

func tokenNotFound(err error) error {
	if err == sql.ErrNoRows {
		return errcode.New(errcode.Unauthorized, "unknown enrollment token")
	}
	return err
}

func usable(t *EnrollmentToken, now time.Time) error {
	switch {
	case !t.RevokedAt.IsZero():
		return errcode.New(errcode.Unauthorized, "enrollment token has been revoked")
	case !now.Before(t.ExpiresAt):
		return errcode.New(errcode.Unauthorized, "enrollment token expired at %s", t.ExpiresAt.UTC().Format(time.RFC3339))
	case t.UsesAllowed > 0 && t.Uses >= t.UsesAllowed:
		return errcode.New(errcode.Unauthorized, "enrollment token is used up (%d of %d uses)", t.Uses, t.UsesAllowed)
	}
	return nil
}

// AgentCertificate records a certificate issued to a computer.
type AgentCertificate struct {
	Serial     string
	ComputerID string
	IssuedAt   time.Time
	NotAfter   time.Time
	RevokedAt  time.Time
}

// EnrollComputer consumes one use of the token with secretHash and creates c
// (in the token's group, which it sets on c) with its certificate, in one
// transaction. If other enrolled computers present the same hardware
// fingerprint, c and they are all marked clone_suspected: a clone is never
// merged silently. Returns unauthorized when the token cannot be used.
func (db *DB) EnrollComputer(ctx context.Context, secretHash string, now time.Time, c *Computer, cert *AgentCertificate) (err error) {
	defer db.track("enroll_computer", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		c.CloneSuspected, c.CloneReason = false, "" // fn may run twice (see runTx)
		t, err := scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM enrollment_tokens WHERE secret_hash = ?`, secretHash))
		if err != nil {
			return tokenNotFound(err)
		}
		if err := usable(t, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?`, t.ID); err != nil {
			return err
		}
		c.GroupID = t.GroupID
		c.EnrolledAt = now
		rows, err := tx.QueryContext(ctx, `SELECT id, name FROM computers WHERE hardware_fingerprint = ? AND revoked_at IS NULL`, c.HardwareFingerprint)
		if err != nil {
			return err
		}
		var twins []struct{ id, name string }
		for rows.Next() {
			var id, name string
			if err := rows.Scan(&id, &name); err != nil {
				rows.Close()
				return err
			}
			twins = append(twins, struct{ id, name string }{id, name})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(twins) > 0 {
			c.CloneSuspected = true
			c.CloneReason = "same hardware fingerprint as " + twins[0].name + " (" + twins[0].id + ")"
			for _, tw := range twins {
				if _, err := tx.ExecContext(ctx, `UPDATE computers SET clone_suspected = 1, clone_reason = ? WHERE id = ?`,
					"same hardware fingerprint as "+c.Name+" ("+c.ID+"), enrolled later", tw.id); err != nil {
					return err
				}
				if err := bumpChange(ctx, tx, tw.id); err != nil {
					return err
				}
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO computers (id, name, hostname, instance, group_id, status, platform, agent_version,
			hardware_fingerprint, clone_suspected, clone_reason, enrolled_at, enrollment_token_id)
			VALUES (?, ?, ?, ?, ?, 'offline', ?, ?, ?, ?, ?, ?, ?)`,
			c.ID, c.Name, c.Hostname, c.Instance, c.GroupID, c.Platform, c.AgentVersion,
			c.HardwareFingerprint, c.CloneSuspected, c.CloneReason, ms(now), t.ID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO agent_certificates (serial, computer_id, issued_at, not_after) VALUES (?, ?, ?, ?)`,
			cert.Serial, c.ID, ms(cert.IssuedAt), ms(cert.NotAfter)); err != nil {
			return err
		}
		return bumpChange(ctx, tx, c.ID)
	})
}

// agentCertificateColumns are the columns certificateRow reads, qualified
// like computerColumns.
const agentCertificateColumns = `agent_certificates.serial, agent_certificates.computer_id, agent_certificates.issued_at,
	agent_certificates.not_after, agent_certificates.revoked_at`

// certificateRow receives a row of agentCertificateColumns (see computerRow).
type certificateRow struct {
	c                AgentCertificate
	issued, notAfter int64
	revoked          sql.NullInt64
}

func (r *certificateRow) dest() []any {
	return []any{&r.c.Serial, &r.c.ComputerID, &r.issued, &r.notAfter, &r.revoked}
}

func (r *certificateRow) certificate() *AgentCertificate {
	c := r.c
	c.IssuedAt, c.NotAfter, c.RevokedAt = fromMS(r.issued), fromMS(r.notAfter), fromNullMS(r.revoked)
	return &c
}

// AgentCertificateBySerial returns not_found for an unknown serial.
func (db *DB) AgentCertificateBySerial(ctx context.Context, serial string) (_ *AgentCertificate, err error) {
	defer db.track("agent_certificate", time.Now(), &err)
	var r certificateRow
	err = db.queryRowRO(ctx, `SELECT `+agentCertificateColumns+` FROM agent_certificates WHERE serial = ?`, serial).Scan(r.dest()...)
	if err != nil {
		return nil, notFound(err, "certificate not known")
	}
	return r.certificate(), nil
}

// AgentSession is what an agent's session starts from: the certificate it
// presented, that certificate's computer and the hashes of the computer's
// stored inventory sections (by section name). Revocations are returned as
// stored; the caller decides.
type AgentSession struct {
	Certificate   *AgentCertificate
	Computer      *Computer
	SectionHashes map[string][]byte
}

// agentSessionQuery reads an AgentSession in one statement (one round trip
// on PostgreSQL): one row per stored section, the certificate and computer
// repeated on each, or a single row with a NULL section when none is stored.
const agentSessionQuery = `SELECT ` + agentCertificateColumns + `, ` + computerColumns + `,
	inventory_sections.section, inventory_sections.hash
	FROM agent_certificates
	JOIN computers ON computers.id = agent_certificates.computer_id
	LEFT JOIN inventory_sections ON inventory_sections.computer_id = agent_certificates.computer_id
	WHERE agent_certificates.serial = ?`

// AgentSession returns the certificate with serial, its computer and the
// computer's section hashes, as AgentCertificateBySerial, ComputerByID and
// SectionHashes would, in one query. Returns not_found for an unknown
// serial.
func (db *DB) AgentSession(ctx context.Context, serial string) (_ *AgentSession, err error) {
	defer db.track("agent_session", time.Now(), &err)
	rows, err := db.queryRO(ctx, agentSessionQuery, serial)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cert certificateRow
	var comp computerRow
	var section sql.NullString
	var hash []byte
	dest := append(append(cert.dest(), comp.dest()...), &section, &hash)
	hashes := map[string][]byte{}
	found := false
	for rows.Next() {
		// Each row scans into the same destinations: the certificate and
		// computer columns are the same on every row.
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		found = true
		if section.Valid {
			hashes[section.String] = hash
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if !found {
		return nil, errcode.New(errcode.NotFound, "certificate not known")
	}
	return &AgentSession{Certificate: cert.certificate(), Computer: comp.computer(), SectionHashes: hashes}, nil
}

// RevokeComputer revokes every certificate of a computer and marks it
// revoked; its agent can no longer connect. Returns not_found if unknown.
func (db *DB) RevokeComputer(ctx context.Context, id string, now time.Time) (err error) {
	defer db.track("revoke_computer", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE computers SET revoked_at = COALESCE(revoked_at, ?), status = 'offline' WHERE id = ?`, ms(now), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errcode.New(errcode.NotFound, "computer not found")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE agent_certificates SET revoked_at = COALESCE(revoked_at, ?) WHERE computer_id = ?`, ms(now), id); err != nil {
			return err
		}
		return bumpChange(ctx, tx, id)
	})
}
