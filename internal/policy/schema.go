// Package policy is the configuration model: a settings schema per product
// (defined once here and served by the API so clients can render forms),
// policies that set some settings with a flag (apply or force) and, for
// lists, a merge rule, and the computation of a computer's effective
// configuration with the provenance of every value, in the order of
// DOMAIN.md (Policies).
package policy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/engine/bytesize"

	"github.com/robfig/cron/v3"

	"github.com/mamori/mamori/internal/errcode"
)

// Products a policy can configure.
const (
	ProductAgent      = "agent"
	ProductProtection = "protection"
	ProductUpdates    = "updates"
)

// Products lists them.
var Products = []string{ProductAgent, ProductProtection, ProductUpdates}

// Kind is a setting's value type.
type Kind string

// Kinds.
const (
	KindBool     Kind = "bool"
	KindInt      Kind = "int"
	KindDuration Kind = "duration" // Go duration text: "90s", "1h"
	KindSize     Kind = "size"     // bytes; text accepts K, M, G suffixes
	KindString   Kind = "string"
	KindEnum     Kind = "enum"
	KindList     Kind = "list" // list of strings
)

// Setting describes one setting.
type Setting struct {
	Key     string   `json:"key"`
	Product string   `json:"product"`
	Kind    Kind     `json:"type"`
	Default any      `json:"default"`
	Unit    string   `json:"unit,omitempty"`
	Min     *float64 `json:"min,omitempty"` // for int, duration (seconds), size (bytes)
	Max     *float64 `json:"max,omitempty"`
	Enum    []string `json:"enum,omitempty"`
	Doc     string   `json:"doc"`
	// Secret is true for a URL that may carry a password (a proxy's):
	// views and audit show it with the password hidden (Redacted).
	Secret bool `json:"secret,omitempty"`
	// item validates one list item or a string value.
	item func(string) error
}

func f(v float64) *float64 { return &v }

// Schema is every setting, by product then key.
var Schema = []Setting{
	// Agent.
	{Key: "check_in_interval", Product: ProductAgent, Kind: KindDuration, Default: "60s", Unit: "duration", Min: f(10), Max: f(86400),
		Doc: "time between check-ins (±10 % jitter)"},
	{Key: "servers", Product: ProductAgent, Kind: KindList, Default: []string{}, item: hostPort,
		Doc: "HOST:PORT of servers tried in order; empty keeps the enrolled list"},
	{Key: "proxy", Product: ProductAgent, Kind: KindString, Default: "", item: proxyURL, Secret: true, Doc: "http:// CONNECT proxy, tried first (also for engine downloads without updates.proxy); when it fails the agent goes its own way for 5 min; empty: the agent's --proxy or HTTPS_PROXY"},
	{Key: "log_level", Product: ProductAgent, Kind: KindEnum, Default: "info", Enum: []string{"debug", "info", "warn", "error"}, Doc: "agent log level"},
	{Key: "outbox_max_events", Product: ProductAgent, Kind: KindInt, Default: 100000, Min: f(1000), Max: f(10_000_000),
		Doc: "events kept while the server is unreachable (oldest dropped first)"},
	// Protection.
	{Key: "scan_exclusions", Product: ProductProtection, Kind: KindList, Default: []string{}, item: glob,
		Doc: "globs matched against full paths and base names"},
	{Key: "max_file_size", Product: ProductProtection, Kind: KindSize, Default: "0", Unit: "bytes", Min: f(0), Max: f(1 << 40),
		Doc: "files larger than this are skipped; 0 = no limit"},
	{Key: "archive_max_depth", Product: ProductProtection, Kind: KindInt, Default: 10, Min: f(1), Max: f(64), Doc: "nesting depth of archives"},
	{Key: "archive_max_scan_size", Product: ProductProtection, Kind: KindSize, Default: "1G", Unit: "bytes", Min: f(1 << 20), Max: f(1 << 40),
		Doc: "bytes unpacked per file from archives"},
	{Key: "archive_max_ratio", Product: ProductProtection, Kind: KindInt, Default: 100, Min: f(2), Max: f(100_000),
		Doc: "highest accepted compression ratio (zip bombs)"},
	{Key: "action_on_detection", Product: ProductProtection, Kind: KindEnum, Default: "quarantine", Enum: []string{"quarantine", "report"},
		Doc: "what scans do with a detected file"},
	{Key: "scheduled_scans", Product: ProductProtection, Kind: KindList, Default: []string{}, item: scheduledScan,
		Doc: `scheduled scans as "CRON PATH[,PATH...]", e.g. "0 3 * * 1 /home,/srv"`},
	// Updates.
	{Key: "sources", Product: ProductUpdates, Kind: KindList, Default: []string{}, item: source,
		Doc: "update sources in order: https:// mirror URLs or local folders; empty: the management server"},
	{Key: "interval", Product: ProductUpdates, Kind: KindDuration, Default: "60m", Unit: "duration", Min: f(60), Max: f(7 * 86400),
		Doc: "time between update checks"},
	{Key: "random_splay", Product: ProductUpdates, Kind: KindDuration, Default: "10m", Unit: "duration", Min: f(0), Max: f(86400),
		Doc: "random delay added to each check, spreading the load"},
	{Key: "proxy", Product: ProductUpdates, Kind: KindString, Default: "", item: proxyURL, Secret: true, Doc: "http:// proxy for downloads"},
	{Key: "rollback_depth", Product: ProductUpdates, Kind: KindInt, Default: 3, Min: f(1), Max: f(20), Doc: "previous engines kept for rollback"},
}

// Lookup finds a setting.
func Lookup(product, key string) (*Setting, bool) {
	for i := range Schema {
		if Schema[i].Product == product && Schema[i].Key == key {
			return &Schema[i], true
		}
	}
	return nil, false
}

// ValidProduct reports whether p is a product.
func ValidProduct(p string) bool { return slices.Contains(Products, p) }

// Normalize checks a value given for s (decoded from JSON) and returns its
// canonical form (strings for durations and sizes as given, int64 for
// ints, []string for lists). Errors name the setting.
func (s *Setting) Normalize(v any) (any, error) {
	bad := func(format string, args ...any) error {
		return errcode.New(errcode.Invalid, "%s.%s: "+format, append([]any{s.Product, s.Key}, args...)...)
	}
	switch s.Kind {
	case KindBool:
		b, ok := v.(bool)
		if !ok {
			return nil, bad("must be true or false")
		}
		return b, nil
	case KindInt:
		n, ok := asInt(v)
		if !ok {
			return nil, bad("must be a whole number")
		}
		if err := s.bounds(float64(n), fmt.Sprint(n)); err != nil {
			return nil, err
		}
		return n, nil
	case KindDuration:
		str, ok := v.(string)
		d, err := time.ParseDuration(str)
		if !ok || err != nil {
			return nil, bad("must be a duration like 90s, 30m or 2h")
		}
		if err := s.bounds(d.Seconds(), str); err != nil {
			return nil, err
		}
		return d.String(), nil
	case KindSize:
		str, ok := v.(string)
		n, err := ParseSize(str)
		if !ok || err != nil {
			return nil, bad("must be a size like 0, 512K, 100M or 2G")
		}
		if err := s.bounds(float64(n), str); err != nil {
			return nil, err
		}
		return str, nil
	case KindString:
		str, ok := v.(string)
		if !ok || len(str) > 2048 {
			return nil, bad("must be text of at most 2048 bytes")
		}
		if str != "" && s.item != nil {
			if err := s.item(str); err != nil {
				return nil, bad("%v", err)
			}
		}
		return str, nil
	case KindEnum:
		str, ok := v.(string)
		if !ok || !slices.Contains(s.Enum, str) {
			return nil, bad("must be one of %s", strings.Join(s.Enum, ", "))
		}
		return str, nil
	case KindList:
		raw, ok := v.([]any)
		if !ok {
			if ss, ok2 := v.([]string); ok2 {
				raw = make([]any, len(ss))
				for i, x := range ss {
					raw[i] = x
				}
			} else {
				return nil, bad("must be a list of text")
			}
		}
		if len(raw) > 1024 {
			return nil, bad("at most 1024 items")
		}
		out := make([]string, 0, len(raw))
		for i, x := range raw {
			str, ok := x.(string)
			if !ok || str == "" || len(str) > 2048 {
				return nil, bad("item %d must be non-empty text of at most 2048 bytes", i+1)
			}
			if s.item != nil {
				if err := s.item(str); err != nil {
					return nil, bad("item %d: %v", i+1, err)
				}
			}
			out = append(out, str)
		}
		return out, nil
	}
	return nil, bad("unknown type")
}

func (s *Setting) bounds(x float64, shown string) error {
	if (s.Min != nil && x < *s.Min) || (s.Max != nil && x > *s.Max) {
		lo, hi := "", ""
		if s.Min != nil {
			lo = fmt.Sprint(*s.Min)
		}
		if s.Max != nil {
			hi = fmt.Sprint(*s.Max)
		}
		unit := ""
		switch s.Kind {
		case KindDuration:
			unit = " seconds"
		case KindSize:
			unit = " bytes"
		}
		return errcode.New(errcode.Invalid, "%s.%s: %s is outside %s..%s%s", s.Product, s.Key, shown, lo, hi, unit)
	}
	return nil
}

func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case float64:
		if n != float64(int64(n)) {
			return 0, false
		}
		return int64(n), true
	case json.Number:
		x, err := n.Int64()
		return x, err == nil
	case int:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}

// ParseSize reads 0, 512, 512K, 100M, 2G, 1T (binary multiples, an
// optional B or iB), at most 1 PiB.
func ParseSize(s string) (int64, error) {
	n, err := bytesize.Parse(s)
	if err != nil || n > 1<<50 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n, nil
}

func hostPort(s string) error {
	i := strings.LastIndex(s, ":")
	if i <= 0 || i == len(s)-1 || strings.ContainsAny(s, "/ ") {
		return fmt.Errorf("%q must be HOST:PORT", s)
	}
	return nil
}

// proxyURL checks a proxy URL; its error never repeats a password (it is
// shown to the caller and kept in the audit log).
func proxyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("must be an http:// proxy URL (the value does not parse as a URL)")
	}
	if u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("%q must be an http:// proxy URL", u.Redacted())
	}
	return nil
}

func glob(s string) error {
	if _, err := path.Match(s, "x"); err != nil {
		return fmt.Errorf("%q is not a valid glob", s)
	}
	return nil
}

func source(s string) error {
	if strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://") {
		if u, err := url.Parse(s); err != nil || u.Host == "" {
			return fmt.Errorf("%q is not a valid URL", s)
		}
		return nil
	}
	if strings.HasPrefix(s, "/") || (len(s) > 2 && s[1] == ':') {
		return nil // a folder (a USB stick, a share)
	}
	return fmt.Errorf("%q must be an http(s):// URL or an absolute folder", s)
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a cron expression as settings write them (five fields
// or a descriptor such as @daily): what runs them (the agent's scheduled
// scans) reads them as they were validated.
func ParseCron(expr string) (cron.Schedule, error) { return cronParser.Parse(expr) }

// scheduledScan checks "CRON PATH[,PATH]" (five cron fields).
func scheduledScan(s string) error {
	fs := strings.Fields(s)
	if len(fs) != 6 {
		return fmt.Errorf(`%q must be "MIN HOUR DOM MONTH DOW PATH[,PATH...]"`, s)
	}
	if _, err := cronParser.Parse(strings.Join(fs[:5], " ")); err != nil {
		return fmt.Errorf("%q: bad cron expression: %v", s, err)
	}
	for _, p := range strings.Split(fs[5], ",") {
		if !strings.HasPrefix(p, "/") && !(len(p) > 2 && p[1] == ':') {
			return fmt.Errorf("%q: paths must be absolute", s)
		}
	}
	return nil
}
