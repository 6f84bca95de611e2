// Package sigsynth synthesizes signature sets shaped like the scan benchmark's
// (shared/bench/scan/gen.py): 50,000 MD5, 5,000 SHA-256 and 10,000 body
// signatures, ~3 % of them with "??", "*" or "{n-m}" wildcards. It lets Go
// benchmarks and tests run at full signature scale without Python.
package sigsynth

import (
	"encoding/hex"
	"fmt"
	"math/rand"

	"github.com/mamori/mamori/internal/engine/signature"
)

// Counts of the benchmark signature set.
const (
	MD5s    = 50_000
	SHA256s = 5_000
	Bodies  = 10_000
)

// Records returns a deterministic set of MD5s+SHA256s+Bodies records. Hash
// records take their sizes from sizes (so files of those sizes must be
// hashed, as in the benchmark corpus); body patterns are random bytes.
func Records(seed int64, sizes []int64) []signature.Record {
	rng := rand.New(rand.NewSource(seed))
	recs := make([]signature.Record, 0, MD5s+SHA256s+Bodies)
	size := func() int64 {
		if len(sizes) == 0 {
			return int64(4096 + rng.Intn(1<<20))
		}
		return sizes[rng.Intn(len(sizes))]
	}
	for i := 0; i < MD5s; i++ {
		h := make([]byte, 16)
		rng.Read(h)
		recs = append(recs, signature.Record{Type: signature.TypeMD5, Hash: h, Size: size(), Name: fmt.Sprintf("Synth.MD5.%06d", i)})
	}
	for i := 0; i < SHA256s; i++ {
		h := make([]byte, 32)
		rng.Read(h)
		recs = append(recs, signature.Record{Type: signature.TypeSHA256, Hash: h, Size: size(), Name: fmt.Sprintf("Synth.SHA256.%05d", i)})
	}
	rb := func(n int) string {
		b := make([]byte, n)
		rng.Read(b)
		return hex.EncodeToString(b)
	}
	for i := 0; i < Bodies; i++ {
		n := 16 + rng.Intn(25)
		pat := rb(n)
		if i%33 == 7 {
			cut := 6 + rng.Intn(n-11)
			j := []string{"??", "*", fmt.Sprintf("{%d-%d}", rng.Intn(9), 9+rng.Intn(24))}[rng.Intn(3)]
			pat = rb(cut) + j + rb(n-cut)
		}
		r, err := signature.ParseLine("ndb", fmt.Sprintf("Synth.Body.%05d:0:*:%s", i, pat))
		if err != nil {
			panic(err)
		}
		recs = append(recs, r)
	}
	return recs
}
