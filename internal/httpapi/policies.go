package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/configs"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/policy"
	"github.com/mamori/mamori/internal/store"
)

type policyStore interface {
	Policies(ctx context.Context) ([]*store.PolicyRow, error)
	PolicyByID(ctx context.Context, id string) (*store.PolicyRow, error)
	CreatePolicy(ctx context.Context, p *store.PolicyRow) error
	UpdatePolicy(ctx context.Context, p *store.PolicyRow) error
	DeletePolicy(ctx context.Context, id string, version int64) error
	PolicyAssignments(ctx context.Context, policyID string) ([]*store.PolicyAssignment, error)
	PolicyAssignmentByID(ctx context.Context, id string) (*store.PolicyAssignment, error)
	AssignPolicy(ctx context.Context, a *store.PolicyAssignment) error
	SetAssignmentRank(ctx context.Context, id string, rank int, version int64) error
	Unassign(ctx context.Context, id string, version int64) error
	ComputerConfigState(ctx context.Context, id string) (*store.ConfigState, error)
}

// Configurations computes effective configurations (internal/configs.Service).
type Configurations interface {
	Effective(ctx context.Context, computerID string) ([]policy.Effective, *policy.Document, error)
	Queue(computerIDs []string)
}

type policyJSON struct {
	ID          string                  `json:"id"`
	Name        string                  `json:"name"`
	Product     string                  `json:"product"`
	Description string                  `json:"description"`
	Group       groupRef                `json:"group"`
	Settings    map[string]policy.Value `json:"settings"`
	CreatedAt   *string                 `json:"created_at"`
	UpdatedAt   *string                 `json:"updated_at"`
	Version     int64                   `json:"version"`
}

func policyView(p *store.PolicyRow, tree *store.GroupTree) (policyJSON, error) {
	pol, err := configs.FromRow(p)
	if err != nil {
		return policyJSON{}, err
	}
	g := groupRef{ID: p.GroupID}
	if gr, ok := tree.Get(p.GroupID); ok {
		g.Path = gr.Path
	}
	// Proxy passwords are hidden from views and so from the audit log.
	return policyJSON{ID: p.ID, Name: p.Name, Product: p.Product, Description: p.Description, Group: g, Settings: policy.Redacted(p.Product, pol.Settings),
		CreatedAt: timeJSON(p.CreatedAt), UpdatedAt: timeJSON(p.UpdatedAt), Version: p.Version}, nil
}

func (a *API) policyFor(r *http.Request, id string, l authz.Level) (*store.PolicyRow, error) {
	p, err := a.cfg.Store.PolicyByID(r.Context(), id)
	if err != nil {
		state(r).checked = true
		return nil, err
	}
	if err := a.allowObject(r, authz.Policies, l, p.GroupID, "policy"); err != nil {
		return nil, err
	}
	return p, nil
}

// policySchema: GET /api/v1/policies/schema — every setting of every
// product with its type, default, unit and bounds, for forms.
func (a *API) policySchema(w http.ResponseWriter, r *http.Request) error {
	self(r) // documentation of the configuration model
	writeJSON(w, http.StatusOK, map[string]any{"products": policy.Products, "settings": policy.Schema,
		"flags": []string{"apply", "force"}, "merge_rules": []string{"replace", "append", "prepend"}})
	return nil
}

func (a *API) listPolicies(w http.ResponseWriter, r *http.Request) error {
	visible, err := a.scope(r, authz.Policies, authz.Read)
	if err != nil {
		return err
	}
	in := map[string]bool{}
	for _, g := range visible {
		in[g] = true
	}
	ps, err := a.cfg.Store.Policies(r.Context())
	if err != nil {
		return err
	}
	product := r.URL.Query().Get("product")
	tree, _ := a.groups(r)
	items := []policyJSON{}
	for _, p := range ps {
		if !in[p.GroupID] || (product != "" && p.Product != product) {
			continue
		}
		v, err := policyView(p, tree)
		if err != nil {
			return err
		}
		items = append(items, v)
	}
	writeJSON(w, http.StatusOK, list2(items))
	return nil
}

func (a *API) getPolicy(w http.ResponseWriter, r *http.Request) error {
	p, err := a.policyFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	v, err := policyView(p, tree)
	if err != nil {
		return err
	}
	writeETag(w, p.Version)
	writeJSON(w, http.StatusOK, v)
	return nil
}

type policyRequest struct {
	Name        *string                     `json:"name"`
	Product     *string                     `json:"product"`
	Description *string                     `json:"description"`
	Group       *string                     `json:"group"`    // path; default the creator's home group
	Settings    *map[string]json.RawMessage `json:"settings"` // key -> {"flag","value"[,"merge"]}; replaces all
	Version     *int64                      `json:"version"`
}

func (a *API) applyPolicy(r *http.Request, p *store.PolicyRow, req policyRequest) error {
	if req.Name != nil {
		n := *req.Name
		if strings.TrimSpace(n) == "" || n != strings.TrimSpace(n) || len(n) > 128 {
			return errcode.New(errcode.Invalid, "name must be 1-128 characters without surrounding spaces")
		}
		p.Name = n
	}
	if req.Description != nil {
		if len(*req.Description) > 1024 {
			return errcode.New(errcode.Invalid, "description longer than 1024 bytes")
		}
		p.Description = *req.Description
	}
	if req.Group != nil {
		g, err := a.resolveGroup(r, *req.Group)
		if err != nil {
			return err
		}
		p.GroupID = g.ID
	}
	if req.Settings != nil {
		s, err := policy.ParseSettings(p.Product, *req.Settings)
		if err != nil {
			return err
		}
		if prev, err := configs.FromRow(p); err == nil {
			policy.KeepSecrets(p.Product, prev.Settings, s) // sent back as read: hidden
		}
		b, _ := json.Marshal(s)
		p.Settings = string(b)
	}
	return nil
}

// createPolicy: POST /api/v1/policies — write on policies where it lives.
func (a *API) createPolicy(w http.ResponseWriter, r *http.Request) error {
	var req policyRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Name == nil || req.Product == nil {
		return errcode.New(errcode.Invalid, "name and product are required")
	}
	auditObject(r, "", *req.Name)
	if !policy.ValidProduct(*req.Product) {
		return errcode.New(errcode.Invalid, "product must be one of %s", strings.Join(policy.Products, ", "))
	}
	p := &store.PolicyRow{ID: uuid.NewString(), Product: *req.Product, GroupID: principal(r).HomeGroupID, Settings: "{}"}
	if err := a.applyPolicy(r, p, req); err != nil {
		return err
	}
	if err := a.allow(r, authz.Policies, authz.Write, p.GroupID); err != nil {
		return err
	}
	if err := a.cfg.Store.CreatePolicy(r.Context(), p); err != nil {
		return err
	}
	tree, _ := a.groups(r)
	v, _ := policyView(p, tree)
	auditObject(r, p.ID, p.Name)
	auditDiff(r, nil, v)
	writeETag(w, p.Version)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// updatePolicy: PATCH /api/v1/policies/{id} — the computers it reaches get
// the new configuration at once.
func (a *API) updatePolicy(w http.ResponseWriter, r *http.Request) error {
	var req policyRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	p, err := a.policyFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, p.ID, p.Name)
	if req.Product != nil && *req.Product != p.Product {
		return errcode.New(errcode.Invalid, "a policy's product cannot change")
	}
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	before, _ := policyView(p, tree)
	settings := p.Settings
	if err := a.applyPolicy(r, p, req); err != nil {
		return err
	}
	if err := a.allow(r, authz.Policies, authz.Write, p.GroupID); err != nil {
		return err
	}
	if p.Settings != settings {
		if err := a.allowSettingsChange(r, p); err != nil {
			return err
		}
	}
	p.Version = version
	if err := a.cfg.Store.UpdatePolicy(r.Context(), p); err != nil {
		return err
	}
	a.requeue(nil)
	after, _ := policyView(p, tree)
	auditDiff(r, before, after)
	writeETag(w, p.Version)
	writeJSON(w, http.StatusOK, after)
	return nil
}

func (a *API) requeue(ids []string) {
	if a.cfg.Configurations != nil {
		a.cfg.Configurations.Queue(ids)
	}
}

func (a *API) deletePolicy(w http.ResponseWriter, r *http.Request) error {
	p, err := a.policyFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, p.ID, p.Name)
	version, err := deleteVersion(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.DeletePolicy(r.Context(), p.ID, version); err != nil {
		return err
	}
	a.requeue(nil)
	tree, _ := a.groups(r)
	before, _ := policyView(p, tree)
	auditDiff(r, before, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type assignmentJSON struct {
	ID         string   `json:"id"`
	PolicyID   string   `json:"policy_id"`
	TargetType string   `json:"target_type"`
	Target     groupRef `json:"target"` // id and, for static groups, path (name for others)
	Rank       int      `json:"rank"`
	CreatedAt  *string  `json:"created_at"`
	Version    int64    `json:"version"`
}

// assignmentViews shows assignments. A target is named only to a caller
// who may read it (groups in its static group, the computer in its
// group); others see its id, so that the policy's assignments stay
// complete without telling what they may not see. The dynamic groups are
// read once, and only when a target is one.
func (a *API) assignmentViews(r *http.Request, as []*store.PolicyAssignment) []assignmentJSON {
	views := make([]assignmentJSON, 0, len(as))
	tree, err := a.groups(r)
	may := func(f authz.Functionality, group string) bool {
		return err == nil && principal(r).Permissions.Allows(f, authz.Read, group, tree)
	}
	var dyn map[string]*store.DynamicGroup
	for _, x := range as {
		v := assignmentJSON{ID: x.ID, PolicyID: x.PolicyID, TargetType: x.TargetType, Target: groupRef{ID: x.TargetID}, Rank: x.Rank, Version: x.Version,
			CreatedAt: timeJSON(x.CreatedAt)}
		switch {
		case err != nil:
		case x.TargetType == policy.TargetStatic:
			if g, ok := tree.Get(x.TargetID); ok && may(authz.Groups, g.ID) {
				v.Target.Path = g.Path
			}
		case x.TargetType == policy.TargetDynamic:
			if dyn == nil {
				if dyn, _ = a.dynIndex(r); dyn == nil {
					dyn = map[string]*store.DynamicGroup{}
				}
			}
			if g, ok := dyn[x.TargetID]; ok && may(authz.Groups, rootOf(g, dyn)) {
				v.Target.Path = g.Name
			}
		case x.TargetType == policy.TargetComputer:
			if c, cerr := a.cfg.Store.ComputerByID(r.Context(), x.TargetID); cerr == nil && may(authz.Computers, c.GroupID) {
				v.Target.Path = c.Name
			}
		}
		views = append(views, v)
	}
	return views
}

func (a *API) assignmentView(r *http.Request, as *store.PolicyAssignment) assignmentJSON {
	return a.assignmentViews(r, []*store.PolicyAssignment{as})[0]
}

func (a *API) listAssignments(w http.ResponseWriter, r *http.Request) error {
	p, err := a.policyFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	as, err := a.cfg.Store.PolicyAssignments(r.Context(), p.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list2(a.assignmentViews(r, as)))
	return nil
}

type assignRequest struct {
	TargetType string `json:"target_type"` // static, dynamic, computer
	Target     string `json:"target"`      // static group path, dynamic group id or computer id
	Rank       int    `json:"rank"`
}

// targetGroup resolves a target to its id and the static group whose
// computers it configures.
func (a *API) targetGroup(r *http.Request, typ, target string) (id, group string, err error) {
	switch typ {
	case policy.TargetStatic:
		g, err := a.resolveGroup(r, target)
		if err != nil {
			return "", "", err
		}
		return g.ID, g.ID, nil
	case policy.TargetDynamic:
		all, err := a.dynIndex(r)
		if err != nil {
			return "", "", err
		}
		g, ok := all[target]
		if !ok {
			return "", "", errcode.New(errcode.NotFound, "dynamic group not found")
		}
		return g.ID, rootOf(g, all), nil
	case policy.TargetComputer:
		c, err := a.cfg.Store.ComputerByID(r.Context(), target)
		if err != nil {
			return "", "", err
		}
		return c.ID, c.GroupID, nil
	}
	return "", "", errcode.New(errcode.Invalid, "target_type must be static, dynamic or computer")
}

// assignPolicy: POST /api/v1/policies/{id}/assignments — use on the policy,
// write on computers where it will apply.
func (a *API) assignPolicy(w http.ResponseWriter, r *http.Request) error {
	var req assignRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	p, err := a.policyFor(r, r.PathValue("id"), authz.Use)
	if err != nil {
		return err
	}
	auditObject(r, p.ID, p.Name)
	if req.Rank < -1_000_000 || req.Rank > 1_000_000 {
		return errcode.New(errcode.Invalid, "rank must be between -1000000 and 1000000")
	}
	id, group, err := a.targetGroup(r, req.TargetType, req.Target)
	if err != nil {
		return err
	}
	// A target the caller may not read is reported as missing, in the words
	// targetGroup uses for a missing one.
	what := map[string]string{policy.TargetStatic: fmt.Sprintf("static group %q", req.Target),
		policy.TargetDynamic: "dynamic group", policy.TargetComputer: "computer"}[req.TargetType]
	if err := a.allowObject(r, authz.Computers, authz.Write, group, what); err != nil {
		return err
	}
	as := &store.PolicyAssignment{ID: uuid.NewString(), PolicyID: p.ID, TargetType: req.TargetType, TargetID: id, Rank: req.Rank}
	if err := a.cfg.Store.AssignPolicy(r.Context(), as); err != nil {
		return err
	}
	a.requeue(nil)
	v := a.assignmentView(r, as)
	auditDiff(r, nil, map[string]any{"assignment": v})
	writeJSON(w, http.StatusCreated, v)
	return nil
}

type rankRequest struct {
	Rank    *int   `json:"rank"`
	Version *int64 `json:"version"` // or If-Match
}

// assignmentGroup is the static group whose computers an assignment
// configures: a static group itself, the one a dynamic group sits under, a
// computer's.
func (a *API) assignmentGroup(r *http.Request, as *store.PolicyAssignment) (string, error) {
	switch as.TargetType {
	case policy.TargetDynamic:
		all, err := a.dynIndex(r)
		if err != nil {
			return "", err
		}
		return rootOf(all[as.TargetID], all), nil
	case policy.TargetComputer:
		c, err := a.cfg.Store.ComputerByID(r.Context(), as.TargetID)
		if err != nil {
			return "", err
		}
		return c.GroupID, nil
	}
	return as.TargetID, nil
}

// allowSettingsChange is the check for new settings of an assigned policy:
// they reach every computer its assignments configure, so the caller needs
// write on computers there, as assigning it asked.
func (a *API) allowSettingsChange(r *http.Request, p *store.PolicyRow) error {
	as, err := a.cfg.Store.PolicyAssignments(r.Context(), p.ID)
	if err != nil {
		return err
	}
	for _, x := range as {
		group, err := a.assignmentGroup(r, x)
		if errcode.Of(err) == errcode.NotFound {
			continue
		} else if err != nil {
			return err
		}
		if a.allow(r, authz.Computers, authz.Write, group) != nil {
			return errcode.New(errcode.Forbidden, "the policy is assigned where you may not write computers; new settings would reach them (unassign it there, or ask someone who may)")
		}
	}
	return nil
}

func (a *API) assignmentFor(r *http.Request) (*store.PolicyRow, *store.PolicyAssignment, error) {
	p, err := a.policyFor(r, r.PathValue("id"), authz.Use)
	if err != nil {
		return nil, nil, err
	}
	as, err := a.cfg.Store.PolicyAssignmentByID(r.Context(), r.PathValue("aid"))
	if err != nil || as.PolicyID != p.ID {
		return nil, nil, errcode.New(errcode.NotFound, "assignment not found")
	}
	group, err := a.assignmentGroup(r, as)
	if err != nil {
		return nil, nil, err
	}
	if err := a.allowObject(r, authz.Computers, authz.Write, group, "assignment"); err != nil {
		return nil, nil, err
	}
	auditObject(r, as.ID, p.Name)
	return p, as, nil
}

// rankAssignment: PATCH /api/v1/policies/{id}/assignments/{aid} — the order
// within the target.
func (a *API) rankAssignment(w http.ResponseWriter, r *http.Request) error {
	var req rankRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	_, as, err := a.assignmentFor(r)
	if err != nil {
		return err
	}
	if req.Rank == nil {
		return errcode.New(errcode.Invalid, "rank is required")
	}
	if *req.Rank < -1_000_000 || *req.Rank > 1_000_000 {
		return errcode.New(errcode.Invalid, "rank must be between -1000000 and 1000000")
	}
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.SetAssignmentRank(r.Context(), as.ID, *req.Rank, version); err != nil {
		return err
	}
	auditDiff(r, map[string]int{"rank": as.Rank}, map[string]int{"rank": *req.Rank})
	as.Rank, as.Version = *req.Rank, version+1
	a.requeue(nil)
	writeETag(w, as.Version)
	writeJSON(w, http.StatusOK, a.assignmentView(r, as))
	return nil
}

func (a *API) unassignPolicy(w http.ResponseWriter, r *http.Request) error {
	_, as, err := a.assignmentFor(r)
	if err != nil {
		return err
	}
	version, err := deleteVersion(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.Unassign(r.Context(), as.ID, version); err != nil {
		return err
	}
	auditDiff(r, map[string]any{"assignment": a.assignmentView(r, as)}, nil)
	a.requeue(nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type effectiveJSON struct {
	ComputerID     string             `json:"computer_id"`
	Version        string             `json:"version"`         // what the server computed now
	AppliedVersion string             `json:"applied_version"` // what the agent reported applied
	AgentError     string             `json:"agent_error,omitempty"`
	ReportedAt     *string            `json:"reported_at"`
	Settings       []policy.Effective `json:"settings"`
}

// effectiveConfig: GET /api/v1/computers/{id}/effective-config — every value
// with the policy and assignment that set it, or the default.
func (a *API) effectiveConfig(w http.ResponseWriter, r *http.Request) error {
	c, err := a.computerFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	if a.cfg.Configurations == nil {
		return errcode.New(errcode.Unavailable, "configurations are not computed on this server")
	}
	eff, doc, err := a.cfg.Configurations.Effective(r.Context(), c.ID)
	if err != nil {
		return err
	}
	st, err := a.cfg.Store.ComputerConfigState(r.Context(), c.ID)
	if err != nil {
		return err
	}
	eff = slices.Clone(eff) // not the service's own
	for i := range eff {
		eff[i].Value = policy.RedactValue(eff[i].Product, eff[i].Key, eff[i].Value)
	}
	writeJSON(w, http.StatusOK, effectiveJSON{ComputerID: c.ID, Version: doc.Version, AppliedVersion: st.Applied, AgentError: st.Error,
		ReportedAt: timeJSON(st.ReportedAt), Settings: eff})
	return nil
}
