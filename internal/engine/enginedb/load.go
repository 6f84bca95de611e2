package enginedb

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/engine/signature"
)

// FormatError says why bytes are not a usable engine database.
type FormatError struct {
	Reason string
}

func (e *FormatError) Error() string { return "engine database: " + e.Reason }

func formatErr(f string, a ...any) error { return &FormatError{Reason: fmt.Sprintf(f, a...)} }

// DB is a loaded engine database. It keeps a reference to the bytes it was
// loaded from, which must not be modified afterwards.
type DB struct {
	data     []byte
	version  uint64
	count    uint64
	checksum [sha256.Size]byte
	names    []byte // name bytes
	nameEnd  []byte // u32 end offsets
	nNames   int
	hashes   [signature.TypeAllowSHA256 + 1]HashTable
	body     []BodyRecord
}

// HashTable is one hash section: entries sorted by (hash, size, name).
type HashTable struct {
	db    *DB
	typ   signature.Type
	hlen  int
	esize int
	data  []byte
}

// BodyRecord is one body signature as stored.
type BodyRecord struct {
	NameID  uint32
	Target  int
	Offset  signature.Offset
	Pattern string
}

// LoadFile reads and loads an engine database file.
func LoadFile(path string) (*DB, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	db, err := Load(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return db, nil
}

// Load checks and opens an engine database. It returns a *FormatError if the
// data is not one (bad magic), is of another format version, is truncated or
// extended, fails its SHA-256 checksum, or is structurally inconsistent.
func Load(data []byte) (*DB, error) {
	return load(data, true)
}

func load(data []byte, verify bool) (*DB, error) {
	if len(data) < len(Magic) || string(data[:len(Magic)]) != Magic {
		return nil, formatErr("not an engine database (bad magic)")
	}
	if len(data) < headerSize+trailerSize {
		return nil, formatErr("truncated: %d bytes is shorter than the header", len(data))
	}
	le := binary.LittleEndian
	if v := le.Uint16(data[8:]); v != FormatVersion {
		return nil, formatErr("unsupported format version %d (this build reads version %d)", v, FormatVersion)
	}
	if total := le.Uint64(data[32:]); total != uint64(len(data)) {
		if total > uint64(len(data)) {
			return nil, formatErr("truncated: header says %d bytes, have %d", total, len(data))
		}
		return nil, formatErr("trailing data: header says %d bytes, have %d", total, len(data))
	}
	db := &DB{data: data}
	copy(db.checksum[:], data[len(data)-trailerSize:])
	if verify {
		sum := sha256.Sum256(data[:len(data)-trailerSize])
		if sum != db.checksum {
			return nil, formatErr("checksum mismatch (file is corrupted)")
		}
	}
	if flags := le.Uint32(data[12:]); flags != 0 {
		return nil, formatErr("unknown flags %#x", flags)
	}
	for _, b := range data[40:headerSize] {
		if b != 0 {
			return nil, formatErr("reserved header bytes are not zero")
		}
	}
	db.version = le.Uint64(data[16:])
	db.count = le.Uint64(data[24:])
	nsec := int(le.Uint16(data[10:]))
	end := uint64(len(data) - trailerSize)
	tableEnd := uint64(headerSize + sectionEntry*nsec)
	if nsec > maxSectionID || tableEnd > end {
		return nil, formatErr("bad section count %d", nsec)
	}
	var (
		seen     [maxSectionID + 1]bool
		prevEnd  = tableEnd
		sections = map[uint32][]byte{}
		counts   = map[uint32]uint64{}
		total    uint64
	)
	for i := 0; i < nsec; i++ {
		e := data[headerSize+sectionEntry*i:]
		id := le.Uint32(e[0:])
		off, ln, cnt := le.Uint64(e[8:]), le.Uint64(e[16:]), le.Uint64(e[24:])
		if id == 0 || id > maxSectionID || seen[id] {
			return nil, formatErr("section %d: bad or duplicate id %d", i, id)
		}
		if le.Uint32(e[4:]) != 0 {
			return nil, formatErr("section %d: reserved field is not zero", i)
		}
		seen[id] = true
		if off%8 != 0 || off < prevEnd || off > end || ln > end-off {
			return nil, formatErr("section %d (id %d): bad offset/length %d/%d", i, id, off, ln)
		}
		prevEnd = off + ln
		sections[id] = data[off : off+ln]
		counts[id] = cnt
		if id != secNames {
			total += cnt
		}
	}
	if total != db.count {
		return nil, formatErr("record count %d does not match sections (%d)", db.count, total)
	}
	if err := db.loadNames(sections[secNames], counts[secNames], seen[secNames]); err != nil {
		return nil, err
	}
	for id := uint32(secMD5); id <= secAllowSHA256; id++ {
		t := sectionType(id)
		ht := HashTable{db: db, typ: t, hlen: t.HashLen(), esize: t.HashLen() + 12}
		if seen[id] {
			ht.data = sections[id]
			if err := ht.check(counts[id]); err != nil {
				return nil, err
			}
		}
		db.hashes[t] = ht
	}
	if seen[secBody] {
		if err := db.loadBody(sections[secBody], counts[secBody]); err != nil {
			return nil, err
		}
	}
	return db, nil
}

func (db *DB) loadNames(b []byte, cnt uint64, present bool) error {
	if !present {
		if db.count != 0 {
			return formatErr("missing name table")
		}
		return nil
	}
	if len(b) < 4 {
		return formatErr("name table truncated")
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	if n != cnt || n > uint64(len(b)-4)/4 {
		return formatErr("name table: bad count %d", n)
	}
	db.nNames = int(n)
	db.nameEnd = b[4 : 4+4*n]
	db.names = b[4+4*n:]
	prev := uint32(0)
	for i := 0; i < db.nNames; i++ {
		e := binary.LittleEndian.Uint32(db.nameEnd[4*i:])
		if e < prev || uint64(e) > uint64(len(db.names)) {
			return formatErr("name table: bad offset for name %d", i)
		}
		name := db.names[prev:e]
		if i > 0 {
			pp := uint32(0)
			if i > 1 {
				pp = binary.LittleEndian.Uint32(db.nameEnd[4*(i-2):])
			}
			if bytes.Compare(db.names[pp:prev], name) >= 0 {
				return formatErr("name table is not sorted at %d", i)
			}
		}
		if err := checkNameBytes(name); err != nil {
			return formatErr("name %d: %v", i, err)
		}
		prev = e
	}
	if int(prev) != len(db.names) {
		return formatErr("name table has %d stray bytes", len(db.names)-int(prev))
	}
	return nil
}

func checkNameBytes(b []byte) error {
	if len(b) == 0 || len(b) > signature.MaxNameLen || !utf8.Valid(b) {
		return errors.New("invalid malware name")
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f || c == ':' {
			return errors.New("invalid malware name")
		}
	}
	if b[0] == ' ' || b[len(b)-1] == ' ' {
		return errors.New("invalid malware name")
	}
	return nil
}

func (h *HashTable) check(cnt uint64) error {
	if uint64(len(h.data)) != cnt*uint64(h.esize) || cnt > maxRecordsPerSect {
		return formatErr("%s section: length %d does not hold %d entries", h.typ, len(h.data), cnt)
	}
	n := h.Len()
	for i := 0; i < n; i++ {
		if s := h.Size(i); s < signature.AnySize {
			return formatErr("%s section: bad size %d", h.typ, s)
		}
		if int(h.NameID(i)) >= h.db.nNames {
			return formatErr("%s section: bad name id", h.typ)
		}
		if i > 0 && h.cmpEntries(i-1, i) >= 0 {
			return formatErr("%s section is not sorted at entry %d", h.typ, i)
		}
	}
	return nil
}

func (h *HashTable) cmpEntries(i, j int) int {
	if c := bytes.Compare(h.Hash(i), h.Hash(j)); c != 0 {
		return c
	}
	si, sj := h.Size(i), h.Size(j)
	if si != sj {
		if si < sj {
			return -1
		}
		return 1
	}
	ni, nj := h.NameID(i), h.NameID(j)
	switch {
	case ni < nj:
		return -1
	case ni > nj:
		return 1
	}
	return 0
}

func (db *DB) loadBody(b []byte, cnt uint64) error {
	le := binary.LittleEndian
	if cnt > uint64(len(b))/bodyFixedSize {
		return formatErr("body section: bad count %d", cnt)
	}
	db.body = make([]BodyRecord, 0, cnt)
	prevKey := ""
	for i := uint64(0); i < cnt; i++ {
		if len(b) < bodyFixedSize {
			return formatErr("body section truncated at record %d", i)
		}
		r := BodyRecord{
			NameID: le.Uint32(b[0:]),
			Target: int(le.Uint16(b[4:])),
			Offset: signature.Offset{Kind: signature.OffsetKind(b[6]), N: int64(le.Uint64(b[8:])), Shift: int64(le.Uint64(b[16:]))},
		}
		pl := uint64(le.Uint32(b[24:]))
		if b[7] != 0 || int(r.NameID) >= db.nNames || r.Offset.Kind > signature.OffsetEOF ||
			r.Offset.N < 0 || r.Offset.N > signature.MaxOffset || r.Offset.Shift < 0 || r.Offset.Shift > signature.MaxOffset ||
			(r.Offset.Kind == signature.OffsetAny && (r.Offset.N != 0 || r.Offset.Shift != 0)) {
			return formatErr("body record %d: bad fields", i)
		}
		if pl > uint64(len(b)-bodyFixedSize) {
			return formatErr("body record %d: pattern runs past the section", i)
		}
		r.Pattern = string(b[bodyFixedSize : bodyFixedSize+pl])
		b = b[bodyFixedSize+pl:]
		key := db.bodyRecord(r).Key()
		if i > 0 && key <= prevKey {
			return formatErr("body section is not sorted at record %d", i)
		}
		prevKey = key
		db.body = append(db.body, r)
	}
	if len(b) != 0 {
		return formatErr("body section has %d stray bytes", len(b))
	}
	return nil
}

// Version is the engine version stored in the header.
func (db *DB) Version() uint64 { return db.version }

// RecordCount is the number of signature records.
func (db *DB) RecordCount() int { return int(db.count) }

// Checksum is the SHA-256 trailer (hex), which identifies the file.
func (db *DB) Checksum() string { return hex.EncodeToString(db.checksum[:]) }

// Size is the file size in bytes.
func (db *DB) Size() int { return len(db.data) }

// Name returns the malware name with the given id.
func (db *DB) Name(id uint32) string {
	if int(id) >= db.nNames {
		return ""
	}
	start := uint32(0)
	if id > 0 {
		start = binary.LittleEndian.Uint32(db.nameEnd[4*(id-1):])
	}
	return string(db.names[start:binary.LittleEndian.Uint32(db.nameEnd[4*id:])])
}

// Hashes returns the hash table of a hash record type (empty if none).
func (db *DB) Hashes(t signature.Type) *HashTable {
	if !t.IsHash() {
		return &HashTable{db: db, typ: t}
	}
	return &db.hashes[t]
}

// Body returns the body records in key order.
func (db *DB) Body() []BodyRecord { return db.body }

// Counts returns the number of records per type.
func (db *DB) Counts() map[signature.Type]int {
	m := map[signature.Type]int{}
	for t := signature.TypeMD5; t <= signature.TypeAllowSHA256; t++ {
		if t == signature.TypeBody {
			if len(db.body) > 0 {
				m[t] = len(db.body)
			}
			continue
		}
		if n := db.hashes[t].Len(); n > 0 {
			m[t] = n
		}
	}
	return m
}

// Type is the record type of the table.
func (h *HashTable) Type() signature.Type { return h.typ }

// Len is the number of entries.
func (h *HashTable) Len() int {
	if h.esize == 0 {
		return 0
	}
	return len(h.data) / h.esize
}

// Hash returns entry i's digest.
func (h *HashTable) Hash(i int) []byte {
	o := i * h.esize
	return h.data[o : o+h.hlen : o+h.hlen]
}

// Size returns entry i's file size (signature.AnySize for "*").
func (h *HashTable) Size(i int) int64 {
	return int64(binary.LittleEndian.Uint64(h.data[i*h.esize+h.hlen:]))
}

// NameID returns entry i's name id.
func (h *HashTable) NameID(i int) uint32 {
	return binary.LittleEndian.Uint32(h.data[i*h.esize+h.hlen+8:])
}

// Find returns the half-open range of entries whose digest equals sum.
func (h *HashTable) Find(sum []byte) (lo, hi int) {
	n := h.Len()
	lo = sort.Search(n, func(i int) bool { return bytes.Compare(h.Hash(i), sum) >= 0 })
	hi = lo
	for hi < n && bytes.Equal(h.Hash(hi), sum) {
		hi++
	}
	return lo, hi
}

func (db *DB) bodyRecord(r BodyRecord) signature.Record {
	return signature.Record{Type: signature.TypeBody, Name: db.Name(r.NameID), Target: r.Target, Offset: r.Offset, Pattern: r.Pattern}
}

// Records lists the database's records in key order: the engine version as a
// set. It fails if a stored record is not canonical (which a database written
// by Build never contains).
func (db *DB) Records() ([]signature.Record, error) {
	out := make([]signature.Record, 0, db.count)
	for t := signature.TypeMD5; t <= signature.TypeAllowSHA256; t++ {
		if t == signature.TypeBody {
			for _, r := range db.body {
				out = append(out, db.bodyRecord(r))
			}
			continue
		}
		h := &db.hashes[t]
		for i, n := 0, h.Len(); i < n; i++ {
			out = append(out, signature.Record{
				Type: t, Name: db.Name(h.NameID(i)),
				Hash: append([]byte(nil), h.Hash(i)...), Size: h.Size(i),
			})
		}
	}
	norm := Normalize(out)
	if len(norm) != len(out) {
		return nil, formatErr("duplicate records")
	}
	for _, r := range norm {
		if err := checkRecord(r); err != nil {
			return nil, formatErr("record %q: %v", r.Key(), err)
		}
	}
	return norm, nil
}
