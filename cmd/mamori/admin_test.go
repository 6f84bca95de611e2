package main

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/errcode"
)

// The commands that open a server's data directory on its machine refuse a
// missing --data as a usage error and a directory holding no server with a
// not_found that says how to make one, before touching anything.
func TestServerDataCommands_RefuseNoDataAndAFolderWithoutAServer(t *testing.T) {
	empty := t.TempDir()
	for name, run := range map[string]func([]string) error{
		"token create":   func(a []string) error { return runTokenCreate(t.Context(), a, io.Discard) },
		"ca fingerprint": func(a []string) error { return runCAFingerprint(a, io.Discard) },
		"recover":        func(a []string) error { return runRecover(t.Context(), a, io.Discard) },
	} {
		t.Setenv("MAMORI_DATA", "")
		var usage usageError
		if err := run(nil); !errors.As(err, &usage) || !strings.Contains(err.Error(), "--data is required") {
			t.Errorf("%s without --data: %v, want the usage error", name, err)
		}
		err := run([]string{"--data", empty})
		if errcode.Of(err) != errcode.NotFound || !strings.Contains(err.Error(), "mamori server --data "+empty) {
			t.Errorf("%s --data EMPTY: %v, want not_found naming how to start a server there", name, err)
		}
		if left, _ := os.ReadDir(empty); len(left) != 0 {
			t.Fatalf("%s wrote %v into a folder without a server", name, left)
		}
	}
}
