package admincli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
)

// DefaultTokenTTL is the lifetime of the token "mamori login" creates.
const DefaultTokenTTL = 720 * time.Hour

// login: mamori login --server URL [--user NAME] [--ca-fingerprint|--ca-file]
// [--token-name NAME] [--ttl 720h]
func (inv *invocation) login(args []string) error {
	fs := inv.flags("--server URL [--user NAME] [--ca-fingerprint sha256:HEX | --ca-file FILE] [--token-name NAME] [--ttl 720h]\n\n" +
		"Logs in with a password (MAMORI_PASSWORD, a prompt, or the first line of stdin when it is not a\n" +
		"terminal), creates a personal API token and stores it with the server URL and CA pin in the config file.")
	g := inv.globalFlags(fs, false)
	user := fs.String("user", inv.getenv(EnvUser), "user name (env "+EnvUser+"; default the last one logged in, else asked)")
	name := fs.String("token-name", "", "name of the API token (default \"mamori-cli on HOSTNAME\")")
	ttl := fs.Duration("ttl", DefaultTokenTTL, "lifetime of the API token (1m to 8784h)")
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *ttl <= 0 {
		return usagef("--ttl must be positive")
	}
	s, err := inv.resolve(g, false)
	if err != nil {
		return err
	}
	if *user == "" && s.sameServer {
		*user = s.cfg.Username
	}
	if *user == "" {
		if !inv.cli.Terminal() {
			return usagef("give --user NAME (or %s)", EnvUser)
		}
		if *user, err = inv.ask("User name at "+s.server+": ", "user name"); err != nil {
			return err
		}
	}
	if *name == "" {
		host, _ := os.Hostname()
		*name = strings.TrimSpace("mamori-cli on " + host)
	}
	c, sess, err := inv.passwordSession(s, g.timeout, *user)
	if err != nil {
		return err
	}
	tok, err := c.CreateAPIToken(inv.ctx, *name, *ttl)
	c.Logout(inv.ctx) // the token is what stays; the session is not needed
	if err != nil {
		return err
	}
	cfg := &Config{Server: s.server, Username: sess.User.Username, Token: tok.Token, TokenID: tok.ID, TokenName: tok.Name,
		TokenExpiresAt: tok.ExpiresAt.UTC().Format(time.RFC3339)}
	if s.trust.CAFingerprint != "" {
		cfg.CAFingerprint, _ = pki.ParseFingerprint(s.trust.CAFingerprint)
	}
	if s.trust.CAFile != "" {
		if cfg.CAFile, err = filepath.Abs(s.trust.CAFile); err != nil {
			return err
		}
	}
	if err := cfg.save(s.cfgPath); err != nil {
		return err
	}
	// The token this login replaces is no longer stored anywhere: revoke
	// it (best effort; it may belong to another user, or be gone already).
	if old := s.cfg; s.sameServer && old.TokenID != "" && old.TokenID != tok.ID {
		if tc, err := s.client(g.timeout); err == nil {
			tc.Token = tok.Token
			tc.RevokeAPIToken(inv.ctx, old.TokenID)
		}
	}
	out := map[string]string{"server": cfg.Server, "username": cfg.Username, "token_id": cfg.TokenID, "token_name": cfg.TokenName,
		"token_expires_at": cfg.TokenExpiresAt, "config": s.cfgPath}
	return inv.emit(g, marshal(out), func(w io.Writer) {
		fmt.Fprintf(w, "Logged in to %s as %s.\nAPI token %q (expires %s) stored in %s.\n", cfg.Server, cfg.Username, cfg.TokenName, ts(tok.ExpiresAt), s.cfgPath)
	})
}

// passwordSession logs user in with a password and lifts what the server
// asks first: a second factor, a password change, setting up a second
// factor. The client it returns uses the session (not a token).
func (inv *invocation) passwordSession(s *settings, timeout time.Duration, user string) (*apiclient.Client, *apiclient.Session, error) {
	c, err := s.client(timeout)
	if err != nil {
		return nil, nil, err
	}
	c.Token = ""
	pw := inv.getenv(EnvPassword)
	if pw == "" {
		if pw, err = inv.askSecret("Password for "+user+" at "+s.server, "password"); err != nil {
			return nil, nil, err
		}
	}
	sess, err := c.Login(inv.ctx, apiclient.LoginRequest{Username: user, Password: pw})
	for i := 0; err == nil && sess.Restriction != ""; i++ {
		if i == 5 {
			return nil, nil, errcode.New(errcode.Forbidden, "the server still asks for %s", sess.Restriction)
		}
		switch sess.Restriction {
		case apiclient.RestrictSecondFactor:
			var code string
			if code, err = inv.askSecret("Code from your authenticator app (or a recovery code)", "second-factor code"); err != nil {
				return nil, nil, err
			}
			code = strings.TrimSpace(code)
			if isTOTPCode(code) {
				sess, err = c.SecondFactor(inv.ctx, code, "")
			} else {
				sess, err = c.SecondFactor(inv.ctx, "", code)
			}
		case apiclient.RestrictPasswordChange:
			fmt.Fprintf(inv.stderr, "The server requires a new password for %s.\n", user)
			var next string
			if next, err = inv.newPassword(!inv.cli.Terminal(), user); err != nil {
				return nil, nil, err
			}
			if err = c.ChangePassword(inv.ctx, pw, next); err != nil {
				break
			}
			pw = next
			fmt.Fprintln(inv.stderr, "Password changed.")
			sess, err = c.Login(inv.ctx, apiclient.LoginRequest{Username: user, Password: pw})
		case apiclient.RestrictTOTPEnrollment:
			sess, err = inv.enrollTOTP(c)
		default:
			return nil, nil, errcode.New(errcode.Forbidden, "the server asks for %q first, which this CLI cannot do", sess.Restriction)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return c, sess, nil
}

// enrollTOTP sets up a second factor for the logged-in user.
func (inv *invocation) enrollTOTP(c *apiclient.Client) (*apiclient.Session, error) {
	e, err := c.EnrollTOTP(inv.ctx)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(inv.stderr, "The server requires a second factor. Add this key to your authenticator app:\n\n  key: %s\n  URI: %s\n\n", e.Secret, e.OTPAuthURI)
	code, err := inv.askSecret("Code shown by the app", "second-factor code")
	if err != nil {
		return nil, err
	}
	codes, err := c.ConfirmTOTP(inv.ctx, strings.TrimSpace(code))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(inv.stderr, "Second factor set up. Recovery codes (each works once; keep them safe, they are not shown again):\n  %s\n", strings.Join(codes, "\n  "))
	return c.Whoami(inv.ctx)
}

func isTOTPCode(s string) bool {
	if len(s) != 6 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// logout: mamori logout [--config FILE]
func (inv *invocation) logout(args []string) error {
	fs := inv.flags("[--config FILE]\n\nRevokes the API token stored by \"mamori login\" and removes it from the config file.")
	config := fs.String("config", inv.getenv(EnvConfig), "config file (env "+EnvConfig+")")
	timeout := fs.Duration("timeout", apiclient.DefaultTimeout, "time allowed for the request")
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	path, err := inv.configPath(*config)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	if cfg.Token == "" {
		return errcode.New(errcode.NotFound, "not logged in: %s holds no token", path)
	}
	note := "the API token is revoked"
	if cfg.TokenID == "" {
		note = "the token had no id to revoke it by; revoke it with \"mamori tokens revoke\" if it is still valid"
	} else {
		c, err := apiclient.New(cfg.Server, cfg.Token, apiclient.Trust{CAFingerprint: cfg.CAFingerprint, CAFile: cfg.CAFile})
		if err != nil {
			return err
		}
		c.Timeout = *timeout
		err = c.RevokeAPIToken(inv.ctx, cfg.TokenID)
		var ce *apiclient.ConnError
		switch {
		case err == nil:
		case errcode.Is(err, errcode.Unauthorized) || errcode.Is(err, errcode.NotFound):
			note = "the token was no longer valid (" + errcode.Message(err) + ")"
		case errors.As(err, &ce):
			return fmt.Errorf("%v; the token stays in %s (try again, or delete the file)", err, path)
		default:
			return errcode.New(errcode.Of(err), "%s; the token stays in %s", errcode.Message(err), path)
		}
	}
	cfg.Token, cfg.TokenID, cfg.TokenName, cfg.TokenExpiresAt = "", "", "", ""
	if err := cfg.save(path); err != nil {
		return err
	}
	fmt.Fprintf(inv.stdout, "Logged out of %s; %s.\n", cfg.Server, note)
	return nil
}

// whoami: mamori whoami
func (inv *invocation) whoami(args []string) error {
	fs := inv.flags("[flags]")
	g := inv.globalFlags(fs, true)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	s, err := c.Whoami(inv.ctx)
	if err != nil {
		return err
	}
	paths := map[string]string{}
	if l, err := c.ListGroups(inv.ctx); err == nil {
		for _, gr := range l.Items {
			paths[gr.ID] = gr.Path
		}
	}
	return inv.emit(g, s.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "%s at %s (via %s)\n\nFUNCTIONALITY\tLEVEL\tGROUPS\n", s.User.Username, c.BaseURL, s.Via)
		for _, p := range s.Permissions {
			groups := make([]string, 0, len(p.GroupIDs))
			for _, id := range p.GroupIDs {
				groups = append(groups, orDefault(paths[id], id))
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", p.Functionality, p.Level, strings.Join(groups, ", "))
		}
	})
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
