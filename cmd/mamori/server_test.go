package main

import "testing"

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"3GiB": 3 << 30, "512MiB": 512 << 20, "2GB": 2e9, "1.5GiB": 3 << 29, "4096": 4096, " 8 KiB ": 8 << 10} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1GiB", "0", "3 apples", "1e30GiB"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}
