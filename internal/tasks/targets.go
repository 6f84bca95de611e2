package tasks

import (
	"encoding/json"
	"strings"

	"github.com/mamori/mamori/internal/errcode"
)

// Target kinds of a trigger.
const (
	TargetComputer     = "computer"
	TargetStaticGroup  = "static_group" // the group and its subgroups
	TargetDynamicGroup = "dynamic_group"
)

// MaxTargets bounds the targets of one trigger.
const MaxTargets = 1000

// Target is one target of a trigger.
type Target struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// ParseTargets validates a trigger's stored or submitted targets (shape
// only; existence is checked by the caller).
func ParseTargets(raw string) ([]Target, error) {
	var ts []Target
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ts); err != nil {
		return nil, errcode.New(errcode.Invalid, "targets must be a list of {\"type\", \"id\"}")
	}
	if len(ts) > MaxTargets {
		return nil, errcode.New(errcode.Invalid, "at most %d targets", MaxTargets)
	}
	seen := map[Target]bool{}
	for _, t := range ts {
		switch t.Type {
		case TargetComputer, TargetStaticGroup, TargetDynamicGroup:
		default:
			return nil, errcode.New(errcode.Invalid, "target type %q: must be computer, static_group or dynamic_group", t.Type)
		}
		if t.ID == "" || len(t.ID) > 64 {
			return nil, errcode.New(errcode.Invalid, "target id must be 1-64 characters")
		}
		if seen[t] {
			return nil, errcode.New(errcode.Invalid, "target %s %s given twice", t.Type, t.ID)
		}
		seen[t] = true
	}
	return ts, nil
}
