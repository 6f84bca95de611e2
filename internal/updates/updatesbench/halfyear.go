package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/updates/client"
	"github.com/mamori/mamori/internal/updates/mirror"
	"github.com/mamori/mamori/internal/updates/repo"
	"github.com/mamori/mamori/internal/updates/scheme"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// profile is a client profile of the simulation.
type profile struct {
	Name string `json:"name"`
	// online reports whether the client checks at (day, hour).
	online func(day, hour int) bool
	// offline period (days [From, To)); the profile shadows "always on"
	// before it and runs its own client after it
	OffFrom, OffTo int `json:"-"`

	d     *client.Direct
	state string
	acc   accounting
}

// accounting sums what one profile downloads under each scheme.
type accounting struct {
	Checks          int            `json:"checks"`
	Updates         int            `json:"updates"`
	FullBytes       int64          `json:"a_full_bytes"`        // (a) full engine each time
	EsetBytes       int64          `json:"b_eset_bytes"`        // (b) deltas within 20 versions, full after a repack
	EsetFulls       int            `json:"b_full_downloads"`    // (b) full downloads
	EsetRepackFulls int            `json:"b_fulls_from_repack"` // (b) of which forced by a repack
	MamoriPayload   int64          `json:"c_payload_bytes"`     // (c) engine files
	MamoriMetadata  int64          `json:"c_metadata_bytes"`    // (c) TUF metadata (compressed on the wire)
	MamoriRequests  int64          `json:"c_requests"`
	MamoriFulls     int            `json:"c_full_downloads"`
	MaxPayloadReqs  int            `json:"c_max_payload_requests_per_update"`
	Logical         int64          `json:"logical_bytes"`     // net change, zstd-compressed as one stream
	LogicalRaw      int64          `json:"logical_raw_bytes"` // net change, uncompressed text
	InWindowPayload int64          `json:"c_in_window_payload"`
	InWindowLogical int64          `json:"in_window_logical"`
	MaxRatio        float64        `json:"c_max_ratio_in_window"` // max per update of payload ÷ logical
	RepackPayload   int64          `json:"c_payload_spanning_repacks"`
	RepackLogical   int64          `json:"logical_spanning_repacks"`
	CatchUp         *client.Result `json:"catch_up,omitempty"`
	CatchUpLogical  int64          `json:"catch_up_logical,omitempty"`
	CatchUpBehind   int            `json:"catch_up_releases_behind,omitempty"`
}

func (a *accounting) add(b accounting) {
	a.Checks += b.Checks
	a.Updates += b.Updates
	a.FullBytes += b.FullBytes
	a.EsetBytes += b.EsetBytes
	a.EsetFulls += b.EsetFulls
	a.EsetRepackFulls += b.EsetRepackFulls
	a.MamoriPayload += b.MamoriPayload
	a.MamoriMetadata += b.MamoriMetadata
	a.MamoriRequests += b.MamoriRequests
	a.MamoriFulls += b.MamoriFulls
	a.MaxPayloadReqs = max(a.MaxPayloadReqs, b.MaxPayloadReqs)
	a.Logical += b.Logical
	a.LogicalRaw += b.LogicalRaw
	a.InWindowPayload += b.InWindowPayload
	a.InWindowLogical += b.InWindowLogical
	a.MaxRatio = max(a.MaxRatio, b.MaxRatio)
	a.RepackPayload += b.RepackPayload
	a.RepackLogical += b.RepackLogical
}

type sim struct {
	window, esetWindow int
	versions           []uint64         // by release index
	index              map[uint64]int   // version → release index
	steps              []enginedb.Delta // steps[i]: release i-1 → i
	repack             []bool           // release i is a monthly repack
	full, step         []int64          // compressed sizes by release index
	logical            map[[2]uint64][2]int64
	enc                *zstd.Encoder
}

func (s *sim) logicalVolume(from, to uint64) (int64, int64) {
	k := [2]uint64{from, to}
	if v, ok := s.logical[k]; ok {
		return v[0], v[1]
	}
	net := scheme.NewNet(from)
	for i := s.index[from] + 1; i <= s.index[to]; i++ {
		if err := net.Append(s.steps[i]); err != nil {
			panic(err)
		}
	}
	var b bytes.Buffer
	net.Delta().WriteTo(&b)
	v := [2]int64{int64(len(s.enc.EncodeAll(b.Bytes(), nil))), int64(b.Len())}
	s.logical[k] = v
	return v[0], v[1]
}

// account adds one check's result to acc.
func (s *sim) account(acc *accounting, res client.Result) {
	acc.Checks++
	acc.MamoriMetadata += res.BytesDownloaded - res.PayloadBytes
	acc.MamoriRequests += res.Requests
	if res.To == res.From {
		return
	}
	acc.Updates++
	acc.MamoriPayload += res.PayloadBytes
	acc.MaxPayloadReqs = max(acc.MaxPayloadReqs, res.PayloadRequests)
	if res.Method == "full" {
		acc.MamoriFulls++
	}
	vi, ni := s.index[res.From], s.index[res.To]
	acc.FullBytes += s.full[ni]
	// (b): deltas for at most esetWindow versions and no repack in between
	repack := false
	for i := vi + 1; i <= ni; i++ {
		repack = repack || s.repack[i]
	}
	if ni-vi <= s.esetWindow && !repack {
		for i := vi + 1; i <= ni; i++ {
			acc.EsetBytes += s.step[i]
		}
	} else {
		acc.EsetBytes += s.full[ni]
		acc.EsetFulls++
		if repack && ni-vi <= s.esetWindow {
			acc.EsetRepackFulls++
		}
	}
	lz, lr := s.logicalVolume(res.From, res.To)
	acc.Logical += lz
	acc.LogicalRaw += lr
	if ni-vi <= s.window {
		acc.InWindowPayload += res.PayloadBytes
		acc.InWindowLogical += lz
		acc.MaxRatio = max(acc.MaxRatio, float64(res.PayloadBytes)/float64(lz))
		if repack {
			acc.RepackPayload += res.PayloadBytes
			acc.RepackLogical += lz
		}
	}
}

func halfYear(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("halfyear", flag.ContinueOnError)
	days := fs.Int("days", 182, "simulated days")
	perDay := fs.Int("per-day", 5, "releases a day")
	initial := fs.Int("initial", 20000, "records in the first engine")
	seed := fs.Int64("seed", 1, "random seed")
	window := fs.Int("window", scheme.DefaultWindow, "Mamori delta window K")
	checkpoint := fs.Int("checkpoint", scheme.DefaultCheckpoint, "Mamori checkpoint interval S")
	esetWindow := fs.Int("eset-window", 20, "versions the ESET-like scheme has deltas for")
	repackDays := fs.Int("repack-days", 30, "days between full repacks")
	dir := fs.String("dir", filepath.Join(os.TempDir(), "mamori-bench-halfyear"), "work directory (emptied)")
	out := fs.String("json", "", "write the results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	os.RemoveAll(*dir)
	start := time.Now()
	settings := repo.DefaultSettings()
	settings.Window, settings.Checkpoint = *window, *checkpoint
	r, _, err := repo.Init(filepath.Join(*dir, "repo"), settings, repo.Options{Logger: quiet})
	if err != nil {
		return err
	}
	defer r.Close()
	root, _ := os.ReadFile(filepath.Join(*dir, "repo", "public", "metadata", "1.root.json"))
	m, err := mirror.New(mirror.Config{Dir: filepath.Join(*dir, "mirror"), Upstream: filepath.Join(*dir, "repo"), TrustedRoot: root, Logger: quiet, MaxConns: -1})
	if err != nil {
		return err
	}
	defer m.Close()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	s := &sim{window: *window, esetWindow: *esetWindow, index: map[uint64]int{}, logical: map[[2]uint64][2]int64{}, enc: enc}
	evo := updatestest.NewEvolver(*seed, *initial)
	rng := rand.New(rand.NewSource(*seed + 1))
	publish := func(isRepack bool) error {
		n := evo.Len()
		add := int(float64(n) * (0.0005 + rng.Float64()*0.0045))
		cur := evo.Step(add, rng.Intn(11))
		res, err := r.Publish(cur, 0)
		if err != nil {
			return err
		}
		var step enginedb.Delta
		if res.Step != nil {
			step = *res.Step
		}
		s.index[res.Version] = len(s.versions)
		s.versions = append(s.versions, res.Version)
		s.steps = append(s.steps, step)
		s.repack = append(s.repack, isRepack)
		rels := r.Releases()
		last := rels[len(rels)-1]
		s.full = append(s.full, last.Full.Length)
		s.step = append(s.step, last.Step.Length)
		if _, err := m.Sync(ctx); err != nil {
			return err
		}
		return nil
	}
	newClient := func(state string) (*client.Direct, error) {
		return client.New(client.Config{StateDir: state, Sources: []string{srv.URL}, TrustedRoot: root, Logger: quiet})
	}
	always := func(day, hour int) bool { return true }
	profiles := []*profile{
		{Name: "always on (hourly)", online: always},
		{Name: "office laptop (8 h, weekdays)", online: func(day, hour int) bool { return day%7 < 5 && hour >= 9 && hour < 17 }},
		{Name: "back from 2 weeks offline", online: always, OffFrom: 120, OffTo: 134},
		{Name: "back from 60 days offline", online: always, OffFrom: 100, OffTo: 160},
	}
	// release 0 at t=0, installed everywhere before the half-year starts
	if err := publish(false); err != nil {
		return err
	}
	for i, p := range profiles {
		p.state = filepath.Join(*dir, fmt.Sprintf("client%d", i))
		if p.d, err = newClient(p.state); err != nil {
			return err
		}
		if p.OffFrom == 0 {
			if _, err := p.d.Update(ctx, client.UpdateOptions{}); err != nil {
				return err
			}
		}
	}
	relEvery := 24 * 60 / *perDay // minutes
	checkMinute := 17
	for day := 0; day < *days; day++ {
		for minute := 0; minute < 24*60; minute++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if minute%relEvery == 0 && !(day == 0 && minute == 0) {
				isRepack := day > 0 && day%*repackDays == 0 && minute == 0
				if err := publish(isRepack); err != nil {
					return err
				}
			}
			if minute%60 != checkMinute {
				continue
			}
			hour := minute / 60
			var alwaysAcc accounting
			for _, p := range profiles {
				if !p.online(day, hour) {
					continue
				}
				shadowing := p.OffFrom > 0 && day < p.OffFrom
				if shadowing { // identical to "always on" until it goes offline
					continue
				}
				if p.OffFrom > 0 && day < p.OffTo {
					continue // offline
				}
				v0, _ := p.d.Current()
				res, err := p.d.Update(ctx, client.UpdateOptions{})
				if err != nil {
					return fmt.Errorf("%s on day %d: %w", p.Name, day, err)
				}
				var one accounting
				s.account(&one, res)
				if p.OffFrom > 0 && p.acc.CatchUp == nil && res.To != v0 {
					r := res
					p.acc.CatchUp = &r
					p.acc.CatchUpLogical, _ = s.logicalVolume(res.From, res.To)
					p.acc.CatchUpBehind = s.index[res.To] - s.index[res.From]
				}
				p.acc.add(one)
				if p == profiles[0] {
					alwaysAcc = one
				}
			}
			// shadows follow "always on" until they go offline, then take a
			// copy of its state
			for _, p := range profiles[2:] {
				if day < p.OffFrom {
					p.acc.add(alwaysAcc)
				}
				if day == p.OffFrom-1 && hour == 23 {
					if err := copyState(profiles[0].state, p.state); err != nil {
						return err
					}
					if p.d, err = newClient(p.state); err != nil {
						return err
					}
				}
			}
		}
		if day%10 == 9 || day == *days-1 {
			fmt.Fprintf(os.Stderr, "day %d: release %d, %d records, %s elapsed\n", day+1, len(s.versions)-1, evo.Len(), time.Since(start).Round(time.Second))
		}
	}
	st, _ := r.Status()
	res := map[string]any{
		"machine": machine(), "days": *days, "per_day": *perDay, "releases": len(s.versions) - 1, "initial_records": *initial,
		"final_records": evo.Len(), "final_full_bytes": s.full[len(s.full)-1], "window": *window, "checkpoint": *checkpoint,
		"eset_window": *esetWindow, "repack_days": *repackDays, "seconds": time.Since(start).Seconds(),
		"repository_public_bytes": st.PublicBytes, "targets_listed": st.Targets, "targets_metadata_bytes": st.TargetsBytes,
	}
	var rows []map[string]any
	for _, p := range profiles {
		rows = append(rows, map[string]any{"profile": p.Name, "accounting": p.acc})
	}
	res["profiles"] = rows
	printHalfYear(os.Stdout, res, profiles)
	if *out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		return os.WriteFile(*out, b, 0o644)
	}
	return nil
}

func copyState(from, to string) error {
	os.RemoveAll(to)
	return filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		if d.Name() == "lock" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
}

func mb(n int64) string { return fmt.Sprintf("%.2f", float64(n)/1e6) }

func printHalfYear(w io.Writer, res map[string]any, profiles []*profile) {
	fmt.Fprintf(w, "half-year simulation: %d releases (%d a day), %d → %d records, final full engine %s MB compressed; window K=%d, checkpoint S=%d; ESET-like window %d, repack every %d days; %.0f s\n\n",
		res["releases"], res["per_day"], res["initial_records"], res["final_records"], mb(res["final_full_bytes"].(int64)), res["window"], res["checkpoint"], res["eset_window"], res["repack_days"], res["seconds"])
	fmt.Fprintln(w, "| profile | updates | (a) full each time, MB | (b) ESET-like, MB | (b) full downloads (repack) | (c) Mamori payload, MB | (c) metadata, MB | logical change, MB | (c) ÷ logical (in window) | max per update | max requests | (c) full downloads |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, p := range profiles {
		a := p.acc
		ratio := 0.0
		if a.InWindowLogical > 0 {
			ratio = float64(a.InWindowPayload) / float64(a.InWindowLogical)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %d (%d) | %s | %s | %s | %.3f | %.3f | %d | %d |\n", p.Name, a.Updates, mb(a.FullBytes), mb(a.EsetBytes), a.EsetFulls, a.EsetRepackFulls,
			mb(a.MamoriPayload), mb(a.MamoriMetadata), mb(a.Logical), ratio, a.MaxRatio, a.MaxPayloadReqs, a.MamoriFulls)
	}
	fmt.Fprintln(w)
	for _, p := range profiles {
		if c := p.acc.CatchUp; c != nil {
			fmt.Fprintf(w, "- %s: catch-up update %d releases behind: %s, %d payload requests, %s MB payload (logical change %s MB), %s MB with metadata\n",
				p.Name, p.acc.CatchUpBehind, c.Method, c.PayloadRequests, mb(c.PayloadBytes), mb(p.acc.CatchUpLogical), mb(c.BytesDownloaded))
		}
	}
	for _, p := range profiles[:1] {
		if p.acc.RepackLogical > 0 {
			fmt.Fprintf(w, "- repacks: updates spanning a repack cost Mamori %s MB for %s MB of logical change (%.3f×): a repack adds 0 bytes\n",
				mb(p.acc.RepackPayload), mb(p.acc.RepackLogical), float64(p.acc.RepackPayload)/float64(p.acc.RepackLogical))
		}
	}
	fmt.Fprintf(w, "- repository: %s MB public after the half-year (without pruning), targets metadata lists %d files (%d bytes)\n", mb(res["repository_public_bytes"].(int64)), res["targets_listed"], res["targets_metadata_bytes"])
}
