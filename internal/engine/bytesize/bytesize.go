// Package bytesize parses byte counts written the way administrators write
// them in flags, policies and configuration files: 512, 512K, 100M, 2G, 1T
// (powers of 1024), case-insensitive, optionally followed by B or iB. It
// lives in the protection module, which imports nothing outside itself, so
// the scanner's flags, policies and the agent's configuration share it.
package bytesize

import (
	"fmt"
	"strconv"
	"strings"
)

// Max is the largest count Parse accepts (larger values are refused, never
// wrapped).
const Max = 1 << 62

// Parse reads a byte count: a decimal integer with an optional K, M, G or T
// suffix (powers of 1024), optionally followed by B or iB.
func Parse(v string) (int64, error) {
	s, mult := Unit(strings.TrimSpace(v))
	if s == "" || len(s) > 20 || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 512K, 100M, 2G)", v)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > Max/mult {
		return 0, fmt.Errorf("size %q is too large", v)
	}
	return n * mult, nil
}

// Unit splits a size into its number and the multiplier of its unit
// suffix (K, M, G or T, powers of 1024, optionally followed by B or iB;
// case-insensitive): "100MiB" is "100", 1<<20; "512" is "512", 1. The
// number is returned upper-cased and is not checked.
func Unit(s string) (number string, mult int64) {
	s = strings.ToUpper(s)
	if t := strings.TrimSuffix(s, "IB"); t != s {
		s = t
	} else {
		s = strings.TrimSuffix(s, "B")
	}
	mult = 1
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	return s, mult
}
