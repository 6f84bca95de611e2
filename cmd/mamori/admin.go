package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"time"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/enrollment"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/flagenv"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/store"
)

func runTokenCreate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flagenv.New("mamori token create")
	fs.SetOutput(os.Stderr)
	data := fs.String("data", "MAMORI_DATA", "", "server data directory (required; works while the server runs)")
	database := fs.String("database", "MAMORI_DATABASE", "", "the server's PostgreSQL URL, if it has one (as mamori server --database)")
	group := fs.String("group", "", "", "static group for computers enrolled with the token (default Lost & Found)")
	ttl := fs.Duration("ttl", "", enrollment.DefaultTTL, "how long the token is valid")
	uses := fs.Int("uses", "", 0, "how many enrollments the token allows; 0 = unlimited")
	desc := fs.String("description", "", "", "what the token is for")
	output := fs.String("output", "", "text", "output format: text or json")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *output != "text" && *output != "json" {
		return usageError{errors.New("--output must be text or json")}
	}
	db, ca, err := openServerStore(ctx, *data, *database)
	if err != nil {
		return err
	}
	defer db.Close()
	svc := &enrollment.Service{Store: db}
	nt, err := svc.CreateToken(ctx, enrollment.TokenParams{GroupPath: *group, TTL: *ttl, Uses: *uses, Description: *desc, CreatedBy: "cli (" + osUser() + ")"})
	if err != nil {
		return err
	}
	if err := auditCLI(ctx, db, "enrollment_tokens", "create", nt.Token.ID, nt.Token.Description,
		fmt.Sprintf(`{"group":[null,%q],"uses_allowed":[null,%d]}`, nt.GroupPath, nt.Token.UsesAllowed)); err != nil {
		return err
	}
	fp := pki.Fingerprint(ca.Raw)
	if *output == "json" {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"id": nt.Token.ID, "token": nt.Secret, "group": nt.GroupPath, "expires_at": nt.Token.ExpiresAt,
			"uses_allowed": nt.Token.UsesAllowed, "ca_fingerprint": fp,
		})
	}
	uses2 := "unlimited"
	if nt.Token.UsesAllowed > 0 {
		uses2 = fmt.Sprint(nt.Token.UsesAllowed)
	}
	fmt.Fprintf(stdout, "token:          %s\ngroup:          %s\nexpires:        %s\nuses:           %s\nca fingerprint: %s\n\nenroll an agent with:\n  mamori-agent run --state /var/lib/mamori-agent --server SERVER:2222 --token %s --ca-fingerprint %s\n",
		nt.Secret, nt.GroupPath, nt.Token.ExpiresAt.Format("2006-01-02 15:04:05 MST"), uses2, fp, nt.Secret, fp)
	return nil
}

func runCAFingerprint(args []string, stdout io.Writer) error {
	fs := flagenv.New("mamori ca fingerprint")
	fs.SetOutput(os.Stderr)
	data := fs.String("data", "MAMORI_DATA", "", "server data directory (required)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	ca, err := serverCA(*data)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, pki.Fingerprint(ca.Raw))
	return nil
}

// serverCA reads the CA certificate of the server whose data directory
// (--data) is data.
func serverCA(data string) (*x509.Certificate, error) {
	if data == "" {
		return nil, usageError{errors.New("--data is required")}
	}
	ca, err := pki.LoadCACert(data)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errcode.New(errcode.NotFound, "%s holds no server CA; start the server once with: mamori server --data %s", data, data)
	}
	return ca, err
}

// openServerStore opens the store of the server whose data directory is
// data (its PostgreSQL database instead when database is set), once data
// proves to be one; it also returns the server's CA certificate.
func openServerStore(ctx context.Context, data, database string) (*store.DB, *x509.Certificate, error) {
	ca, err := serverCA(data)
	if err != nil {
		return nil, nil, err
	}
	db, err := store.Open(ctx, database, data, store.Options{})
	if err != nil {
		return nil, nil, err
	}
	return db, ca, nil
}

// auditCLI records a change made by this command on the server's machine,
// by the operating-system user who ran it.
func auditCLI(ctx context.Context, db *store.DB, domain, action, id, name, diff string) error {
	return db.AppendAudit(ctx, &store.AuditEntry{At: time.Now().UTC(), Username: osUser(), Via: "cli", Domain: domain,
		Action: action, ObjectID: id, ObjectName: name, Result: store.AuditSuccess, Diff: diff})
}

func osUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "unknown"
}

// runRecover: mamori recover --data DIR [--database URL] [--user admin]
// [--remove-totp] — a new password for a user, offline (auth.Recover).
func runRecover(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flagenv.New("mamori recover")
	fs.SetOutput(os.Stderr)
	data := fs.String("data", "MAMORI_DATA", "", "server data directory (required; works while the server runs)")
	database := fs.String("database", "MAMORI_DATABASE", "", "the server's PostgreSQL URL, if it has one (as mamori server --database)")
	username := fs.String("user", "", "admin", "the user to recover")
	removeTOTP := fs.Bool("remove-totp", false, "also remove the user's second factor (a lost device)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	db, _, err := openServerStore(ctx, *data, *database)
	if err != nil {
		return err
	}
	defer db.Close()
	svc := &auth.Service{Store: db}
	pw, u, err := svc.Recover(ctx, db, *username, *removeTOTP)
	if err != nil {
		return err
	}
	diff := fmt.Sprintf(`{"password":["(old)","(recovered)"],"must_change_password":[null,true],"disabled":[null,false],"api_tokens":[null,"revoked"],"second_factor_removed":[null,%t]}`, *removeTOTP)
	if err := auditCLI(ctx, db, "users", "recover", u.ID, u.Username, diff); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "New password of %s (change it at the next login): %s\n", u.Username, pw)
	fmt.Fprintln(stdout, "The account is enabled and unlocked; its sessions and API tokens are gone.")
	return nil
}
