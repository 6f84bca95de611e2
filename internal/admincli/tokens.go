package admincli

import (
	"fmt"
	"io"
	"time"

	"github.com/mamori/mamori/internal/apiclient"
)

// tokens: mamori tokens list|create|revoke (personal API tokens).
func (inv *invocation) tokens(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"list":   inv.tokensList,
		"create": inv.tokensCreate,
		"revoke": inv.tokensRevoke,
	})
}

func tokenStatus(revoked, expires time.Time) string {
	switch {
	case !revoked.IsZero():
		return "revoked"
	case !expires.IsZero() && !time.Now().Before(expires):
		return "expired"
	}
	return "active"
}

func (inv *invocation) tokensList(args []string) error {
	fs := inv.flags("[flags]")
	g := inv.globalFlags(fs, true)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListAPITokens(inv.ctx)
	if err != nil {
		return err
	}
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tSTATUS\tCREATED\tEXPIRES\tLAST USED\tID")
		for _, t := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, tokenStatus(t.RevokedAt, t.ExpiresAt), ts(t.CreatedAt), ts(t.ExpiresAt), ts(t.LastUsedAt), t.ID)
		}
	})
}

func (inv *invocation) tokensCreate(args []string) error {
	fs := inv.flags("NAME [--ttl 720h] [--user NAME]\n\n" +
		"API tokens are created from a password login (a token cannot mint tokens): the password is read\n" +
		"from MAMORI_PASSWORD, a prompt, or the first line of stdin when it is not a terminal.")
	g := inv.globalFlags(fs, false)
	user := fs.String("user", inv.getenv(EnvUser), "user name (env "+EnvUser+"; default the one logged in)")
	ttl := fs.Duration("ttl", DefaultTokenTTL, "lifetime of the token (1m to 8784h)")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
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
		return usagef("give --user NAME (or %s)", EnvUser)
	}
	c, _, err := inv.passwordSession(s, g.timeout, *user)
	if err != nil {
		return err
	}
	t, err := c.CreateAPIToken(inv.ctx, pos[0], *ttl)
	c.Logout(inv.ctx)
	if err != nil {
		return err
	}
	if g.output == "text" {
		fmt.Fprintln(inv.stderr, "The token is shown only now; use it with --token or "+EnvToken+".")
	}
	return inv.emit(g, t.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "token:\t%s\nid:\t%s\nname:\t%s\nexpires:\t%s\n", t.Token, t.ID, t.Name, ts(t.ExpiresAt))
	})
}

func (inv *invocation) tokensRevoke(args []string) error {
	fs := inv.flags("ID")
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	s, err := inv.resolve(g, true)
	if err != nil {
		return err
	}
	c, err := s.client(g.timeout)
	if err != nil {
		return err
	}
	if err := c.RevokeAPIToken(inv.ctx, pos[0]); err != nil {
		return err
	}
	inv.done(g, "API token %s revoked.", pos[0])
	if s.sameServer && s.cfg.TokenID == pos[0] {
		s.cfg.Token, s.cfg.TokenID, s.cfg.TokenName, s.cfg.TokenExpiresAt = "", "", "", ""
		if err := s.cfg.save(s.cfgPath); err != nil {
			return err
		}
		fmt.Fprintf(inv.stderr, "It was the token stored in %s; log in again with \"mamori login\".\n", s.cfgPath)
	}
	return nil
}

// enrollmentTokens: mamori enrollment-tokens list|create|revoke.
func (inv *invocation) enrollmentTokens(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"list":   inv.enrollmentTokensList,
		"create": inv.enrollmentTokensCreate,
		"revoke": inv.enrollmentTokensRevoke,
	})
}

func uses(allowed, used int) string {
	if allowed == 0 {
		return fmt.Sprintf("%d/unlimited", used)
	}
	return fmt.Sprintf("%d/%d", used, allowed)
}

func (inv *invocation) enrollmentTokensList(args []string) error {
	fs := inv.flags("[flags]")
	g := inv.globalFlags(fs, true)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListEnrollmentTokens(inv.ctx)
	if err != nil {
		return err
	}
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "ID\tGROUP\tSTATUS\tUSES\tEXPIRES\tDESCRIPTION")
		for _, t := range l.Items {
			status := tokenStatus(t.RevokedAt, t.ExpiresAt)
			if status == "active" && t.UsesAllowed > 0 && t.Uses >= t.UsesAllowed {
				status = "used up"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Group.Path, status, uses(t.UsesAllowed, t.Uses), ts(t.ExpiresAt), orDash(t.Description))
		}
	})
}

func (inv *invocation) enrollmentTokensCreate(args []string) error {
	fs := inv.flags("[--group PATH] [--ttl 24h] [--uses N] [--description TEXT]")
	g := inv.globalFlags(fs, true)
	group := fs.String("group", "", "static group for computers enrolled with the token (default Lost & Found)")
	access := fs.String("access-group", "", "group the token itself belongs to (default your home group)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	n := fs.Int("uses", 0, "how many enrollments the token allows; 0 = unlimited")
	desc := fs.String("description", "", "what the token is for")
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *ttl <= 0 || *n < 0 {
		return usagef("--ttl must be positive and --uses not negative")
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	req := apiclient.EnrollmentTokenRequest{Group: *group, AccessGroup: *access, Uses: *n, Description: *desc}
	req.TTL = ttl.String()
	t, err := c.CreateEnrollmentToken(inv.ctx, req)
	if err != nil {
		return err
	}
	fp := "sha256:..."
	if ca, err := c.CA(inv.ctx); err == nil {
		fp = ca.Fingerprint
	}
	return inv.emit(g, t.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "token:\t%s\nid:\t%s\ngroup:\t%s\nexpires:\t%s\nuses:\t%s\nca fingerprint:\t%s\n", t.Token, t.ID, t.Group.Path, ts(t.ExpiresAt), uses(t.UsesAllowed, t.Uses), fp)
		fmt.Fprintf(w, "\nenroll an agent with:\n  mamori-agent run --state /var/lib/mamori-agent --server SERVER:2222 --token %s --ca-fingerprint %s\n", t.Token, fp)
	})
}

func (inv *invocation) enrollmentTokensRevoke(args []string) error {
	fs := inv.flags("ID")
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	if err := c.RevokeEnrollmentToken(inv.ctx, pos[0]); err != nil {
		return err
	}
	inv.done(g, "Enrollment token %s revoked.", pos[0])
	return nil
}
