package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/tasks"
)

type taskStore interface {
	Tasks(ctx context.Context) ([]*store.TaskRow, error)
	TaskByID(ctx context.Context, id string) (*store.TaskRow, error)
	CreateTask(ctx context.Context, t *store.TaskRow) error
	UpdateTask(ctx context.Context, t *store.TaskRow) error
	DeleteTask(ctx context.Context, id string, version int64) error
	TaskTriggers(ctx context.Context, taskID string) ([]*store.TriggerRow, error)
	TriggerByID(ctx context.Context, id string) (*store.TriggerRow, error)
	CreateTrigger(ctx context.Context, t *store.TriggerRow) error
	UpdateTrigger(ctx context.Context, t *store.TriggerRow) error
	DeleteTrigger(ctx context.Context, id string, version int64) error
	CreateRuns(ctx context.Context, runs []*store.TaskRun) error
	RunByID(ctx context.Context, id string) (*store.TaskRun, error)
	ListRuns(ctx context.Context, f store.RunFilter) ([]*store.TaskRun, int, error)
	RunCounts(ctx context.Context, taskID string) (map[string]int, error)
	CancelRun(ctx context.Context, id string, now time.Time) error
}

// Scheduler is told about new triggers and runs so they start without
// waiting for its next tick (internal/scheduler.Scheduler).
type Scheduler interface {
	Kick()
}

// RunCanceller tells a connected agent that runs it has were cancelled
// (the agent endpoint's hub).
type RunCanceller interface {
	CancelRuns(computerID string, runIDs []string)
}

// Limits of the task API.
const (
	maxTasksPerList    = 10000
	maxTriggersPerTask = 100
)

type taskJSON struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Type        string          `json:"type"`
	Server      bool            `json:"server"`
	Params      json.RawMessage `json:"params"`
	Group       groupRef        `json:"group"`
	CreatedBy   string          `json:"created_by"`
	CreatedAt   *string         `json:"created_at"`
	UpdatedAt   *string         `json:"updated_at"`
	Version     int64           `json:"version"`
	Runs        map[string]int  `json:"runs,omitempty"` // by state
	Triggers    []triggerJSON   `json:"triggers,omitempty"`
}

func taskView(t *store.TaskRow, tree *store.GroupTree) taskJSON {
	g := groupRef{ID: t.GroupID}
	if gr, ok := tree.Get(t.GroupID); ok {
		g.Path = gr.Path
	}
	return taskJSON{ID: t.ID, Name: t.Name, Description: t.Description, Type: t.Type, Server: tasks.IsServer(tasks.Type(t.Type)),
		Params: rawOr(t.Params, "{}"), Group: g, CreatedBy: t.CreatedBy, CreatedAt: timeJSON(t.CreatedAt), UpdatedAt: timeJSON(t.UpdatedAt),
		Version: t.Version}
}

type triggerJSON struct {
	ID          string          `json:"id"`
	TaskID      string          `json:"task_id"`
	Trigger     json.RawMessage `json:"trigger"`
	Targets     []tasks.Target  `json:"targets"`
	Enabled     bool            `json:"enabled"`
	CreatedBy   string          `json:"created_by"`
	CreatedAt   *string         `json:"created_at"`
	NextFireAt  *string         `json:"next_fire_at"`
	LastFiredAt *string         `json:"last_fired_at"`
	Version     int64           `json:"version"`
}

func triggerView(t *store.TriggerRow) triggerJSON {
	ts, _ := tasks.ParseTargets(t.Targets)
	if ts == nil {
		ts = []tasks.Target{}
	}
	return triggerJSON{ID: t.ID, TaskID: t.TaskID, Trigger: rawOr(t.Spec, "{}"), Targets: ts, Enabled: t.Enabled, CreatedBy: t.CreatedBy,
		CreatedAt: timeJSON(t.CreatedAt), NextFireAt: timeJSON(t.NextFireAt), LastFiredAt: timeJSON(t.LastFiredAt), Version: t.Version}
}

type runJSON struct {
	ID          string          `json:"id"`
	TaskID      string          `json:"task_id"`
	TriggerID   string          `json:"trigger_id"`
	Computer    *groupRef       `json:"computer"` // null for server runs
	Type        string          `json:"type"`
	Params      json.RawMessage `json:"params"`
	State       string          `json:"state"`
	Attempt     int             `json:"attempt"`
	CreatedAt   *string         `json:"created_at"`
	NotBefore   *string         `json:"not_before"`
	ExpiresAt   *string         `json:"expires_at"`
	DeliveredAt *string         `json:"delivered_at"`
	StartedAt   *string         `json:"started_at"`
	FinishedAt  *string         `json:"finished_at"`
	ExitCode    *int            `json:"exit_code"`
	Output      string          `json:"output"`
	Error       string          `json:"error"`
	Attachment  bool            `json:"attachment"`
}

func (a *API) runView(r *http.Request, x *store.TaskRun, names map[string]string) runJSON {
	v := runJSON{ID: x.ID, TaskID: x.TaskID, TriggerID: x.TriggerID, Type: x.Type, Params: rawOr(x.Params, "{}"), State: x.State,
		Attempt: x.Attempt, CreatedAt: timeJSON(x.CreatedAt), NotBefore: timeJSON(x.NotBefore), ExpiresAt: timeJSON(x.ExpiresAt),
		DeliveredAt: timeJSON(x.DeliveredAt), StartedAt: timeJSON(x.StartedAt), FinishedAt: timeJSON(x.FinishedAt), ExitCode: x.ExitCode,
		Output: x.Output, Error: x.Error, Attachment: x.Attachment != ""}
	if x.ComputerID != "" {
		name, ok := names[x.ComputerID]
		if !ok {
			if c, err := a.cfg.Store.ComputerByID(r.Context(), x.ComputerID); err == nil {
				name = c.Name
			}
			if names != nil {
				names[x.ComputerID] = name
			}
		}
		v.Computer = &groupRef{ID: x.ComputerID, Path: name}
	}
	return v
}

// taskFor loads a task the caller may act on at level l.
func (a *API) taskFor(r *http.Request, id string, l authz.Level) (*store.TaskRow, error) {
	t, err := a.cfg.Store.TaskByID(r.Context(), id)
	if err != nil {
		state(r).checked = true
		return nil, err
	}
	if err := a.allowObject(r, authz.Tasks, l, t.GroupID, "task"); err != nil {
		return nil, err
	}
	return t, nil
}

// taskTypes: GET /api/v1/tasks/types — task types with their parameters,
// trigger kinds and events, for forms.
func (a *API) taskTypes(w http.ResponseWriter, r *http.Request) error {
	self(r) // documentation of the task model
	types := make([]tasks.TypeInfo, len(tasks.Types))
	for i, ti := range tasks.Types {
		if ti.Params == nil {
			ti.Params = []tasks.ParamInfo{}
		}
		types[i] = ti
	}
	writeJSON(w, http.StatusOK, map[string]any{"types": types,
		"trigger_kinds": []tasks.Kind{tasks.ASAP, tasks.Once, tasks.Daily, tasks.Weekly, tasks.Monthly, tasks.Yearly, tasks.Cron,
			tasks.JoinedDynamic, tasks.OnEvent, tasks.ServerStarted},
		"events":       tasks.Events,
		"target_types": []string{tasks.TargetComputer, tasks.TargetStaticGroup, tasks.TargetDynamicGroup},
		"run_states": []string{store.RunPlanned, store.RunDelivered, store.RunRunning, store.RunSucceeded, store.RunFailed, store.RunExpired,
			store.RunCancelled}})
	return nil
}

func (a *API) listTasks(w http.ResponseWriter, r *http.Request) error {
	visible, err := a.scope(r, authz.Tasks, authz.Read)
	if err != nil {
		return err
	}
	in := map[string]bool{}
	for _, g := range visible {
		in[g] = true
	}
	all, err := a.cfg.Store.Tasks(r.Context())
	if err != nil {
		return err
	}
	typ := r.URL.Query().Get("type")
	tree, _ := a.groups(r)
	items := []taskJSON{}
	for _, t := range all {
		if !in[t.GroupID] || (typ != "" && t.Type != typ) {
			continue
		}
		v := taskView(t, tree)
		if v.Runs, err = a.cfg.Store.RunCounts(r.Context(), t.ID); err != nil {
			return err
		}
		items = append(items, v)
		if len(items) == maxTasksPerList {
			break
		}
	}
	writeJSON(w, http.StatusOK, list2(items))
	return nil
}

func (a *API) getTask(w http.ResponseWriter, r *http.Request) error {
	t, err := a.taskFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	v := taskView(t, tree)
	if v.Runs, err = a.cfg.Store.RunCounts(r.Context(), t.ID); err != nil {
		return err
	}
	trs, err := a.cfg.Store.TaskTriggers(r.Context(), t.ID)
	if err != nil {
		return err
	}
	v.Triggers = []triggerJSON{}
	for _, tr := range trs {
		v.Triggers = append(v.Triggers, triggerView(tr))
	}
	writeETag(w, t.Version)
	writeJSON(w, http.StatusOK, v)
	return nil
}

type taskRequest struct {
	Name        *string          `json:"name"`
	Description *string          `json:"description"`
	Type        *string          `json:"type"`
	Params      *json.RawMessage `json:"params"`
	Group       *string          `json:"group"` // path; default the creator's home group
	Version     *int64           `json:"version"`
}

func (a *API) applyTask(r *http.Request, t *store.TaskRow, req taskRequest) error {
	if req.Name != nil {
		n := *req.Name
		if strings.TrimSpace(n) == "" || n != strings.TrimSpace(n) || len(n) > 128 {
			return errcode.New(errcode.Invalid, "name must be 1-128 characters without surrounding spaces")
		}
		t.Name = n
	}
	if req.Description != nil {
		if len(*req.Description) > 1024 {
			return errcode.New(errcode.Invalid, "description longer than 1024 bytes")
		}
		t.Description = *req.Description
	}
	if req.Group != nil {
		g, err := a.resolveGroup(r, *req.Group)
		if err != nil {
			return err
		}
		t.GroupID = g.ID
	}
	if req.Params != nil || t.Params == "" {
		var raw json.RawMessage
		if req.Params != nil {
			raw = *req.Params
		}
		p, err := tasks.ParseParams(tasks.Type(t.Type), raw)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(p)
		t.Params = string(b)
	}
	return a.allowServerTask(r, t)
}

// allowServerTask: a server task acts on the computers of its "group"
// parameter, so its author needs write on computers there.
func (a *API) allowServerTask(r *http.Request, t *store.TaskRow) error {
	if !tasks.IsServer(tasks.Type(t.Type)) {
		return nil
	}
	var p map[string]any
	_ = json.Unmarshal([]byte(t.Params), &p)
	group, _ := p["group"].(string)
	g, err := a.resolveGroup(r, group)
	if err != nil {
		return errcode.New(errcode.Invalid, "%s.group: %s", t.Type, errcode.Message(err))
	}
	if group != g.Path { // given by id: the scheduler reads a path
		p["group"] = g.Path
		b, _ := json.Marshal(p)
		t.Params = string(b)
	}
	return a.allow(r, authz.Computers, authz.Write, g.ID)
}

// allowTriggersOf is the check for changing what a client task does: its
// triggers run the new parameters on their targets, so the caller needs use
// on computers at every target that still exists (what a new trigger asks).
// Run-now triggers that fired are history and are not asked about.
func (a *API) allowTriggersOf(r *http.Request, t *store.TaskRow) error {
	if tasks.IsServer(tasks.Type(t.Type)) {
		return nil // allowServerTask checked its group parameter
	}
	trs, err := a.cfg.Store.TaskTriggers(r.Context(), t.ID)
	if err != nil {
		return err
	}
	tree, err := a.groups(r)
	if err != nil {
		return err
	}
	var dyn map[string]*store.DynamicGroup
	dynRoot := func(id string) (string, bool, error) {
		if dyn == nil {
			var err error
			if dyn, err = a.dynIndex(r); err != nil {
				return "", false, err
			}
		}
		g, ok := dyn[id]
		if !ok {
			return "", false, nil
		}
		return rootOf(g, dyn), true, nil
	}
	refused := errcode.New(errcode.Forbidden, "a trigger of this task runs it on computers you may not use; a change to its parameters would run there too (delete that trigger, or ask someone who may)")
	for _, tr := range trs {
		spec, err := tasks.ParseTrigger(tr.Spec)
		if err != nil {
			return err
		}
		if spec.Kind == tasks.ASAP && !tr.LastFiredAt.IsZero() {
			continue
		}
		var groups []string
		if spec.Kind == tasks.JoinedDynamic {
			if root, ok, err := dynRoot(spec.DynamicGroupID); err != nil {
				return err
			} else if ok {
				groups = append(groups, root)
			}
		}
		ts, err := tasks.ParseTargets(tr.Targets)
		if err != nil {
			return err
		}
		for _, x := range ts {
			switch x.Type {
			case tasks.TargetStaticGroup:
				if _, ok := tree.Get(x.ID); ok { // a group deleted before its triggers were cleaned runs nothing
					groups = append(groups, x.ID)
				}
			case tasks.TargetDynamicGroup:
				if root, ok, err := dynRoot(x.ID); err != nil {
					return err
				} else if ok {
					groups = append(groups, root)
				}
			case tasks.TargetComputer:
				c, err := a.cfg.Store.ComputerByID(r.Context(), x.ID)
				if errcode.Of(err) == errcode.NotFound {
					continue
				} else if err != nil {
					return err
				}
				if c.RevokedAt.IsZero() {
					groups = append(groups, c.GroupID)
				}
			}
		}
		for _, g := range groups {
			if a.allow(r, authz.Computers, authz.Use, g) != nil {
				return refused
			}
		}
	}
	return nil
}

// createTask: POST /api/v1/tasks — write on tasks where it lives.
func (a *API) createTask(w http.ResponseWriter, r *http.Request) error {
	var req taskRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Name == nil || req.Type == nil {
		return errcode.New(errcode.Invalid, "name and type are required")
	}
	auditObject(r, "", *req.Name)
	t := &store.TaskRow{ID: uuid.NewString(), Type: *req.Type, GroupID: principal(r).HomeGroupID, CreatedBy: principal(r).Username}
	if err := a.applyTask(r, t, req); err != nil {
		return err
	}
	if err := a.allow(r, authz.Tasks, authz.Write, t.GroupID); err != nil {
		return err
	}
	if err := a.cfg.Store.CreateTask(r.Context(), t); err != nil {
		return err
	}
	tree, _ := a.groups(r)
	v := taskView(t, tree)
	auditObject(r, t.ID, t.Name)
	auditDiff(r, nil, v)
	writeETag(w, t.Version)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// updateTask: PATCH /api/v1/tasks/{id} — runs already planned keep the
// parameters they were planned with. New parameters need use on computers
// wherever the task's triggers run it (allowTriggersOf).
func (a *API) updateTask(w http.ResponseWriter, r *http.Request) error {
	var req taskRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	t, err := a.taskFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, t.ID, t.Name)
	if req.Type != nil && *req.Type != t.Type {
		return errcode.New(errcode.Invalid, "a task's type cannot change")
	}
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	before := taskView(t, tree)
	params := t.Params
	if err := a.applyTask(r, t, req); err != nil {
		return err
	}
	if err := a.allow(r, authz.Tasks, authz.Write, t.GroupID); err != nil {
		return err
	}
	if t.Params != params {
		if err := a.allowTriggersOf(r, t); err != nil {
			return err
		}
	}
	t.Version = version
	if err := a.cfg.Store.UpdateTask(r.Context(), t); err != nil {
		return err
	}
	after := taskView(t, tree)
	auditDiff(r, before, after)
	writeETag(w, t.Version)
	writeJSON(w, http.StatusOK, after)
	return nil
}

// deleteTask: DELETE /api/v1/tasks/{id}?version=N — with its triggers and
// runs.
func (a *API) deleteTask(w http.ResponseWriter, r *http.Request) error {
	t, err := a.taskFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, t.ID, t.Name)
	version, err := deleteVersion(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.DeleteTask(r.Context(), t.ID, version); err != nil {
		return err
	}
	tree, _ := a.groups(r)
	auditDiff(r, taskView(t, tree), nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listTriggers(w http.ResponseWriter, r *http.Request) error {
	t, err := a.taskFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	trs, err := a.cfg.Store.TaskTriggers(r.Context(), t.ID)
	if err != nil {
		return err
	}
	items := []triggerJSON{}
	for _, tr := range trs {
		items = append(items, triggerView(tr))
	}
	writeJSON(w, http.StatusOK, list2(items))
	return nil
}

type targetRequest struct {
	Type string `json:"type"`
	ID   string `json:"id"`   // computer or dynamic group id; static group id
	Path string `json:"path"` // static group path instead of id
}

type triggerRequest struct {
	Trigger *json.RawMessage `json:"trigger"`
	Targets *[]targetRequest `json:"targets"`
	Enabled *bool            `json:"enabled"`
	Version *int64           `json:"version"`
}

// targets resolves and authorizes a trigger's targets: use on computers in
// the static group each target's computers live in (a dynamic group's:
// the static group it sits under).
func (a *API) targets(r *http.Request, in []targetRequest) ([]tasks.Target, error) {
	if len(in) > tasks.MaxTargets {
		return nil, errcode.New(errcode.Invalid, "at most %d targets", tasks.MaxTargets)
	}
	var dyn map[string]*store.DynamicGroup
	out := []tasks.Target{}
	for _, t := range in {
		var id, group string
		switch t.Type {
		case tasks.TargetStaticGroup:
			var g *store.Group
			var err error
			if t.Path != "" {
				g, err = a.resolveGroup(r, t.Path)
			} else {
				tree, terr := a.groups(r)
				if terr != nil {
					return nil, terr
				}
				var ok bool
				if g, ok = tree.Get(t.ID); !ok {
					err = errcode.New(errcode.NotFound, "static group %q not found", t.ID)
				}
			}
			if err != nil {
				return nil, err
			}
			id, group = g.ID, g.ID
		case tasks.TargetDynamicGroup:
			if dyn == nil {
				var err error
				if dyn, err = a.dynIndex(r); err != nil {
					return nil, err
				}
			}
			g, ok := dyn[t.ID]
			if !ok {
				return nil, errcode.New(errcode.NotFound, "dynamic group %q not found", t.ID)
			}
			id, group = g.ID, rootOf(g, dyn)
		case tasks.TargetComputer:
			c, err := a.cfg.Store.ComputerByID(r.Context(), t.ID)
			if err != nil {
				return nil, errcode.New(errcode.NotFound, "computer %q not found", t.ID)
			}
			// Authorized before anything is said of it: a computer the
			// caller may not read is as missing as one that does not exist.
			if err := a.allowObject(r, authz.Computers, authz.Use, c.GroupID, fmt.Sprintf("computer %q", t.ID)); err != nil {
				return nil, err
			}
			if !c.RevokedAt.IsZero() {
				return nil, errcode.New(errcode.Invalid, "computer %s is revoked", c.Name)
			}
			out = append(out, tasks.Target{Type: t.Type, ID: c.ID})
			continue
		default:
			return nil, errcode.New(errcode.Invalid, "target type %q: must be computer, static_group or dynamic_group", t.Type)
		}
		// A hidden one is as missing as one that does not exist.
		if err := a.allowObject(r, authz.Computers, authz.Use, group, fmt.Sprintf("%s %q", strings.ReplaceAll(t.Type, "_", " "), cmp.Or(t.Path, t.ID))); err != nil {
			return nil, err
		}
		out = append(out, tasks.Target{Type: t.Type, ID: id})
	}
	raw, _ := json.Marshal(out)
	return tasks.ParseTargets(string(raw)) // duplicates
}

// checkTrigger validates a trigger for a task and resolves its targets.
func (a *API) checkTrigger(r *http.Request, t *store.TaskRow, rawSpec json.RawMessage, in []targetRequest) (*tasks.Trigger, []tasks.Target, error) {
	spec, err := tasks.ParseTrigger(string(rawSpec))
	if err != nil {
		return nil, nil, err
	}
	server := tasks.IsServer(tasks.Type(t.Type))
	if server {
		switch spec.Kind {
		case tasks.JoinedDynamic, tasks.OnEvent:
			return nil, nil, errcode.New(errcode.Invalid, "a server task runs by the clock or when the server starts, not on computer events")
		}
		if len(in) > 0 {
			return nil, nil, errcode.New(errcode.Invalid, "a server task has no targets: it acts on its group parameter")
		}
		return spec, []tasks.Target{}, nil
	}
	if spec.Kind == tasks.JoinedDynamic {
		dyn, err := a.dynIndex(r)
		if err != nil {
			return nil, nil, err
		}
		g, ok := dyn[spec.DynamicGroupID]
		if !ok {
			return nil, nil, errcode.New(errcode.NotFound, "dynamic group %q not found", spec.DynamicGroupID)
		}
		if err := a.allowObject(r, authz.Computers, authz.Use, rootOf(g, dyn), fmt.Sprintf("dynamic group %q", spec.DynamicGroupID)); err != nil {
			return nil, nil, err
		}
	} else if len(in) == 0 {
		return nil, nil, errcode.New(errcode.Invalid, "targets are required: computers, static groups or dynamic groups the task runs on")
	}
	ts, err := a.targets(r, in)
	if err != nil {
		return nil, nil, err
	}
	return spec, ts, nil
}

func (a *API) now() time.Time { return a.cfg.Now().UTC() }

func nextFire(spec *tasks.Trigger, now time.Time) time.Time {
	if !spec.IsTimed() {
		return time.Time{}
	}
	next, _ := spec.Next(now.Add(-time.Millisecond), now)
	return next
}

func (a *API) kick() {
	if a.cfg.Scheduler != nil {
		a.cfg.Scheduler.Kick()
	}
}

// createTrigger: POST /api/v1/tasks/{id}/triggers — use on the task and on
// computers in every target.
func (a *API) createTrigger(w http.ResponseWriter, r *http.Request) error {
	var req triggerRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	t, err := a.taskFor(r, r.PathValue("id"), authz.Use)
	if err != nil {
		return err
	}
	auditObject(r, t.ID, t.Name)
	if req.Trigger == nil {
		return errcode.New(errcode.Invalid, "trigger is required")
	}
	var in []targetRequest
	if req.Targets != nil {
		in = *req.Targets
	}
	row, err := a.newTrigger(r, t, *req.Trigger, in)
	if err != nil {
		return err
	}
	if req.Enabled != nil {
		row.Enabled = *req.Enabled
	}
	if err := a.cfg.Store.CreateTrigger(r.Context(), row); err != nil {
		return err
	}
	a.kick()
	v := triggerView(row)
	auditDiff(r, nil, map[string]any{"trigger": v})
	writeETag(w, row.Version)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (a *API) newTrigger(r *http.Request, t *store.TaskRow, spec json.RawMessage, in []targetRequest) (*store.TriggerRow, error) {
	trs, err := a.cfg.Store.TaskTriggers(r.Context(), t.ID)
	if err != nil {
		return nil, err
	}
	if tasks.IsServer(tasks.Type(t.Type)) && len(trs) > 0 {
		return nil, errcode.New(errcode.Conflict, "a server task has one trigger; edit or delete the existing one")
	}
	live := 0
	for _, x := range trs { // run-now triggers that fired are history, not limits
		if !(strings.Contains(x.Spec, `"kind":"asap"`) && !x.LastFiredAt.IsZero()) {
			live++
		}
	}
	if live >= maxTriggersPerTask {
		return nil, errcode.New(errcode.Invalid, "a task has at most %d triggers", maxTriggersPerTask)
	}
	parsed, ts, err := a.checkTrigger(r, t, spec, in)
	if err != nil {
		return nil, err
	}
	if err := a.allowServerTask(r, t); err != nil {
		return nil, err
	}
	now := a.now().Truncate(time.Millisecond)
	compact, _ := json.Marshal(parsed)
	traw, _ := json.Marshal(ts)
	return &store.TriggerRow{ID: uuid.NewString(), TaskID: t.ID, Spec: string(compact), Targets: string(traw), Enabled: true,
		CreatedBy: principal(r).Username, CreatedAt: now, NextFireAt: nextFire(parsed, now)}, nil
}

func (a *API) triggerFor(r *http.Request, l authz.Level) (*store.TaskRow, *store.TriggerRow, error) {
	t, err := a.taskFor(r, r.PathValue("id"), l)
	if err != nil {
		return nil, nil, err
	}
	tr, err := a.cfg.Store.TriggerByID(r.Context(), r.PathValue("tid"))
	if err != nil || tr.TaskID != t.ID {
		return nil, nil, errcode.New(errcode.NotFound, "trigger not found")
	}
	return t, tr, nil
}

func (a *API) getTrigger(w http.ResponseWriter, r *http.Request) error {
	_, tr, err := a.triggerFor(r, authz.Read)
	if err != nil {
		return err
	}
	writeETag(w, tr.Version)
	writeJSON(w, http.StatusOK, triggerView(tr))
	return nil
}

// updateTrigger: PATCH /api/v1/tasks/{id}/triggers/{tid} — throttling
// counters start over; the schedule is computed again from now.
func (a *API) updateTrigger(w http.ResponseWriter, r *http.Request) error {
	var req triggerRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	t, tr, err := a.triggerFor(r, authz.Use)
	if err != nil {
		return err
	}
	auditObject(r, tr.ID, t.Name)
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	before := triggerView(tr)
	spec := json.RawMessage(tr.Spec)
	if req.Trigger != nil {
		spec = *req.Trigger
	}
	var in []targetRequest
	if req.Targets != nil {
		in = *req.Targets
	} else {
		for _, x := range before.Targets {
			in = append(in, targetRequest{Type: x.Type, ID: x.ID})
		}
	}
	parsed, ts, err := a.checkTrigger(r, t, spec, in)
	if err != nil {
		return err
	}
	if err := a.allowServerTask(r, t); err != nil {
		return err
	}
	compact, _ := json.Marshal(parsed)
	traw, _ := json.Marshal(ts)
	tr.Spec, tr.Targets = string(compact), string(traw)
	if req.Enabled != nil {
		tr.Enabled = *req.Enabled
	}
	tr.NextFireAt = nextFire(parsed, a.now())
	if parsed.Kind == tasks.ASAP && req.Trigger == nil {
		tr.NextFireAt = time.Time{} // an ASAP trigger fires once, not on every edit
	}
	tr.Version = version
	if err := a.cfg.Store.UpdateTrigger(r.Context(), tr); err != nil {
		return err
	}
	a.kick()
	after := triggerView(tr)
	auditDiff(r, before, after)
	writeETag(w, tr.Version)
	writeJSON(w, http.StatusOK, after)
	return nil
}

func (a *API) deleteTrigger(w http.ResponseWriter, r *http.Request) error {
	t, tr, err := a.triggerFor(r, authz.Use)
	if err != nil {
		return err
	}
	auditObject(r, tr.ID, t.Name)
	version, err := deleteVersion(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.DeleteTrigger(r.Context(), tr.ID, version); err != nil {
		return err
	}
	auditDiff(r, map[string]any{"trigger": triggerView(tr)}, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type runNowRequest struct {
	Targets     []targetRequest `json:"targets"`
	RandomDelay string          `json:"random_delay"`
	Expiry      string          `json:"expiry"`
}

// runTask: POST /api/v1/tasks/{id}/run — run now on targets: an "as soon
// as possible" trigger, kept with the task's history.
func (a *API) runTask(w http.ResponseWriter, r *http.Request) error {
	var req runNowRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	t, err := a.taskFor(r, r.PathValue("id"), authz.Use)
	if err != nil {
		return err
	}
	auditObject(r, t.ID, t.Name)
	spec, _ := json.Marshal(tasks.Trigger{Kind: tasks.ASAP, RandomDelay: req.RandomDelay, Expiry: req.Expiry})
	if tasks.IsServer(tasks.Type(t.Type)) {
		// Run now does not count as the server task's one trigger.
		parsed, _, err := a.checkTrigger(r, t, spec, req.Targets)
		if err != nil {
			return err
		}
		if err := a.allowServerTask(r, t); err != nil {
			return err
		}
		now := a.now().Truncate(time.Millisecond)
		run := &store.TaskRun{ID: uuid.NewString(), TaskID: t.ID, Type: t.Type, Params: t.Params, CreatedAt: now, NotBefore: now,
			ExpiresAt: now.Add(parsed.ExpiryDuration())}
		if err := a.cfg.Store.CreateRuns(r.Context(), []*store.TaskRun{run}); err != nil {
			return err
		}
		a.kick()
		auditDiff(r, nil, map[string]any{"run": run.ID})
		writeJSON(w, http.StatusAccepted, map[string]any{"run": a.runView(r, run, nil)})
		return nil
	}
	row, err := a.newTrigger(r, t, spec, req.Targets)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.CreateTrigger(r.Context(), row); err != nil {
		return err
	}
	a.kick()
	v := triggerView(row)
	auditDiff(r, nil, map[string]any{"trigger": v})
	writeJSON(w, http.StatusAccepted, map[string]any{"trigger": v})
	return nil
}

// listTaskRuns: GET /api/v1/tasks/{id}/runs?state=&computer=&limit=&offset=
// — runs on computers the caller may not read are left out.
func (a *API) listTaskRuns(w http.ResponseWriter, r *http.Request) error {
	t, err := a.taskFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	limit, offset, err := page(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.RunFilter{TaskID: t.ID, State: q.Get("state"), Limit: limit, Offset: offset}
	if f.ComputerID, err = a.computerParam(r, authz.Computers, q.Get("computer")); err != nil {
		return err
	}
	return a.writeRuns(w, r, f)
}

// listComputerRuns: GET /api/v1/computers/{id}/task-runs — the runs of one
// computer, of tasks the caller may read.
func (a *API) listComputerRuns(w http.ResponseWriter, r *http.Request) error {
	c, err := a.cfg.Store.ComputerByID(r.Context(), r.PathValue("id"))
	if err != nil {
		self(r)
		return err
	}
	if err := a.allowObject(r, authz.Computers, authz.Read, c.GroupID, "computer"); err != nil {
		return err
	}
	limit, offset, err := page(r)
	if err != nil {
		return err
	}
	return a.writeRuns(w, r, store.RunFilter{ComputerID: c.ID, State: r.URL.Query().Get("state"), Limit: limit, Offset: offset})
}

// writeRuns lists the runs of f that the caller may see (their task and
// their computer readable): the store filters them, so pages and the total
// count only those.
func (a *API) writeRuns(w http.ResponseWriter, r *http.Request, f store.RunFilter) error {
	var err error
	if f.TaskGroupIDs, err = a.scope(r, authz.Tasks, authz.Read); err != nil {
		return err
	}
	if f.ComputerGroupIDs, err = a.scope(r, authz.Computers, authz.Read); err != nil {
		return err
	}
	f.TaskGroupIDs = nonNil(f.TaskGroupIDs)
	f.ComputerGroupIDs = nonNil(f.ComputerGroupIDs)
	runs, total, err := a.cfg.Store.ListRuns(r.Context(), f)
	if err != nil {
		return err
	}
	names := map[string]string{}
	items := []runJSON{}
	for _, x := range runs {
		items = append(items, a.runView(r, x, names))
	}
	writeJSON(w, http.StatusOK, list(items, total))
	return nil
}

// nonNil turns "no groups" into an empty, not a nil, scope: nil means no
// restriction to the store.
func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

// runFor loads a run the caller may act on: level l on its task and on
// its computer (read to see it; use to cancel or retry it, as running a
// task there needs).
func (a *API) runFor(r *http.Request, l authz.Level) (*store.TaskRun, *store.TaskRow, error) {
	run, err := a.cfg.Store.RunByID(r.Context(), r.PathValue("id"))
	if err != nil {
		self(r)
		return nil, nil, err
	}
	t, err := a.taskFor(r, run.TaskID, l)
	if err != nil {
		return nil, nil, errcode.New(errcode.Of(err), "task run not found")
	}
	if run.ComputerID != "" {
		if c, err := a.cfg.Store.ComputerByID(r.Context(), run.ComputerID); err == nil {
			if err := a.allowObject(r, authz.Computers, l, c.GroupID, "task run"); err != nil {
				return nil, nil, err
			}
		}
	}
	return run, t, nil
}

func (a *API) getRun(w http.ResponseWriter, r *http.Request) error {
	run, _, err := a.runFor(r, authz.Read)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.runView(r, run, nil))
	return nil
}

// cancelRun: POST /api/v1/task-runs/{id}/cancel — a run not finished yet is
// cancelled; an agent that already has it is told at its next delivery.
func (a *API) cancelRun(w http.ResponseWriter, r *http.Request) error {
	run, t, err := a.runFor(r, authz.Use)
	if err != nil {
		return err
	}
	auditObject(r, run.ID, t.Name)
	if err := a.cfg.Store.CancelRun(r.Context(), run.ID, a.now()); err != nil {
		return err
	}
	if a.cfg.Runs != nil && run.ComputerID != "" && (run.State == store.RunDelivered || run.State == store.RunRunning) {
		a.cfg.Runs.CancelRuns(run.ComputerID, []string{run.ID})
	}
	auditDiff(r, map[string]any{"state": run.State}, map[string]any{"state": store.RunCancelled})
	run, err = a.cfg.Store.RunByID(r.Context(), run.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.runView(r, run, nil))
	return nil
}

// retryRun: POST /api/v1/task-runs/{id}/retry — a failed, expired or
// cancelled run is planned again on the same computer as a new attempt,
// with the parameters it had.
func (a *API) retryRun(w http.ResponseWriter, r *http.Request) error {
	run, t, err := a.runFor(r, authz.Use)
	if err != nil {
		return err
	}
	auditObject(r, run.ID, t.Name)
	switch run.State {
	case store.RunFailed, store.RunExpired, store.RunCancelled:
	default:
		return errcode.New(errcode.Conflict, "only failed, expired or cancelled runs are retried; this one is %s", run.State)
	}
	if run.ComputerID == "" {
		if err := a.allowServerTask(r, t); err != nil {
			return err
		}
	} else {
		c, err := a.cfg.Store.ComputerByID(r.Context(), run.ComputerID)
		if err != nil {
			return err
		}
		if !c.RevokedAt.IsZero() {
			return errcode.New(errcode.Conflict, "computer %s is revoked", c.Name)
		}
		if err := a.allow(r, authz.Computers, authz.Use, c.GroupID); err != nil {
			return err
		}
	}
	now := a.now().Truncate(time.Millisecond)
	expiry := run.ExpiresAt.Sub(run.NotBefore)
	if expiry < time.Minute {
		expiry = 24 * time.Hour
	}
	nr := &store.TaskRun{ID: uuid.NewString(), TaskID: run.TaskID, TriggerID: run.TriggerID, ComputerID: run.ComputerID, Type: run.Type,
		Params: run.Params, Attempt: run.Attempt + 1, CreatedAt: now, NotBefore: now, ExpiresAt: now.Add(expiry)}
	if err := a.cfg.Store.CreateRuns(r.Context(), []*store.TaskRun{nr}); err != nil {
		return err
	}
	a.kick()
	auditDiff(r, nil, map[string]any{"retry": nr.ID, "attempt": nr.Attempt})
	writeJSON(w, http.StatusCreated, a.runView(r, nr, nil))
	return nil
}

// runAttachment: GET /api/v1/task-runs/{id}/attachment — the bundle a
// diagnostics run uploaded.
func (a *API) runAttachment(w http.ResponseWriter, r *http.Request) error {
	run, _, err := a.runFor(r, authz.Read)
	if err != nil {
		return err
	}
	if run.Attachment == "" || a.cfg.AttachmentDir == "" {
		return errcode.New(errcode.NotFound, "this run has no attachment")
	}
	// The stored name is ours (run id based) but is still confined to the
	// directory.
	name := filepath.Base(run.Attachment)
	f, err := os.Open(filepath.Join(a.cfg.AttachmentDir, name))
	if err != nil {
		return errcode.New(errcode.NotFound, "the attachment is gone")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	http.ServeContent(w, r, name, st.ModTime(), f)
	return nil
}
