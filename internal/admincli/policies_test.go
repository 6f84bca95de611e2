package admincli_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

type policyValue struct {
	Flag  string          `json:"flag"`
	Value json.RawMessage `json:"value"`
	Merge string          `json:"merge"`
}

type policy struct {
	ID       string                 `json:"id"`
	Name     string                 `json:"name"`
	Product  string                 `json:"product"`
	Settings map[string]policyValue `json:"settings"`
	Version  int64                  `json:"version"`
}

type assignment struct {
	ID         string `json:"id"`
	TargetType string `json:"target_type"`
	Rank       int    `json:"rank"`
	Target     struct {
		ID   string `json:"id"`
		Path string `json:"path"`
	} `json:"target"`
}

type effective struct {
	ComputerID string `json:"computer_id"`
	Settings   []struct {
		Product string          `json:"product"`
		Key     string          `json:"key"`
		Value   json.RawMessage `json:"value"`
		Default bool            `json:"default"`
		Forced  bool            `json:"forced"`
		Source  *struct {
			PolicyName string `json:"policy_name"`
		} `json:"source"`
	} `json:"settings"`
}

var cells = regexp.MustCompile(`\s{2,}`)

// row returns the cells of the table line starting with key.
func row(t *testing.T, out, key string) []string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, key+" ") {
			return cells.Split(strings.TrimSpace(l), -1)
		}
	}
	t.Fatalf("no line %q in:\n%s", key, out)
	return nil
}

func compact(raw json.RawMessage) string {
	var b strings.Builder
	var v any
	_ = json.Unmarshal(raw, &v)
	out, _ := json.Marshal(v)
	b.Write(out)
	return b.String()
}

func TestPolicies(t *testing.T) {
	t.Parallel()
	h, f := startFull(t)
	h.ok("", "groups", "create", "Servers")
	webID := f.add("web-01", "Servers", true)

	out := h.ok("", "policies", "schema")
	if r := row(t, out, "agent.check_in_interval"); r[1] != "duration" || r[2] != "60s" || r[3] != "10..86400 s" {
		t.Fatalf("schema row %q", r)
	}
	if out := h.ok("", "policies", "schema", "--product", "protection"); strings.Contains(out, "agent.") || !strings.Contains(out, "protection.scan_exclusions") {
		t.Fatalf("protection schema:\n%s", out)
	}

	// The product comes from the keys; values are typed by the schema.
	var base policy
	h.jsonOut(&base, "", "policies", "create", "Base", "--set", "agent.check_in_interval=30s", "--force", "agent.log_level=warn",
		"--set", "outbox_max_events=5000")
	if base.Product != "agent" || base.Version != 1 || len(base.Settings) != 3 ||
		base.Settings["check_in_interval"].Flag != "apply" || compact(base.Settings["check_in_interval"].Value) != `"30s"` ||
		base.Settings["log_level"].Flag != "force" || compact(base.Settings["outbox_max_events"].Value) != `5000` {
		t.Fatalf("created %+v", base)
	}
	var excl policy
	h.jsonOut(&excl, "", "policies", "create", "Exclusions", "--product", "protection", "--set", "scan_exclusions+=/tmp/*",
		"--set", `scan_exclusions+=["/var/cache/*","/srv/cache/*"]`)
	if v := excl.Settings["scan_exclusions"]; v.Merge != "append" || compact(v.Value) != `["/tmp/*","/var/cache/*","/srv/cache/*"]` {
		t.Fatalf("list setting %+v", excl.Settings)
	}
	// A comma is part of the item, and the CLI says so.
	r := h.run("", "policies", "create", "Comma", "--product", "protection", "--set", "scan_exclusions=*.iso,*.img", "--json")
	var comma policy
	if err := json.Unmarshal([]byte(r.stdout), &comma); r.code != 0 || err != nil || compact(comma.Settings["scan_exclusions"].Value) != `["*.iso,*.img"]` {
		t.Fatalf("comma item: exit %d %v %s", r.code, err, r.stdout)
	}
	if !strings.Contains(r.stderr, `one item "*.iso,*.img"`) {
		t.Fatalf("no note about the comma: %q", r.stderr)
	}
	h.ok("", "policies", "delete", "Comma")
	settingsFile := writeFile(t, "s.json", `{"scan_exclusions": {"flag": "apply", "value": ["/home/*"]}, "archive_max_depth": {"flag": "apply", "value": 3}}`)
	var lower policy
	h.jsonOut(&lower, "", "policies", "create", "Lower", "--product", "protection", "--settings", "@"+settingsFile,
		"--set", "archive_max_depth=4")
	if compact(lower.Settings["archive_max_depth"].Value) != "4" || compact(lower.Settings["scan_exclusions"].Value) != `["/home/*"]` {
		t.Fatalf("from a file %+v", lower.Settings)
	}

	// Assign: to the group, to the computer (by name), ranks order them.
	var a assignment
	h.jsonOut(&a, "", "policies", "assign", "Base", "--group", "Servers")
	if a.TargetType != "static" || a.Target.Path != "All/Servers" || a.Rank != 0 {
		t.Fatalf("assigned %+v", a)
	}
	if out := h.ok("", "policies", "assign", "Lower", "--group", "Servers", "--rank", "-5"); !strings.Contains(out, "Policy Lower assigned to group All/Servers (rank -5") {
		t.Errorf("assign said %q", out)
	}
	h.jsonOut(&a, "", "policies", "assign", "Exclusions", "--computer", "web-01", "--rank", "5")
	if a.TargetType != "computer" || a.Target.ID != webID || a.Rank != 5 {
		t.Fatalf("assigned %+v", a)
	}
	out = h.ok("", "policies", "show", "Base")
	for _, want := range []string{"product:", "agent.log_level", "force", "group All/Servers"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if out := h.ok("", "policies", "list"); !strings.Contains(out, "Base") || !strings.Contains(out, "Exclusions") {
		t.Errorf("list:\n%s", out)
	}
	var pl list[policy]
	h.jsonOut(&pl, "", "policies", "list", "--product", "protection")
	if pl.Total != 2 {
		t.Fatalf("protection policies %+v", pl)
	}

	// The effective configuration says where every value came from.
	out = h.ok("", "computers", "effective-config", "web-01")
	for key, want := range map[string][]string{
		"agent.check_in_interval":      {"agent.check_in_interval", "30s", "no", "Base", "group All/Servers"},
		"agent.log_level":              {"agent.log_level", "warn", "yes", "Base", "group All/Servers"},
		"agent.proxy":                  {"agent.proxy", `""`, "no", "(default)", "-"},
		"protection.scan_exclusions":   {"protection.scan_exclusions", `["/home/*","/tmp/*","/var/cache/*","/srv/cache/*"]`, "no", "Lower, Exclusions", "group All/Servers, computer web-01"},
		"protection.archive_max_depth": {"protection.archive_max_depth", "4", "no", "Lower", "group All/Servers"},
	} {
		if got := row(t, out, key); !slices.Equal(got, want) {
			t.Errorf("effective %s = %q, want %q", key, got, want)
		}
	}
	if !strings.Contains(out, "computer:") || !strings.Contains(out, "web-01") {
		t.Errorf("effective-config header:\n%s", out)
	}
	var eff effective
	h.jsonOut(&eff, "", "computers", "effective-config", webID)
	if eff.ComputerID != webID || len(eff.Settings) < 10 {
		t.Fatalf("effective JSON %+v", eff)
	}
	if out := h.ok("", "computers", "effective-config", "web-01", "--set-only", "--product", "agent"); strings.Contains(out, "(default)") ||
		!strings.Contains(out, "agent.log_level") || strings.Contains(out, "protection.") {
		t.Errorf("--set-only --product agent:\n%s", out)
	}

	// Update: named settings change, others stay; the version is sent.
	var up policy
	h.jsonOut(&up, "", "policies", "update", "Base", "--set", "check_in_interval=45s", "--unset", "agent.log_level", "--description", "baseline")
	if up.Version != 2 || compact(up.Settings["check_in_interval"].Value) != `"45s"` || len(up.Settings) != 2 {
		t.Fatalf("updated %+v", up)
	}
	if out := h.ok("", "computers", "effective-config", "web-01"); row(t, out, "agent.log_level")[3] != "(default)" {
		t.Errorf("log_level after unset:\n%s", out)
	}
	// Rank and unassign, by target or by assignment id.
	h.jsonOut(&a, "", "policies", "rank", "Exclusions", "--computer", "web-01", "--rank", "2")
	if a.Rank != 2 {
		t.Fatalf("ranked %+v", a)
	}
	h.jsonOut(&a, "", "policies", "rank", "Exclusions", a.ID, "--rank", "-3")
	if a.Rank != -3 {
		t.Fatalf("ranked by id %+v", a)
	}
	if out := h.ok("", "policies", "unassign", "Base", "--group", "/Servers"); !strings.Contains(out, "no longer assigned to group All/Servers") {
		t.Errorf("unassign said %q", out)
	}
	h.ok("", "policies", "unassign", "Exclusions", a.ID)
	if out := h.ok("", "computers", "effective-config", "web-01"); row(t, out, "agent.check_in_interval")[3] != "(default)" {
		t.Errorf("after unassign:\n%s", out)
	}

	// Bad input.
	h.fails(1, `agent has no setting "nope"`, "", "policies", "create", "X", "--set", "agent.nope=1")
	h.fails(1, "must be a duration", "", "policies", "create", "X", "--set", "agent.check_in_interval=soon")
	h.fails(1, "outside 10..86400", "", "policies", "update", "Base", "--set", "check_in_interval=1s")
	h.fails(2, "agent.outbox_max_events must be a whole number", "", "policies", "create", "X", "--set", "agent.outbox_max_events=lots")
	h.fails(2, "agent.log_level is not a list", "", "policies", "create", "X", "--set", "agent.log_level+=warn")
	h.fails(2, "the policy configures agent", "", "policies", "update", "Base", "--set", "protection.archive_max_depth=3")
	h.fails(2, "one product", "", "policies", "create", "X", "--set", "agent.log_level=warn", "--set", "protection.archive_max_depth=3")
	h.fails(2, "is given twice", "", "policies", "create", "X", "--set", "agent.log_level=warn", "--set", "agent.log_level=info")
	h.fails(2, "different flags", "", "policies", "create", "X", "--set", "agent.log_level=warn", "--force", "agent.log_level=info")
	h.fails(2, "the policy does not set it", "", "policies", "update", "Base", "--unset", "log_level")
	h.fails(2, "give one of --group", "", "policies", "assign", "Base")
	h.fails(2, "--rank is required", "", "policies", "rank", "Exclusions", "--computer", "web-01")
	h.fails(1, `policy "nope" not found`, "", "policies", "show", "nope")
	h.fails(1, "is not assigned to group All", "", "policies", "unassign", "Base", "--group", "All")
	h.fails(1, `computer "nope" not found`, "", "computers", "effective-config", "nope")
	h.fails(1, "product must be one of", "", "policies", "create", "X", "--product", "firewall")
	if r := h.run("", "policies", "create", "X", "--set", "log_level"); r.code != 2 || !strings.Contains(r.stderr, "must be KEY=VALUE") {
		t.Errorf("--set without =: %+v", r)
	}

	if out := h.ok("", "policies", "delete", "Exclusions"); !strings.Contains(out, "Policy Exclusions deleted.") {
		t.Errorf("delete said %q", out)
	}
	h.jsonOut(&pl, "", "policies", "list", "--product", "protection")
	if pl.Total != 1 {
		t.Fatalf("after delete %+v", pl)
	}
}
