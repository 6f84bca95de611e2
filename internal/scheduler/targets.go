package scheduler

import (
	"context"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/tasks"
)

// TargetStore is what resolving targets reads.
type TargetStore interface {
	Groups(ctx context.Context) (*store.GroupTree, error)
	ComputerIDs(ctx context.Context, groupIDs []string) ([]string, error)
	DynamicGroupMembers(ctx context.Context, groupID string) ([]string, error)
	ComputerByID(ctx context.Context, id string) (*store.Computer, error)
}

// Resolve returns the ids of the (not revoked) computers the targets name,
// without duplicates. Targets that no longer exist resolve to nothing.
func Resolve(ctx context.Context, st TargetStore, ts []tasks.Target) (map[string]bool, error) {
	out := map[string]bool{}
	var tree *store.GroupTree
	for _, t := range ts {
		switch t.Type {
		case tasks.TargetComputer:
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
		case tasks.TargetStaticGroup:
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
		case tasks.TargetDynamicGroup:
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
