package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

type detectionStore interface {
	ListDetections(ctx context.Context, f store.DetectionFilter) ([]*store.Detection, int, error)
	DetectionByID(ctx context.Context, id string) (*store.Detection, error)
	SetDetectionState(ctx context.Context, id, state, by string, now time.Time) error
}

// detectionFor loads a detection and checks level on detections in its
// computer's group.
func (a *API) detectionFor(r *http.Request, id string, l authz.Level) (*store.Detection, *store.Computer, error) {
	d, err := a.cfg.Store.DetectionByID(r.Context(), id)
	if err != nil {
		state(r).checked = true
		return nil, nil, err
	}
	c, err := a.cfg.Store.ComputerByID(r.Context(), d.ComputerID)
	if err != nil {
		state(r).checked = true
		return nil, nil, err
	}
	if err := a.allowObject(r, authz.Detections, l, c.GroupID, "detection"); err != nil {
		return nil, nil, err
	}
	return d, c, nil
}

type detectionJSON struct {
	ID            string          `json:"id"`
	Computer      computerRef     `json:"computer"`
	OccurredAt    *string         `json:"occurred_at"`
	ReceivedAt    *string         `json:"received_at"`
	Signature     string          `json:"signature"`
	Path          string          `json:"path"`
	Kind          string          `json:"kind"`
	Action        string          `json:"action"`
	SHA256        string          `json:"sha256,omitempty"`
	EngineVersion int64           `json:"engine_version"`
	State         string          `json:"state"`
	ResolvedBy    string          `json:"resolved_by,omitempty"`
	ResolvedAt    *string         `json:"resolved_at"`
	Occurrences   int64           `json:"occurrences"`  // times found while unresolved
	LastSeenAt    *string         `json:"last_seen_at"` // when last found
	Details       json.RawMessage `json:"details"`
}

type computerRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func detectionView(d *store.Detection, name string) detectionJSON {
	return detectionJSON{
		ID: d.ID, Computer: computerRef{ID: d.ComputerID, Name: name}, OccurredAt: timeJSON(d.OccurredAt), ReceivedAt: timeJSON(d.ReceivedAt),
		Signature: d.Signature, Path: d.Path, Kind: d.Kind, Action: d.Action, SHA256: d.SHA256, EngineVersion: d.EngineVersion,
		State: d.State, ResolvedBy: d.ResolvedBy, ResolvedAt: timeJSON(d.ResolvedAt), Occurrences: d.Occurrences, LastSeenAt: timeJSON(d.LastSeenAt),
		Details: rawOr(d.Data, "{}"),
	}
}

func timeParam(q, name string) (time.Time, error) {
	if q == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, q)
	if err != nil {
		return time.Time{}, errcode.New(errcode.Invalid, "%s must be an RFC 3339 time like 2026-01-31T12:00:00Z", name)
	}
	return t, nil
}

// listDetections: GET /api/v1/detections?computer=&group=&recursive=&state=&name=&since=&until=&limit=&offset=
func (a *API) listDetections(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	visible, err := a.scope(r, authz.Detections, authz.Read)
	if err != nil {
		return err
	}
	limit, offset, err := page(r)
	if err != nil {
		return err
	}
	f := store.DetectionFilter{GroupIDs: visible, State: q.Get("state"), Signature: q.Get("name"), Limit: limit, Offset: offset}
	if len(f.Signature) > 256 {
		return errcode.New(errcode.Invalid, "filter value too long")
	}
	if f.ComputerID, err = a.computerParam(r, authz.Detections, q.Get("computer")); err != nil {
		return err
	}
	if f.Since, err = timeParam(q.Get("since"), "since"); err != nil {
		return err
	}
	if f.Until, err = timeParam(q.Get("until"), "until"); err != nil {
		return err
	}
	if path := q.Get("group"); path != "" {
		groups, err := a.groups(r)
		if err != nil {
			return err
		}
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
	ds, total, err := a.cfg.Store.ListDetections(r.Context(), f)
	if err != nil {
		return err
	}
	names := map[string]string{}
	items := make([]detectionJSON, 0, len(ds))
	for _, d := range ds {
		if _, ok := names[d.ComputerID]; !ok {
			if c, err := a.cfg.Store.ComputerByID(r.Context(), d.ComputerID); err == nil {
				names[d.ComputerID] = c.Name
			}
		}
		items = append(items, detectionView(d, names[d.ComputerID]))
	}
	writeJSON(w, http.StatusOK, list(items, total))
	return nil
}

func (a *API) getDetection(w http.ResponseWriter, r *http.Request) error {
	d, c, err := a.detectionFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, detectionView(d, c.Name))
	return nil
}

func (a *API) setDetectionState(newState string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		d, c, err := a.detectionFor(r, r.PathValue("id"), authz.Write)
		if err != nil {
			return err
		}
		auditObject(r, d.ID, d.Signature+" on "+c.Name)
		if err := a.cfg.Store.SetDetectionState(r.Context(), d.ID, newState, principal(r).Username, a.cfg.Now()); err != nil {
			return err
		}
		auditDiff(r, map[string]string{"state": d.State}, map[string]string{"state": newState})
		updated, err := a.cfg.Store.DetectionByID(r.Context(), d.ID)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, detectionView(updated, c.Name))
		return nil
	}
}
