package engine

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestImports_StandardLibraryOnly keeps the protection module self-contained:
// its packages import only the standard library and each other, never the
// agent, server or store code, and never a third-party module.
func TestImports_StandardLibraryOnly(t *testing.T) {
	const self = "github.com/mamori/mamori/internal/engine"
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			first := strings.Split(p, "/")[0]
			if strings.Contains(first, ".") && p != self && !strings.HasPrefix(p, self+"/") {
				t.Errorf("%s imports %s", path, p)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 50 {
		t.Fatalf("only %d imports checked; is the walk broken?", n)
	}
}
