// Package dyngroup evaluates dynamic group templates: one operation (AND,
// OR, NAND, NOR) over rules "field operator value", with the semantics
// administrators know from ESET PROTECT (DOMAIN.md, Groups):
//
//   - a plain operator on a field with several values (IP addresses,
//     installed software, tags ...) holds when some value satisfies it;
//   - a negated operator holds when some value exists that does not satisfy
//     it ("exists with a different value"); so neither holds for a field
//     without any value;
//   - "does not exist" is written as NAND or NOR over plain rules.
//
// Membership is evaluated on the server from the stored inventory.
package dyngroup

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// Op combines the results of a template's rules.
type Op string

// Operations.
const (
	And  Op = "and"  // all rules hold
	Or   Op = "or"   // at least one holds
	Nand Op = "nand" // at least one does not hold
	Nor  Op = "nor"  // none holds
)

// Operator compares a field's values with a rule's value.
type Operator string

// Operators; each has its negation ("not_" prefix, or "!=").
const (
	Eq          Operator = "="
	Ne          Operator = "!="
	Lt          Operator = "<"
	Le          Operator = "<="
	Gt          Operator = ">"
	Ge          Operator = ">="
	Contains    Operator = "contains"
	NotContains Operator = "not_contains"
	Prefix      Operator = "prefix"
	NotPrefix   Operator = "not_prefix"
	Suffix      Operator = "suffix"
	NotSuffix   Operator = "not_suffix"
	InRange     Operator = "in_range"
	NotInRange  Operator = "not_in_range"
)

// negations maps each negated operator to its plain form.
var negations = map[Operator]Operator{Ne: Eq, NotContains: Contains, NotPrefix: Prefix, NotSuffix: Suffix, NotInRange: InRange}

// Limits.
const (
	MaxRules    = 64
	MaxValueLen = 1024
)

// Rule is one condition.
type Rule struct {
	Field    string   `json:"field"`
	Operator Operator `json:"operator"`
	Value    string   `json:"value"`
}

// Template is what a dynamic group matches.
type Template struct {
	Op    Op     `json:"op"`
	Rules []Rule `json:"rules"`
}

// Parse decodes and validates a template from JSON.
func Parse(b []byte) (*Template, error) {
	var t Template
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, errcode.New(errcode.Invalid, "template: %v", err)
	}
	return &t, t.Validate()
}

// Validate checks every rule against the field catalog; the error names
// the rule and the field.
func (t *Template) Validate() error {
	switch t.Op {
	case And, Or, Nand, Nor:
	default:
		return errcode.New(errcode.Invalid, "template op must be and, or, nand or nor, not %q", t.Op)
	}
	if len(t.Rules) == 0 || len(t.Rules) > MaxRules {
		return errcode.New(errcode.Invalid, "a template has 1 to %d rules", MaxRules)
	}
	for i, r := range t.Rules {
		if err := r.validate(); err != nil {
			return errcode.New(errcode.Invalid, "rule %d (%s): %s", i+1, r.Field, errcode.Message(err))
		}
	}
	return nil
}

func (r Rule) validate() error {
	f, ok := fields[r.Field]
	if !ok {
		return errcode.New(errcode.Invalid, "unknown field %q (known: %s)", r.Field, strings.Join(FieldNames(), ", "))
	}
	if len(r.Value) > MaxValueLen {
		return errcode.New(errcode.Invalid, "value longer than %d bytes", MaxValueLen)
	}
	plain := plainOf(r.Operator)
	if !f.kind.allows(plain) {
		return errcode.New(errcode.Invalid, "operator %q does not apply to a %s field", r.Operator, f.kind)
	}
	if _, err := f.kind.parse(r.Value); err != nil {
		return errcode.New(errcode.Invalid, "value %q: %v", r.Value, err)
	}
	if plain == InRange {
		if _, err := parseRange(r.Value); err != nil {
			return errcode.New(errcode.Invalid, "value %q: %v", r.Value, err)
		}
	}
	return nil
}

func plainOf(op Operator) Operator {
	if p, ok := negations[op]; ok {
		return p
	}
	return op
}

// UsesTime reports whether the template depends on the passing of time
// (such groups are re-evaluated periodically, not only on changes).
func (t *Template) UsesTime() bool {
	for _, r := range t.Rules {
		if fields[r.Field].kind == kindAge {
			return true
		}
	}
	return false
}

// Sections lists the inventory sections the template reads.
func (t *Template) Sections() map[string]bool {
	out := map[string]bool{}
	for _, r := range t.Rules {
		if s := fields[r.Field].section; s != "" {
			out[s] = true
		}
	}
	return out
}

// kind is a field's value type.
type kind int

const (
	kindText     kind = iota // case-insensitive text
	kindVersion              // text compared as a version (1.10 > 1.9)
	kindNumber               // integer; sizes accept K, M, G, T suffixes
	kindBool                 // true / false
	kindIP                   // IP address; ranges and subnets
	kindAge                  // time elapsed, compared with durations like 7d or 36h
	kindSoftware             // "name" or "name version"
)

func (k kind) String() string {
	return [...]string{"text", "version", "number", "boolean", "IP address", "age", "software"}[k]
}

func (k kind) allows(op Operator) bool {
	switch k {
	case kindText:
		return op == Eq || op == Contains || op == Prefix || op == Suffix || op == Lt || op == Le || op == Gt || op == Ge
	case kindVersion, kindSoftware:
		return op == Eq || op == Lt || op == Le || op == Gt || op == Ge || op == Contains || op == Prefix || op == Suffix
	case kindNumber, kindAge:
		return op == Eq || op == Lt || op == Le || op == Gt || op == Ge
	case kindBool:
		return op == Eq
	case kindIP:
		return op == Eq || op == InRange || op == Prefix
	}
	return false
}

// parse checks a rule value for the kind.
func (k kind) parse(v string) (any, error) {
	switch k {
	case kindNumber:
		return parseNumber(v)
	case kindBool:
		switch strings.ToLower(v) {
		case "true", "yes", "1":
			return true, nil
		case "false", "no", "0":
			return false, nil
		}
		return nil, fmt.Errorf("must be true or false")
	case kindAge:
		return parseAge(v)
	case kindSoftware:
		if strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("must name a package")
		}
	}
	return v, nil
}

func parseNumber(v string) (int64, error) {
	s := strings.TrimSpace(strings.ToUpper(v))
	mult := int64(1)
	for suffix, m := range map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40} {
		if t, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = strings.TrimSpace(strings.TrimSuffix(t, "I")), m
			break
		}
	}
	s = strings.TrimSuffix(s, "B")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("must be a whole number, optionally with K, M, G or T")
	}
	return n * mult, nil
}

// parseAge reads 30m, 36h, 7d, 2w.
func parseAge(v string) (time.Duration, error) {
	s := strings.TrimSpace(strings.ToLower(v))
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			x, err := strconv.ParseFloat(n, 64)
			if err != nil || x < 0 || x > 100_000 {
				return 0, fmt.Errorf("must be a duration like 30m, 36h, 7d or 2w")
			}
			return time.Duration(x * float64(unit)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("must be a duration like 30m, 36h, 7d or 2w")
	}
	return d, nil
}

// ipRange is an inclusive address range.
type ipRange struct{ lo, hi netip.Addr }

// parseRange reads a subnet (10.0.0.0/8), a range (10.0.0.1-10.0.0.99) or a
// single address.
func parseRange(v string) (ipRange, error) {
	v = strings.TrimSpace(v)
	if p, err := netip.ParsePrefix(v); err == nil {
		p = p.Masked()
		return ipRange{p.Addr(), lastAddr(p)}, nil
	}
	if a, b, ok := strings.Cut(v, "-"); ok {
		lo, err1 := netip.ParseAddr(strings.TrimSpace(a))
		hi, err2 := netip.ParseAddr(strings.TrimSpace(b))
		if err1 != nil || err2 != nil || lo.Is4() != hi.Is4() || hi.Less(lo) {
			return ipRange{}, fmt.Errorf("must be a subnet like 10.0.0.0/8 or a range like 10.0.0.1-10.0.0.99")
		}
		return ipRange{lo, hi}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return ipRange{}, fmt.Errorf("must be a subnet like 10.0.0.0/8 or a range like 10.0.0.1-10.0.0.99")
	}
	return ipRange{a, a}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (r ipRange) contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.Is4() == r.lo.Is4() && !a.Less(r.lo) && !r.hi.Less(a)
}
