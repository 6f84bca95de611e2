package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

type groupStore interface {
	CreateGroup(ctx context.Context, parentID, name string) (*store.Group, error)
	RenameGroup(ctx context.Context, id, name string, version int64) error
	MoveGroup(ctx context.Context, id, newParent string, version int64) error
	DeleteGroup(ctx context.Context, id, moveTo string, version int64) error
	GroupMembersOf(ctx context.Context, id string) (store.GroupMembers, error)
}

type groupJSON struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Path      string  `json:"path"`
	ParentID  *string `json:"parent_id"`
	CreatedAt *string `json:"created_at"`
	Version   int64   `json:"version"`
}

type groupDetail struct {
	groupJSON
	Members membersJSON `json:"members"`
}

type membersJSON struct {
	Subgroups        int `json:"subgroups"`
	Computers        int `json:"computers"`
	EnrollmentTokens int `json:"enrollment_tokens"`
	PermissionSets   int `json:"permission_sets"`
	Users            int `json:"users"`
	DynamicGroups    int `json:"dynamic_groups"`
	Policies         int `json:"policies"`
	Tasks            int `json:"tasks"`
}

func groupView(g *store.Group) groupJSON {
	v := groupJSON{ID: g.ID, Name: g.Name, Path: g.Path, CreatedAt: timeJSON(g.CreatedAt), Version: g.Version}
	if g.ParentID != "" {
		p := g.ParentID
		v.ParentID = &p
	}
	return v
}

// groupFor resolves a group by id and checks level on groups there.
func (a *API) groupFor(r *http.Request, id string, l authz.Level) (*store.Group, error) {
	tree, err := a.groups(r)
	if err != nil {
		return nil, err
	}
	g, ok := tree.Get(id)
	if !ok {
		state(r).checked = true
		return nil, errcode.New(errcode.NotFound, "static group not found")
	}
	if err := a.allowObject(r, authz.Groups, l, g.ID, "static group"); err != nil {
		return nil, err
	}
	return g, nil
}

// listGroups: GET /api/v1/groups — the groups the caller can read.
func (a *API) listGroups(w http.ResponseWriter, r *http.Request) error {
	visible, err := a.scope(r, authz.Groups, authz.Read)
	if err != nil {
		return err
	}
	in := map[string]bool{}
	for _, g := range visible {
		in[g] = true
	}
	tree, _ := a.groups(r)
	items := []groupJSON{}
	for _, g := range tree.List() {
		if in[g.ID] {
			items = append(items, groupView(g))
		}
	}
	writeJSON(w, http.StatusOK, list(items, len(items)))
	return nil
}

func (a *API) getGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := a.groupFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	m, err := a.cfg.Store.GroupMembersOf(r.Context(), g.ID)
	if err != nil {
		return err
	}
	writeETag(w, g.Version)
	writeJSON(w, http.StatusOK, groupDetail{groupView(g), membersJSON{m.Subgroups, m.Computers, m.EnrollmentTokens, m.PermissionSets, m.Users, m.DynamicGroups, m.Policies, m.Tasks}})
	return nil
}

type createGroupRequest struct {
	Parent string `json:"parent"` // path; default All
	Name   string `json:"name"`
}

// createGroup: POST /api/v1/groups — write on groups in the parent.
func (a *API) createGroup(w http.ResponseWriter, r *http.Request) error {
	var req createGroupRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := store.ValidateGroupName(req.Name); err != nil {
		return err
	}
	parent, err := a.resolveGroup(r, req.Parent)
	if err != nil {
		return err
	}
	auditObject(r, "", parent.Path+store.PathSeparator+req.Name)
	if err := a.allowObject(r, authz.Groups, authz.Write, parent.ID, "static group"); err != nil {
		return err
	}
	g, err := a.cfg.Store.CreateGroup(r.Context(), parent.ID, req.Name)
	if err != nil {
		return err
	}
	g.Path = parent.Path + store.PathSeparator + g.Name
	auditObject(r, g.ID, g.Path)
	auditDiff(r, nil, groupView(g))
	writeETag(w, g.Version)
	writeJSON(w, http.StatusCreated, groupView(g))
	return nil
}

type renameGroupRequest struct {
	Name    string `json:"name"`
	Version *int64 `json:"version"`
}

// renameGroup: PATCH /api/v1/groups/{id} {"name","version"}.
func (a *API) renameGroup(w http.ResponseWriter, r *http.Request) error {
	var req renameGroupRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	g, err := a.groupFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, g.ID, g.Path)
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.RenameGroup(r.Context(), g.ID, req.Name, version); err != nil {
		return err
	}
	auditDiff(r, map[string]string{"name": g.Name}, map[string]string{"name": req.Name})
	return a.respondGroup(w, r, g.ID, http.StatusOK)
}

func (a *API) respondGroup(w http.ResponseWriter, r *http.Request, id string, status int) error {
	tree, err := a.cfg.Store.Groups(r.Context())
	if err != nil {
		return err
	}
	g, ok := tree.Get(id)
	if !ok {
		return errcode.New(errcode.NotFound, "static group not found")
	}
	writeETag(w, g.Version)
	writeJSON(w, status, groupView(g))
	return nil
}

type moveGroupRequest struct {
	Parent  string `json:"parent"`
	Version *int64 `json:"version"`
}

// carried are the areas whose objects a group carries when it moves, or
// when it is deleted into another group.
var carried = []authz.Functionality{authz.Groups, authz.Computers, authz.Users, authz.EnrollmentTokens, authz.Policies, authz.Tasks}

// allowCarry is the check for taking what lives in group from (its
// subtree) to under group to: write on every carried area at both ends,
// and no right at to that the caller lacks at from, in any area (the
// detections of the computers that move, for one). Otherwise moving a
// group would be a way to reach objects the caller may not touch.
func (a *API) allowCarry(r *http.Request, from, to string) error {
	for _, f := range carried {
		for _, at := range []string{from, to} {
			if err := a.allow(r, f, authz.Write, at); err != nil {
				return err
			}
		}
	}
	return a.allowNoWidening(r, from, to)
}

// allowNoWidening refuses taking objects from group from to group to when
// the caller holds a right at to, in any area, that they lack at from.
func (a *API) allowNoWidening(r *http.Request, from, to string) error {
	tree, err := a.groups(r)
	if err != nil {
		return err
	}
	p := principal(r).Permissions
	for _, f := range authz.All {
		if authz.IsGlobal(f) {
			continue
		}
		for _, l := range []authz.Level{authz.Read, authz.Use, authz.Write} {
			if p.Allows(f, l, to, tree) && !p.Allows(f, l, from, tree) {
				return errcode.New(errcode.Forbidden, "you hold %s on %s where it would go but not where it is; moving it would widen what you may do", l, f)
			}
		}
	}
	return nil
}

// moveGroup: POST /api/v1/groups/{id}/move — write on groups at the group
// and at the new parent, and what allowCarry asks; never into itself or
// its subtree.
func (a *API) moveGroup(w http.ResponseWriter, r *http.Request) error {
	var req moveGroupRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	g, err := a.groupFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, g.ID, g.Path)
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	if strings.TrimSpace(req.Parent) == "" {
		return errcode.New(errcode.Invalid, "parent (the destination path) is required")
	}
	dest, err := a.resolveGroup(r, req.Parent)
	if err != nil {
		return err
	}
	if err := a.allowCarry(r, g.ID, dest.ID); err != nil {
		return err
	}
	if err := a.cfg.Store.MoveGroup(r.Context(), g.ID, dest.ID, version); err != nil {
		return err
	}
	a.requeue(nil) // the computers below have another path of policies
	auditDiff(r, map[string]string{"path": g.Path}, map[string]string{"path": dest.Path + store.PathSeparator + g.Name})
	return a.respondGroup(w, r, g.ID, http.StatusOK)
}

// deleteGroup: DELETE /api/v1/groups/{id}?version=N[&move_to=PATH] — only
// an empty group, unless its computers and objects move to move_to (write
// on computers and groups there).
func (a *API) deleteGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := a.groupFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, g.ID, g.Path)
	q := r.URL.Query()
	var vp *int64
	if v := q.Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return errcode.New(errcode.Invalid, "version must be an integer")
		}
		vp = &n
	}
	version, err := versionOf(r, vp)
	if err != nil {
		return err
	}
	moveTo := ""
	if p := q.Get("move_to"); p != "" {
		dest, err := a.resolveGroup(r, p)
		if err != nil {
			return err
		}
		moveTo = dest.ID
	}
	if moveTo != "" {
		if err := a.allowCarry(r, g.ID, moveTo); err != nil {
			return err
		}
	} else {
		for _, f := range carried {
			if err := a.allow(r, f, authz.Write, g.ID); err != nil {
				return err
			}
		}
	}
	if err := a.cfg.Store.DeleteGroup(r.Context(), g.ID, moveTo, version); err != nil {
		return err
	}
	a.requeue(nil)
	auditDiff(r, groupView(g), nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
