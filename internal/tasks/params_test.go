package tasks

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseTargets_RefusesBadInput(t *testing.T) {
	for _, raw := range []string{
		``, `{}`, `[{"type":"planet","id":"x"}]`, `[{"type":"computer","id":""}]`,
		`[{"type":"computer","id":"a"},{"type":"computer","id":"a"}]`, `[{"type":"computer","id":"a","extra":1}]`,
		`[{"type":"computer","id":"` + strings.Repeat("a", 65) + `"}]`,
		`[` + strings.Repeat(`{"type":"computer","id":"a"},`, MaxTargets) + `{"type":"computer","id":"b"}]`,
	} {
		if _, err := ParseTargets(raw); err == nil {
			t.Errorf("ParseTargets(%.60q) accepted", raw)
		}
	}
	ts, err := ParseTargets(`[{"type":"static_group","id":"all"},{"type":"dynamic_group","id":"d"}]`)
	if err != nil || len(ts) != 2 {
		t.Fatal(ts, err)
	}
}

func FuzzParseTargets(f *testing.F) {
	f.Add(`[{"type":"computer","id":"a"}]`)
	f.Add(`[{"type":"static_group","id":"all"}]`)
	f.Fuzz(func(t *testing.T, raw string) {
		ts, err := ParseTargets(raw)
		if err != nil {
			return
		}
		for _, x := range ts {
			if x.ID == "" || (x.Type != TargetComputer && x.Type != TargetStaticGroup && x.Type != TargetDynamicGroup) {
				t.Fatalf("accepted %+v", x)
			}
		}
	})
}

func FuzzParseParams(f *testing.F) {
	f.Add("scan", `{"paths":["/home"],"exclusions":["*.iso"],"action":"report"}`)
	f.Add("run_command", `{"command":"ls","timeout":"5s","max_output":100}`)
	f.Add("display_message", `{"title":"t","message":"m","level":"warning"}`)
	f.Add("delete_not_connecting", `{"days":30,"group":"All"}`)
	f.Add("restart", `{"delay":"1m","reason":"x"}`)
	f.Fuzz(func(t *testing.T, typ, raw string) {
		p, err := ParseParams(Type(typ), json.RawMessage(raw))
		if err != nil {
			return
		}
		// What was accepted round-trips: a run's parameters are parsed again
		// by the agent.
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("accepted parameters do not encode: %v", err)
		}
		if _, err := ParseParams(Type(typ), b); err != nil {
			t.Fatalf("accepted %s %s, refused its own encoding %s: %v", typ, raw, b, err)
		}
	})
}
