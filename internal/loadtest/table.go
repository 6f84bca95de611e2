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
	for _, k := range slices.Sorted(maps.Keys(r.ErrorExamples)) {
		row("", "e.g. %s: %s", k, r.ErrorExamples[k])
	}
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
	if r.Scenario == WakeupFanout {
		// An observing generator (--observe) requested nothing: its own
		// agents are what it measured.
		woken := r.WakeupRequested
		if woken == 0 {
			woken = r.Connected
		}
		row("wake-up → replicated", "all %d in %.2fs; p50 %.0f ms, p95 %.0f ms, p99 %.0f ms; missed %d",
			woken, r.WakeupAllSeconds, r.WakeupP50ms, r.WakeupP95ms, r.WakeupP99ms, r.WakeupMissed)
	}
	if r.Scenario == ReconnectStorm {
		row("restart command", "%.1fs", r.RestartSeconds)
		row("all back after", "%.1fs (p50 %.1fs, p99 %.1fs); %d back, %d not back in time, %d gave up", r.StormAllBackSecs, r.StormP50Secs, r.StormP99Secs, r.StormBack, r.NotBack, r.GaveUp)
		row("TLS resumed", "%.1f %% of reconnects", 100*r.ResumedFraction)
	}
	if r.Scenario == Management {
		all := func(secs float64) string {
			if secs == 0 {
				return "not all"
			}
			return fmt.Sprintf("all in %.2fs", secs)
		}
		row("policy → applied", "%d of %d, %s (p50 %.2fs, p99 %.2fs); pushes received %.2fs–%.2fs; %d confirmed by the API",
			r.PolicyApplied, r.Agents, all(r.PolicyAllAppliedSecs), r.PolicyP50Secs, r.PolicyP99Secs, r.PolicyFirstPushSecs, r.PolicyLastPushSecs, r.PolicyVerified)
		row("task run now → finished", "%d of %d, %s (p50 %.2fs, p99 %.2fs); runs received %.2fs–%.2fs; API run states %s",
			r.TaskFinished, r.Agents, all(r.TaskAllFinishedSecs), r.TaskP50Secs, r.TaskP99Secs, r.TaskFirstDeliverySecs, r.TaskLastDeliverySecs, kinds(r.TaskRunStates))
		row("API reads meanwhile", "%d: p50 %.1f ms, p99 %.1f ms, max %.1f ms; %d errors", r.APIRequests, r.APIP50ms, r.APIP99ms, r.APIMaxms, r.APIErrors)
		for _, k := range slices.Sorted(maps.Keys(r.APIByEndpoint)) {
			a := r.APIByEndpoint[k]
			row("", "%s: %d, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d errors", k, a.Requests, a.P50ms, a.P99ms, a.Maxms, a.Errors)
		}
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
	if r.ClientRSSBytes > 0 && r.Connected > 0 {
		row("load generator RSS", "%.1f MiB (%.1f KiB per agent, %s client)", r.ClientRSSBytes/(1<<20), r.ClientRSSBytes/1024/float64(r.Connected), r.Client)
	}
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
