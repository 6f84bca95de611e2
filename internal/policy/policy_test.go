package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/errcode"
)

func pol(id, product string, settings string) *Policy {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(settings), &raw); err != nil {
		panic(err)
	}
	s, err := ParseSettings(product, raw)
	if err != nil {
		panic(err)
	}
	return &Policy{ID: id, Name: "policy " + id, Product: product, Settings: s}
}

func get(eff []Effective, product, key string) Effective {
	for _, e := range eff {
		if e.Product == product && e.Key == key {
			return e
		}
	}
	panic("no " + product + "." + key)
}

func assign(policy, targetType, target string, rank int) Assignment {
	return Assignment{ID: policy + "@" + target, PolicyID: policy, TargetType: targetType, TargetID: target, Rank: rank}
}

func TestCompute_LaterOverridesUnlessForced(t *testing.T) {
	ps := map[string]*Policy{
		"a": pol("a", ProductAgent, `{"check_in_interval":{"flag":"apply","value":"30s"},"log_level":{"flag":"force","value":"warn"}}`),
		"b": pol("b", ProductAgent, `{"check_in_interval":{"flag":"apply","value":"5m"},"log_level":{"flag":"force","value":"debug"}}`),
		"c": pol("c", ProductAgent, `{"check_in_interval":{"flag":"force","value":"2m"}}`),
		"d": pol("d", ProductAgent, `{"check_in_interval":{"flag":"apply","value":"10m"}}`),
	}
	cases := []struct {
		name     string
		order    []string
		interval string
		source   string
		forced   bool
		level    string
	}{
		{"later apply wins", []string{"a", "b"}, "5m0s", "b", false, "warn"}, // log_level: force over force keeps the first
		{"force locks", []string{"c", "d"}, "2m0s", "c", true, "info"},
		{"apply after force is ignored", []string{"a", "c", "d"}, "2m0s", "c", true, "warn"},
		{"nothing applies: default", nil, "60s", "", false, "info"},
	}
	for _, c := range cases {
		var ord []Assignment
		for i, p := range c.order {
			ord = append(ord, assign(p, TargetStatic, "g", i))
		}
		eff := Compute(ord, ps)
		iv := get(eff, ProductAgent, "check_in_interval")
		if iv.Value != c.interval || iv.Forced != c.forced {
			t.Errorf("%s: interval %v forced %v, want %v %v", c.name, iv.Value, iv.Forced, c.interval, c.forced)
		}
		if c.source == "" {
			if iv.Source != nil || !iv.Default {
				t.Errorf("%s: default has a source %+v", c.name, iv.Source)
			}
		} else if iv.Source == nil || iv.Source.PolicyID != c.source || iv.Default {
			t.Errorf("%s: source %+v, want policy %s", c.name, iv.Source, c.source)
		}
		if lv := get(eff, ProductAgent, "log_level"); lv.Value != c.level {
			t.Errorf("%s: log_level %v, want %v", c.name, lv.Value, c.level)
		}
	}
}

func TestCompute_ListMergeRulesWithProvenance(t *testing.T) {
	ps := map[string]*Policy{
		"base":    pol("base", ProductProtection, `{"scan_exclusions":{"flag":"apply","value":["/proc/*","/sys/*"]}}`),
		"append":  pol("append", ProductProtection, `{"scan_exclusions":{"flag":"apply","value":["*.iso"],"merge":"append"}}`),
		"prepend": pol("prepend", ProductProtection, `{"scan_exclusions":{"flag":"apply","value":["/mnt/*"],"merge":"prepend"}}`),
		"replace": pol("replace", ProductProtection, `{"scan_exclusions":{"flag":"apply","value":["/only"]}}`),
		"lock":    pol("lock", ProductProtection, `{"scan_exclusions":{"flag":"force","value":["*.vmdk"],"merge":"append"}}`),
	}
	cases := []struct {
		order []string
		want  []string
		srcs  []string
	}{
		{[]string{"base", "append", "prepend"}, []string{"/mnt/*", "/proc/*", "/sys/*", "*.iso"}, []string{"base", "append", "prepend"}},
		{[]string{"base", "append", "replace"}, []string{"/only"}, []string{"replace"}},
		{[]string{"append"}, []string{"*.iso"}, []string{"append"}}, // appending to the default (empty)
		{[]string{"base", "lock", "append", "replace"}, []string{"/proc/*", "/sys/*", "*.vmdk"}, []string{"base", "lock"}},
	}
	for _, c := range cases {
		var ord []Assignment
		for i, p := range c.order {
			ord = append(ord, assign(p, TargetStatic, "g", i))
		}
		e := get(Compute(ord, ps), ProductProtection, "scan_exclusions")
		if !slices.Equal(e.Value.([]string), c.want) {
			t.Errorf("%v: %v, want %v", c.order, e.Value, c.want)
		}
		var got []string
		for _, s := range e.Sources {
			got = append(got, s.PolicyID)
		}
		if !slices.Equal(got, c.srcs) {
			t.Errorf("%v: sources %v, want %v", c.order, got, c.srcs)
		}
	}
}

// Tree: All > Servers > Web (the computer's group); dynamic groups
// "Linux" under All (with child "Debian"), "Nginx" under Servers.
func TestOrder_StaticLevelsThenDynamicDepthFirstThenComputer(t *testing.T) {
	path := []string{"all", "servers", "web"}
	dyn := []DynGroup{
		{ID: "linux", Name: "Linux", StaticParentID: "all"},
		{ID: "debian", Name: "Debian", DynamicParent: "linux"},
		{ID: "alpha", Name: "Alpha", StaticParentID: "all"}, // sorts before Linux
		{ID: "nginx", Name: "Nginx", StaticParentID: "servers"},
		{ID: "other", Name: "Other", StaticParentID: "laptops"}, // not on the path
	}
	member := map[string]bool{"linux": true, "debian": true, "alpha": true, "nginx": true, "other": true}
	as := []Assignment{
		assign("p-comp", TargetComputer, "c1", 0),
		assign("p-web", TargetStatic, "web", 0),
		assign("p-nginx", TargetDynamic, "nginx", 0),
		assign("p-debian", TargetDynamic, "debian", 0),
		assign("p-linux", TargetDynamic, "linux", 0),
		assign("p-alpha", TargetDynamic, "alpha", 0),
		assign("p-all-2", TargetStatic, "all", 2),
		assign("p-all-1", TargetStatic, "all", 1),
		assign("p-servers", TargetStatic, "servers", 0),
		assign("p-other", TargetDynamic, "other", 0),
		assign("p-laptops", TargetStatic, "laptops", 0),
	}
	var got []string
	for _, a := range Order("c1", path, dyn, member, as) {
		got = append(got, a.PolicyID)
	}
	want := []string{"p-all-1", "p-all-2", "p-alpha", "p-linux", "p-debian", "p-servers", "p-nginx", "p-web", "p-comp"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v\nwant  %v", got, want)
	}
	// Leaving a dynamic group removes its policies (and its children's).
	member["linux"] = false
	got = nil
	for _, a := range Order("c1", path, dyn, member, as) {
		got = append(got, a.PolicyID)
	}
	if slices.Contains(got, "p-linux") || slices.Contains(got, "p-debian") {
		t.Fatalf("policies of a group the computer left still apply: %v", got)
	}
}

func TestCompute_RemovingAPolicyRevertsToTheNextOneDown(t *testing.T) {
	ps := map[string]*Policy{
		"low":  pol("low", ProductUpdates, `{"interval":{"flag":"apply","value":"2h"}}`),
		"high": pol("high", ProductUpdates, `{"interval":{"flag":"apply","value":"15m"}}`),
	}
	both := []Assignment{assign("low", TargetStatic, "all", 0), assign("high", TargetDynamic, "d", 0)}
	if v := get(Compute(both, ps), ProductUpdates, "interval"); v.Value != "15m0s" || v.Source.TargetType != TargetDynamic {
		t.Fatalf("both: %+v", v)
	}
	if v := get(Compute(both[:1], ps), ProductUpdates, "interval"); v.Value != "2h0m0s" || v.Source.PolicyID != "low" {
		t.Fatalf("after removal: %+v", v)
	}
	if v := get(Compute(nil, ps), ProductUpdates, "interval"); v.Value != "60m" || !v.Default {
		t.Fatalf("no policy: %+v", v)
	}
}

func TestParseSettings_RefusesValuesOutsideTheSchema(t *testing.T) {
	cases := map[string]struct{ product, body, want string }{
		"unknown product": {"firewall", `{}`, "product must be"},
		"unknown setting": {ProductAgent, `{"colour":{"flag":"apply","value":"red"}}`, `no setting "colour"`},
		"bad flag":        {ProductAgent, `{"log_level":{"flag":"maybe","value":"info"}}`, "flag must be"},
		"enum":            {ProductAgent, `{"log_level":{"flag":"apply","value":"loud"}}`, "agent.log_level: must be one of"},
		"duration bounds": {ProductAgent, `{"check_in_interval":{"flag":"apply","value":"1s"}}`, "outside 10..86400 seconds"},
		"duration type":   {ProductAgent, `{"check_in_interval":{"flag":"apply","value":60}}`, "must be a duration"},
		"int fraction":    {ProductProtection, `{"archive_max_depth":{"flag":"apply","value":2.5}}`, "whole number"},
		"int bounds":      {ProductProtection, `{"archive_max_depth":{"flag":"apply","value":100}}`, "outside 1..64"},
		"size":            {ProductProtection, `{"max_file_size":{"flag":"apply","value":"lots"}}`, "must be a size"},
		"list item":       {ProductAgent, `{"servers":{"flag":"apply","value":["no-port"]}}`, "item 1"},
		"list type":       {ProductAgent, `{"servers":{"flag":"apply","value":"a:1"}}`, "list of text"},
		"merge on scalar": {ProductAgent, `{"log_level":{"flag":"apply","value":"info","merge":"append"}}`, "list settings only"},
		"bad merge":       {ProductAgent, `{"servers":{"flag":"apply","value":["a:1"],"merge":"shuffle"}}`, "merge must be"},
		"bad cron":        {ProductProtection, `{"scheduled_scans":{"flag":"apply","value":["61 3 * * * /home"]}}`, "bad cron"},
		"relative path":   {ProductProtection, `{"scheduled_scans":{"flag":"apply","value":["0 3 * * * home"]}}`, "absolute"},
		"proxy scheme":    {ProductUpdates, `{"proxy":{"flag":"apply","value":"socks5://p:1"}}`, "http:// proxy"},
		"source":          {ProductUpdates, `{"sources":{"flag":"apply","value":["ftp://x"]}}`, "URL or an absolute folder"},
		"extra key":       {ProductAgent, `{"log_level":{"flag":"apply","value":"info","why":"x"}}`, "unknown field"},
	}
	for name, c := range cases {
		var raw map[string]json.RawMessage
		json.Unmarshal([]byte(c.body), &raw)
		_, err := ParseSettings(c.product, raw)
		if errcode.Of(err) != errcode.Invalid || !strings.Contains(errcode.Message(err), c.want) {
			t.Errorf("%s: %v, want invalid mentioning %q", name, err, c.want)
		}
	}
}

func TestDocument_VersionFollowsContent(t *testing.T) {
	ps := map[string]*Policy{"p": pol("p", ProductAgent, `{"log_level":{"flag":"force","value":"debug"}}`)}
	d1 := NewDocument(Compute(nil, ps))
	d2 := NewDocument(Compute([]Assignment{assign("p", TargetStatic, "all", 0)}, ps))
	d3 := NewDocument(Compute([]Assignment{assign("p", TargetStatic, "all", 0)}, ps))
	if d1.Version == d2.Version || d2.Version != d3.Version || len(d2.Forced) != 1 || d2.Forced[0] != "agent.log_level" {
		t.Fatalf("documents %+v %+v %+v", d1, d2, d3)
	}
	// Only what a policy sets travels: the agent applies its defaults.
	if d2.Settings[ProductAgent]["log_level"] != "debug" || len(d2.Settings) != 1 || len(d2.Settings[ProductAgent]) != 1 || len(d1.Settings) != 0 {
		t.Fatalf("settings %+v / %+v", d2.Settings, d1.Settings)
	}
}

func TestSchema_DefaultsAreValid(t *testing.T) {
	for _, s := range Schema {
		if _, err := s.Normalize(s.Default); err != nil {
			t.Errorf("%s.%s default %v: %v", s.Product, s.Key, s.Default, err)
		}
	}
}

func FuzzParseSettings(f *testing.F) {
	f.Add("agent", `{"servers":{"flag":"apply","value":["a:1"],"merge":"append"}}`)
	f.Add("protection", `{"scheduled_scans":{"flag":"force","value":["0 3 * * * /home"]}}`)
	f.Fuzz(func(t *testing.T, product, body string) {
		var raw map[string]json.RawMessage
		if json.Unmarshal([]byte(body), &raw) != nil {
			return
		}
		s, err := ParseSettings(product, raw)
		if err != nil {
			return
		}
		Compute([]Assignment{{PolicyID: "p"}}, map[string]*Policy{"p": {ID: "p", Product: product, Settings: s}})
	})
}

func TestSecrets_ProxyPasswordsHiddenAndKeptOnlyForTheSameProxy(t *testing.T) {
	prev := map[string]Value{
		"proxy":     {Flag: Apply, Value: "http://agent:S3cret@proxy:3128"},
		"log_level": {Flag: Apply, Value: "debug"},
	}
	shown := Redacted(ProductAgent, prev)
	if shown["proxy"].Value != "http://agent:xxxxx@proxy:3128" || shown["log_level"].Value != "debug" {
		t.Fatalf("redacted %+v", shown)
	}
	if prev["proxy"].Value != "http://agent:S3cret@proxy:3128" {
		t.Fatal("Redacted changed its argument")
	}
	if got := RedactValue(ProductProtection, "max_file_size", "http://a:b@c"); got != "http://a:b@c" {
		t.Fatalf("a setting that is not secret was redacted: %v", got)
	}
	for _, tc := range []struct{ sent, want string }{
		{"http://agent:xxxxx@proxy:3128", "http://agent:S3cret@proxy:3128"}, // sent back as read
		{"http://agent:N3w@proxy:3128", "http://agent:N3w@proxy:3128"},      // a new password
		{"http://other:xxxxx@proxy:3128", "http://other:xxxxx@proxy:3128"},  // another user
		{"http://agent:xxxxx@elsewhere:3128", "http://agent:xxxxx@elsewhere:3128"},
		{"http://proxy:3128", "http://proxy:3128"},
	} {
		next := map[string]Value{"proxy": {Flag: Apply, Value: tc.sent}, "log_level": {Flag: Apply, Value: "info"}}
		KeepSecrets(ProductAgent, prev, next)
		if next["proxy"].Value != tc.want || next["log_level"].Value != "info" {
			t.Errorf("sent %s: kept %v, want %s", tc.sent, next["proxy"].Value, tc.want)
		}
	}
	next := map[string]Value{"proxy": {Flag: Apply, Value: "http://agent:xxxxx@proxy:3128"}}
	KeepSecrets(ProductAgent, map[string]Value{}, next) // nothing to keep
	if next["proxy"].Value != "http://agent:xxxxx@proxy:3128" {
		t.Fatalf("with no previous value: %v", next["proxy"].Value)
	}
}

// A refused proxy URL is named without its password: the message reaches
// the caller and the audit log.
func TestSecrets_ARefusedProxyURLHidesItsPassword(t *testing.T) {
	for _, bad := range []string{"https://agent:S3cretPw@proxy:3128", "socks5://agent:S3cretPw@proxy:1080", "http://agent:S3cretPw@", "http://agent:S3cretPw@proxy:3128/%zz"} {
		_, err := ParseSettings(ProductAgent, map[string]json.RawMessage{"proxy": json.RawMessage(`{"flag":"apply","value":"` + bad + `"}`)})
		if err == nil || strings.Contains(err.Error(), "S3cretPw") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
