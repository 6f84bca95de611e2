package password

import (
	"errors"
	"strings"
	"testing"
)

func TestHashVerify_RightAndWrongPassword(t *testing.T) {
	h, err := Hash("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=47104,t=1,p=1$") {
		t.Fatalf("unexpected PHC string %q", h)
	}
	if err := Verify("correct horse battery staple", h); err != nil {
		t.Fatalf("right password rejected: %v", err)
	}
	if err := Verify("correct horse battery stapl", h); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: got %v, want ErrMismatch", err)
	}
	h2, _ := Hash("correct horse battery staple")
	if h == h2 {
		t.Fatal("two hashes of the same password share a salt")
	}
}

func TestVerify_MalformedHashesAreErrorsNotMatches(t *testing.T) {
	good, _ := hashWith("pw", Params{MemoryKiB: 64, Time: 1, Threads: 1})
	parts := strings.Split(good, "$")
	cases := map[string]string{
		"empty":         "",
		"bcrypt":        "$2a$10$abcdefghijklmnopqrstuv",
		"bad version":   strings.Replace(good, "v=19", "v=16", 1),
		"huge memory":   strings.Replace(good, "m=64", "m=99999999", 1),
		"zero time":     strings.Replace(good, "t=1", "t=0", 1),
		"bad salt":      strings.Join([]string{"", parts[1], parts[2], parts[3], "!!!", parts[5]}, "$"),
		"short hash":    strings.Join([]string{"", parts[1], parts[2], parts[3], parts[4], "AAAA"}, "$"),
		"missing parts": "$argon2id$v=19$m=64,t=1,p=1$",
	}
	for name, phc := range cases {
		err := Verify("pw", phc)
		if err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("%s: Verify = %v, want a malformed-hash error", name, err)
		}
	}
	if err := Verify(strings.Repeat("x", MaxLen+1), good); !errors.Is(err, ErrMismatch) {
		t.Errorf("oversized password: got %v", err)
	}
}

func TestGenerate_LengthAndAlphabet(t *testing.T) {
	a, b := Generate(24), Generate(24)
	if len(a) != 24 || a == b {
		t.Fatalf("Generate gave %q and %q", a, b)
	}
	if strings.ContainsAny(a, "0O1lI") {
		t.Fatalf("look-alike characters in %q", a)
	}
}
