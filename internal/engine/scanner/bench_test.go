package scanner

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/matcher"
	"github.com/mamori/mamori/internal/engine/sigsynth"
)

// BenchmarkScanDir scans a directory of 96 files (64 KiB to 4 MiB, ~130 MB
// in all) with all 65,000 synthetic signatures and runtime.NumCPU() workers;
// every file's size is in the hash index, as in the benchmark corpus. The
// files stay in the page cache after the first iteration.
func BenchmarkScanDir(b *testing.B) {
	dir := b.TempDir()
	rng := rand.New(rand.NewSource(3))
	var sizes []int64
	var total int64
	for i := 0; i < 96; i++ {
		n := int64(64<<10) << (i % 7)
		data := make([]byte, n)
		rng.Read(data)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.bin", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
		sizes = append(sizes, n)
		total += n
	}
	db, err := enginedb.Build(sigsynth.Records(1, sizes), 1)
	if err != nil {
		b.Fatal(err)
	}
	e, err := matcher.Load(db)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(total)
	b.ResetTimer()
	for b.Loop() {
		sum, err := Scan(context.Background(), []string{dir}, Options{Engine: e})
		if err != nil || sum.Files != 96 || sum.Errors != 0 {
			b.Fatalf("%+v %v", sum, err)
		}
	}
}
