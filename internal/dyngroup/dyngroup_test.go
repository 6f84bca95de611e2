package dyngroup

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// web is a Debian web server with two interfaces.
func web() *Facts {
	return &Facts{
		Hostname: "web-01.example.net", OSFamily: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", Architecture: "amd64",
		AgentVersion: "1.4.0", IPs: []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.168.7.9")},
		MACs: []string{"02:00:00:aa:bb:cc"}, Software: map[string][]string{"openssl": {"3.0.11-1~deb12u2"}, "nginx": {"1.22.1-9"}},
		Tags: []string{"prod", "dmz"}, Status: "online", LastSeen: now.Add(-time.Minute), Unresolved: 2, RAMBytes: 8 << 30, CPUCores: 4, hasHW: true,
	}
}

// bare has nothing but a host name: no software, no addresses, no tags.
func bare() *Facts {
	return &Facts{Hostname: "bare", Status: "offline", LastSeen: now.Add(-10 * 24 * time.Hour)}
}

func match(t *testing.T, op Op, f *Facts, rules ...Rule) bool {
	t.Helper()
	tpl := &Template{Op: op, Rules: rules}
	if err := tpl.Validate(); err != nil {
		t.Fatalf("template %+v: %v", tpl, err)
	}
	return tpl.Matches(f, now)
}

func TestOperators(t *testing.T) {
	cases := []struct {
		r    Rule
		web  bool
		bare bool
	}{
		{Rule{"hostname", Eq, "WEB-01.example.net"}, true, false}, // case-insensitive
		{Rule{"hostname", Ne, "web-01.example.net"}, false, true},
		{Rule{"hostname", Contains, "web"}, true, false},
		{Rule{"hostname", NotContains, "web"}, false, true},
		{Rule{"hostname", Prefix, "web-"}, true, false},
		{Rule{"hostname", Suffix, ".NET"}, true, false},
		{Rule{"hostname", NotSuffix, ".net"}, false, true},
		{Rule{"os.version", Ge, "11"}, true, false},
		{Rule{"os.version", Lt, "12.1"}, true, false},
		{Rule{"agent.version", Lt, "1.10.0"}, true, false}, // versions, not text: 1.4 < 1.10
		{Rule{"ip", InRange, "10.0.0.0/8"}, true, false},
		{Rule{"ip", InRange, "192.168.7.1-192.168.7.10"}, true, false},
		{Rule{"ip", NotInRange, "10.0.0.0/8"}, true, false}, // another address exists outside
		{Rule{"ip", Eq, "192.168.7.9"}, true, false},
		{Rule{"mac", Prefix, "02:00"}, true, false},
		{Rule{"software.name", Eq, "OpenSSL"}, true, false},
		{Rule{"software", Eq, "nginx"}, true, false},
		{Rule{"software", Lt, "openssl 3.0.12"}, true, false},
		{Rule{"software", Ge, "openssl 3.1"}, false, false},
		{Rule{"tag", Eq, "prod"}, true, false},
		{Rule{"tag", Ne, "prod"}, true, false}, // "dmz" exists with a different value
		{Rule{"status", Eq, "online"}, true, false},
		{Rule{"last_seen.age", Gt, "7d"}, false, true},
		{Rule{"last_seen.age", Le, "5m"}, true, false},
		{Rule{"detections.unresolved", Gt, "0"}, true, false},
		{Rule{"hardware.ram", Ge, "8G"}, true, false},
		{Rule{"hardware.cpu_cores", Lt, "8"}, true, false},
		{Rule{"clone_suspected", Eq, "false"}, true, true},
	}
	for _, c := range cases {
		if got := match(t, And, web(), c.r); got != c.web {
			t.Errorf("%v on web = %v, want %v", c.r, got, c.web)
		}
		if got := match(t, And, bare(), c.r); got != c.bare {
			t.Errorf("%v on bare = %v, want %v", c.r, got, c.bare)
		}
	}
}

func TestOps_NandNorAndDoesNotExist(t *testing.T) {
	debian := Rule{"os.name", Contains, "debian"}
	nginx := Rule{"software", Eq, "nginx"}
	apache := Rule{"software", Eq, "apache2"}
	cases := []struct {
		op    Op
		rules []Rule
		web   bool
		bare  bool
	}{
		{And, []Rule{debian, nginx}, true, false},
		{And, []Rule{debian, apache}, false, false},
		{Or, []Rule{apache, nginx}, true, false},
		{Or, []Rule{apache}, false, false},
		{Nand, []Rule{debian, apache}, true, true}, // at least one false
		{Nand, []Rule{debian, nginx}, false, true}, // all true on web
		{Nor, []Rule{apache}, true, true},          // apache2 does not exist
		{Nor, []Rule{nginx}, false, true},          // nginx does not exist
		{Nor, []Rule{Rule{"tag", Eq, "prod"}}, false, true},
		// A negated operator is not "does not exist": bare has no tags at all.
		{And, []Rule{{"tag", Ne, "prod"}}, true, false},
	}
	for _, c := range cases {
		if got := match(t, c.op, web(), c.rules...); got != c.web {
			t.Errorf("%s %v on web = %v, want %v", c.op, c.rules, got, c.web)
		}
		if got := match(t, c.op, bare(), c.rules...); got != c.bare {
			t.Errorf("%s %v on bare = %v, want %v", c.op, c.rules, got, c.bare)
		}
	}
}

func TestParse_RefusesBadTemplatesNamingTheProblem(t *testing.T) {
	cases := map[string]string{
		`{"op":"xor","rules":[{"field":"hostname","operator":"=","value":"x"}]}`: "op must be",
		`{"op":"and","rules":[]}`: "1 to 64 rules",
		`{"op":"and","rules":[{"field":"colour","operator":"=","value":"x"}]}`:               `unknown field "colour"`,
		`{"op":"and","rules":[{"field":"hostname","operator":"~","value":"x"}]}`:             "does not apply",
		`{"op":"and","rules":[{"field":"hardware.ram","operator":"contains","value":"8"}]}`:  "does not apply",
		`{"op":"and","rules":[{"field":"hardware.ram","operator":">","value":"lots"}]}`:      "whole number",
		`{"op":"and","rules":[{"field":"ip","operator":"in_range","value":"10.0.0.300/8"}]}`: "subnet",
		`{"op":"and","rules":[{"field":"last_seen.age","operator":">","value":"a week"}]}`:   "duration",
		`{"op":"and","rules":[{"field":"clone_suspected","operator":"=","value":"maybe"}]}`:  "true or false",
		`{"op":"and","rules":[{"field":"hostname","operator":"=","value":"x"}],"extra":1}`:   "unknown field",
		`not json`: "template",
	}
	for in, want := range cases {
		_, err := Parse([]byte(in))
		if errcode.Of(err) != errcode.Invalid || !strings.Contains(errcode.Message(err), want) {
			t.Errorf("%s: %v, want invalid mentioning %q", in, err, want)
		}
	}
	if _, err := Parse([]byte(`{"op":"nor","rules":[{"field":"software","operator":"<","value":"openssl 3.0"}]}`)); err != nil {
		t.Fatalf("valid template refused: %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	less := [][2]string{
		{"1.9", "1.10"}, {"1.0~rc1", "1.0"}, {"1.0", "1.0a"}, {"1:0.9", "2:0.1"}, {"2.0-1", "2.0-2"},
		{"3.0.11-1~deb12u2", "3.0.12"}, {"1.2.3", "1.2.3.1"}, {"0.9", "1"}, {"7.2.1", "7.10"},
	}
	for _, p := range less {
		if CompareVersions(p[0], p[1]) >= 0 || CompareVersions(p[1], p[0]) <= 0 {
			t.Errorf("%s should sort before %s", p[0], p[1])
		}
	}
	for _, p := range [][2]string{{"1.0", "1.00"}, {"0:1.2", "1.2"}, {"", ""}} {
		if CompareVersions(p[0], p[1]) != 0 {
			t.Errorf("%s should equal %s", p[0], p[1])
		}
	}
}

func TestNewFacts_ReadsStoredSections(t *testing.T) {
	c := &store.Computer{ID: "c", Hostname: "h", OSName: "Debian GNU/Linux", Platform: "linux", Status: "online", LastSeen: now}
	f := NewFacts(c, []string{"x"}, map[string]string{
		"system":   `{"architecture":"arm64"}`,
		"hardware": `{"cpu_cores":8,"ram_bytes":"17179869184"}`,
		"network":  `{"interfaces":[{"mac":"aa:bb","addresses":["10.0.0.5/24","fe80::1/64"]}]}`,
		"software": `{"packages":[{"name":"OpenSSL","version":"3.0"}]}`,
		"users":    `{"logged_in":[{"name":"alice"}]}`,
		"agent":    `{"version":"1.0"}`,
		"broken":   `{`,
	}, now)
	if f.Architecture != "arm64" || f.CPUCores != 8 || f.RAMBytes != 16<<30 || len(f.IPs) != 2 || f.IPs[0].String() != "10.0.0.5" ||
		f.Software["openssl"][0] != "3.0" || f.LoggedInUsers[0] != "alice" || f.HasEngine {
		t.Fatalf("facts %+v", f)
	}
	tpl, _ := Parse([]byte(`{"op":"and","rules":[{"field":"ip","operator":"in_range","value":"10.0.0.0/24"},{"field":"hardware.ram","operator":">=","value":"16G"}]}`))
	if !tpl.Matches(f, now) {
		t.Fatal("facts from sections do not match")
	}
	if !tpl.Sections()["network"] || !tpl.Sections()["hardware"] || tpl.Sections()["software"] {
		t.Fatalf("sections %v", tpl.Sections())
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"op":"and","rules":[{"field":"ip","operator":"in_range","value":"10.0.0.0/8"}]}`))
	f.Add([]byte(`{"op":"nor","rules":[{"field":"software","operator":"<","value":"a 1"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tpl, err := Parse(b)
		if err != nil {
			return
		}
		tpl.Matches(web(), now) // never panics on a valid template
		tpl.Matches(bare(), now)
	})
}

func FuzzCompareVersions(f *testing.F) {
	f.Add("1:2.3-4~rc1", "2.3")
	f.Fuzz(func(t *testing.T, a, b string) {
		if CompareVersions(a, b) != -CompareVersions(b, a) {
			t.Fatalf("not antisymmetric: %q %q", a, b)
		}
		if CompareVersions(a, a) != 0 {
			t.Fatalf("not reflexive: %q", a)
		}
	})
}

// The agent section as the server stores it (protojson: 64-bit numbers are
// strings) gives the engine version and its age; an agent without a
// reported engine (or the built-in one, of unknown age) has no age.
func TestNewFacts_EngineVersionAndAgeFromTheAgentSection(t *testing.T) {
	c := &store.Computer{ID: "c", Hostname: "h", Status: "online", LastSeen: now}
	published := now.Add(-30 * time.Hour).Unix()
	f := NewFacts(c, nil, map[string]string{"agent": `{"version":"1.0","engine_version":"42","engine_builtin":false,` +
		`"engine_update_state":"idle","engine_published_unix":"` + strconv.FormatInt(published, 10) + `"}`}, now)
	if !f.HasEngine || f.EngineVersion != "42" || now.Sub(f.EnginePublished) != 30*time.Hour {
		t.Fatalf("engine facts: has %v version %q published %v", f.HasEngine, f.EngineVersion, f.EnginePublished)
	}
	old, _ := Parse([]byte(`{"op":"and","rules":[{"field":"engine.age","operator":">","value":"2d"}]}`))
	fresh, _ := Parse([]byte(`{"op":"and","rules":[{"field":"engine.age","operator":"<","value":"3d"},{"field":"engine.version","operator":">=","value":"40"}]}`))
	if old.Matches(f, now) || !fresh.Matches(f, now) || !old.Matches(f, now.Add(24*time.Hour)) {
		t.Fatal("engine age rules")
	}
	builtinOnly := NewFacts(c, nil, map[string]string{"agent": `{"engine_version":"1","engine_builtin":true,"engine_published_unix":"0"}`}, now)
	if !builtinOnly.HasEngine || !builtinOnly.EnginePublished.IsZero() {
		t.Fatalf("built-in engine: %+v", builtinOnly)
	}
	if old.Matches(builtinOnly, now) || fresh.Matches(builtinOnly, now) {
		t.Fatal("an engine of unknown age matched an age rule")
	}
}
