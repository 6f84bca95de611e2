package scheme

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/signature"
)

func TestParsePath_RoundTripsAndRejectsNonCanonicalNames(t *testing.T) {
	for _, v := range []uint64{1, 2, 42, 18446744073709551615} {
		if k, _, got := ParsePath(FullPath(v)); k != KindFull || got != v {
			t.Errorf("ParsePath(%q) = %v %d", FullPath(v), k, got)
		}
	}
	if k, f, to := ParsePath(DeltaPath(7, 9)); k != KindDelta || f != 7 || to != 9 {
		t.Errorf("ParsePath(delta) = %v %d %d", k, f, to)
	}
	for _, p := range []string{
		"engine/full-0.mdb.zst", "engine/full-01.mdb.zst", "engine/full-+1.mdb.zst", "engine/full-1.mdb",
		"engine/full-.mdb.zst", "engine/full-18446744073709551616.mdb.zst", "engine/delta-9-7.zst",
		"engine/delta-7-7.zst", "engine/delta-7.zst", "engine/delta-7-8-9.zst", "engine/delta-a-8.zst",
		"agent/full-1.mdb.zst", "full-1.mdb.zst", "engine/sub/full-1.mdb.zst", "engine/delta-1-2.zst.zst", "",
	} {
		if k, _, _ := ParsePath(p); k != KindUnknown {
			t.Errorf("ParsePath(%q) = %v, want unknown", p, k)
		}
	}
}

func TestSchedule_EveryClientInTheWindowNeedsAtMostThreePublishedDeltas(t *testing.T) {
	for _, s := range []Schedule{{180, 16}, {20, 4}, {16, 16}, {50, 7}, {10, 1}} {
		published := map[Hop]bool{}
		for n := 0; n < 3*s.Window+40; n++ {
			for _, src := range s.Sources(n) {
				published[Hop{src, n}] = true
			}
			needed := s.Needed(n, 0)
			if limit := s.Window + s.Checkpoint + s.Window/s.Checkpoint + 1; len(needed) > limit {
				t.Fatalf("%+v n=%d: %d deltas listed, want ≤ %d", s, n, len(needed), limit)
			}
			for v := max(0, n-s.Window); v < n; v++ {
				p := s.Path(v, n)
				if len(p) == 0 || len(p) > MaxHops {
					t.Fatalf("%+v: path %d→%d has %d hops", s, v, n, len(p))
				}
				at := v
				for _, h := range p {
					if h.From != at || h.To <= h.From {
						t.Fatalf("%+v: path %d→%d is not a chain: %v", s, v, n, p)
					}
					if !published[h] {
						t.Fatalf("%+v: path %d→%d uses %v, which was never published", s, v, n, h)
					}
					if !needed[h] {
						t.Fatalf("%+v: path %d→%d uses %v, which is not listed", s, v, n, h)
					}
					at = h.To
				}
				if at != n {
					t.Fatalf("%+v: path %d→%d ends at %d", s, v, n, at)
				}
			}
			if n > s.Window {
				if p := s.Path(n-s.Window-1, n); p != nil {
					t.Fatalf("%+v: a client beyond the window got a path %v", s, p)
				}
			}
		}
	}
}

func TestSchedule_ValidateRejectsBadParameters(t *testing.T) {
	for _, s := range []Schedule{{-1, 16}, {180, 0}, {10, 16}, {200000, 16}, {180, 20000}} {
		if s.Validate() == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	if err := (Schedule{0, 16}).Validate(); err != nil {
		t.Errorf("window 0 (full downloads only) refused: %v", err)
	}
}

// brute force: cheapest chain of ≤ maxHops edges.
func bruteCheapest(edges []Edge, at, to uint64, hops int) (int64, bool) {
	if at == to {
		return 0, true
	}
	if hops == 0 {
		return 0, false
	}
	best, found := int64(-1), false
	for _, e := range edges {
		if e.From == at && e.From < e.To && e.To <= to {
			if c, ok := bruteCheapest(edges, e.To, to, hops-1); ok && (!found || c+e.Length < best) {
				best, found = c+e.Length, true
			}
		}
	}
	return best, found
}

func TestPlan_FindsTheCheapestChainLikeABruteForceSearch(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for iter := 0; iter < 500; iter++ {
		var edges []Edge
		for i := 0; i < rng.Intn(30); i++ {
			a := uint64(1 + rng.Intn(12))
			b := uint64(1 + rng.Intn(12))
			edges = append(edges, Edge{From: a, To: b, Length: int64(rng.Intn(100)), Path: DeltaPath(max(a, 1), max(b, 2))})
		}
		from, to := uint64(1+rng.Intn(6)), uint64(6+rng.Intn(7))
		for hops := 1; hops <= 3; hops++ {
			chain, total, ok := Plan(edges, from, to, hops)
			want, wantOK := bruteCheapest(edges, from, to, hops)
			if from == to {
				wantOK = false
			}
			if ok != wantOK || (ok && total != want) {
				t.Fatalf("iter %d: Plan(%d→%d, %d hops) = %d %v, brute force %d %v", iter, from, to, hops, total, ok, want, wantOK)
			}
			if ok {
				if len(chain) > hops || chain[0].From != from || chain[len(chain)-1].To != to {
					t.Fatalf("bad chain %v", chain)
				}
				var sum int64
				for i, e := range chain {
					sum += e.Length
					if i > 0 && chain[i-1].To != e.From {
						t.Fatalf("chain not connected: %v", chain)
					}
				}
				if sum != total {
					t.Fatalf("total %d, chain sums to %d", total, sum)
				}
			}
		}
	}
}

func randomRecord(rng *rand.Rand) signature.Record {
	h := make([]byte, 16)
	rng.Read(h)
	return signature.Record{Type: signature.TypeMD5, Hash: h, Size: int64(rng.Intn(5000)), Name: fmt.Sprintf("T.%d", rng.Intn(50))}
}

// versions returns a chain of record sets with churn: records come and go,
// and some come back.
func versions(rng *rand.Rand, n int) [][]signature.Record {
	pool := make([]signature.Record, 60)
	for i := range pool {
		pool[i] = randomRecord(rng)
	}
	var out [][]signature.Record
	for i := 0; i < n; i++ {
		var set []signature.Record
		for _, r := range pool {
			if rng.Intn(2) == 0 {
				set = append(set, r)
			}
		}
		out = append(out, set)
	}
	return out
}

func deltaText(t *testing.T, d enginedb.Delta) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := d.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestNet_AppendAndPrependEqualTheDirectDiff(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	for iter := 0; iter < 50; iter++ {
		vs := versions(rng, 2+rng.Intn(8))
		var steps []enginedb.Delta
		for i := 1; i < len(vs); i++ {
			steps = append(steps, enginedb.Diff(vs[i-1], vs[i], uint64(i), uint64(i+1)))
		}
		want := deltaText(t, enginedb.Diff(vs[0], vs[len(vs)-1], 1, uint64(len(vs))))
		fwd := NewNet(1)
		for _, d := range steps {
			if err := fwd.Append(d); err != nil {
				t.Fatal(err)
			}
		}
		back := NewNet(uint64(len(vs)))
		for i := len(steps) - 1; i >= 0; i-- {
			if err := back.Prepend(steps[i]); err != nil {
				t.Fatal(err)
			}
		}
		if got := deltaText(t, fwd.Delta()); got != want {
			t.Fatalf("Append: got\n%s\nwant\n%s", got, want)
		}
		if got := deltaText(t, back.Delta()); got != want {
			t.Fatalf("Prepend: got\n%s\nwant\n%s", got, want)
		}
	}
}

func TestNet_RefusesDeltasThatDoNotChain(t *testing.T) {
	r := randomRecord(rand.New(rand.NewSource(1)))
	n := NewNet(1)
	if err := n.Append(enginedb.Delta{From: 2, To: 3}); err == nil {
		t.Fatal("appended a delta that does not start where the net ends")
	}
	if err := n.Append(enginedb.Delta{From: 1, To: 2, Added: []signature.Record{r}}); err != nil {
		t.Fatal(err)
	}
	if err := n.Append(enginedb.Delta{From: 2, To: 3, Added: []signature.Record{r}}); err == nil {
		t.Fatal("a record added twice was accepted")
	}
	if err := n.Prepend(enginedb.Delta{From: 0, To: 5}); err == nil {
		t.Fatal("prepended a delta that does not end where the net starts")
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{FullPath(3), DeltaPath(1, 9), "engine/delta-1-1.zst", "agent/1/linux-amd64/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		switch k, from, to := ParsePath(p); k {
		case KindFull:
			if FullPath(to) != p || to == 0 {
				t.Fatalf("%q parsed as full %d, which prints as %q", p, to, FullPath(to))
			}
		case KindDelta:
			if DeltaPath(from, to) != p || from >= to || from == 0 {
				t.Fatalf("%q parsed as delta %d-%d", p, from, to)
			}
		}
	})
}

func FuzzParseFullInfo(f *testing.F) {
	f.Add(`{"version":3,"release":0,"db_length":10,"db_sha256":"`+strings.Repeat("a", 64)+`","records":1}`, uint64(3))
	f.Add(`{"version":3}`, uint64(4))
	f.Fuzz(func(t *testing.T, s string, v uint64) {
		raw := json.RawMessage(s)
		fi, err := ParseFullInfo(&raw, FullPath(v))
		if err != nil {
			return
		}
		if fi.Version != v || fi.DBLength <= 0 || fi.DBLength > MaxDBLength || len(fi.DBSHA256) != 64 || fi.Records < 0 {
			t.Fatalf("accepted %+v for version %d", fi, v)
		}
		di, err := ParseDeltaInfo(&raw, DeltaPath(1, 2))
		if err == nil && (di.Raw <= 0 || di.Raw > MaxDeltaLength) {
			t.Fatalf("accepted delta info %+v", di)
		}
	})
}
