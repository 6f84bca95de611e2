// Package tasks is what the administrator makes computers (client tasks) or
// the server (server tasks) do: task types with validated parameters,
// triggers (as soon as possible, once, daily/weekly/monthly/yearly in a time
// zone, cron, joined dynamic group, event) with a random delay and
// throttling, and per-computer runs with their state machine.
package tasks

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/errcode"
)

// Type names a kind of task.
type Type string

// Client task types (run by agents).
const (
	Scan           Type = "scan"
	EngineUpdate   Type = "engine_update"
	EngineRollback Type = "engine_rollback"
	RunCommand     Type = "run_command"
	DisplayMessage Type = "display_message"
	ExportConfig   Type = "export_config"
	Diagnostics    Type = "diagnostics"
	Restart        Type = "restart"
	Shutdown       Type = "shutdown"
	StopManaging   Type = "stop_managing"
)

// Server task types (run by the server).
const (
	DeleteNotConnecting Type = "delete_not_connecting"
	RenameComputers     Type = "rename_computers"
)

// TypeInfo describes a task type for clients.
type TypeInfo struct {
	Type   Type        `json:"type"`
	Server bool        `json:"server"` // runs on the server, not on computers
	Params []ParamInfo `json:"params"`
	Doc    string      `json:"doc"`
}

// ParamInfo describes one parameter.
type ParamInfo struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Required bool   `json:"required,omitempty"`
	Default  any    `json:"default,omitempty"`
	Doc      string `json:"doc"`
}

// Types lists every task type with its parameters.
var Types = []TypeInfo{
	{Scan, false, []ParamInfo{
		{"paths", "list", true, nil, "absolute paths to scan"},
		{"exclusions", "list", false, nil, "globs to skip, added to the policy's"},
		{"action", "enum quarantine|report", false, nil, "what to do with detected files; without it, the computer's protection.action_on_detection (a policy's, else quarantine)"},
	}, "on-demand scan"},
	{EngineUpdate, false, nil, "update the detection engine now"},
	{EngineRollback, false, nil, "go back to the previous engine version"},
	{RunCommand, false, []ParamInfo{
		{"command", "string", true, nil, "command line, run by the shell (sh -c / cmd /C)"},
		{"working_directory", "string", false, "", "absolute directory to run in"},
		{"timeout", "duration", false, "60s", "killed after this long (1s..1h)"},
		{"max_output", "size", false, 32768, "bytes of output kept (1..61440: the result travels as one event)"},
	}, "run a command and report its output and exit code"},
	{DisplayMessage, false, []ParamInfo{
		{"title", "string", true, nil, "at most 128 characters"},
		{"message", "string", true, nil, "at most 4096 characters"},
		{"level", "enum info|warning|critical", false, "info", "how the message is presented"},
	}, "show a message to the logged-in users"},
	{ExportConfig, false, nil, "report the configuration the agent applies"},
	{Diagnostics, false, []ParamInfo{
		{"max_bytes", "size", false, 10 << 20, "largest bundle uploaded (1K..100M)"},
	}, "collect logs and state into a bundle the server keeps for download"},
	{Restart, false, []ParamInfo{
		{"delay", "duration", false, "1m", "time given to users (0..24h)"},
		{"reason", "string", false, "", "shown to users; at most 256 characters"},
	}, "restart the computer"},
	{Shutdown, false, []ParamInfo{
		{"delay", "duration", false, "1m", "time given to users (0..24h)"},
		{"reason", "string", false, "", "shown to users; at most 256 characters"},
	}, "shut the computer down"},
	{StopManaging, false, nil, "the agent unenrolls, removes its state and stops; the computer is marked unmanaged"},
	{DeleteNotConnecting, true, []ParamInfo{
		{"group", "string", false, "All", "static group path (subgroups included)"},
		{"days", "int", true, nil, "computers not connected for this many days (1..3650) are removed"},
	}, "remove computers that stopped connecting"},
	{RenameComputers, true, []ParamInfo{
		{"group", "string", false, "All", "static group path (subgroups included)"},
		{"pattern", "string", true, nil, "new name; {hostname}, {fqdn}, {instance} and {id} are replaced"},
	}, "rename computers from their inventory"},
}

// Info returns the description of a type.
func Info(t Type) (TypeInfo, bool) {
	for _, ti := range Types {
		if ti.Type == t {
			return ti, true
		}
	}
	return TypeInfo{}, false
}

// IsServer reports whether t runs on the server.
func IsServer(t Type) bool {
	ti, ok := Info(t)
	return ok && ti.Server
}

// MaxOutput bounds the output a run reports (it travels in one outbox
// event, at most 64 KiB with the rest of the result).
const MaxOutput = 60 << 10

// Params are a task's validated parameters (JSON object).
type Params map[string]any

func bad(t Type, name, format string, args ...any) error {
	return errcode.New(errcode.Invalid, "%s.%s: "+format, append([]any{t, name}, args...)...)
}

// ParseParams validates a task's parameters: unknown names, missing
// required ones, wrong types and values out of range are refused with an
// error naming the parameter. It returns them with defaults filled in.
func ParseParams(t Type, raw json.RawMessage) (Params, error) {
	ti, ok := Info(t)
	if !ok {
		var names []string
		for _, x := range Types {
			names = append(names, string(x.Type))
		}
		return nil, errcode.New(errcode.Invalid, "unknown task type %q (known: %s)", t, strings.Join(names, ", "))
	}
	in := map[string]any{}
	if len(raw) > 0 && string(raw) != "null" {
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		if err := dec.Decode(&in); err != nil {
			return nil, errcode.New(errcode.Invalid, "%s: parameters must be a JSON object", t)
		}
	}
	known := map[string]ParamInfo{}
	for _, p := range ti.Params {
		known[p.Name] = p
	}
	for k := range in {
		if _, ok := known[k]; !ok {
			return nil, errcode.New(errcode.Invalid, "%s has no parameter %q", t, k)
		}
	}
	out := Params{}
	for _, p := range ti.Params {
		v, present := in[p.Name]
		if !present {
			if p.Required {
				return nil, bad(t, p.Name, "required")
			}
			if p.Default != nil {
				out[p.Name] = p.Default
			}
			continue
		}
		norm, err := checkParam(t, p, v)
		if err != nil {
			return nil, err
		}
		out[p.Name] = norm
	}
	return out, nil
}

func checkParam(t Type, p ParamInfo, v any) (any, error) {
	str := func(max int) (string, error) {
		s, ok := v.(string)
		if !ok || !utf8.ValidString(s) || utf8.RuneCountInString(s) > max {
			return "", bad(t, p.Name, "must be text of at most %d characters", max)
		}
		return s, nil
	}
	switch t + "." + Type(p.Name) {
	case Scan + ".paths", Scan + ".exclusions":
		items, ok := v.([]any)
		if !ok || (p.Required && len(items) == 0) || len(items) > 256 {
			return nil, bad(t, p.Name, "must be a list of 1 to 256 paths")
		}
		out := []string{} // an empty list stays a list (null would not parse again)
		for i, x := range items {
			s, ok := x.(string)
			if !ok || s == "" || len(s) > 4096 {
				return nil, bad(t, p.Name, "item %d must be non-empty text", i+1)
			}
			if p.Name == "paths" && !filepath.IsAbs(s) && !strings.HasPrefix(s, "/") && !(len(s) > 2 && s[1] == ':') {
				return nil, bad(t, p.Name, "item %d (%q) must be an absolute path", i+1, s)
			}
			if p.Name == "exclusions" {
				if _, err := filepath.Match(s, "x"); err != nil {
					return nil, bad(t, p.Name, "item %d (%q) is not a valid glob", i+1, s)
				}
			}
			out = append(out, s)
		}
		return out, nil
	case Scan + ".action":
		s, _ := v.(string)
		if s != "quarantine" && s != "report" {
			return nil, bad(t, p.Name, "must be quarantine or report")
		}
		return s, nil
	case RunCommand + ".command":
		s, err := str(8192)
		if err != nil || strings.TrimSpace(s) == "" {
			return nil, bad(t, p.Name, "must be a non-empty command of at most 8192 characters")
		}
		return s, nil
	case RunCommand + ".working_directory":
		s, err := str(4096)
		if err != nil || (s != "" && !filepath.IsAbs(s) && !strings.HasPrefix(s, "/") && !(len(s) > 2 && s[1] == ':')) {
			return nil, bad(t, p.Name, "must be an absolute directory")
		}
		return s, nil
	case RunCommand + ".timeout", Restart + ".delay", Shutdown + ".delay":
		lo, hi := time.Second, time.Hour
		if p.Name == "delay" {
			lo, hi = 0, 24*time.Hour
		}
		return durationParam(t, p.Name, v, lo, hi)
	case RunCommand + ".max_output":
		return intParam(t, p.Name, v, 1, MaxOutput)
	case Diagnostics + ".max_bytes":
		return intParam(t, p.Name, v, 1<<10, 100<<20)
	case DisplayMessage + ".title":
		return str(128)
	case DisplayMessage + ".message":
		return str(4096)
	case DisplayMessage + ".level":
		s, _ := v.(string)
		if s != "info" && s != "warning" && s != "critical" {
			return nil, bad(t, p.Name, "must be info, warning or critical")
		}
		return s, nil
	case Restart + ".reason", Shutdown + ".reason":
		return str(256)
	case DeleteNotConnecting + ".group", RenameComputers + ".group":
		return str(1024)
	case DeleteNotConnecting + ".days":
		return intParam(t, p.Name, v, 1, 3650)
	case RenameComputers + ".pattern":
		s, err := str(128)
		if err != nil || strings.TrimSpace(s) == "" || strings.ContainsAny(s, "/\x00") {
			return nil, bad(t, p.Name, "must be 1-128 characters without '/'")
		}
		return s, nil
	}
	return nil, bad(t, p.Name, "unsupported parameter")
}

func durationParam(t Type, name string, v any, lo, hi time.Duration) (string, error) {
	s, ok := v.(string)
	d, err := time.ParseDuration(s)
	if !ok || err != nil || d < lo || d > hi {
		return "", bad(t, name, "must be a duration between %s and %s", lo, hi)
	}
	return d.String(), nil
}

func intParam(t Type, name string, v any, lo, hi int64) (int64, error) {
	var n int64
	switch x := v.(type) {
	case json.Number:
		i, err := x.Int64()
		if err != nil {
			return 0, bad(t, name, "must be a whole number")
		}
		n = i
	case float64:
		if x != float64(int64(x)) {
			return 0, bad(t, name, "must be a whole number")
		}
		n = int64(x)
	case int:
		n = int64(x)
	case int64:
		n = x
	default:
		return 0, bad(t, name, "must be a whole number")
	}
	if n < lo || n > hi {
		return 0, bad(t, name, "must be between %d and %d", lo, hi)
	}
	return n, nil
}
