// Package builtin is the default engine compiled into the binaries: a tiny
// signature set (the EICAR test file) so a fresh agent detects something out
// of the box, before its first engine update. It is built from the embedded
// signatures/ sources on first use, through the same parser, builder and
// loader as any other engine.
package builtin

import (
	"embed"
	"io/fs"
	"sort"
	"sync"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/matcher"
	"github.com/mamori/mamori/internal/engine/signature"
)

// Version is the built-in engine's version number. Real engine versions
// published by the update repository are always larger.
const Version = 1

//go:embed signatures
var sources embed.FS

var (
	once   sync.Once
	db     []byte
	engine *matcher.Engine
	err    error
)

func build() {
	var recs []signature.Record
	var names []string
	names, err = fs.Glob(sources, "signatures/*")
	if err != nil {
		return
	}
	sort.Strings(names)
	for _, n := range names {
		f, ferr := sources.Open(n)
		if ferr != nil {
			err = ferr
			return
		}
		rs, perr := signature.ParseFile(n, f)
		f.Close()
		if perr != nil {
			err = perr
			return
		}
		recs = append(recs, rs...)
	}
	if db, err = enginedb.Build(recs, Version); err != nil {
		return
	}
	engine, err = matcher.Load(db)
}

// Engine returns the compiled built-in engine (shared; safe for concurrent
// use).
func Engine() (*matcher.Engine, error) {
	once.Do(build)
	return engine, err
}

// DB returns the built-in engine database bytes (do not modify).
func DB() ([]byte, error) {
	once.Do(build)
	return db, err
}
