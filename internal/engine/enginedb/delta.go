package enginedb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/mamori/mamori/internal/engine/signature"
)

// Delta is a logical update between two engine versions: the keys of the
// records removed and the records added. Applying it to the exact record set
// of From yields the record set of To.
type Delta struct {
	From, To uint64
	Removed  []string           // record keys, sorted
	Added    []signature.Record // sorted by key
}

// Diff computes the delta that turns record set from into record set to.
// Inputs need not be normalized.
func Diff(from, to []signature.Record, fromVersion, toVersion uint64) Delta {
	a, b := Normalize(from), Normalize(to)
	d := Delta{From: fromVersion, To: toVersion}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b):
			d.Removed = append(d.Removed, a[i].Key())
			i++
		case i == len(a):
			d.Added = append(d.Added, b[j])
			j++
		default:
			ka, kb := a[i].Key(), b[j].Key()
			switch {
			case ka == kb:
				i++
				j++
			case ka < kb:
				d.Removed = append(d.Removed, ka)
				i++
			default:
				d.Added = append(d.Added, b[j])
				j++
			}
		}
	}
	return d
}

// Apply applies a delta to a record set. It fails if a removed record is
// not in the set or an added record already is, so a delta only applies to
// the version it was made from.
func Apply(from []signature.Record, d Delta) ([]signature.Record, error) {
	set := make(map[string]signature.Record, len(from)+len(d.Added))
	for _, r := range from {
		set[r.Key()] = r
	}
	for _, k := range d.Removed {
		if _, ok := set[k]; !ok {
			return nil, fmt.Errorf("delta %d->%d: removed record %q is not in the base set", d.From, d.To, k)
		}
		delete(set, k)
	}
	for _, r := range d.Added {
		k := r.Key()
		if _, ok := set[k]; ok {
			return nil, fmt.Errorf("delta %d->%d: added record %q is already in the base set", d.From, d.To, k)
		}
		set[k] = r
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]signature.Record, len(keys))
	for i, k := range keys {
		out[i] = set[k]
	}
	return out, nil
}

// ApplyToDB applies a delta to a loaded database and builds the database of
// the target version. The result is byte-identical to building the target
// record set directly.
func ApplyToDB(db *DB, d Delta) ([]byte, error) {
	if db.Version() != d.From {
		return nil, fmt.Errorf("delta is from version %d, database is version %d", d.From, db.Version())
	}
	recs, err := db.Records()
	if err != nil {
		return nil, err
	}
	next, err := Apply(recs, d)
	if err != nil {
		return nil, err
	}
	return Build(next, d.To)
}

// deltaHeader starts the text form of a delta.
const deltaHeader = "mamori-engine-delta 1"

// WriteTo writes the delta in its text form:
//
//	mamori-engine-delta 1
//	from N
//	to M
//	-KEY      (one per removed record)
//	+KEY      (one per added record)
func (d Delta) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	var n int64
	write := func(s string) {
		k, _ := bw.WriteString(s)
		n += int64(k)
	}
	write(deltaHeader + "\nfrom " + strconv.FormatUint(d.From, 10) + "\nto " + strconv.FormatUint(d.To, 10) + "\n")
	for _, k := range d.Removed {
		write("-" + k + "\n")
	}
	for _, r := range d.Added {
		write("+" + r.Key() + "\n")
	}
	return n, bw.Flush()
}

// ReadDelta parses the text form written by Delta.WriteTo.
func ReadDelta(r io.Reader) (Delta, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), signature.MaxLineLen+16)
	var d Delta
	line := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		line++
		return sc.Text(), true
	}
	if s, ok := next(); !ok || s != deltaHeader {
		return d, errors.New("delta: missing header")
	}
	for _, f := range []struct {
		name string
		dst  *uint64
	}{{"from", &d.From}, {"to", &d.To}} {
		s, ok := next()
		v, found := strings.CutPrefix(s, f.name+" ")
		if !ok || !found {
			return d, fmt.Errorf("delta line %d: want %q", line, f.name+" N")
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return d, fmt.Errorf("delta line %d: bad version %q", line, v)
		}
		*f.dst = n
	}
	for {
		s, ok := next()
		if !ok {
			break
		}
		if s == "" {
			return d, fmt.Errorf("delta line %d: empty line", line)
		}
		rec, err := signature.ParseKey(s[1:])
		if err != nil {
			return d, fmt.Errorf("delta line %d: %v", line, err)
		}
		switch s[0] {
		case '-':
			d.Removed = append(d.Removed, rec.Key())
		case '+':
			d.Added = append(d.Added, rec)
		default:
			return d, fmt.Errorf("delta line %d: want + or - prefix", line)
		}
	}
	if err := sc.Err(); err != nil {
		return d, fmt.Errorf("delta: %v", err)
	}
	return d, nil
}
