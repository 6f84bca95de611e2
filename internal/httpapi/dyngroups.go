package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/dyngroup"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

type dynGroupStore interface {
	DynamicGroups(ctx context.Context) ([]*store.DynamicGroup, error)
	DynamicGroupByID(ctx context.Context, id string) (*store.DynamicGroup, error)
	CreateDynamicGroup(ctx context.Context, g *store.DynamicGroup) error
	UpdateDynamicGroup(ctx context.Context, g *store.DynamicGroup) error
	DeleteDynamicGroup(ctx context.Context, id string, version int64) error
	ComputerDynamicGroups(ctx context.Context, computerID string) ([]string, error)
}

// DynamicGroups evaluates templates for previews and re-evaluates groups
// whose template changed (internal/dyngroup.Evaluator).
type DynamicGroups interface {
	Preview(ctx context.Context, staticParent, dynamicParent string, tpl *dyngroup.Template) ([]string, error)
	Reevaluate(groupID string)
}

type dynGroupJSON struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	Description   string          `json:"description"`
	Parent        *groupRef       `json:"parent"`         // static parent
	ParentDynamic *string         `json:"parent_dynamic"` // dynamic parent id
	AccessGroup   groupRef        `json:"access_group"`   // the static group the group lives under
	Template      json.RawMessage `json:"template"`
	Members       int             `json:"members"`
	EvaluatedAt   *string         `json:"evaluated_at"`
	CreatedAt     *string         `json:"created_at"`
	UpdatedAt     *string         `json:"updated_at"`
	Version       int64           `json:"version"`
}

// rootOf returns the static group a dynamic group ultimately sits under.
func rootOf(g *store.DynamicGroup, all map[string]*store.DynamicGroup) string {
	for depth := 0; g != nil && depth < 64; depth++ {
		if g.StaticParentID != "" {
			return g.StaticParentID
		}
		g = all[g.DynamicParentID]
	}
	return store.GroupAll
}

func (a *API) dynIndex(r *http.Request) (map[string]*store.DynamicGroup, error) {
	list, err := a.cfg.Store.DynamicGroups(r.Context())
	if err != nil {
		return nil, err
	}
	m := make(map[string]*store.DynamicGroup, len(list))
	for _, g := range list {
		m[g.ID] = g
	}
	return m, nil
}

func dynView(g *store.DynamicGroup, root string, tree *store.GroupTree) dynGroupJSON {
	ref := func(id string) groupRef {
		r := groupRef{ID: id}
		if gr, ok := tree.Get(id); ok {
			r.Path = gr.Path
		}
		return r
	}
	v := dynGroupJSON{ID: g.ID, Name: g.Name, Description: g.Description, AccessGroup: ref(root), Template: json.RawMessage(g.Template),
		Members: g.Members, EvaluatedAt: timeJSON(g.EvaluatedAt), CreatedAt: timeJSON(g.CreatedAt), UpdatedAt: timeJSON(g.UpdatedAt), Version: g.Version}
	if g.StaticParentID != "" {
		p := ref(g.StaticParentID)
		v.Parent = &p
	} else {
		p := g.DynamicParentID
		v.ParentDynamic = &p
	}
	return v
}

func (a *API) dynFor(r *http.Request, id string, l authz.Level) (*store.DynamicGroup, string, error) {
	all, err := a.dynIndex(r)
	if err != nil {
		return nil, "", err
	}
	g, ok := all[id]
	if !ok {
		state(r).checked = true
		return nil, "", errcode.New(errcode.NotFound, "dynamic group not found")
	}
	root := rootOf(g, all)
	if err := a.allowObject(r, authz.Groups, l, root, "dynamic group"); err != nil {
		return nil, "", err
	}
	return g, root, nil
}

func (a *API) listDynGroups(w http.ResponseWriter, r *http.Request) error {
	visible, err := a.scope(r, authz.Groups, authz.Read)
	if err != nil {
		return err
	}
	in := map[string]bool{}
	for _, g := range visible {
		in[g] = true
	}
	list, err := a.cfg.Store.DynamicGroups(r.Context())
	if err != nil {
		return err
	}
	all := make(map[string]*store.DynamicGroup, len(list))
	for _, g := range list {
		all[g.ID] = g
	}
	tree, _ := a.groups(r)
	items := []dynGroupJSON{}
	for _, g := range list {
		if root := rootOf(g, all); in[root] {
			items = append(items, dynView(g, root, tree))
		}
	}
	writeJSON(w, http.StatusOK, list2(items))
	return nil
}

// list2 is a whole (unpaged) list.
func list2[T any](items []T) listResponse[T] { return list(items, len(items)) }

func (a *API) getDynGroup(w http.ResponseWriter, r *http.Request) error {
	g, root, err := a.dynFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	writeETag(w, g.Version)
	writeJSON(w, http.StatusOK, dynView(g, root, tree))
	return nil
}

// dynFields: GET /api/v1/dynamic-groups/fields — what templates can test.
func (a *API) dynFields(w http.ResponseWriter, r *http.Request) error {
	self(r) // documentation of the template language
	writeJSON(w, http.StatusOK, map[string]any{
		"ops":    []string{"and", "or", "nand", "nor"},
		"fields": dyngroup.Fields(),
	})
	return nil
}

type dynGroupRequest struct {
	Name          *string          `json:"name"`
	Description   *string          `json:"description"`
	Parent        *string          `json:"parent"`         // static group path
	ParentDynamic *string          `json:"parent_dynamic"` // dynamic group id
	Template      *json.RawMessage `json:"template"`
	Version       *int64           `json:"version"`
}

// parentOf resolves the parent of a new dynamic group and the static group
// it lives under.
func (a *API) dynParent(r *http.Request, req dynGroupRequest) (static, dynamic, root string, err error) {
	switch {
	case req.Parent != nil && req.ParentDynamic != nil:
		return "", "", "", errcode.New(errcode.Invalid, "give parent (a static group) or parent_dynamic (a dynamic group), not both")
	case req.ParentDynamic != nil:
		all, err := a.dynIndex(r)
		if err != nil {
			return "", "", "", err
		}
		p, ok := all[*req.ParentDynamic]
		if !ok {
			return "", "", "", errcode.New(errcode.NotFound, "parent dynamic group not found")
		}
		return "", p.ID, rootOf(p, all), nil
	default:
		path := "All"
		if req.Parent != nil {
			path = *req.Parent
		}
		g, err := a.resolveGroup(r, path)
		if err != nil {
			return "", "", "", err
		}
		return g.ID, "", g.ID, nil
	}
}

func validDynName(n string) error {
	if strings.TrimSpace(n) == "" || len(n) > 128 || strings.TrimSpace(n) != n {
		return errcode.New(errcode.Invalid, "name must be 1-128 characters without surrounding spaces")
	}
	return nil
}

// createDynGroup: POST /api/v1/dynamic-groups — write on groups where it
// lives.
func (a *API) createDynGroup(w http.ResponseWriter, r *http.Request) error {
	var req dynGroupRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Name == nil || req.Template == nil {
		return errcode.New(errcode.Invalid, "name and template are required")
	}
	auditObject(r, "", *req.Name)
	if err := validDynName(*req.Name); err != nil {
		return err
	}
	tpl, err := dyngroup.Parse(*req.Template)
	if err != nil {
		return err
	}
	static, dynamic, root, err := a.dynParent(r, req)
	if err != nil {
		return err
	}
	if err := a.allowObject(r, authz.Groups, authz.Write, root, "static group"); err != nil {
		return err
	}
	canon, _ := json.Marshal(tpl)
	g := &store.DynamicGroup{ID: uuid.NewString(), Name: *req.Name, StaticParentID: static, DynamicParentID: dynamic, Template: string(canon)}
	if req.Description != nil {
		if len(*req.Description) > 512 {
			return errcode.New(errcode.Invalid, "description longer than 512 bytes")
		}
		g.Description = *req.Description
	}
	if err := a.cfg.Store.CreateDynamicGroup(r.Context(), g); err != nil {
		return err
	}
	if a.cfg.DynamicGroups != nil {
		a.cfg.DynamicGroups.Reevaluate(g.ID)
	}
	tree, _ := a.groups(r)
	v := dynView(g, root, tree)
	auditObject(r, g.ID, g.Name)
	auditDiff(r, nil, v)
	writeETag(w, g.Version)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// updateDynGroup: PATCH /api/v1/dynamic-groups/{id} — a new template is
// re-evaluated in the background.
func (a *API) updateDynGroup(w http.ResponseWriter, r *http.Request) error {
	var req dynGroupRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	g, root, err := a.dynFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, g.ID, g.Name)
	if req.Parent != nil || req.ParentDynamic != nil {
		return errcode.New(errcode.Invalid, "a dynamic group cannot move; create a new one under the other parent")
	}
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	before := dynView(g, root, tree)
	if req.Name != nil {
		if err := validDynName(*req.Name); err != nil {
			return err
		}
		g.Name = *req.Name
	}
	if req.Description != nil {
		if len(*req.Description) > 512 {
			return errcode.New(errcode.Invalid, "description longer than 512 bytes")
		}
		g.Description = *req.Description
	}
	changedTemplate := false
	if req.Template != nil {
		tpl, err := dyngroup.Parse(*req.Template)
		if err != nil {
			return err
		}
		canon, _ := json.Marshal(tpl)
		changedTemplate = string(canon) != g.Template
		g.Template = string(canon)
	}
	g.Version = version
	if err := a.cfg.Store.UpdateDynamicGroup(r.Context(), g); err != nil {
		return err
	}
	if changedTemplate && a.cfg.DynamicGroups != nil {
		a.cfg.DynamicGroups.Reevaluate(g.ID)
	}
	after := dynView(g, root, tree)
	auditDiff(r, before, after)
	writeETag(w, g.Version)
	writeJSON(w, http.StatusOK, after)
	return nil
}

func (a *API) deleteDynGroup(w http.ResponseWriter, r *http.Request) error {
	g, root, err := a.dynFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, g.ID, g.Name)
	version, err := deleteVersion(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.DeleteDynamicGroup(r.Context(), g.ID, version); err != nil {
		return err
	}
	a.requeue(nil) // its members lose the policies assigned to it
	tree, _ := a.groups(r)
	auditDiff(r, dynView(g, root, tree), nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// dynMembers: GET /api/v1/dynamic-groups/{id}/members — the member
// computers the caller may see, with the computer list's filters.
func (a *API) dynMembers(w http.ResponseWriter, r *http.Request) error {
	g, _, err := a.dynFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	q.Set("dynamic_group", g.ID)
	r.URL.RawQuery = q.Encode()
	return a.listComputers(w, r)
}

// previewDynGroup: GET /api/v1/dynamic-groups/preview?template=JSON[&parent=PATH|&parent_dynamic=ID]
// — the computers a template would select, before saving it.
func (a *API) previewDynGroup(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	raw := q.Get("template")
	if raw == "" || len(raw) > MaxBodyBytes {
		return errcode.New(errcode.Invalid, "template (JSON, at most %d bytes) is required", MaxBodyBytes)
	}
	tpl, err := dyngroup.Parse([]byte(raw))
	if err != nil {
		return err
	}
	var req dynGroupRequest
	if p := q.Get("parent"); p != "" {
		req.Parent = &p
	}
	if p := q.Get("parent_dynamic"); p != "" {
		req.ParentDynamic = &p
	}
	static, dynamic, root, err := a.dynParent(r, req)
	if err != nil {
		return err
	}
	if err := a.allowObject(r, authz.Groups, authz.Read, root, "static group"); err != nil {
		return err
	}
	if a.cfg.DynamicGroups == nil {
		return errcode.New(errcode.Unavailable, "dynamic groups are not evaluated on this server")
	}
	ids, err := a.cfg.DynamicGroups.Preview(r.Context(), static, dynamic, tpl)
	if err != nil {
		return err
	}
	visible, err := a.scope(r, authz.Computers, authz.Read)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, g := range visible {
		seen[g] = true
	}
	tree, _ := a.groups(r)
	now := a.cfg.Now()
	items := []computerJSON{}
	hidden := 0
	for _, id := range ids {
		c, err := a.cfg.Store.ComputerByID(r.Context(), id)
		if err != nil {
			continue
		}
		if !seen[c.GroupID] {
			hidden++
			continue
		}
		if len(items) < store.MaxLimit {
			items = append(items, a.computerView(c, tree, now))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "total": len(ids) - hidden})
	return nil
}

// visibleDynGroups keeps the dynamic groups whose static root the caller may
// read groups in.
func (a *API) visibleDynGroups(r *http.Request, ids []string) []string {
	all, err := a.dynIndex(r)
	if err != nil {
		return []string{}
	}
	tree, _ := a.groups(r)
	out := []string{}
	for _, id := range ids {
		if g, ok := all[id]; ok && principal(r).Permissions.Allows(authz.Groups, authz.Read, rootOf(g, all), tree) {
			out = append(out, id)
		}
	}
	return out
}
