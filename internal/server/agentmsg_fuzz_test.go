package server

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// validSections is one well-formed section of each kind.
func validSections() []*agentproto.InventorySection {
	h := []byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10}
	return []*agentproto.InventorySection{
		{Section: agentproto.Section_SECTION_SYSTEM, Hash: h, Body: &agentproto.InventorySection_System{System: &agentproto.SystemInfo{
			Hostname: "web-01", Fqdn: "web-01.example.net", OsFamily: "linux", OsName: "Debian GNU/Linux", OsVersion: "12",
			Kernel: "6.1.0-18-amd64", Architecture: "amd64", BootTimeUnix: 1700000000, Timezone: "Europe/Berlin"}}},
		{Section: agentproto.Section_SECTION_HARDWARE, Hash: h, Body: &agentproto.InventorySection_Hardware{Hardware: &agentproto.HardwareInfo{
			CpuModel: "Intel(R) Xeon(R)", CpuCores: 8, RamBytes: 16 << 30,
			Disks: []*agentproto.Disk{{Device: "/dev/vda1", MountPoint: "/", Filesystem: "ext4", SizeBytes: 100 << 30, FreeGib: 42}}}}},
		{Section: agentproto.Section_SECTION_NETWORK, Hash: h, Body: &agentproto.InventorySection_Network{Network: &agentproto.NetworkInfo{
			Interfaces: []*agentproto.NetworkInterface{{Name: "eth0", Mac: "52:54:00:12:34:56", Addresses: []string{"10.0.0.5/24"}, Up: true}}}}},
		{Section: agentproto.Section_SECTION_SOFTWARE, Hash: h, Body: &agentproto.InventorySection_Software{Software: &agentproto.SoftwareInfo{
			Source: "dpkg", Packages: []*agentproto.Package{{Name: "bash", Version: "5.2.15-2", Architecture: "amd64"}}}}},
		{Section: agentproto.Section_SECTION_USERS, Hash: h, Body: &agentproto.InventorySection_Users{Users: &agentproto.UsersInfo{
			LoggedIn: []*agentproto.LoggedInUser{{Name: "alice", Terminal: "pts/0", Host: "10.0.0.9", SinceUnix: 1700000100}}}}},
		{Section: agentproto.Section_SECTION_AGENT, Hash: h, Body: &agentproto.InventorySection_Agent{Agent: &agentproto.AgentInfo{
			Version: "1.0.0", CapabilityVersion: agentproto.CapabilityVersion, HardwareFingerprint: "00112233445566778899aabbccddeeff"}}},
	}
}

func validEvent() *agentproto.Event {
	return &agentproto.Event{Id: "evt-0001_A", Type: "agent.started", TimeUnixMs: 1700000000000, DataJson: []byte(`{"version":"1.0.0"}`)}
}

func seedCheckIns() []*agentproto.CheckIn {
	mismatched := validSections()[0]
	mismatched.Section = agentproto.Section_SECTION_USERS
	unknown := validSections()[1]
	unknown.Section = agentproto.Section(99)
	noHash := validSections()[2]
	noHash.Hash = nil
	longHash := validSections()[3]
	longHash.Hash = bytes.Repeat([]byte{7}, maxSectionHashLen+1)
	noBody := &agentproto.InventorySection{Section: agentproto.Section_SECTION_AGENT, Hash: []byte{1}}
	empty := &agentproto.InventorySection{Section: agentproto.Section_SECTION_SYSTEM, Hash: []byte{1},
		Body: &agentproto.InventorySection_System{System: &agentproto.SystemInfo{}}}
	longHost := validSections()[0]
	longHost.GetSystem().Hostname = strings.Repeat("é", 200) // 400 bytes, cut by summarize

	badEvent := validEvent()
	badEvent.Id, badEvent.Type = "bad id", "Not.A.Type"
	return []*agentproto.CheckIn{
		{Seq: 1, Sections: validSections(), Events: []*agentproto.Event{validEvent()}},
		{Seq: 2, Events: []*agentproto.Event{validEvent(), badEvent, {Id: "e2", Type: "x", TimeUnixMs: 1}}, WakeId: "w-1"},
		{Seq: 3, Sections: []*agentproto.InventorySection{mismatched, unknown, noHash, longHash, noBody, empty, longHost}},
		{Seq: 4, Events: []*agentproto.Event{{Id: "e3", Type: "a.b", TimeUnixMs: 1, DataJson: []byte(`null`)},
			{Id: "e4", Type: "a.b", TimeUnixMs: 1, DataJson: []byte("{\"k\":\"\xff\"}")}}},
		{},
	}
}

// FuzzCheckInValidation feeds arbitrary CheckIn messages to the pure
// validators an agent's check-in goes through before the store.
func FuzzCheckInValidation(f *testing.F) {
	for _, ci := range seedCheckIns() {
		b, err := proto.Marshal(ci)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ci agentproto.CheckIn
		if err := proto.Unmarshal(b, &ci); err != nil {
			t.Skip()
		}
		for _, s := range ci.Sections {
			rec, err := sectionRecord(s)
			if err != nil {
				if !errcode.Is(err, errcode.Invalid) {
					t.Fatalf("sectionRecord error %v has code %q, want invalid", err, errcode.Of(err))
				}
				continue
			}
			want, known := sectionNames[s.Section]
			if !known || rec.Section != want {
				t.Fatalf("record section %q for %v, want one of the six names", rec.Section, s.Section)
			}
			if len(rec.Hash) == 0 || len(rec.Hash) > maxSectionHashLen || !bytes.Equal(rec.Hash, s.Hash) {
				t.Fatalf("record hash %x for section hash %x", rec.Hash, s.Hash)
			}
			var obj map[string]json.RawMessage
			if !json.Valid([]byte(rec.Data)) || !utf8.ValidString(rec.Data) || json.Unmarshal([]byte(rec.Data), &obj) != nil || obj == nil {
				t.Fatalf("record data is not a UTF-8 JSON object: %q", rec.Data)
			}
			checkSummary(t, s)
		}
		for _, e := range ci.Events {
			if invalidEvent(e) != "" {
				continue
			}
			// What the store and the API rely on for accepted events.
			if e.Id == "" || len(e.Id) > maxEventIDLen || strings.Trim(e.Id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
				t.Fatalf("accepted event id %q", e.Id)
			}
			if len(e.Type) == 0 || len(e.Type) > maxEventTypeLen || !utf8.ValidString(e.Type) || strings.ToLower(e.Type) != e.Type {
				t.Fatalf("accepted event type %q", e.Type)
			}
			if e.TimeUnixMs <= 0 {
				t.Fatalf("accepted event time %d", e.TimeUnixMs)
			}
			if len(e.DataJson) > maxEventData {
				t.Fatalf("accepted event data of %d bytes", len(e.DataJson))
			}
			if len(e.DataJson) > 0 {
				var obj map[string]json.RawMessage
				if !utf8.Valid(e.DataJson) || json.Unmarshal(e.DataJson, &obj) != nil || obj == nil {
					t.Fatalf("accepted event data is not a UTF-8 JSON object: %q", e.DataJson)
				}
			}
		}
	})
}

// checkSummary checks that the fields summarize copies onto the computer
// row are valid UTF-8 within their column limits.
func checkSummary(t *testing.T, s *agentproto.InventorySection) {
	t.Helper()
	var got store.ComputerSummary
	summarize(&got, s)
	for _, f := range []struct {
		name, v string
		max     int
	}{{"hostname", got.Hostname, 253}, {"os_name", got.OSName, 128}, {"os_version", got.OSVersion, 128}, {"agent_version", got.AgentVersion, 64}} {
		if !utf8.ValidString(f.v) || len(f.v) > f.max {
			t.Fatalf("summary %s %q: want valid UTF-8 of at most %d bytes", f.name, f.v, f.max)
		}
	}
}

func TestInvalidEvent(t *testing.T) {
	object := func(n int) []byte { // a JSON object of exactly n bytes
		return []byte(`{"p":"` + strings.Repeat("x", n-8) + `"}`)
	}
	tests := []struct {
		name    string
		edit    func(e *agentproto.Event)
		mention string // "" = valid
	}{
		{"valid", func(e *agentproto.Event) {}, ""},
		{"valid without data", func(e *agentproto.Event) { e.DataJson = nil }, ""},
		{"valid empty object", func(e *agentproto.Event) { e.DataJson = []byte(` {} `) }, ""},
		{"valid longest id", func(e *agentproto.Event) { e.Id = strings.Repeat("a", 64) }, ""},
		{"valid longest type", func(e *agentproto.Event) { e.Type = "a." + strings.Repeat("b", 62) }, ""},
		{"valid one-word type", func(e *agentproto.Event) { e.Type = "heartbeat" }, ""},
		{"valid data of 64 KiB", func(e *agentproto.Event) { e.DataJson = object(maxEventData) }, ""},
		{"valid non-ASCII data", func(e *agentproto.Event) { e.DataJson = []byte(`{"user":"jürgen"}`) }, ""},

		{"empty id", func(e *agentproto.Event) { e.Id = "" }, "id"},
		{"id too long", func(e *agentproto.Event) { e.Id = strings.Repeat("a", 65) }, "id"},
		{"id with space", func(e *agentproto.Event) { e.Id = "a b" }, "id"},
		{"id with dot", func(e *agentproto.Event) { e.Id = "a.b" }, "id"},
		{"id with slash", func(e *agentproto.Event) { e.Id = "a/b" }, "id"},
		{"id with newline", func(e *agentproto.Event) { e.Id = "ab\n" }, "id"},
		{"id non-ASCII", func(e *agentproto.Event) { e.Id = "é" }, "id"},

		{"empty type", func(e *agentproto.Event) { e.Type = "" }, "type"},
		{"upper-case type", func(e *agentproto.Event) { e.Type = "Agent.started" }, "type"},
		{"type starting with a digit", func(e *agentproto.Event) { e.Type = "1agent" }, "type"},
		{"type starting with a dot", func(e *agentproto.Event) { e.Type = ".agent" }, "type"},
		{"type ending with a dot", func(e *agentproto.Event) { e.Type = "agent." }, "type"},
		{"type with double dot", func(e *agentproto.Event) { e.Type = "agent..started" }, "type"},
		{"type with dash", func(e *agentproto.Event) { e.Type = "agent.re-started" }, "type"},
		{"type with newline", func(e *agentproto.Event) { e.Type = "agent\n" }, "type"},
		{"type too long", func(e *agentproto.Event) { e.Type = "a." + strings.Repeat("b", 63) }, "type"},

		{"zero time", func(e *agentproto.Event) { e.TimeUnixMs = 0 }, "time"},
		{"negative time", func(e *agentproto.Event) { e.TimeUnixMs = -1 }, "time"},

		{"data over 64 KiB", func(e *agentproto.Event) { e.DataJson = object(maxEventData + 1) }, "64 KiB"},
		{"data array", func(e *agentproto.Event) { e.DataJson = []byte(`[]`) }, "JSON object"},
		{"data string", func(e *agentproto.Event) { e.DataJson = []byte(`"x"`) }, "JSON object"},
		{"data number", func(e *agentproto.Event) { e.DataJson = []byte(`1`) }, "JSON object"},
		{"data null", func(e *agentproto.Event) { e.DataJson = []byte(`null`) }, "JSON object"},
		{"data malformed", func(e *agentproto.Event) { e.DataJson = []byte(`{"a":`) }, "JSON object"},
		{"data two objects", func(e *agentproto.Event) { e.DataJson = []byte(`{}{}`) }, "JSON object"},
		{"data invalid UTF-8", func(e *agentproto.Event) { e.DataJson = []byte("{\"a\":\"\xff\"}") }, "JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEvent()
			tt.edit(e)
			got := invalidEvent(e)
			switch {
			case tt.mention == "" && got != "":
				t.Errorf("invalidEvent = %q, want valid", got)
			case tt.mention != "" && !strings.Contains(got, tt.mention):
				t.Errorf("invalidEvent = %q, want a reason mentioning %q", got, tt.mention)
			}
		})
	}
}

func TestSectionRecord(t *testing.T) {
	for _, s := range validSections() {
		rec, err := sectionRecord(s)
		if err != nil {
			t.Errorf("%v: %v", s.Section, err)
			continue
		}
		if rec.Section != sectionNames[s.Section] || !bytes.Equal(rec.Hash, s.Hash) {
			t.Errorf("%v: record %q %x", s.Section, rec.Section, rec.Hash)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(rec.Data), &obj); err != nil {
			t.Errorf("%v: data %q: %v", s.Section, rec.Data, err)
		}
	}
	sys, _ := sectionRecord(validSections()[0])
	var got map[string]any
	json.Unmarshal([]byte(sys.Data), &got)
	// Proto names, unpopulated fields included, 64-bit integers as strings.
	if got["os_name"] != "Debian GNU/Linux" || got["boot_time_unix"] != "1700000000" {
		t.Errorf("system data = %s", sys.Data)
	}
	empty, err := sectionRecord(&agentproto.InventorySection{Section: agentproto.Section_SECTION_SYSTEM, Hash: []byte{1},
		Body: &agentproto.InventorySection_System{System: &agentproto.SystemInfo{}}})
	if err != nil || !strings.Contains(empty.Data, `"hostname":""`) {
		t.Errorf("empty system = %q, %v; want unpopulated fields emitted", empty.Data, err)
	}

	bad := []struct {
		name    string
		edit    func(s *agentproto.InventorySection)
		mention string
	}{
		{"unknown section", func(s *agentproto.InventorySection) { s.Section = 99 }, "unknown"},
		{"unspecified section", func(s *agentproto.InventorySection) { s.Section = 0 }, "unknown"},
		{"no hash", func(s *agentproto.InventorySection) { s.Hash = nil }, "hash"},
		{"hash too long", func(s *agentproto.InventorySection) { s.Hash = make([]byte, maxSectionHashLen+1) }, "hash"},
		{"body of another kind", func(s *agentproto.InventorySection) { s.Section = agentproto.Section_SECTION_AGENT }, "another kind"},
		{"no body", func(s *agentproto.InventorySection) { s.Body = nil }, "missing"},
		{"nil body message", func(s *agentproto.InventorySection) { s.Body = &agentproto.InventorySection_System{} }, "missing"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			s := validSections()[0]
			tt.edit(s)
			_, err := sectionRecord(s)
			if !errcode.Is(err, errcode.Invalid) || !strings.Contains(errcode.Message(err), tt.mention) {
				t.Errorf("sectionRecord = %v, want invalid mentioning %q", err, tt.mention)
			}
		})
	}
}
