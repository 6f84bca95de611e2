package dyngroup

import (
	"net/netip"
	"strings"
	"time"
)

// Matches reports whether the facts satisfy the template at time now. The
// template must be valid.
func (t *Template) Matches(f *Facts, now time.Time) bool {
	switch t.Op {
	case And:
		for _, r := range t.Rules {
			if !r.holds(f, now) {
				return false
			}
		}
		return true
	case Or:
		for _, r := range t.Rules {
			if r.holds(f, now) {
				return true
			}
		}
		return false
	case Nand:
		for _, r := range t.Rules {
			if !r.holds(f, now) {
				return true
			}
		}
		return false
	case Nor:
		for _, r := range t.Rules {
			if r.holds(f, now) {
				return false
			}
		}
		return true
	}
	return false
}

// holds applies a rule: plain operators need some value that satisfies
// them, negated ones some value that does not ("exists with a different
// value").
func (r Rule) holds(f *Facts, now time.Time) bool {
	fd := fields[r.Field]
	plain := plainOf(r.Operator)
	negated := plain != r.Operator
	if fd.kind == kindSoftware {
		return r.software(f, plain, negated)
	}
	for _, v := range fd.values(f, now) {
		if compare(fd.kind, v, plain, r.Value) != negated {
			return true
		}
	}
	return false
}

// software tests "NAME" (some package of that name) or "NAME VERSION"
// (some package of that name whose version compares so).
func (r Rule) software(f *Facts, op Operator, negated bool) bool {
	name, version, _ := strings.Cut(strings.TrimSpace(r.Value), " ")
	versions, ok := f.Software[strings.ToLower(name)]
	version = strings.TrimSpace(version)
	if version == "" {
		// Without a version the rule is about presence: "=" is installed.
		switch op {
		case Eq:
			return ok != negated
		default:
			return false
		}
	}
	for _, v := range versions {
		if compare(kindVersion, v, op, version) != negated {
			return true
		}
	}
	return false
}

func compare(k kind, have any, op Operator, want string) bool {
	switch k {
	case kindText:
		return compareText(have.(string), op, want)
	case kindVersion:
		h := have.(string)
		switch op {
		case Contains, Prefix, Suffix:
			return compareText(h, op, want)
		}
		return ordered(CompareVersions(h, want), op)
	case kindNumber:
		n, _ := parseNumber(want)
		return ordered(cmp64(have.(int64), n), op)
	case kindBool:
		b, _ := kindBool.parse(want)
		return have.(bool) == b.(bool)
	case kindAge:
		d, _ := parseAge(want)
		return ordered(cmp64(int64(have.(time.Duration)), int64(d)), op)
	case kindIP:
		a := have.(netip.Addr)
		switch op {
		case Eq:
			w, err := netip.ParseAddr(strings.TrimSpace(want))
			return err == nil && a.Unmap() == w.Unmap()
		case Prefix:
			return strings.HasPrefix(a.String(), strings.TrimSpace(want))
		case InRange:
			r, err := parseRange(want)
			return err == nil && r.contains(a)
		}
	}
	return false
}

func compareText(have string, op Operator, want string) bool {
	h, w := strings.ToLower(have), strings.ToLower(want)
	switch op {
	case Eq:
		return h == w
	case Contains:
		return strings.Contains(h, w)
	case Prefix:
		return strings.HasPrefix(h, w)
	case Suffix:
		return strings.HasSuffix(h, w)
	}
	return ordered(strings.Compare(h, w), op)
}

func ordered(c int, op Operator) bool {
	switch op {
	case Eq:
		return c == 0
	case Lt:
		return c < 0
	case Le:
		return c <= 0
	case Gt:
		return c > 0
	case Ge:
		return c >= 0
	}
	return false
}

func cmp64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
