package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

type computerStore interface {
	Groups(ctx context.Context) (*store.GroupTree, error)
	ListComputers(ctx context.Context, f store.ComputerFilter) ([]*store.Computer, int, error)
	ComputerByID(ctx context.Context, id string) (*store.Computer, error)
	ComputerIDs(ctx context.Context, groupIDs []string) ([]string, error)
	InventorySections(ctx context.Context, computerID string) ([]store.InventorySection, error)
	ComputerEvents(ctx context.Context, computerID string, f store.EventFilter) ([]store.Event, int, error)
	RevokeComputer(ctx context.Context, id string, now time.Time) error
	MoveComputer(ctx context.Context, id, groupID string, version int64) error
	AddTag(ctx context.Context, computerID, tag string) error
	RemoveTag(ctx context.Context, computerID, tag string) error
	ComputerTags(ctx context.Context, computerID string) ([]string, error)
	Tags(ctx context.Context, groupIDs []string) ([]store.TagCount, error)
}

// computerFor loads a computer and checks level on it (not_found when the
// caller cannot see it).
func (a *API) computerFor(r *http.Request, id string, l authz.Level) (*store.Computer, error) {
	c, err := a.cfg.Store.ComputerByID(r.Context(), id)
	if err != nil {
		state(r).checked = true
		return nil, err
	}
	if err := a.allowObject(r, authz.Computers, l, c.GroupID, "computer"); err != nil {
		return nil, err
	}
	if l > authz.Read && !c.RevokedAt.IsZero() {
		return nil, errcode.New(errcode.Conflict, "the computer's certificate was revoked; it is no longer managed")
	}
	return c, nil
}

type osJSON struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type groupRef struct {
	ID   string `json:"id"`
	Path string `json:"path"`
}

type computerJSON struct {
	ID                string   `json:"id"`
	Name              string   `json:"name"`
	Hostname          string   `json:"hostname"`
	Instance          string   `json:"instance,omitempty"`
	Status            string   `json:"status"`
	LastSeen          *string  `json:"last_seen"`
	ConnectedSince    *string  `json:"connected_since"`
	ConnectionWarning string   `json:"connection_warning"`
	OS                osJSON   `json:"os"`
	Platform          string   `json:"platform"`
	AgentVersion      string   `json:"agent_version"`
	CloneSuspected    bool     `json:"clone_suspected"`
	CloneReason       string   `json:"clone_reason,omitempty"`
	Group             groupRef `json:"group"`
	EnrolledAt        *string  `json:"enrolled_at"`
	Revoked           bool     `json:"revoked,omitempty"`
	// UnresolvedDetections counts the computer's unresolved detections.
	UnresolvedDetections int      `json:"unresolved_detections"`
	Tags                 []string `json:"tags,omitempty"`
	// Engine is null until the agent reported its detection engine.
	Engine  *engineJSON `json:"engine"`
	Version int64       `json:"version"`
}

// engineJSON is a computer's detection engine; outdated when the server's
// update mirror holds a newer version.
type engineJSON struct {
	Version     uint64  `json:"version"`
	UpdateState string  `json:"update_state"`
	LastSuccess *string `json:"last_success"`
	LastError   string  `json:"last_error,omitempty"`
	Latest      uint64  `json:"latest,omitempty"`
	Outdated    bool    `json:"outdated"`
}

type computerDetail struct {
	computerJSON
	HardwareFingerprint string                     `json:"hardware_fingerprint"`
	Inventory           map[string]json.RawMessage `json:"inventory"`
	InventoryUpdatedAt  map[string]*string         `json:"inventory_updated_at"`
	RecentEvents        []eventJSON                `json:"recent_events"`
	DynamicGroups       []string                   `json:"dynamic_groups"`
}

type eventJSON struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	OccurredAt *string         `json:"occurred_at"`
	ReceivedAt *string         `json:"received_at"`
	Data       json.RawMessage `json:"data"`
	// Withheld says why data is empty: the event belongs to an area the
	// caller may not read (a detection, a task's output).
	Withheld string `json:"withheld,omitempty"`
}

// Connection warning levels for computers that have not connected for a
// while.
const (
	warnNone     = "none"
	warnWarning  = "warning"
	warnCritical = "critical"
)

// latestEngine is the newest engine on the server's update mirror (0:
// unknown or no mirror).
func (a *API) latestEngine() uint64 {
	if a.cfg.LatestEngine == nil {
		return 0
	}
	return a.cfg.LatestEngine()
}

func (a *API) computerView(c *store.Computer, groups *store.GroupTree, now time.Time) computerJSON {
	status, last, since := c.Status, c.LastSeen, c.ConnectedSince
	if a.cfg.Presence != nil && (c.ServerID == "" || c.ServerID == a.cfg.ServerID || c.Status != store.StatusOnline) {
		// The hub knows the truth of this server's connections right now;
		// the row may lag by one presence flush. A computer online on
		// another server is as that server last wrote it.
		if online, seen := a.cfg.Presence.Live(c.ID); online {
			status, last = store.StatusOnline, seen
			if since.IsZero() {
				since = seen
			}
		} else if status == store.StatusOnline {
			status, since = store.StatusOffline, time.Time{}
		}
	}
	if !c.RevokedAt.IsZero() {
		status = store.StatusOffline
	}
	warning := warnNone
	if status != store.StatusOnline {
		ref := last
		if ref.IsZero() {
			ref = c.EnrolledAt
		}
		switch age := now.Sub(ref); {
		case age >= a.cfg.OfflineCritical:
			warning = warnCritical
		case age >= a.cfg.OfflineWarning:
			warning = warnWarning
		}
	}
	g := groupRef{ID: c.GroupID}
	if gr, ok := groups.Get(c.GroupID); ok {
		g.Path = gr.Path
	}
	if status != store.StatusOnline {
		since = time.Time{}
	}
	var eng *engineJSON
	if c.Engine.Version > 0 {
		eng = &engineJSON{Version: c.Engine.Version, UpdateState: c.Engine.UpdateState, LastSuccess: timeJSON(c.Engine.LastSuccess),
			LastError: c.Engine.LastError}
		eng.Latest = a.latestEngine()
		eng.Outdated = eng.Latest > c.Engine.Version
	}
	return computerJSON{
		Engine: eng,
		ID:     c.ID, Name: c.Name, Hostname: c.Hostname, Instance: c.Instance, Status: status,
		LastSeen: timeJSON(last), ConnectedSince: timeJSON(since), ConnectionWarning: warning,
		OS: osJSON{Name: c.OSName, Version: c.OSVersion}, Platform: c.Platform, AgentVersion: c.AgentVersion,
		CloneSuspected: c.CloneSuspected, CloneReason: c.CloneReason, Group: g,
		EnrolledAt: timeJSON(c.EnrolledAt), Revoked: !c.RevokedAt.IsZero(), UnresolvedDetections: c.UnresolvedDetections,
		Version: c.Version,
	}
}

// listComputers: GET /api/v1/computers?name=&status=&group=&recursive=&tag=&dynamic_group=&engine=outdated&sort=&limit=&offset=
func (a *API) listComputers(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, offset, err := page(r)
	if err != nil {
		return err
	}
	visible, err := a.scope(r, authz.Computers, authz.Read)
	if err != nil {
		return err
	}
	f := store.ComputerFilter{Name: q.Get("name"), Status: q.Get("status"), Tag: q.Get("tag"), DynamicGroupID: q.Get("dynamic_group"),
		Sort: q.Get("sort"), Limit: limit, Offset: offset}
	if len(f.Name) > 256 || len(f.Tag) > store.MaxTagLen {
		return errcode.New(errcode.Invalid, "name or tag filter too long")
	}
	switch q.Get("engine") {
	case "":
	case "outdated":
		latest := a.latestEngine()
		if latest == 0 {
			// Nothing to compare with: no computer is known to be behind.
			writeJSON(w, http.StatusOK, list([]computerJSON{}, 0))
			return nil
		}
		f.EngineBelow = latest
	default:
		return errcode.New(errcode.Invalid, "engine filter must be \"outdated\"")
	}
	groups, err := a.groups(r)
	if err != nil {
		return err
	}
	f.GroupIDs = visible
	if path := q.Get("group"); path != "" {
		g, err := a.resolveGroup(r, path)
		if err != nil {
			return errcode.New(errcode.Invalid, "group filter: %s", errcode.Message(err))
		}
		var want []string
		switch q.Get("recursive") {
		case "", "true", "1":
			want = groups.Descendants(g.ID)
		case "false", "0":
			want = []string{g.ID}
		default:
			return errcode.New(errcode.Invalid, "recursive must be true or false")
		}
		f.GroupIDs = intersect(want, visible)
	}
	cs, total, err := a.cfg.Store.ListComputers(r.Context(), f)
	if err != nil {
		return err
	}
	now := a.cfg.Now()
	items := make([]computerJSON, 0, len(cs))
	for _, c := range cs {
		items = append(items, a.computerView(c, groups, now))
	}
	writeJSON(w, http.StatusOK, list(items, total))
	return nil
}

const recentEvents = 20

func (a *API) getComputer(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	c, err := a.computerFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	groups, err := a.groups(r)
	if err != nil {
		return err
	}
	secs, err := a.cfg.Store.InventorySections(ctx, c.ID)
	if err != nil {
		return err
	}
	evs, _, err := a.cfg.Store.ComputerEvents(ctx, c.ID, store.EventFilter{Limit: recentEvents})
	if err != nil {
		return err
	}
	tags, err := a.cfg.Store.ComputerTags(ctx, c.ID)
	if err != nil {
		return err
	}
	dyn, err := a.cfg.Store.ComputerDynamicGroups(ctx, c.ID)
	if err != nil {
		return err
	}
	d := computerDetail{
		computerJSON:        a.computerView(c, groups, a.cfg.Now()),
		HardwareFingerprint: c.HardwareFingerprint,
		Inventory:           map[string]json.RawMessage{},
		InventoryUpdatedAt:  map[string]*string{},
	}
	if d.RecentEvents, err = a.events(r, c, evs); err != nil {
		return err
	}
	for _, s := range secs {
		d.Inventory[s.Section] = rawOr(s.Data, "{}")
		d.InventoryUpdatedAt[s.Section] = timeJSON(s.UpdatedAt)
	}
	d.Tags = tags
	d.DynamicGroups = a.visibleDynGroups(r, dyn)
	writeETag(w, c.Version)
	writeJSON(w, http.StatusOK, d)
	return nil
}

// events are c's events as the caller may see them. Reading a computer
// shows that its events happened; what a detection event says needs read
// on detections there, and what a task event says (a command's output)
// needs read on the run's task, as /detections and /task-runs ask.
func (a *API) events(r *http.Request, c *store.Computer, evs []store.Event) ([]eventJSON, error) {
	tree, err := a.groups(r)
	if err != nil {
		return nil, err
	}
	p := principal(r).Permissions
	detections := p.Allows(authz.Detections, authz.Read, c.GroupID, tree)
	taskVisible := map[string]bool{} // by run id
	out := make([]eventJSON, 0, len(evs))
	for _, e := range evs {
		data := json.RawMessage(e.Data)
		if len(data) == 0 {
			data = json.RawMessage("{}")
		}
		v := eventJSON{ID: e.ID, Type: e.Type, OccurredAt: timeJSON(e.OccurredAt), ReceivedAt: timeJSON(e.ReceivedAt), Data: data}
		switch {
		case strings.HasPrefix(e.Type, "detection.") && !detections:
			v.Withheld = "you need read on detections in the computer's group"
		case strings.HasPrefix(e.Type, "task."):
			var ref struct {
				RunID string `json:"run_id"`
			}
			_ = json.Unmarshal(data, &ref)
			ok, seen := taskVisible[ref.RunID]
			if !seen {
				if ok, err = a.runTaskReadable(r, ref.RunID, p, tree); err != nil {
					return nil, err
				}
				taskVisible[ref.RunID] = ok
			}
			if !ok {
				v.Withheld = "you need read on the run's task"
			}
		}
		if v.Withheld != "" {
			v.Data = json.RawMessage("{}")
		}
		out = append(out, v)
	}
	return out, nil
}

// runTaskReadable reports whether p may read the task of run id (false
// when the run or its task no longer exists).
func (a *API) runTaskReadable(r *http.Request, id string, p *authz.Permissions, tree *store.GroupTree) (bool, error) {
	if id == "" {
		return false, nil
	}
	run, err := a.cfg.Store.RunByID(r.Context(), id)
	if errcode.Of(err) == errcode.NotFound {
		return false, nil
	} else if err != nil {
		return false, err
	}
	t, err := a.cfg.Store.TaskByID(r.Context(), run.TaskID)
	if errcode.Of(err) == errcode.NotFound {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return p.Allows(authz.Tasks, authz.Read, t.GroupID, tree), nil
}

// listComputerEvents: GET /api/v1/computers/{id}/events?type=&limit=&offset=
func (a *API) listComputerEvents(w http.ResponseWriter, r *http.Request) error {
	limit, offset, err := page(r)
	if err != nil {
		return err
	}
	c, err := a.computerFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	typ := r.URL.Query().Get("type")
	if len(typ) > 64 {
		return errcode.New(errcode.Invalid, "type filter longer than 64 bytes")
	}
	evs, total, err := a.cfg.Store.ComputerEvents(r.Context(), c.ID, store.EventFilter{Type: typ, Limit: limit, Offset: offset})
	if err != nil {
		return err
	}
	views, err := a.events(r, c, evs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list(views, total))
	return nil
}

func (a *API) wakeComputer(w http.ResponseWriter, r *http.Request) error {
	c, err := a.computerFor(r, r.PathValue("id"), authz.Use)
	if err != nil {
		return err
	}
	auditObject(r, c.ID, c.Name)
	id, err := a.cfg.Presence.Wake(c.ID, "requested by "+principal(r).Username)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"wakeup_id": id})
	return nil
}

type wakeManyRequest struct {
	ComputerIDs []string `json:"computer_ids"`
	Group       string   `json:"group"`     // static group path; with recursive (default true) its subgroups too
	Recursive   *bool    `json:"recursive"` // default true
}

// wakeComputers: POST /api/v1/computers/wakeup — wake a list of computers or
// a whole static group; the pushes are paced by the server.
func (a *API) wakeComputers(w http.ResponseWriter, r *http.Request) error {
	var req wakeManyRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if (len(req.ComputerIDs) == 0) == (req.Group == "") {
		return errcode.New(errcode.Invalid, "give either computer_ids or group")
	}
	if len(req.ComputerIDs) > store.MaxLimit {
		return errcode.New(errcode.Invalid, "at most %d computer_ids; wake a group for more", store.MaxLimit)
	}
	ids := sortedCopy(req.ComputerIDs)
	if req.Group != "" {
		groups, err := a.groups(r)
		if err != nil {
			return err
		}
		g, err := a.resolveGroup(r, req.Group)
		if err != nil {
			state(r).checked = true
			return err
		}
		auditObject(r, g.ID, g.Path)
		if err := a.allowObject(r, authz.Computers, authz.Use, g.ID, "static group"); err != nil {
			return err
		}
		gids := []string{g.ID}
		if req.Recursive == nil || *req.Recursive {
			gids = groups.Descendants(g.ID)
		}
		usable, err := a.scope(r, authz.Computers, authz.Use)
		if err != nil {
			return err
		}
		if ids, err = a.cfg.Store.ComputerIDs(r.Context(), intersect(gids, usable)); err != nil {
			return err
		}
	} else {
		for _, id := range ids {
			if _, err := a.computerFor(r, id, authz.Use); err != nil {
				return err
			}
		}
	}
	n := a.cfg.Presence.WakeMany(ids, "requested by "+principal(r).Username)
	writeJSON(w, http.StatusAccepted, map[string]int{"requested": len(ids), "connected": n})
	return nil
}

func (a *API) revokeComputer(w http.ResponseWriter, r *http.Request) error {
	c, err := a.computerFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, c.ID, c.Name)
	if err := a.cfg.Store.RevokeComputer(r.Context(), c.ID, a.cfg.Now()); err != nil {
		return err
	}
	a.cfg.Presence.Disconnect(c.ID)
	a.cfg.Log.Info("computer certificate revoked", "computer", c.ID, "name", c.Name, "by", principal(r).Username)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// computerParam resolves a "computer" filter of a list: a computer id, or
// the exact name of one computer in a group where the caller may read f
// (the list's functionality). An unknown or hidden one is not found (a
// filter that silently matched nothing hid typos); a name several
// computers share asks for the id.
func (a *API) computerParam(r *http.Request, f authz.Functionality, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	if len(v) > 256 {
		return "", errcode.New(errcode.Invalid, "computer filter longer than 256 bytes")
	}
	visible, err := a.scope(r, f, authz.Read)
	if err != nil {
		return "", err
	}
	tree, err := a.groups(r)
	if err != nil {
		return "", err
	}
	if c, err := a.cfg.Store.ComputerByID(r.Context(), v); err == nil {
		if principal(r).Permissions.Allows(f, authz.Read, c.GroupID, tree) {
			return c.ID, nil
		}
	} else if errcode.Of(err) != errcode.NotFound {
		return "", err
	}
	cs, _, err := a.cfg.Store.ListComputers(r.Context(), store.ComputerFilter{ExactName: v, GroupIDs: visible, IncludeRevoked: true, Limit: 2})
	if err != nil {
		return "", err
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	switch len(ids) {
	case 0:
		return "", errcode.New(errcode.NotFound, "computer %q not found", v)
	case 1:
		return ids[0], nil
	}
	return "", errcode.New(errcode.Invalid, "several computers are named %q; give the id", v)
}

// intersect returns the elements of a that are also in b.
func intersect(a, b []string) []string {
	in := make(map[string]bool, len(b))
	for _, x := range b {
		in[x] = true
	}
	out := []string{}
	for _, x := range a {
		if in[x] {
			out = append(out, x)
		}
	}
	return out
}

type moveRequest struct {
	Group   string `json:"group"`   // destination static group path
	Version *int64 `json:"version"` // the computer's version (or If-Match)
}

// moveComputer: POST /api/v1/computers/{id}/move — write on computers in
// both the current and the destination group.
func (a *API) moveComputer(w http.ResponseWriter, r *http.Request) error {
	var req moveRequest
	if err := decode(w, r, &req); err != nil {
		state(r).checked = true
		return err
	}
	c, err := a.computerFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, c.ID, c.Name)
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	if strings.TrimSpace(req.Group) == "" {
		return errcode.New(errcode.Invalid, "group (the destination path) is required")
	}
	tree, err := a.groups(r)
	if err != nil {
		return err
	}
	dest, err := a.resolveGroup(r, req.Group)
	if err != nil {
		return err
	}
	if err := a.allow(r, authz.Computers, authz.Write, dest.ID); err != nil {
		return err
	}
	// Its detections and task history go with it: no right there may widen.
	if err := a.allowNoWidening(r, c.GroupID, dest.ID); err != nil {
		return err
	}
	from, _ := tree.Get(c.GroupID)
	if err := a.cfg.Store.MoveComputer(r.Context(), c.ID, dest.ID, version); err != nil {
		return err
	}
	a.requeue([]string{c.ID}) // its static path, so its policies, changed
	fromPath := c.GroupID
	if from != nil {
		fromPath = from.Path
	}
	auditDiff(r, map[string]string{"group": fromPath}, map[string]string{"group": dest.Path})
	moved, err := a.cfg.Store.ComputerByID(r.Context(), c.ID)
	if err != nil {
		return err
	}
	writeETag(w, moved.Version)
	writeJSON(w, http.StatusOK, a.computerView(moved, tree, a.cfg.Now()))
	return nil
}

type tagRequest struct {
	Tag string `json:"tag"`
}

func (a *API) addTag(w http.ResponseWriter, r *http.Request) error {
	var req tagRequest
	if err := decode(w, r, &req); err != nil {
		state(r).checked = true
		return err
	}
	c, err := a.computerFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, c.ID, c.Name)
	if err := a.cfg.Store.AddTag(r.Context(), c.ID, req.Tag); err != nil {
		return err
	}
	auditDiff(r, nil, map[string]string{"tag": req.Tag})
	tags, err := a.cfg.Store.ComputerTags(r.Context(), c.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string][]string{"tags": tags})
	return nil
}

func (a *API) removeTag(w http.ResponseWriter, r *http.Request) error {
	c, err := a.computerFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, c.ID, c.Name)
	tag := r.PathValue("tag")
	if err := a.cfg.Store.RemoveTag(r.Context(), c.ID, tag); err != nil {
		return err
	}
	auditDiff(r, map[string]string{"tag": tag}, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type tagJSON struct {
	Tag       string `json:"tag"`
	Computers int    `json:"computers"`
}

// listTags: GET /api/v1/tags — tags on the computers the caller can see.
func (a *API) listTags(w http.ResponseWriter, r *http.Request) error {
	visible, err := a.scope(r, authz.Computers, authz.Read)
	if err != nil {
		return err
	}
	tags, err := a.cfg.Store.Tags(r.Context(), visible)
	if err != nil {
		return err
	}
	items := make([]tagJSON, 0, len(tags))
	for _, t := range tags {
		items = append(items, tagJSON{t.Tag, t.Computers})
	}
	writeJSON(w, http.StatusOK, list(items, len(items)))
	return nil
}
