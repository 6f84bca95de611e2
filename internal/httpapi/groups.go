package httpapi

import (
	"net/http"

	"github.com/mamori/mamori/internal/store"
)

type groupJSON struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Path      string  `json:"path"`
	ParentID  *string `json:"parent_id"`
	CreatedAt *string `json:"created_at"`
}

func groupView(g *store.Group) groupJSON {
	v := groupJSON{ID: g.ID, Name: g.Name, Path: g.Path, CreatedAt: timeJSON(g.CreatedAt)}
	if g.ParentID != "" {
		p := g.ParentID
		v.ParentID = &p
	}
	return v
}

func (a *API) listGroups(w http.ResponseWriter, r *http.Request) error {
	t, err := a.cfg.Store.Groups(r.Context())
	if err != nil {
		return err
	}
	items := make([]groupJSON, 0, len(t.List()))
	for _, g := range t.List() {
		items = append(items, groupView(g))
	}
	writeJSON(w, http.StatusOK, list(items, len(items)))
	return nil
}

type createGroupRequest struct {
	Parent string `json:"parent"` // path; default All
	Name   string `json:"name"`
}

func (a *API) createGroup(w http.ResponseWriter, r *http.Request) error {
	var req createGroupRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := store.ValidateGroupName(req.Name); err != nil {
		return err
	}
	t, err := a.cfg.Store.Groups(r.Context())
	if err != nil {
		return err
	}
	parent, err := t.Resolve(req.Parent)
	if err != nil {
		return err
	}
	g, err := a.cfg.Store.CreateGroup(r.Context(), parent.ID, req.Name)
	if err != nil {
		return err
	}
	g.Path = parent.Path + store.PathSeparator + g.Name
	a.cfg.Log.Info("static group created", "group", g.ID, "path", g.Path, "by", principal(r).Username)
	writeJSON(w, http.StatusCreated, groupView(g))
	return nil
}
