package bytesize

import "testing"

func TestParse(t *testing.T) {
	ok := map[string]int64{"0": 0, "1024": 1024, "512K": 512 << 10, "512k": 512 << 10, "100M": 100 << 20,
		"2G": 2 << 30, "1T": 1 << 40, "10MB": 10 << 20, "10MiB": 10 << 20, "7b": 7, " 64K ": 64 << 10, "4194304T": 1 << 62}
	for in, want := range ok {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "B", "-1", "+1", "1.5G", "12X", "abc", "1 M", "99999999999999999999", "9999999999T", "4194305T", "0x10"} {
		if n, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, n)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"50M", "0", "12KiB", "9999999999T"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err == nil && (n < 0 || n > Max) {
			t.Fatalf("%q parsed to %d", s, n)
		}
	})
}
