package e2e

import (
	"testing"
	"time"

	"github.com/mamori/mamori/internal/loadtest"
)

// The harness itself, at a size CI can afford: every agent connects,
// replicates, answers wake-ups, and the figures are sane.
func TestLoadtest_SmallRunConnectsEveryAgentAndReportsSaneFigures(t *testing.T) {
	t.Parallel()
	p := startInproc(t)
	rep, err := loadtest.Run(t.Context(), loadtest.Config{
		Server: p.srv.AgentAddr(), API: p.api.base, DataDir: p.data, Password: "correct horse battery staple",
		Agents: 100, Ramp: 1000, Settle: 100 * time.Millisecond, CheckIns: 3, Wakeups: 20, Packages: 300,
		CacheDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Connected != 100 || rep.Errors != 0 {
		t.Fatalf("connected %d, errors %d", rep.Connected, rep.Errors)
	}
	if rep.BytesPerCheckIn <= 0 || rep.BytesPerCheckIn > 500 {
		t.Errorf("bytes per no-change check-in %.0f, want (0, 500]", rep.BytesPerCheckIn)
	}
	if rep.FirstCheckInBytes <= rep.BytesPerCheckIn {
		t.Errorf("first check-in %.0f bytes is not larger than a no-change one (%.0f)", rep.FirstCheckInBytes, rep.BytesPerCheckIn)
	}
	if rep.P50ms <= 0 || rep.P99ms < rep.P50ms || rep.WakeupP50ms <= 0 || rep.WakeupMaxms < rep.WakeupP99ms {
		t.Errorf("latency figures out of order: %+v", rep)
	}
	waitFor(t, 5*time.Second, "all simulated agents offline after the run", func() (bool, string) {
		_, online := p.api.computers(t, "status=online")
		return online == 0, fmtCounts(map[string]int{"online": online})
	})
	if _, total := p.api.computers(t, ""); total != 100 {
		t.Errorf("%d computers enrolled, want 100", total)
	}
}
