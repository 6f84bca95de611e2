package admincli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/errcode"
)

// Config is the CLI's config file, written by "mamori login" (mode 0600,
// replaced atomically) and read by every API command. Default location:
// $XDG_CONFIG_HOME/mamori/cli.json, else ~/.config/mamori/cli.json;
// --config or MAMORI_CLI_CONFIG choose another.
//
//	{
//	  "server": "https://mamori.example.net:8443",
//	  "ca_fingerprint": "sha256:…",        // or "ca_file": "/abs/path/ca.pem"
//	  "username": "admin",
//	  "token": "mmt_…",                    // personal API token
//	  "token_id": "…",                     // to revoke it at logout
//	  "token_name": "mamori-cli on host",
//	  "token_expires_at": "2026-02-01T12:00:00Z"
//	}
//
// The token and the CA settings apply only to requests to "server": with
// --server naming another server they are not used (a token must never be
// sent to a server it was not made for).
type Config struct {
	Server         string `json:"server"`
	CAFingerprint  string `json:"ca_fingerprint,omitempty"`
	CAFile         string `json:"ca_file,omitempty"`
	Username       string `json:"username,omitempty"`
	Token          string `json:"token,omitempty"`
	TokenID        string `json:"token_id,omitempty"`
	TokenName      string `json:"token_name,omitempty"`
	TokenExpiresAt string `json:"token_expires_at,omitempty"`
}

const maxConfigBytes = 1 << 20

// configPath is where the config file is: --config, MAMORI_CLI_CONFIG,
// $XDG_CONFIG_HOME/mamori/cli.json or ~/.config/mamori/cli.json.
func (inv *invocation) configPath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if x := inv.getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "mamori", "cli.json"), nil
	}
	home := inv.getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", usagef("cannot find the config file: no home directory; give --config FILE")
		}
	}
	return filepath.Join(home, ".config", "mamori", "cli.json"), nil
}

// loadConfig reads the config file; a missing file is an empty config.
func loadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the config file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the config file: %w", err)
	}
	if len(b) > maxConfigBytes {
		return nil, fmt.Errorf("the config file %s is larger than %d bytes", path, maxConfigBytes)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("the config file %s is not valid JSON: %v", path, err)
	}
	return &c, nil
}

// save writes the config file (0600; its directory 0700 when created).
func (c *Config) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the config directory: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing the config file: %w", err)
	}
	return nil
}

// globals are the connection and output flags of every API command.
type globals struct {
	server, token, config string
	caFingerprint, caFile string
	output                string
	timeout               time.Duration
}

// globalFlags registers the global flags on fs; withToken adds --token
// (not for commands that log in with a password).
func (inv *invocation) globalFlags(fs *flag.FlagSet, withToken bool) *globals {
	g := &globals{}
	fs.StringVar(&g.server, "server", inv.getenv(EnvServer), "API URL, https://HOST:PORT (env "+EnvServer+"; default from the config file)")
	if withToken {
		fs.StringVar(&g.token, "token", inv.getenv(EnvToken), "personal API token mmt_... (env "+EnvToken+"; default from the config file)")
	}
	fs.StringVar(&g.config, "config", inv.getenv(EnvConfig), "config file (env "+EnvConfig+"; default $XDG_CONFIG_HOME/mamori/cli.json or ~/.config/mamori/cli.json)")
	fs.StringVar(&g.caFingerprint, "ca-fingerprint", inv.getenv(EnvCAFingerprint), "trust the server whose CA has this fingerprint, sha256:HEX (env "+EnvCAFingerprint+")")
	fs.StringVar(&g.caFile, "ca-file", inv.getenv(EnvCAFile), "trust the CA certificates in this PEM file (env "+EnvCAFile+")")
	fs.StringVar(&g.output, "output", inv.envOr(EnvOutput, "text"), "output format: text (tables) or json (the API's JSON) (env "+EnvOutput+")")
	fs.BoolFunc("json", "short for --output json", func(v string) error {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return err
		}
		if on {
			g.output = "json"
		} else {
			g.output = "text"
		}
		return nil
	})
	fs.DurationVar(&g.timeout, "timeout", apiclient.DefaultTimeout, "time allowed for each request")
	return g
}

// settings are the resolved connection settings of a command.
type settings struct {
	server     string
	token      string
	trust      apiclient.Trust
	cfg        *Config
	cfgPath    string
	sameServer bool // server is the config file's
}

// resolve combines flags, environment and the config file; needToken
// makes a missing token a usage error.
func (inv *invocation) resolve(g *globals, needToken bool) (*settings, error) {
	if g.output != "text" && g.output != "json" {
		return nil, usagef("--output must be text or json")
	}
	if g.timeout <= 0 {
		return nil, usagef("--timeout must be positive")
	}
	if g.caFingerprint != "" && g.caFile != "" {
		return nil, usagef("give --ca-fingerprint or --ca-file, not both")
	}
	path, err := inv.configPath(g.config)
	if err != nil {
		return nil, err
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	s := &settings{cfg: cfg, cfgPath: path}
	raw := g.server
	if raw == "" {
		raw = cfg.Server
	}
	if raw == "" {
		return nil, usagef("no server: log in with \"mamori login --server https://HOST:8443\", or give --server or %s", EnvServer)
	}
	if s.server, err = apiclient.NormalizeURL(raw); err != nil {
		return nil, usagef("%s", errcode.Message(err))
	}
	s.sameServer = cfg.Server != "" && cfg.Server == s.server
	s.trust = apiclient.Trust{CAFingerprint: g.caFingerprint, CAFile: g.caFile}
	if s.trust == (apiclient.Trust{}) && s.sameServer {
		s.trust = apiclient.Trust{CAFingerprint: cfg.CAFingerprint, CAFile: cfg.CAFile}
	}
	if s.trust.CAFingerprint != "" {
		if _, err := s.trust.TLSConfig(); err != nil {
			return nil, usagef("%s", errcode.Message(err))
		}
	}
	s.token = g.token
	if s.token == "" && s.sameServer {
		s.token = cfg.Token
	}
	if needToken && s.token == "" {
		return nil, usagef("not logged in to %s: run \"mamori login\", or give --token or %s", s.server, EnvToken)
	}
	return s, nil
}

func (s *settings) client(timeout time.Duration) (*apiclient.Client, error) {
	c, err := apiclient.New(s.server, s.token, s.trust)
	if err != nil {
		return nil, err
	}
	c.Timeout = timeout
	return c, nil
}
