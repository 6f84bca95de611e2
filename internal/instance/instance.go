// Package instance defines what an agent instance name may be. Both the
// agent (checking its flag) and the server (checking an enrollment) use it,
// so it stands alone.
package instance

import "unicode"

// MaxLen is the longest instance name.
const MaxLen = 64

// Valid reports whether s is an acceptable instance name: at most 64 ASCII
// letters, digits, '.', '_' and '-'. The empty name (no instance) is valid.
func Valid(s string) bool {
	if len(s) > MaxLen {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '_' || r == '-' || r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}
