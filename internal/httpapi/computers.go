package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

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
	UnresolvedDetections int `json:"unresolved_detections"`
}

type computerDetail struct {
	computerJSON
	HardwareFingerprint string                     `json:"hardware_fingerprint"`
	Inventory           map[string]json.RawMessage `json:"inventory"`
	InventoryUpdatedAt  map[string]*string         `json:"inventory_updated_at"`
	RecentEvents        []eventJSON                `json:"recent_events"`
}

type eventJSON struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	OccurredAt *string         `json:"occurred_at"`
	ReceivedAt *string         `json:"received_at"`
	Data       json.RawMessage `json:"data"`
}

// Connection warning levels for computers that have not connected for a
// while.
const (
	warnNone     = "none"
	warnWarning  = "warning"
	warnCritical = "critical"
)

func (a *API) computerView(c *store.Computer, groups *store.GroupTree, now time.Time) computerJSON {
	status, last, since := c.Status, c.LastSeen, c.ConnectedSince
	if a.cfg.Presence != nil {
		// The hub knows the truth of this server's connections right now;
		// the row may lag by one presence flush.
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
	return computerJSON{
		ID: c.ID, Name: c.Name, Hostname: c.Hostname, Instance: c.Instance, Status: status,
		LastSeen: timeJSON(last), ConnectedSince: timeJSON(since), ConnectionWarning: warning,
		OS: osJSON{Name: c.OSName, Version: c.OSVersion}, Platform: c.Platform, AgentVersion: c.AgentVersion,
		CloneSuspected: c.CloneSuspected, CloneReason: c.CloneReason, Group: g,
		EnrolledAt: timeJSON(c.EnrolledAt), Revoked: !c.RevokedAt.IsZero(), UnresolvedDetections: c.UnresolvedDetections,
	}
}

// listComputers: GET /api/v1/computers?name=&status=&group=&recursive=&sort=&limit=&offset=
func (a *API) listComputers(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, offset, err := page(r)
	if err != nil {
		return err
	}
	f := store.ComputerFilter{Name: q.Get("name"), Status: q.Get("status"), Sort: q.Get("sort"), Limit: limit, Offset: offset}
	if len(f.Name) > 256 {
		return errcode.New(errcode.Invalid, "name filter longer than 256 bytes")
	}
	groups, err := a.cfg.Store.Groups(r.Context())
	if err != nil {
		return err
	}
	if path := q.Get("group"); path != "" {
		g, err := groups.Resolve(path)
		if err != nil {
			return errcode.New(errcode.Invalid, "group filter: %s", errcode.Message(err))
		}
		switch q.Get("recursive") {
		case "", "true", "1":
			f.GroupIDs = groups.Descendants(g.ID)
		case "false", "0":
			f.GroupIDs = []string{g.ID}
		default:
			return errcode.New(errcode.Invalid, "recursive must be true or false")
		}
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
	c, err := a.cfg.Store.ComputerByID(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	groups, err := a.cfg.Store.Groups(ctx)
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
	d := computerDetail{
		computerJSON:        a.computerView(c, groups, a.cfg.Now()),
		HardwareFingerprint: c.HardwareFingerprint,
		Inventory:           map[string]json.RawMessage{},
		InventoryUpdatedAt:  map[string]*string{},
		RecentEvents:        events(evs),
	}
	for _, s := range secs {
		d.Inventory[s.Section] = json.RawMessage(s.Data)
		d.InventoryUpdatedAt[s.Section] = timeJSON(s.UpdatedAt)
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func events(evs []store.Event) []eventJSON {
	out := make([]eventJSON, 0, len(evs))
	for _, e := range evs {
		data := json.RawMessage(e.Data)
		if len(data) == 0 {
			data = json.RawMessage("{}")
		}
		out = append(out, eventJSON{ID: e.ID, Type: e.Type, OccurredAt: timeJSON(e.OccurredAt), ReceivedAt: timeJSON(e.ReceivedAt), Data: data})
	}
	return out
}

// listComputerEvents: GET /api/v1/computers/{id}/events?type=&limit=&offset=
func (a *API) listComputerEvents(w http.ResponseWriter, r *http.Request) error {
	limit, offset, err := page(r)
	if err != nil {
		return err
	}
	c, err := a.cfg.Store.ComputerByID(r.Context(), r.PathValue("id"))
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
	writeJSON(w, http.StatusOK, list(events(evs), total))
	return nil
}

func (a *API) wakeComputer(w http.ResponseWriter, r *http.Request) error {
	c, err := a.cfg.Store.ComputerByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
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
	ids := req.ComputerIDs
	if req.Group != "" {
		groups, err := a.cfg.Store.Groups(r.Context())
		if err != nil {
			return err
		}
		g, err := groups.Resolve(req.Group)
		if err != nil {
			return err
		}
		gids := []string{g.ID}
		if req.Recursive == nil || *req.Recursive {
			gids = groups.Descendants(g.ID)
		}
		if ids, err = a.cfg.Store.ComputerIDs(r.Context(), gids); err != nil {
			return err
		}
	}
	n := a.cfg.Presence.WakeMany(ids, "requested by "+principal(r).Username)
	writeJSON(w, http.StatusAccepted, map[string]int{"requested": len(ids), "connected": n})
	return nil
}

func (a *API) revokeComputer(w http.ResponseWriter, r *http.Request) error {
	c, err := a.cfg.Store.ComputerByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := a.cfg.Store.RevokeComputer(r.Context(), c.ID, a.cfg.Now()); err != nil {
		return err
	}
	a.cfg.Presence.Disconnect(c.ID)
	a.cfg.Log.Info("computer certificate revoked", "computer", c.ID, "name", c.Name, "by", principal(r).Username)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
