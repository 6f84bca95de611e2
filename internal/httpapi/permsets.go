package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

type permSetStore interface {
	PermissionSets(ctx context.Context) ([]*store.PermissionSet, error)
	PermissionSetByID(ctx context.Context, id string) (*store.PermissionSet, error)
	CreatePermissionSet(ctx context.Context, ps *store.PermissionSet) error
	UpdatePermissionSet(ctx context.Context, ps *store.PermissionSet) error
	DeletePermissionSet(ctx context.Context, id string) error
}

type permSetJSON struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Group       groupRef          `json:"group"` // where the set itself lives
	Builtin     bool              `json:"builtin"`
	Groups      []groupRef        `json:"groups"` // what it grants over (subgroups included)
	Grants      map[string]string `json:"grants"` // functionality -> read | use | write
	CreatedAt   *string           `json:"created_at"`
	UpdatedAt   *string           `json:"updated_at"`
	Version     int64             `json:"version"`
}

func permSetView(ps *store.PermissionSet, tree *store.GroupTree) permSetJSON {
	ref := func(id string) groupRef {
		g := groupRef{ID: id}
		if gr, ok := tree.Get(id); ok {
			g.Path = gr.Path
		}
		return g
	}
	v := permSetJSON{ID: ps.ID, Name: ps.Name, Description: ps.Description, Group: ref(ps.GroupID), Builtin: ps.Builtin,
		Groups: []groupRef{}, Grants: map[string]string{}, CreatedAt: timeJSON(ps.CreatedAt), UpdatedAt: timeJSON(ps.UpdatedAt), Version: ps.Version}
	for _, g := range ps.Groups {
		v.Groups = append(v.Groups, ref(g))
	}
	for f, l := range ps.Grants {
		v.Grants[f] = authz.Level(l).String()
	}
	return v
}

func (a *API) permSetFor(r *http.Request, id string, l authz.Level) (*store.PermissionSet, error) {
	ps, err := a.cfg.Store.PermissionSetByID(r.Context(), id)
	if err != nil {
		state(r).checked = true
		return nil, err
	}
	if err := a.allowObject(r, authz.Users, l, ps.GroupID, "permission set"); err != nil {
		return nil, err
	}
	return ps, nil
}

func (a *API) listPermSets(w http.ResponseWriter, r *http.Request) error {
	visible, err := a.scope(r, authz.Users, authz.Read)
	if err != nil {
		return err
	}
	sets, err := a.cfg.Store.PermissionSets(r.Context())
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	items := []permSetJSON{}
	for _, ps := range sets {
		if slices.Contains(visible, ps.GroupID) {
			items = append(items, permSetView(ps, tree))
		}
	}
	writeJSON(w, http.StatusOK, list(items, len(items)))
	return nil
}

func (a *API) getPermSet(w http.ResponseWriter, r *http.Request) error {
	ps, err := a.permSetFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	writeETag(w, ps.Version)
	writeJSON(w, http.StatusOK, permSetView(ps, tree))
	return nil
}

type permSetRequest struct {
	Name        *string            `json:"name"`
	Description *string            `json:"description"`
	Group       *string            `json:"group"`  // path of the set's own group; default the creator's home group
	Groups      *[]string          `json:"groups"` // paths it grants over
	Grants      *map[string]string `json:"grants"` // functionality -> read | use | write
	Version     *int64             `json:"version"`
}

// apply validates req onto ps.
func (a *API) applyPermSet(r *http.Request, ps *store.PermissionSet, req permSetRequest) error {
	if req.Name != nil {
		n := strings.TrimSpace(*req.Name)
		if n == "" || len(n) > 128 || n != *req.Name {
			return errcode.New(errcode.Invalid, "name must be 1-128 characters without surrounding spaces")
		}
		ps.Name = n
	}
	if req.Description != nil {
		if len(*req.Description) > 512 {
			return errcode.New(errcode.Invalid, "description longer than 512 bytes")
		}
		ps.Description = *req.Description
	}
	if req.Group != nil {
		g, err := a.resolveGroup(r, *req.Group)
		if err != nil {
			return err
		}
		ps.GroupID = g.ID
	}
	if req.Groups != nil {
		if len(*req.Groups) > 256 {
			return errcode.New(errcode.Invalid, "at most 256 groups")
		}
		ps.Groups = nil
		for _, p := range *req.Groups {
			g, err := a.resolveGroup(r, p)
			if err != nil {
				return err
			}
			ps.Groups = append(ps.Groups, g.ID)
		}
	}
	if req.Grants != nil {
		ps.Grants = map[string]int{}
		for f, l := range *req.Grants {
			if !authz.Valid(authz.Functionality(f)) {
				return errcode.New(errcode.Invalid, "unknown functionality %q", f)
			}
			lv, err := authz.ParseLevel(l)
			if err != nil {
				return err
			}
			ps.Grants[f] = int(lv)
		}
	}
	return nil
}

// createPermSet: POST /api/v1/permission-sets — write on users where the
// set will live, and nothing the caller does not hold themselves.
func (a *API) createPermSet(w http.ResponseWriter, r *http.Request) error {
	var req permSetRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Name == nil {
		return errcode.New(errcode.Invalid, "name is required")
	}
	auditObject(r, "", *req.Name)
	ps := &store.PermissionSet{ID: uuid.NewString(), GroupID: principal(r).HomeGroupID, Grants: map[string]int{}}
	if err := a.applyPermSet(r, ps, req); err != nil {
		return err
	}
	if err := a.allow(r, authz.Users, authz.Write, ps.GroupID); err != nil {
		return err
	}
	tree, _ := a.groups(r)
	if !principal(r).Permissions.Covers(ps, tree) {
		return errcode.New(errcode.Forbidden, "the set would grant more than you hold")
	}
	if err := a.cfg.Store.CreatePermissionSet(r.Context(), ps); err != nil {
		return err
	}
	v := permSetView(ps, tree)
	auditObject(r, ps.ID, ps.Name)
	auditDiff(r, nil, v)
	writeETag(w, ps.Version)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// updatePermSet: PATCH /api/v1/permission-sets/{id}.
func (a *API) updatePermSet(w http.ResponseWriter, r *http.Request) error {
	var req permSetRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ps, err := a.permSetFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, ps.ID, ps.Name)
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	if ps.Builtin {
		return errcode.New(errcode.Conflict, "built-in permission sets cannot be changed")
	}
	tree, _ := a.groups(r)
	before := permSetView(ps, tree)
	if !principal(r).Permissions.Covers(ps, tree) {
		return errcode.New(errcode.Forbidden, "the set grants more than you hold; you cannot change it")
	}
	if err := a.applyPermSet(r, ps, req); err != nil {
		return err
	}
	if err := a.allow(r, authz.Users, authz.Write, ps.GroupID); err != nil {
		return err
	}
	if !principal(r).Permissions.Covers(ps, tree) {
		return errcode.New(errcode.Forbidden, "the set would grant more than you hold")
	}
	ps.Version = version
	if err := a.cfg.Store.UpdatePermissionSet(r.Context(), ps); err != nil {
		return err
	}
	after := permSetView(ps, tree)
	auditDiff(r, before, after)
	writeETag(w, ps.Version)
	writeJSON(w, http.StatusOK, after)
	return nil
}

func (a *API) deletePermSet(w http.ResponseWriter, r *http.Request) error {
	ps, err := a.permSetFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, ps.ID, ps.Name)
	tree, _ := a.groups(r)
	if !principal(r).Permissions.Covers(ps, tree) {
		return errcode.New(errcode.Forbidden, "the set grants more than you hold; you cannot delete it")
	}
	if err := a.cfg.Store.DeletePermissionSet(r.Context(), ps.ID); err != nil {
		return err
	}
	auditDiff(r, permSetView(ps, tree), nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
