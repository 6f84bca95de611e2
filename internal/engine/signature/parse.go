package signature

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxLineLen is the longest signature line accepted, in bytes.
const MaxLineLen = 1 << 20

// MaxNameLen is the longest malware name accepted, in bytes.
const MaxNameLen = 256

// ParseError is a signature that could not be parsed. It names the file, the
// 1-based line number (0 when the whole file is rejected) and the reason.
type ParseError struct {
	File   string
	Line   int
	Reason string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// Extensions lists the supported source-file extensions (without the dot).
var Extensions = []string{"hdb", "hsb", "ndb", "fp", "sfp"}

var parsers = map[string]func(string) (Record, error){
	"hdb": func(l string) (Record, error) { return parseHashLine(l, false, false) },
	"hsb": func(l string) (Record, error) { return parseHashLine(l, true, false) },
	"fp":  func(l string) (Record, error) { return parseHashLine(l, false, true) },
	"sfp": func(l string) (Record, error) { return parseHashLine(l, true, true) },
	"ndb": parseBodyLine,
}

// unsupported explains why known ClamAV formats we do not implement are
// rejected, so the error says more than "unknown extension".
var unsupported = map[string]string{
	"ldb":  "logical signatures (.ldb) are not supported",
	"ldu":  "logical signatures (.ldu) are not supported",
	"cdb":  "container metadata signatures (.cdb) are not supported",
	"mdb":  "PE section hash signatures (.mdb) are not supported",
	"msb":  "PE section hash signatures (.msb) are not supported",
	"imp":  "PE import table hash signatures (.imp) are not supported",
	"db":   "legacy .db signatures are not supported (use .ndb)",
	"ndu":  "PUA body signatures (.ndu) are not supported",
	"hdu":  "PUA hash signatures (.hdu) are not supported",
	"hsu":  "PUA hash signatures (.hsu) are not supported",
	"idb":  "icon signatures (.idb) are not supported",
	"ign":  "ignore lists (.ign) are not supported",
	"ign2": "ignore lists (.ign2) are not supported",
	"ftm":  "file type magic (.ftm) is not supported",
	"cfg":  "engine configuration (.cfg) is not supported",
	"crb":  "certificate trust lists (.crb) are not supported",
	"pdb":  "phishing signatures (.pdb) are not supported",
	"gdb":  "phishing signatures (.gdb) are not supported",
	"wdb":  "phishing allow-lists (.wdb) are not supported",
	"yar":  "YARA rules are not supported",
	"yara": "YARA rules are not supported",
	"cbc":  "bytecode signatures (.cbc) are not supported",
	"cvd":  "signed ClamAV containers (.cvd) are not supported; unpack them with sigtool first",
	"cld":  "ClamAV containers (.cld) are not supported; unpack them with sigtool first",
	"cud":  "ClamAV containers (.cud) are not supported; unpack them with sigtool first",
	"info": "database info files (.info) are not supported",
}

// FormatFor returns the parser format for a file name, or a *ParseError (line
// 0) saying why the file cannot be used.
func FormatFor(name string) (string, error) {
	ext := strings.TrimPrefix(strings.ToLower(filepath.Ext(name)), ".")
	if _, ok := parsers[ext]; ok {
		return ext, nil
	}
	if why, ok := unsupported[ext]; ok {
		return "", &ParseError{File: name, Reason: why}
	}
	if ext == "" {
		return "", &ParseError{File: name, Reason: "no file extension; want one of .hdb .hsb .ndb .fp .sfp"}
	}
	return "", &ParseError{File: name, Reason: fmt.Sprintf("unknown signature file extension %q; want one of .hdb .hsb .ndb .fp .sfp", "."+ext)}
}

// ParseFile reads every signature of one source file. name is used for the
// format (its extension) and in errors. It returns all records, or the first
// maxErrors errors (joined) if any line is bad: a file is taken whole or not
// at all.
func ParseFile(name string, r io.Reader) ([]Record, error) {
	format, err := FormatFor(name)
	if err != nil {
		return nil, err
	}
	return ParseReader(name, format, r)
}

// maxErrors bounds how many line errors one file reports.
const maxErrors = 20

// ParseReader is ParseFile with an explicit format ("hdb", "hsb", "ndb", "fp"
// or "sfp").
func ParseReader(name, format string, r io.Reader) ([]Record, error) {
	p, ok := parsers[format]
	if !ok {
		return nil, &ParseError{File: name, Reason: fmt.Sprintf("unknown format %q", format)}
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		recs []Record
		errs []error
		line = 0
	)
	for {
		raw, err := readLine(br)
		if len(raw) > 0 || !errors.Is(err, io.EOF) {
			line++
		}
		if err != nil && !errors.Is(err, io.EOF) {
			if errors.Is(err, errLineTooLong) {
				errs = append(errs, &ParseError{File: name, Line: line, Reason: fmt.Sprintf("line longer than %d bytes", MaxLineLen)})
				break
			}
			errs = append(errs, &ParseError{File: name, Line: line, Reason: "read error: " + err.Error()})
			break
		}
		if s := strings.TrimRight(raw, "\r"); s != "" && s[0] != '#' {
			rec, perr := p(s)
			if perr != nil {
				errs = append(errs, &ParseError{File: name, Line: line, Reason: perr.Error()})
				if len(errs) >= maxErrors {
					errs = append(errs, fmt.Errorf("%s: too many errors, giving up", name))
					break
				}
			} else {
				recs = append(recs, rec)
			}
		}
		if err != nil { // io.EOF
			break
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return recs, nil
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its '\n'. It returns io.EOF with the
// last (possibly empty) unterminated line.
func readLine(br *bufio.Reader) (string, error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > MaxLineLen+1 {
			return "", errLineTooLong
		}
		buf = append(buf, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return string(buf), err
		}
		return string(buf[:len(buf)-1]), nil
	}
}

// ParseLine parses one line of the given format ("hdb", "hsb", "ndb", "fp" or
// "sfp").
func ParseLine(format, line string) (Record, error) {
	p, ok := parsers[format]
	if !ok {
		return Record{}, fmt.Errorf("unknown format %q", format)
	}
	return p(line)
}

func checkName(name string) error {
	if name == "" {
		return errors.New("empty malware name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("malware name longer than %d bytes", MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return errors.New("malware name is not valid UTF-8")
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("malware name contains control character %U", c)
		}
	}
	if strings.TrimSpace(name) != name {
		return errors.New("malware name has leading or trailing spaces")
	}
	return nil
}

// checkFlevel validates the optional functionality-level fields, which are
// accepted and ignored.
func checkFlevel(fields []string) error {
	if len(fields) > 2 {
		return fmt.Errorf("too many fields (%d extra after the functionality levels)", len(fields)-2)
	}
	for i, f := range fields {
		if i == 1 && f == "" {
			continue // "name:...:51:" — an empty max level means "no maximum"
		}
		if _, err := strconv.ParseUint(f, 10, 16); err != nil {
			what := "minimum"
			if i == 1 {
				what = "maximum"
			}
			return fmt.Errorf("bad %s functionality level %q", what, f)
		}
	}
	return nil
}

func parseHashLine(line string, sha, allow bool) (Record, error) {
	f := strings.Split(line, ":")
	if len(f) < 3 {
		return Record{}, fmt.Errorf("want hash:size:name, got %d field(s)", len(f))
	}
	if err := checkFlevel(f[3:]); err != nil {
		return Record{}, err
	}
	hs := f[0]
	var t Type
	switch {
	case !sha && len(hs) == 32:
		t = TypeMD5
	case sha && len(hs) == 40:
		t = TypeSHA1
	case sha && len(hs) == 64:
		t = TypeSHA256
	case !sha:
		return Record{}, fmt.Errorf("MD5 hash must be 32 hex digits, got %d characters", len(hs))
	default:
		return Record{}, fmt.Errorf("SHA-1/SHA-256 hash must be 40 or 64 hex digits, got %d characters", len(hs))
	}
	if allow {
		t += TypeAllowMD5 - TypeMD5
	}
	h, err := hex.DecodeString(hs)
	if err != nil {
		return Record{}, fmt.Errorf("hash is not hexadecimal: %q", hs)
	}
	size := AnySize
	if f[1] != "*" {
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || n < 0 || f[1][0] == '+' {
			return Record{}, fmt.Errorf("bad file size %q (want a decimal number or *)", f[1])
		}
		size = n
	}
	if err := checkName(f[2]); err != nil {
		return Record{}, err
	}
	return Record{Type: t, Name: f[2], Hash: h, Size: size}, nil
}

func parseBodyLine(line string) (Record, error) {
	f := strings.Split(line, ":")
	if len(f) < 4 {
		return Record{}, fmt.Errorf("want name:target:offset:hexsig, got %d field(s)", len(f))
	}
	if err := checkFlevel(f[4:]); err != nil {
		return Record{}, err
	}
	if err := checkName(f[0]); err != nil {
		return Record{}, err
	}
	target, err := strconv.Atoi(f[1])
	if err != nil || f[1][0] == '+' || f[1][0] == '-' {
		return Record{}, fmt.Errorf("bad target type %q (want a decimal number)", f[1])
	}
	if target != 0 {
		return Record{}, fmt.Errorf("target type %d (%s) is not supported; only 0 (any file)", target, targetName(target))
	}
	off, err := ParseOffset(f[2])
	if err != nil {
		return Record{}, err
	}
	p, err := ParsePattern(f[3])
	if err != nil {
		return Record{}, err
	}
	return Record{Type: TypeBody, Name: f[0], Target: target, Offset: off, Pattern: p.String()}, nil
}

func targetName(t int) string {
	names := map[int]string{1: "PE", 2: "OLE2", 3: "HTML", 4: "mail", 5: "graphics", 6: "ELF",
		7: "normalized ASCII text", 9: "Mach-O", 10: "PDF", 11: "Flash", 12: "Java class", 13: "Android DEX",
		14: "Android ARSC"}
	if n, ok := names[t]; ok {
		return n
	}
	return "unknown"
}

// MaxOffset bounds numeric offsets and shifts (1 TiB).
const MaxOffset = 1 << 40

// ParseOffset parses a body signature offset: "*", "n", "n,shift", "EOF-n" or
// "EOF-n,shift". Executable-relative offsets (EP, Sx, SEx, SL) and regex-style
// VI/macro offsets are rejected.
func ParseOffset(s string) (Offset, error) {
	if s == "*" {
		return Offset{Kind: OffsetAny}, nil
	}
	base, shift, hasShift := strings.Cut(s, ",")
	var o Offset
	switch {
	case strings.HasPrefix(base, "EOF-"):
		o.Kind = OffsetEOF
		base = base[4:]
	case strings.HasPrefix(base, "EP") || strings.HasPrefix(base, "SL") || strings.HasPrefix(base, "SE") ||
		(strings.HasPrefix(base, "S") && len(base) > 1 && base[1] >= '0' && base[1] <= '9'):
		return o, fmt.Errorf("offset %q needs executable parsing (EP/Sx/SEx/SL), which is not supported", s)
	case strings.HasPrefix(base, "VI") || strings.HasPrefix(base, "$"):
		return o, fmt.Errorf("offset %q is not supported", s)
	default:
		o.Kind = OffsetAbs
	}
	n, err := parseOffNum(base)
	if err != nil {
		return Offset{}, fmt.Errorf("bad offset %q: %v", s, err)
	}
	o.N = n
	if hasShift {
		m, err := parseOffNum(shift)
		if err != nil {
			return Offset{}, fmt.Errorf("bad offset %q: max shift: %v", s, err)
		}
		o.Shift = m
	}
	return o, nil
}

func parseOffNum(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("missing number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > MaxOffset {
		return 0, fmt.Errorf("%q is out of range (max %d)", s, int64(MaxOffset))
	}
	return n, nil
}
