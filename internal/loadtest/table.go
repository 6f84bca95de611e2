package loadtest

import (
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
)

// WriteTable prints the report for a terminal.
func (r *Report) WriteTable(w io.Writer) {
	row := func(k, format string, a ...any) { fmt.Fprintf(w, "  %-28s "+format+"\n", append([]any{k}, a...)...) }
	fmt.Fprintf(w, "%s against %s, %d agents\n", r.Scenario, r.Target, r.Agents)
	row("connected", "%d (in %.1fs)", r.Connected, r.ConnectSeconds)
	row("errors", "%d %s", r.Errors, kinds(r.ErrorsByKind))
	if r.RetryLater > 0 {
		row("retry-later answers", "%d (back-pressure, not errors)", r.RetryLater)
	}
	if r.ServerRSSPerAgent > 0 {
		row("server RSS per idle agent", "%.1f KiB (live heap %.1f KiB, stacks %.1f KiB, %.2f goroutines)",
			r.ServerRSSPerAgent/1024, r.ServerHeapPerAgent/1024, r.ServerStackPerAgent/1024, r.ServerGoroutinesAgent)
	}
	if r.FirstCheckInBytes > 0 {
		row("first check-in", "%.0f bytes (what the server lacked)", r.FirstCheckInBytes)
	}
	if r.CheckIns > 0 {
		row("check-ins", "%d in %.1fs: %.0f/s", r.CheckIns, r.MeasuredSeconds, r.CheckInsPerSec)
		row("check-in latency", "p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.1f ms", r.P50ms, r.P95ms, r.P99ms, r.Maxms)
		row("bytes per no-change check-in", "%.0f (%.0f up, %.0f down)", r.BytesPerCheckIn, r.BytesPerCheckInUp, r.BytesPerCheckInDn)
		if r.ChangedCheckIns > 0 {
			row("changed check-ins", "%d, p50 %.2f ms, p99 %.2f ms, %.0f bytes each", r.ChangedCheckIns, r.ChangedP50ms, r.ChangedP99ms, r.BytesPerChanged)
		}
		row("wire bytes per agent-minute", "%.0f (everything, keepalives included)", r.WireBytesPerAgentM)
	}
	if r.WakeupRequested > 0 || r.WakeupMissed > 0 {
		row("wake-up → replicated", "all %d in %.2fs; p50 %.0f ms, p95 %.0f ms, p99 %.0f ms; missed %d",
			r.WakeupRequested, r.WakeupAllSeconds, r.WakeupP50ms, r.WakeupP95ms, r.WakeupP99ms, r.WakeupMissed)
	}
	if r.Scenario == ReconnectStorm {
		row("restart command", "%.1fs", r.RestartSeconds)
		row("all back after", "%.1fs (p50 %.1fs, p99 %.1fs); %d back, %d gave up", r.StormAllBackSecs, r.StormP50Secs, r.StormP99Secs, r.StormBack, r.GaveUp)
		row("TLS resumed", "%.1f %% of reconnects", 100*r.ResumedFraction)
	}
	if len(r.ServerCounters) > 0 {
		row("server counters", "%s", floatKinds(r.ServerCounters))
	}
	if r.ServerRSS > 0 {
		row("server RSS", "%.1f MiB", r.ServerRSS/(1<<20))
	}
	if r.ServerCPUSeconds > 0 {
		row("server CPU", "%.1f s (%.2f cores)", r.ServerCPUSeconds, r.ServerCPUCores)
	}
	row("load generator CPU", "%.2f cores", r.ClientCPUCores)
	if r.MachineLoad != [2]float64{} {
		row("machine load (1 min)", "%.1f → %.1f (%d cores)", r.MachineLoad[0], r.MachineLoad[1], runtime.NumCPU())
	}
	if r.Echo != nil {
		fmt.Fprintln(w)
		r.Echo.WriteTable(w)
		fmt.Fprintf(w, "\necho ratio (server check-ins/s ÷ echo's)  %.2f\n", r.EchoRatio)
	}
}

func kinds(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func floatKinds(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
