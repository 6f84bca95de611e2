// Package enginedb is Mamori's engine database: a versioned, checksummed,
// compact binary file holding one engine version, i.e. one set of canonical
// signature records. It builds such files deterministically from records,
// loads them (rejecting anything corrupted, truncated or of another format
// version), lists their records, and computes and applies logical deltas
// between record sets. Build(Apply(A, Diff(A, B)), v) is byte-identical to
// Build(B, v).
//
// File layout (all integers little-endian; see docs/engine.md):
//
//	header   64 bytes: magic "MAMORIDB", format version u16, section count u16,
//	         flags u32, engine version u64, record count u64, file length u64,
//	         reserved (zero) 24 bytes
//	sections section-count entries of 32 bytes: id u32, reserved u32,
//	         offset u64, length u64, item count u64
//	data     the sections' bytes, each starting at an 8-byte aligned offset
//	trailer  SHA-256 of every byte before it (32 bytes)
package enginedb

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/mamori/mamori/internal/engine/signature"
)

// Magic starts every engine database file.
const Magic = "MAMORIDB"

// FormatVersion is the on-disk format version this package reads and writes.
const FormatVersion = 1

const (
	headerSize   = 64
	sectionEntry = 32
	trailerSize  = sha256.Size
)

// Section ids. Hash sections hold fixed-size entries sorted by (hash, size,
// name id): hash bytes, size i64 (-1 = any), name id u32.
const (
	secNames          = 1 // string table: count u32, end offsets u32[count], bytes
	secMD5            = 2
	secSHA1           = 3
	secSHA256         = 4
	secAllowMD5       = 5
	secAllowSHA1      = 6
	secAllowSHA256    = 7
	secBody           = 8 // body records, sorted by key
	maxSectionID      = 8
	bodyFixedSize     = 4 + 2 + 1 + 1 + 8 + 8 + 4 // name id, target, offset kind, pad, n, shift, pattern length
	maxRecordsPerSect = math.MaxUint32
)

// hashSection maps a hash record type to its section id.
func hashSection(t signature.Type) uint32 {
	switch t {
	case signature.TypeMD5:
		return secMD5
	case signature.TypeSHA1:
		return secSHA1
	case signature.TypeSHA256:
		return secSHA256
	case signature.TypeAllowMD5:
		return secAllowMD5
	case signature.TypeAllowSHA1:
		return secAllowSHA1
	case signature.TypeAllowSHA256:
		return secAllowSHA256
	}
	return 0
}

func sectionType(id uint32) signature.Type {
	switch id {
	case secMD5:
		return signature.TypeMD5
	case secSHA1:
		return signature.TypeSHA1
	case secSHA256:
		return signature.TypeSHA256
	case secAllowMD5:
		return signature.TypeAllowMD5
	case secAllowSHA1:
		return signature.TypeAllowSHA1
	case secAllowSHA256:
		return signature.TypeAllowSHA256
	case secBody:
		return signature.TypeBody
	}
	return 0
}

// Normalize returns the records as a set: sorted by Key, duplicates removed.
// The input slice is not modified.
func Normalize(recs []signature.Record) []signature.Record {
	type kr struct {
		key string
		rec signature.Record
	}
	tmp := make([]kr, len(recs))
	for i, r := range recs {
		tmp[i] = kr{r.Key(), r}
	}
	sort.Slice(tmp, func(i, j int) bool { return tmp[i].key < tmp[j].key })
	out := make([]signature.Record, 0, len(tmp))
	for i, t := range tmp {
		if i > 0 && t.key == tmp[i-1].key {
			continue
		}
		out = append(out, t.rec)
	}
	return out
}

// Build writes the engine database for a set of records and an engine
// version. The output depends only on the set (order and duplicates do not
// matter) and the version. Records must be valid (as produced by the
// signature parsers or ParseKey); invalid ones are an error.
func Build(recs []signature.Record, version uint64) ([]byte, error) {
	recs = Normalize(recs)
	// Validate and bucket.
	byType := map[signature.Type][]signature.Record{}
	for _, r := range recs {
		if err := checkRecord(r); err != nil {
			return nil, fmt.Errorf("record %q: %w", r.Key(), err)
		}
		byType[r.Type] = append(byType[r.Type], r)
	}
	// Name table: sorted unique names; ids are positions.
	nameSet := map[string]struct{}{}
	for _, r := range recs {
		nameSet[r.Name] = struct{}{}
	}
	names := make([]string, 0, len(nameSet))
	for n := range nameSet {
		names = append(names, n)
	}
	sort.Strings(names)
	nameID := make(map[string]uint32, len(names))
	for i, n := range names {
		nameID[n] = uint32(i)
	}

	type section struct {
		id    uint32
		count uint64
		data  []byte
	}
	var secs []section

	// Names.
	{
		size := 4 + 4*len(names)
		for _, n := range names {
			size += len(n)
		}
		b := make([]byte, 0, size)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(names)))
		end := uint32(0)
		for _, n := range names {
			end += uint32(len(n))
			b = binary.LittleEndian.AppendUint32(b, end)
		}
		for _, n := range names {
			b = append(b, n...)
		}
		secs = append(secs, section{secNames, uint64(len(names)), b})
	}
	// Hash sections, in id order.
	for id := uint32(secMD5); id <= secAllowSHA256; id++ {
		t := sectionType(id)
		rs := byType[t]
		if len(rs) == 0 {
			continue
		}
		hl := t.HashLen()
		es := hl + 12
		sort.Slice(rs, func(i, j int) bool { return hashLess(rs[i], rs[j], nameID) })
		b := make([]byte, 0, es*len(rs))
		for _, r := range rs {
			b = append(b, r.Hash...)
			b = binary.LittleEndian.AppendUint64(b, uint64(r.Size))
			b = binary.LittleEndian.AppendUint32(b, nameID[r.Name])
		}
		secs = append(secs, section{id, uint64(len(rs)), b})
	}
	// Body records, already in key order.
	if rs := byType[signature.TypeBody]; len(rs) > 0 {
		var b []byte
		for _, r := range rs {
			b = binary.LittleEndian.AppendUint32(b, nameID[r.Name])
			b = binary.LittleEndian.AppendUint16(b, uint16(r.Target))
			b = append(b, byte(r.Offset.Kind), 0)
			b = binary.LittleEndian.AppendUint64(b, uint64(r.Offset.N))
			b = binary.LittleEndian.AppendUint64(b, uint64(r.Offset.Shift))
			b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Pattern)))
			b = append(b, r.Pattern...)
		}
		secs = append(secs, section{secBody, uint64(len(rs)), b})
	}

	// Lay out.
	off := uint64(headerSize + sectionEntry*len(secs))
	offsets := make([]uint64, len(secs))
	for i, s := range secs {
		off = align8(off)
		offsets[i] = off
		off += uint64(len(s.data))
	}
	total := off + trailerSize
	out := make([]byte, total)
	copy(out, Magic)
	binary.LittleEndian.PutUint16(out[8:], FormatVersion)
	binary.LittleEndian.PutUint16(out[10:], uint16(len(secs)))
	binary.LittleEndian.PutUint32(out[12:], 0)
	binary.LittleEndian.PutUint64(out[16:], version)
	binary.LittleEndian.PutUint64(out[24:], uint64(len(recs)))
	binary.LittleEndian.PutUint64(out[32:], total)
	for i, s := range secs {
		e := out[headerSize+sectionEntry*i:]
		binary.LittleEndian.PutUint32(e[0:], s.id)
		binary.LittleEndian.PutUint64(e[8:], offsets[i])
		binary.LittleEndian.PutUint64(e[16:], uint64(len(s.data)))
		binary.LittleEndian.PutUint64(e[24:], s.count)
		copy(out[offsets[i]:], s.data)
	}
	sum := sha256.Sum256(out[:total-trailerSize])
	copy(out[total-trailerSize:], sum[:])
	return out, nil
}

func align8(n uint64) uint64 { return (n + 7) &^ 7 }

func hashLess(a, b signature.Record, nameID map[string]uint32) bool {
	if c := compareBytes(a.Hash, b.Hash); c != 0 {
		return c < 0
	}
	if a.Size != b.Size {
		return a.Size < b.Size
	}
	return nameID[a.Name] < nameID[b.Name]
}

func compareBytes(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return len(a) - len(b)
}

// checkRecord validates a record by round-tripping its canonical key through
// the parsers, so Build accepts exactly what the parsers produce.
func checkRecord(r signature.Record) error {
	if r.Type < signature.TypeMD5 || r.Type > signature.TypeAllowSHA256 {
		return errors.New("unknown record type")
	}
	back, err := signature.ParseKey(r.Key())
	if err != nil {
		return err
	}
	if !back.Equal(r) {
		return errors.New("record is not canonical")
	}
	return nil
}
