package store

import (
	"strings"
	"testing"
)

func TestRebind(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT a FROM t WHERE id = ?", "SELECT a FROM t WHERE id = $1"},
		{"INSERT INTO t (a, b, c) VALUES (?, ?, ?)", "INSERT INTO t (a, b, c) VALUES ($1, $2, $3)"},
		{"SELECT '?' , ? FROM t", "SELECT '?' , $1 FROM t"},
		{`SELECT "odd?col" FROM t WHERE x = ?`, `SELECT "odd?col" FROM t WHERE x = $1`},
		{"SELECT ? -- why?\n, ?", "SELECT $1 -- why?\n, $2"},
		{`WHERE name LIKE ? ESCAPE '\' AND host LIKE ? ESCAPE '\'`, `WHERE name LIKE $1 ESCAPE '\' AND host LIKE $2 ESCAPE '\'`},
		{"SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"},
		{"SELECT 'unterminated ?", "SELECT 'unterminated ?"},
		{"SELECT ? -- trailing comment ?", "SELECT $1 -- trailing comment ?"},
	} {
		if got := rebind(tc.in); got != tc.want {
			t.Errorf("rebind(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// placeholdersOutsideQuotes counts "?" outside literals, identifiers and
// comments, by a different walk than rebind's (a state machine).
func placeholdersOutsideQuotes(q string) int {
	n := 0
	var in byte // 0, '\'', '"', '-' (comment)
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case in == '-':
			if c == '\n' {
				in = 0
			}
		case in != 0:
			if c == in {
				in = 0
			}
		case c == '\'' || c == '"':
			in = c
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			in = '-'
			i++
		case c == '?':
			n++
		}
	}
	return n
}

func FuzzRebind(f *testing.F) {
	for _, s := range []string{"SELECT ?", "'?' ?", `"?" ?`, "-- ?\n?", "''''?", "?-?--?\n?", "\"'?\"?'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		got := rebind(q)
		want := placeholdersOutsideQuotes(q)
		if n := placeholdersOutsideQuotes(got); n != 0 {
			t.Fatalf("rebind(%q) = %q still has %d placeholders", q, got, n)
		}
		if strings.Count(got, "$") != strings.Count(q, "$")+want {
			t.Fatalf("rebind(%q) = %q: want %d numbered placeholders added", q, got, want)
		}
		if want == 0 && got != q {
			t.Fatalf("rebind(%q) = %q changed a query without placeholders", q, got)
		}
	})
}
