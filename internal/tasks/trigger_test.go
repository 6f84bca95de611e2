package tasks

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func trig(t *testing.T, js string) *Trigger {
	t.Helper()
	var tr Trigger
	if err := json.Unmarshal([]byte(js), &tr); err != nil {
		t.Fatal(err)
	}
	if err := tr.Validate(); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return &tr
}

// nexts returns the first n firing times after start.
func nexts(tr *Trigger, start time.Time, n int) []string {
	var out []string
	at := start
	for range n {
		next, ok := tr.Next(at, start)
		if !ok {
			break
		}
		out = append(out, next.Format(time.RFC3339))
		at = next
	}
	return out
}

func TestNext_CalendarTriggersInTimeZones(t *testing.T) {
	start := mustTime("2026-11-22T12:00:00Z") // a Sunday
	cases := []struct {
		name, trigger string
		want          []string
	}{
		{"daily UTC", `{"kind":"daily","at":"03:30"}`, []string{"2026-11-23T03:30:00Z", "2026-11-24T03:30:00Z"}},
		{"daily Tokyo", `{"kind":"daily","at":"03:30","time_zone":"Asia/Tokyo"}`, []string{"2026-11-23T03:30:00+09:00", "2026-11-24T03:30:00+09:00"}},
		{"weekly mon+fri", `{"kind":"weekly","at":"08:00","weekdays":["mon","FRI"]}`, []string{"2026-11-23T08:00:00Z", "2026-11-27T08:00:00Z", "2026-11-30T08:00:00Z"}},
		{"monthly 2nd monday", `{"kind":"monthly","at":"09:00","nth_weekday":{"n":2,"weekday":"mon"}}`, []string{"2026-12-14T09:00:00Z", "2027-01-11T09:00:00Z", "2027-02-08T09:00:00Z"}},
		{"monthly last friday", `{"kind":"monthly","at":"18:00","nth_weekday":{"n":-1,"weekday":"fri"}}`, []string{"2026-11-27T18:00:00Z", "2026-12-25T18:00:00Z", "2027-01-29T18:00:00Z"}},
		{"monthly 31st clamps", `{"kind":"monthly","at":"00:00","day_of_month":31}`, []string{"2026-11-30T00:00:00Z", "2026-12-31T00:00:00Z", "2027-01-31T00:00:00Z", "2027-02-28T00:00:00Z"}},
		{"monthly last day", `{"kind":"monthly","at":"23:59","day_of_month":-1}`, []string{"2026-11-30T23:59:00Z", "2026-12-31T23:59:00Z"}},
		{"yearly leap day", `{"kind":"yearly","at":"12:00","month":2,"day_of_month":29}`, []string{"2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"}},
		{"cron in New York", `{"kind":"cron","cron":"0 6 * * 1-5","time_zone":"America/New_York"}`, []string{"2026-11-23T06:00:00-05:00", "2026-11-24T06:00:00-05:00"}},
		{"once future", `{"kind":"once","at":"2026-12-24T18:00:00+01:00"}`, []string{"2026-12-24T18:00:00+01:00"}},
		{"once past", `{"kind":"once","at":"2025-01-01T00:00:00Z"}`, nil},
		{"event", `{"kind":"event","event":"detection_found"}`, nil},
	}
	for _, c := range cases {
		got := nexts(trig(t, c.trigger), start, len(c.want)+0)
		if len(c.want) == 0 {
			got = nexts(trig(t, c.trigger), start, 1)
		}
		for i := range c.want {
			if i >= len(got) {
				t.Errorf("%s: got %v, want %v", c.name, got, c.want)
				break
			}
			g, _ := time.Parse(time.RFC3339, got[i])
			w, _ := time.Parse(time.RFC3339, c.want[i])
			if !g.Equal(w) {
				t.Errorf("%s: got %v, want %v", c.name, got, c.want)
				break
			}
		}
		if len(c.want) == 0 && len(got) != 0 {
			t.Errorf("%s: fires at %v, want never", c.name, got)
		}
	}
}

func TestNext_DaylightSavingDaysStillFireOnce(t *testing.T) {
	tr := trig(t, `{"kind":"daily","at":"02:30","time_zone":"Europe/Berlin"}`)
	got := nexts(tr, mustTime("2027-03-27T12:00:00Z"), 3) // 2027-03-28: 02:30 does not exist in Berlin
	if len(got) != 3 || !strings.HasPrefix(got[0], "2027-03-28") || !strings.HasPrefix(got[1], "2027-03-29T02:30") {
		t.Fatalf("around spring forward: %v", got)
	}
}

func TestASAP_FiresOnceAtCreation(t *testing.T) {
	tr := trig(t, `{"kind":"asap","expiry":"2h"}`)
	created := mustTime("2026-11-22T12:00:00Z")
	if at, ok := tr.Next(created.Add(-time.Millisecond), created); !ok || !at.Equal(created) {
		t.Fatalf("first: %v %v", at, ok)
	}
	if _, ok := tr.Next(created, created); ok {
		t.Fatal("asap fires twice")
	}
	if tr.ExpiryDuration() != 2*time.Hour {
		t.Fatal("expiry")
	}
}

func TestValidate_RefusesBadTriggersNamingTheField(t *testing.T) {
	cases := map[string]string{
		`{"kind":"hourly"}`:                                                                      "kind must be",
		`{"kind":"daily","at":"25:00"}`:                                                          "at must be a time of day",
		`{"kind":"daily","at":"3:30"}`:                                                           "at must be a time of day",
		`{"kind":"weekly","at":"08:00"}`:                                                         "weekdays",
		`{"kind":"weekly","at":"08:00","weekdays":["funday"]}`:                                   "weekday",
		`{"kind":"monthly","at":"08:00"}`:                                                        "day_of_month",
		`{"kind":"monthly","at":"08:00","nth_weekday":{"n":6,"weekday":"mon"}}`:                  "nth_weekday",
		`{"kind":"monthly","at":"08:00","day_of_month":3,"nth_weekday":{"n":1,"weekday":"mon"}}`: "not both",
		`{"kind":"yearly","at":"08:00","month":2,"day_of_month":30}`:                             "no day 30",
		`{"kind":"cron","cron":"61 * * * *"}`:                                                    "cron",
		`{"kind":"cron","cron":"* * * * * *"}`:                                                   "cron",
		`{"kind":"once","at":"tomorrow"}`:                                                        "RFC 3339",
		`{"kind":"daily","at":"08:00","time_zone":"Mars/Olympus"}`:                               "time_zone",
		`{"kind":"event","event":"moon_rise"}`:                                                   "event must be",
		`{"kind":"joined_dynamic_group"}`:                                                        "dynamic_group_id",
		`{"kind":"asap","random_delay":"25h"}`:                                                   "random_delay",
		`{"kind":"asap","expiry":"9s"}`:                                                          "expiry",
		`{"kind":"asap","throttle":{"window":{"from":"x","to":"06:00"}}}`:                        "window.from",
		`{"kind":"asap","throttle":{"once_per":"-1h"}}`:                                          "once_per",
		`{"kind":"asap","throttle":{"n_within":{"n":0,"period":"1h"}}}`:                          "n_within",
	}
	for js, want := range cases {
		var tr Trigger
		if err := json.Unmarshal([]byte(js), &tr); err != nil {
			t.Fatal(err)
		}
		err := tr.Validate()
		if errcode.Of(err) != errcode.Invalid || !strings.Contains(errcode.Message(err), want) {
			t.Errorf("%s: %v, want invalid mentioning %q", js, err, want)
		}
	}
}

func TestThrottle_Counters(t *testing.T) {
	base := mustTime("2026-11-22T10:00:00Z")
	run := func(tr *Trigger, offsets ...time.Duration) []bool {
		var st ThrottleState
		var out []bool
		for _, o := range offsets {
			out = append(out, tr.Allow(&st, base.Add(o)))
		}
		return out
	}
	eq := func(name string, got, want []bool) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %v want %v", name, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: %v want %v", name, got, want)
			}
		}
	}
	m := time.Minute
	eq("every 3rd", run(trig(t, `{"kind":"event","event":"agent_connected","throttle":{"every_nth":3}}`), 0, m, 2*m, 3*m, 4*m, 5*m),
		[]bool{false, false, true, false, false, true})
	eq("once per hour", run(trig(t, `{"kind":"event","event":"agent_connected","throttle":{"once_per":"1h"}}`), 0, 10*m, 59*m, 61*m, 62*m),
		[]bool{true, false, false, true, false})
	eq("3 within 10 minutes", run(trig(t, `{"kind":"event","event":"detection_found","throttle":{"n_within":{"n":3,"period":"10m"}}}`),
		0, 20*m, 25*m, 29*m, 31*m, 32*m, 60*m),
		[]bool{false, false, false, true, false, false, false})
	// 10:00 UTC = 19:00 in Tokyo; window 18:00-20:00 Tokyo time.
	eq("window", run(trig(t, `{"kind":"event","event":"agent_connected","time_zone":"Asia/Tokyo","throttle":{"window":{"from":"18:00","to":"20:00"}}}`),
		0, 59*m, 61*m, -61*m), []bool{true, true, false, false})
	eq("window across midnight", run(trig(t, `{"kind":"event","event":"agent_connected","throttle":{"window":{"from":"22:00","to":"06:00"}}}`),
		13*time.Hour, 18*time.Hour, 21*time.Hour, 12*time.Hour), []bool{true, true, false, true})
	eq("window and every 2nd", run(trig(t, `{"kind":"event","event":"agent_connected","throttle":{"every_nth":2,"window":{"from":"09:00","to":"11:00"}}}`),
		0, 2*time.Hour, 10*m, 20*m), []bool{false, false, true, false})
}

func TestParseParams(t *testing.T) {
	p, err := ParseParams(RunCommand, json.RawMessage(`{"command":"uname -a"}`))
	if err != nil || p["timeout"] != "60s" || p["max_output"] != 32768 {
		t.Fatalf("defaults: %v %v", p, err)
	}
	p, err = ParseParams(Scan, json.RawMessage(`{"paths":["/home","C:\\Users"],"action":"report"}`))
	if err != nil || len(p["paths"].([]string)) != 2 {
		t.Fatalf("scan: %v %v", p, err)
	}
	cases := map[string]struct {
		typ  Type
		body string
		want string
	}{
		"unknown type":     {"dance", `{}`, "unknown task type"},
		"unknown param":    {EngineUpdate, `{"force":true}`, `no parameter "force"`},
		"missing required": {RunCommand, `{}`, "run_command.command: required"},
		"wrong type":       {RunCommand, `{"command":"x","timeout":60}`, "run_command.timeout"},
		"out of range":     {RunCommand, `{"command":"x","timeout":"2h"}`, "between 1s and 1h0m0s"},
		"max output":       {RunCommand, `{"command":"x","max_output":0}`, "run_command.max_output"},
		"max output large": {RunCommand, `{"command":"x","max_output":61441}`, "run_command.max_output"},
		"relative path":    {Scan, `{"paths":["home"]}`, "absolute path"},
		"empty paths":      {Scan, `{"paths":[]}`, "scan.paths"},
		"bad glob":         {Scan, `{"paths":["/"],"exclusions":["["]}`, "not a valid glob"},
		"bad level":        {DisplayMessage, `{"title":"t","message":"m","level":"loud"}`, "display_message.level"},
		"long title":       {DisplayMessage, `{"title":"` + strings.Repeat("x", 129) + `","message":"m"}`, "display_message.title"},
		"days":             {DeleteNotConnecting, `{"days":0}`, "delete_not_connecting.days"},
		"pattern":          {RenameComputers, `{"pattern":"a/b"}`, "rename_computers.pattern"},
		"not an object":    {Scan, `[1,2]`, "JSON object"},
	}
	for name, c := range cases {
		_, err := ParseParams(c.typ, json.RawMessage(c.body))
		if errcode.Of(err) != errcode.Invalid || !strings.Contains(errcode.Message(err), c.want) {
			t.Errorf("%s: %v, want invalid mentioning %q", name, err, c.want)
		}
	}
}

func FuzzTrigger(f *testing.F) {
	f.Add(`{"kind":"monthly","at":"09:00","nth_weekday":{"n":2,"weekday":"mon"},"throttle":{"every_nth":2}}`)
	f.Add(`{"kind":"cron","cron":"*/5 * * * *","time_zone":"Asia/Tokyo"}`)
	f.Fuzz(func(t *testing.T, js string) {
		var tr Trigger
		if json.Unmarshal([]byte(js), &tr) != nil || tr.Validate() != nil {
			return
		}
		start := mustTime("2026-11-22T12:00:00Z")
		if at, ok := tr.Next(start, start); ok && !at.After(start) && tr.Kind != ASAP {
			t.Fatalf("Next %v not after %v", at, start)
		}
		var st ThrottleState
		tr.Allow(&st, start)
	})
}
