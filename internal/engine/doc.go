// Package engine is the root of Mamori's protection module: the detection
// engine, the scanner and the quarantine. It holds no code of its own; the work
// is done by its sub-packages, each named for what it provides:
//
//   - signature: ClamAV signature formats (.hdb .hsb .ndb .fp .sfp), the
//     canonical signature record and the hex body-pattern compiler.
//   - enginedb: the versioned, checksummed binary engine database, its builder
//     and loader, and the record/delta model used for logical updates.
//   - matcher: the compiled engine (hash index and body-pattern automaton)
//     and the streaming per-file matcher.
//   - archive: zip, gzip and tar readers with nesting, size and ratio limits.
//   - scanner: the parallel, recursive file-system scanner (library API).
//   - quarantine: the encrypted quarantine store.
//   - builtin: the default engine embedded in the binaries (EICAR).
//   - enginecli: the `mamori engine ...`, `mamori-agent scan` and
//     `mamori-agent quarantine` command implementations.
//
// Everything here uses the Go standard library only and builds with
// CGO_ENABLED=0. docs/engine.md describes formats, limits and benchmarks.
package engine
