package flagenv

import (
	"strings"
	"testing"
)

func TestBoolEnv_EnvDefaultFlagWinsAndGarbageIsAnError(t *testing.T) {
	t.Setenv("T_REUSE", "true")
	s := New("t")
	b := s.BoolEnv("reuse", "T_REUSE", false, "help")
	if err := s.Parse(nil); err != nil || !*b {
		t.Fatalf("env true: %v, %v", *b, err)
	}
	s = New("t")
	b = s.BoolEnv("reuse", "T_REUSE", false, "help")
	if err := s.Parse([]string{"--reuse=false"}); err != nil || *b {
		t.Fatalf("flag false over env true: %v, %v", *b, err)
	}
	t.Setenv("T_REUSE", "maybe")
	s = New("t")
	s.BoolEnv("reuse", "T_REUSE", false, "help")
	if err := s.Parse(nil); err == nil || !strings.Contains(err.Error(), `T_REUSE="maybe"`) {
		t.Fatalf("env maybe: err %v, want one naming the variable", err)
	}
}
