package policy

import (
	"encoding/json"
	"strings"
	"testing"
)

// wire builds the JSON an agent receives for the given effective values
// (defaults for everything else).
func wire(t *testing.T, forced map[string]any, applied map[string]any) []byte {
	t.Helper()
	pol := &Policy{ID: "p", Name: "p", Product: ProductAgent, Settings: map[string]Value{}}
	for k, v := range applied {
		pol.Settings[k] = Value{Flag: Apply, Value: v}
	}
	for k, v := range forced {
		pol.Settings[k] = Value{Flag: Force, Value: v}
	}
	eff := Compute([]Assignment{{ID: "a", PolicyID: "p", TargetType: TargetStatic, TargetID: "all"}}, map[string]*Policy{"p": pol})
	b, err := json.Marshal(NewDocument(eff))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseDocument_AcceptsWhatTheServerSends(t *testing.T) {
	raw := wire(t, map[string]any{"log_level": "warn"}, map[string]any{"check_in_interval": "30s", "outbox_max_events": int64(5000),
		"servers": []string{"a.example:2222"}})
	d, unknown, err := ParseDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(unknown) != 0 || d.Settings["agent"]["log_level"] != "warn" || d.Settings["agent"]["check_in_interval"] != "30s" ||
		d.Settings["agent"]["outbox_max_events"] != int64(5000) || len(d.Forced) != 1 || d.Forced[0] != "agent.log_level" {
		t.Fatalf("parsed %+v unknown %v", d, unknown)
	}
	if l, ok := d.Settings["agent"]["servers"].([]string); !ok || len(l) != 1 {
		t.Fatalf("list not normalized: %T", d.Settings["agent"]["servers"])
	}
	if _, ok := d.Settings["protection"]; ok {
		t.Fatal("defaults travelled")
	}
}

func TestParseDocument_RefusesBadDocuments(t *testing.T) {
	good := string(wire(t, nil, map[string]any{"check_in_interval": "30s"}))
	var d Document
	_ = json.Unmarshal([]byte(good), &d)
	mutate := func(f func(*Document)) string {
		var x Document
		_ = json.Unmarshal([]byte(good), &x)
		f(&x)
		x.Version = x.Hash()
		b, _ := json.Marshal(x)
		return string(b)
	}
	for name, tc := range map[string]struct{ raw, want string }{
		"not json":      {`{"version":`, "not a JSON document"},
		"trailing data": {good + `{}`, "after the document"},
		"no settings":   {`{"version":"x"}`, "no settings"},
		"tampered":      {strings.Replace(good, `"30s"`, `"31s"`, 1), "does not match"},
		"bad value": {mutate(func(x *Document) { x.Settings["agent"]["check_in_interval"] = "1s" }),
			"agent.check_in_interval"},
		"wrong type": {mutate(func(x *Document) { x.Settings["agent"]["servers"] = "a:1" }), "agent.servers"},
		"forced missing": {mutate(func(x *Document) { x.Forced = []string{"agent.nothing"} }),
			"not in the configuration"},
		"oversized": {`{"version":"` + strings.Repeat("x", MaxDocumentBytes) + `"}`, "larger than"},
	} {
		if _, _, err := ParseDocument([]byte(tc.raw)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
	// A setting this build does not know (a newer server) is dropped, not
	// fatal.
	raw := mutate(func(x *Document) {
		x.Settings["agent"]["future_knob"] = "on"
		x.Settings["telemetry"] = map[string]any{"x": 1}
	})
	d2, unknown, err := ParseDocument([]byte(raw))
	if err != nil || strings.Join(unknown, ",") != "agent.future_knob,telemetry.x" {
		t.Fatalf("unknown %v err %v", unknown, err)
	}
	if _, ok := d2.Settings["agent"]["future_knob"]; ok {
		t.Fatal("unknown setting kept")
	}
}

func FuzzParseDocument(f *testing.F) {
	f.Add(`{"version":"x","settings":{"agent":{"log_level":"info"}},"forced":[]}`)
	f.Add(`{"settings":{},"forced":["a.b"]}`)
	f.Fuzz(func(t *testing.T, raw string) {
		d, _, err := ParseDocument([]byte(raw))
		if err != nil {
			return
		}
		for product, kv := range d.Settings {
			for key, v := range kv {
				s, ok := Lookup(product, key)
				if !ok {
					t.Fatalf("kept unknown %s.%s", product, key)
				}
				if _, err := s.Normalize(v); err != nil {
					t.Fatalf("kept invalid %s.%s=%v: %v", product, key, v, err)
				}
			}
		}
	})
}
