// Package authz is the security model: permission sets grant, over static
// groups (each with its subgroups), a level per functionality; a user's sets
// add up. Every route of the API asks this package one question before it
// acts: "may this principal do LEVEL on FUNCTIONALITY in GROUP?".
package authz

import (
	"slices"
	"sort"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// Functionality is an area of the product that permissions are given for.
type Functionality string

// The functionalities.
const (
	Computers        Functionality = "computers"
	Groups           Functionality = "groups"
	EnrollmentTokens Functionality = "enrollment_tokens"
	Policies         Functionality = "policies"
	Tasks            Functionality = "tasks"
	Detections       Functionality = "detections"
	Quarantine       Functionality = "quarantine"
	Reports          Functionality = "reports"
	Notifications    Functionality = "notifications"
	Installers       Functionality = "installers"
	Users            Functionality = "users" // users and permission sets
	AuditLog         Functionality = "audit_log"
	ServerSettings   Functionality = "server_settings"
	EngineUpdates    Functionality = "engine_updates"
)

// All lists every functionality.
var All = []Functionality{Computers, Groups, EnrollmentTokens, Policies, Tasks, Detections, Quarantine, Reports,
	Notifications, Installers, Users, AuditLog, ServerSettings, EngineUpdates}

// global functionalities are not about objects in groups: a set grants them
// only if its scope includes All.
var global = map[Functionality]bool{AuditLog: true, ServerSettings: true, EngineUpdates: true}

// IsGlobal reports whether f is granted only through a scope including All.
func IsGlobal(f Functionality) bool { return global[f] }

// Valid reports whether f is a known functionality.
func Valid(f Functionality) bool { return slices.Contains(All, f) }

// Level is what a grant allows; each level includes the ones below.
type Level int

// Levels.
const (
	None  Level = 0
	Read  Level = 1 // view
	Use   Level = 2 // use as a target, run, assign
	Write Level = 3 // create, modify, delete
)

func (l Level) String() string {
	switch l {
	case Read:
		return "read"
	case Use:
		return "use"
	case Write:
		return "write"
	}
	return "none"
}

// ParseLevel parses read, use or write.
func ParseLevel(s string) (Level, error) {
	switch s {
	case "read":
		return Read, nil
	case "use":
		return Use, nil
	case "write":
		return Write, nil
	}
	return None, errcode.New(errcode.Invalid, "level must be read, use or write, not %q", s)
}

type scope struct {
	level Level
	roots []string
}

// Permissions is what a user may do: the union of their sets.
type Permissions struct {
	byFunc map[Functionality][]scope
}

// FromSets builds the permissions of a user holding sets.
func FromSets(sets []*store.PermissionSet) *Permissions {
	p := &Permissions{byFunc: map[Functionality][]scope{}}
	for _, s := range sets {
		for f, l := range s.Grants {
			fn := Functionality(f)
			if !Valid(fn) || l <= 0 {
				continue
			}
			roots := s.Groups
			if global[fn] {
				if !slices.Contains(s.Groups, store.GroupAll) {
					continue
				}
				roots = []string{store.GroupAll}
			}
			p.byFunc[fn] = append(p.byFunc[fn], scope{level: Level(min(l, int(Write))), roots: slices.Clone(roots)})
		}
	}
	return p
}

// Allows reports whether the permissions allow level on f for an object in
// group (the group itself or one of its ancestors must be in a scope
// granting at least level). For global functionalities group is ignored.
func (p *Permissions) Allows(f Functionality, level Level, group string, tree *store.GroupTree) bool {
	for _, s := range p.byFunc[f] {
		if s.level < level {
			continue
		}
		if global[f] {
			return true
		}
		for _, r := range s.roots {
			if tree.IsWithin(group, r) {
				return true
			}
		}
	}
	return false
}

// Groups returns the ids of every group in which the permissions allow
// level on f (empty, never nil, when none), sorted.
func (p *Permissions) Groups(f Functionality, level Level, tree *store.GroupTree) []string {
	set := map[string]bool{}
	for _, s := range p.byFunc[f] {
		if s.level < level {
			continue
		}
		for _, r := range s.roots {
			for _, g := range tree.Descendants(r) {
				set[g] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for g := range set {
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// SeesGroup reports whether the permissions give at least read on some
// functionality in group: whether the caller may learn that the group
// exists.
func (p *Permissions) SeesGroup(group string, tree *store.GroupTree) bool {
	for f := range p.byFunc {
		if !global[f] && p.Allows(f, Read, group, tree) {
			return true
		}
	}
	return false
}

// Any reports whether the permissions give at least level on f anywhere.
func (p *Permissions) Any(f Functionality, level Level) bool {
	for _, s := range p.byFunc[f] {
		if s.level >= level {
			return true
		}
	}
	return false
}

// Covers reports whether p allows everything set grants: every
// functionality at its level over every group of its scope. A user may only
// create, change or assign permission sets they cover, so nobody can hand
// out more than they hold.
func (p *Permissions) Covers(set *store.PermissionSet, tree *store.GroupTree) bool {
	for f, l := range set.Grants {
		fn := Functionality(f)
		if global[fn] {
			if slices.Contains(set.Groups, store.GroupAll) && !p.Allows(fn, Level(l), store.GroupAll, tree) {
				return false
			}
			continue
		}
		for _, g := range set.Groups {
			if !p.Allows(fn, Level(l), g, tree) {
				return false
			}
		}
	}
	return true
}

// Grant is one entry of a summary.
type Grant struct {
	Functionality Functionality
	Level         Level
	Groups        []string
}

// Summary lists what the permissions grant: per functionality and level,
// the scope roots granting exactly that level (for "who am I" answers).
func (p *Permissions) Summary() []Grant {
	var out []Grant
	for _, f := range All {
		for _, l := range []Level{Write, Use, Read} {
			var groups []string
			for _, s := range p.byFunc[f] {
				if s.level == l {
					groups = append(groups, s.roots...)
				}
			}
			if len(groups) > 0 {
				slices.Sort(groups)
				out = append(out, Grant{Functionality: f, Level: l, Groups: slices.Compact(groups)})
			}
		}
	}
	return out
}
