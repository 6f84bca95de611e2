package matcher

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/sigsynth"
)

func benchDB(b *testing.B, sizes []int64) []byte {
	b.Helper()
	data, err := enginedb.Build(sigsynth.Records(1, sizes), 1)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// BenchmarkLoad65k measures loading (checksum + structure checks) and
// compiling a 65,000-signature engine. Target: under 0.1 s.
func BenchmarkLoad65k(b *testing.B) {
	data := benchDB(b, nil)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Load(data); err != nil {
			b.Fatal(err)
		}
	}
}

// benchData is 8 MiB of mixed random and text-like bytes.
func benchData() []byte {
	rng := rand.New(rand.NewSource(2))
	d := make([]byte, 8<<20)
	rng.Read(d[:len(d)/2])
	words := []string{"the ", "scan ", "engine ", "mamori ", "signature ", "\n", "data ", "file "}
	for i := len(d) / 2; i < len(d); {
		w := words[rng.Intn(len(words))]
		i += copy(d[i:], w)
	}
	return d
}

// BenchmarkScan65k measures single-core throughput of one Scanner with all
// 65,000 signatures, the file's size in the hash index (MD5 and SHA-256
// computed, as for nearly every file of the benchmark corpus).
func BenchmarkScan65k(b *testing.B) {
	data := benchData()
	e, err := Load(benchDB(b, []int64{int64(len(data))}))
	if err != nil {
		b.Fatal(err)
	}
	sc := e.NewScanner()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := sc.Scan(bytes.NewReader(data), int64(len(data)), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanBodyOnly65k is BenchmarkScan65k without hashing (the file's
// size is not in the hash index): the body automaton's own cost.
func BenchmarkScanBodyOnly65k(b *testing.B) {
	data := benchData()
	e, err := Load(benchDB(b, []int64{1}))
	if err != nil {
		b.Fatal(err)
	}
	sc := e.NewScanner()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := sc.Scan(bytes.NewReader(data), int64(len(data)), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
