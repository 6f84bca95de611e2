// Package signature parses the supported subset of ClamAV's signature formats
// into canonical records, and compiles ClamAV hex body signatures into
// patterns.
//
// Supported source files (by extension):
//
//	.hdb  MD5 file hashes          md5:size:name[:minfl[:maxfl]]
//	.hsb  SHA-1/SHA-256 hashes     hash:size:name[:minfl[:maxfl]]
//	.ndb  extended body signatures name:target:offset:hexsig[:minfl[:maxfl]]
//	.fp   MD5 allow-list           (.hdb format)
//	.sfp  SHA-1/SHA-256 allow-list (.hsb format)
//
// Size may be "*" (any size) in every hash format. Functionality-level fields
// are validated as decimal numbers and then ignored. Blank lines and lines
// starting with '#' are skipped. Everything else that is not understood is an
// error naming the file, the line and the reason.
package signature

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Type is the kind of a signature record.
type Type uint8

// Record types. The numeric values are part of the engine database format
// and must never change.
const (
	TypeMD5         Type = 1 // .hdb: MD5 of the whole file
	TypeSHA1        Type = 2 // .hsb: SHA-1 of the whole file
	TypeSHA256      Type = 3 // .hsb: SHA-256 of the whole file
	TypeBody        Type = 4 // .ndb: body (content) signature
	TypeAllowMD5    Type = 5 // .fp: MD5 allow-list entry
	TypeAllowSHA1   Type = 6 // .sfp: SHA-1 allow-list entry
	TypeAllowSHA256 Type = 7 // .sfp: SHA-256 allow-list entry
)

// IsHash reports whether records of this type carry a file hash.
func (t Type) IsHash() bool { return t != TypeBody && t >= TypeMD5 && t <= TypeAllowSHA256 }

// IsAllow reports whether records of this type are allow-list entries.
func (t Type) IsAllow() bool { return t >= TypeAllowMD5 && t <= TypeAllowSHA256 }

// HashLen is the digest length in bytes for hash types, 0 otherwise.
func (t Type) HashLen() int {
	switch t {
	case TypeMD5, TypeAllowMD5:
		return 16
	case TypeSHA1, TypeAllowSHA1:
		return 20
	case TypeSHA256, TypeAllowSHA256:
		return 32
	}
	return 0
}

// Ext is the source-file extension records of this type are written in.
func (t Type) Ext() string {
	switch t {
	case TypeMD5:
		return "hdb"
	case TypeSHA1, TypeSHA256:
		return "hsb"
	case TypeBody:
		return "ndb"
	case TypeAllowMD5:
		return "fp"
	case TypeAllowSHA1, TypeAllowSHA256:
		return "sfp"
	}
	return ""
}

func (t Type) String() string {
	switch t {
	case TypeMD5:
		return "md5"
	case TypeSHA1:
		return "sha1"
	case TypeSHA256:
		return "sha256"
	case TypeBody:
		return "body"
	case TypeAllowMD5:
		return "allow-md5"
	case TypeAllowSHA1:
		return "allow-sha1"
	case TypeAllowSHA256:
		return "allow-sha256"
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// AnySize is the Size of a hash record written with "*".
const AnySize int64 = -1

// OffsetKind says how a body signature's offset is interpreted.
type OffsetKind uint8

// Offset kinds. The numeric values are part of the engine database format.
const (
	OffsetAny OffsetKind = 0 // "*": anywhere
	OffsetAbs OffsetKind = 1 // "n" or "n,shift": match starts at n (..n+shift)
	OffsetEOF OffsetKind = 2 // "EOF-n" or "EOF-n,shift": starts at size-n (..+shift)
)

// Offset is where a body signature's match must start.
type Offset struct {
	Kind  OffsetKind
	N     int64 // absolute offset, or distance back from EOF
	Shift int64 // floating offset: the start may be up to Shift bytes later
}

func (o Offset) String() string {
	var s string
	switch o.Kind {
	case OffsetAny:
		return "*"
	case OffsetAbs:
		s = strconv.FormatInt(o.N, 10)
	case OffsetEOF:
		s = "EOF-" + strconv.FormatInt(o.N, 10)
	default:
		return "?"
	}
	if o.Shift > 0 {
		s += "," + strconv.FormatInt(o.Shift, 10)
	}
	return s
}

// Record is one canonical signature. Two records are the same signature if
// and only if their Keys are equal; an engine version is a set of records.
type Record struct {
	Type Type
	Name string // malware name (for allow-list entries: the name on the line)

	// Hash records.
	Hash []byte // digest, Type.HashLen() bytes
	Size int64  // file size in bytes, or AnySize

	// Body records.
	Target  int    // ClamAV target type; only 0 (any file) is supported
	Offset  Offset // where the match must start
	Pattern string // canonical hex signature (see Pattern.String)
}

// Key is the canonical, comparable form of the record: the source-file
// extension, a colon, and the record written as a canonical line of that
// format (lower-case hex, no functionality levels). ParseKey reverses it.
func (r Record) Key() string {
	var b strings.Builder
	b.WriteString(r.Type.Ext())
	b.WriteByte(':')
	r.writeLine(&b)
	return b.String()
}

// Line is the record as a canonical line of its source format.
func (r Record) Line() string {
	var b strings.Builder
	r.writeLine(&b)
	return b.String()
}

func (r Record) writeLine(b *strings.Builder) {
	if r.Type == TypeBody {
		b.WriteString(r.Name)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(r.Target))
		b.WriteByte(':')
		b.WriteString(r.Offset.String())
		b.WriteByte(':')
		b.WriteString(r.Pattern)
		return
	}
	b.WriteString(hex.EncodeToString(r.Hash))
	b.WriteByte(':')
	if r.Size == AnySize {
		b.WriteByte('*')
	} else {
		b.WriteString(strconv.FormatInt(r.Size, 10))
	}
	b.WriteByte(':')
	b.WriteString(r.Name)
}

// Equal reports whether two records are the same signature.
func (r Record) Equal(o Record) bool {
	return r.Type == o.Type && r.Name == o.Name && bytes.Equal(r.Hash, o.Hash) &&
		r.Size == o.Size && r.Target == o.Target && r.Offset == o.Offset && r.Pattern == o.Pattern
}

// ParseKey parses a record Key back into a record.
func ParseKey(key string) (Record, error) {
	ext, line, ok := strings.Cut(key, ":")
	if !ok {
		return Record{}, fmt.Errorf("record key %q: missing format prefix", truncate(key))
	}
	p, ok := parsers[ext]
	if !ok {
		return Record{}, fmt.Errorf("record key %q: unknown format %q", truncate(key), ext)
	}
	r, err := p(line)
	if err != nil {
		return Record{}, fmt.Errorf("record key %q: %v", truncate(key), err)
	}
	if r.Key() != key {
		return Record{}, fmt.Errorf("record key %q: not in canonical form", truncate(key))
	}
	return r, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
