package tasks

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
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

// TargetStore is what resolving targets reads.
type TargetStore interface {
	Groups(ctx context.Context) (*store.GroupTree, error)
	ComputerIDs(ctx context.Context, groupIDs []string) ([]string, error)
	DynamicGroupMembers(ctx context.Context, groupID string) ([]string, error)
	ComputerByID(ctx context.Context, id string) (*store.Computer, error)
}

// Resolve returns the ids of the (not revoked) computers the targets name,
// without duplicates. Targets that no longer exist resolve to nothing.
func Resolve(ctx context.Context, st TargetStore, ts []Target) (map[string]bool, error) {
	out := map[string]bool{}
	var tree *store.GroupTree
	for _, t := range ts {
		switch t.Type {
		case TargetComputer:
			c, err := st.ComputerByID(ctx, t.ID)
			if errcode.Of(err) == errcode.NotFound {
				continue
			}
			if err != nil {
				return nil, err
			}
			if c.RevokedAt.IsZero() {
				out[c.ID] = true
			}
		case TargetStaticGroup:
			if tree == nil {
				var err error
				if tree, err = st.Groups(ctx); err != nil {
					return nil, err
				}
			}
			groups := tree.Descendants(t.ID)
			if len(groups) == 0 {
				continue
			}
			ids, err := st.ComputerIDs(ctx, groups)
			if err != nil {
				return nil, err
			}
			for _, id := range ids {
				out[id] = true
			}
		case TargetDynamicGroup:
			ids, err := st.DynamicGroupMembers(ctx, t.ID)
			if err != nil {
				return nil, err
			}
			for _, id := range ids {
				out[id] = true
			}
		}
	}
	return out, nil
}
