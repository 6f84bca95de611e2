package apiclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

func esc(s string) string { return url.PathEscape(s) }

// --- Session -------------------------------------------------------------

// CA returns the server's CA fingerprint and certificate (no login needed).
func (c *Client) CA(ctx context.Context) (*CAInfo, error) {
	return callAs[CAInfo](ctx, c, request{method: "GET", path: "/api/v1/ca"})
}

// LoginRequest is what POST /api/v1/session takes.
type LoginRequest struct {
	Username     string `json:"username"`
	Password     string `json:"password"`
	TOTPCode     string `json:"totp_code,omitempty"`
	RecoveryCode string `json:"recovery_code,omitempty"`
}

// Login opens a session; later requests of c use it while c.Token is
// empty. The session may carry a Restriction to lift first (SecondFactor,
// ChangePassword, EnrollTOTP). Wrong credentials: unauthorized; a locked
// account: too_many_requests.
func (c *Client) Login(ctx context.Context, req LoginRequest) (*Session, error) {
	b, resp, err := c.call(ctx, request{method: "POST", path: "/api/v1/session", body: req})
	if err != nil {
		return nil, err
	}
	var s Session
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding the login answer: %w", err)
	}
	s.setRaw(b)
	for _, ck := range resp.Cookies() {
		if ck.Name == SessionCookie && ck.Value != "" {
			c.session = ck.Value
		}
	}
	if c.session == "" {
		return nil, errcode.New(errcode.Internal, "the server sent no session cookie")
	}
	return &s, nil
}

// Whoami returns the caller's identity and permissions.
func (c *Client) Whoami(ctx context.Context) (*Session, error) {
	return callAs[Session](ctx, c, request{method: "GET", path: "/api/v1/session"})
}

// SecondFactor completes the login of a session restricted to
// "second_factor" with a TOTP code or a recovery code.
func (c *Client) SecondFactor(ctx context.Context, code, recoveryCode string) (*Session, error) {
	body := map[string]string{}
	if recoveryCode != "" {
		body["recovery_code"] = recoveryCode
	} else {
		body["code"] = code
	}
	return callAs[Session](ctx, c, request{method: "POST", path: "/api/v1/session/totp", body: body})
}

// ChangePassword changes the caller's own password (from a session). All
// the user's sessions end, this one included: log in again.
func (c *Client) ChangePassword(ctx context.Context, current, next string) error {
	err := c.callJSON(ctx, request{method: "POST", path: "/api/v1/session/password",
		body: map[string]string{"current_password": current, "new_password": next}}, nil)
	if err == nil {
		c.session = ""
	}
	return err
}

// EnrollTOTP starts setting up a second factor for the caller (from a
// session).
func (c *Client) EnrollTOTP(ctx context.Context) (*TOTPEnrollment, error) {
	return callAs[TOTPEnrollment](ctx, c, request{method: "POST", path: "/api/v1/session/totp/enroll", body: struct{}{}})
}

// ConfirmTOTP turns the second factor on with a code from the app and
// returns the recovery codes (shown once).
func (c *Client) ConfirmTOTP(ctx context.Context, code string) ([]string, error) {
	var out struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	err := c.callJSON(ctx, request{method: "POST", path: "/api/v1/session/totp/confirm", body: map[string]string{"code": code}}, &out)
	return out.RecoveryCodes, err
}

// Logout ends the session opened by Login.
func (c *Client) Logout(ctx context.Context) error {
	err := c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/session"}, nil)
	if err == nil {
		c.session = ""
	}
	return err
}

// --- Personal API tokens -------------------------------------------------

// ListAPITokens lists the caller's personal API tokens.
func (c *Client) ListAPITokens(ctx context.Context) (*List[APIToken], error) {
	return callAs[List[APIToken]](ctx, c, request{method: "GET", path: "/api/v1/tokens"})
}

// CreateAPIToken makes a personal API token acting as the caller; ttl 0
// takes the server's default (90 days). Only from a session: forbidden
// with an API token.
func (c *Client) CreateAPIToken(ctx context.Context, name string, ttl time.Duration) (*APIToken, error) {
	body := map[string]string{"name": name}
	if ttl != 0 {
		body["ttl"] = ttl.String()
	}
	return callAs[APIToken](ctx, c, request{method: "POST", path: "/api/v1/tokens", body: body})
}

// RevokeAPIToken revokes one of the caller's tokens (not_found for others').
func (c *Client) RevokeAPIToken(ctx context.Context, id string) error {
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/tokens/" + esc(id)}, nil)
}

// --- Enrollment tokens ---------------------------------------------------

// ListEnrollmentTokens lists the enrollment tokens the caller can read.
func (c *Client) ListEnrollmentTokens(ctx context.Context) (*List[EnrollmentToken], error) {
	return callAs[List[EnrollmentToken]](ctx, c, request{method: "GET", path: "/api/v1/enrollment-tokens"})
}

// CreateEnrollmentToken creates an enrollment token; the secret is in the
// answer only.
func (c *Client) CreateEnrollmentToken(ctx context.Context, req EnrollmentTokenRequest) (*EnrollmentToken, error) {
	return callAs[EnrollmentToken](ctx, c, request{method: "POST", path: "/api/v1/enrollment-tokens", body: req})
}

// RevokeEnrollmentToken revokes an enrollment token.
func (c *Client) RevokeEnrollmentToken(ctx context.Context, id string) error {
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/enrollment-tokens/" + esc(id)}, nil)
}

// --- Users ---------------------------------------------------------------

// Page selects a page of a list; zero values take the server's defaults
// (limit 100, at most 1000).
type Page struct {
	Limit, Offset int
}

func (p Page) add(q url.Values) {
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Offset > 0 {
		q.Set("offset", strconv.Itoa(p.Offset))
	}
}

// maxPage is the server's largest page (store.MaxLimit).
const maxPage = 1000

// UserQuery filters ListUsers.
type UserQuery struct {
	Name string // case-insensitive substring of the user name
	Sort string // username (default), created_at, last_login_at; "-" prefix descends
	Page
}

// ListUsers lists the users the caller can read.
func (c *Client) ListUsers(ctx context.Context, f UserQuery) (*List[User], error) {
	q := url.Values{}
	if f.Name != "" {
		q.Set("name", f.Name)
	}
	if f.Sort != "" {
		q.Set("sort", f.Sort)
	}
	f.Page.add(q)
	return callAs[List[User]](ctx, c, request{method: "GET", path: "/api/v1/users", query: q})
}

// GetUser returns a user by id.
func (c *Client) GetUser(ctx context.Context, id string) (*User, error) {
	return callAs[User](ctx, c, request{method: "GET", path: "/api/v1/users/" + esc(id)})
}

// UserByName finds a user by exact name (case-insensitive when no exact
// match), paging through the list: the API has no lookup by name.
func (c *Client) UserByName(ctx context.Context, name string) (*User, error) {
	var folded []User
	for off := 0; ; off += maxPage {
		l, err := c.ListUsers(ctx, UserQuery{Name: name, Page: Page{Limit: maxPage, Offset: off}})
		if err != nil {
			return nil, err
		}
		for _, u := range l.Items {
			if u.Username == name {
				return c.GetUser(ctx, u.ID)
			}
			if strings.EqualFold(u.Username, name) {
				folded = append(folded, u)
			}
		}
		if len(l.Items) == 0 || off+len(l.Items) >= l.Total {
			break
		}
	}
	if len(folded) == 1 {
		return c.GetUser(ctx, folded[0].ID)
	}
	return nil, errcode.New(errcode.NotFound, "user %q not found", name)
}

// CreateUser creates a user.
func (c *Client) CreateUser(ctx context.Context, req UserRequest) (*User, error) {
	return callAs[User](ctx, c, request{method: "POST", path: "/api/v1/users", body: req})
}

// UpdateUser changes a user (conflict when u.Version is stale).
func (c *Client) UpdateUser(ctx context.Context, id string, u UserUpdate) (*User, error) {
	return callAs[User](ctx, c, request{method: "PATCH", path: "/api/v1/users/" + esc(id), body: u})
}

// DeleteUser deletes a user.
func (c *Client) DeleteUser(ctx context.Context, id string) error {
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/users/" + esc(id)}, nil)
}

// ResetPassword sets a user's password; mustChange nil means true (the
// user changes it at next login). The user's sessions end.
func (c *Client) ResetPassword(ctx context.Context, id, password string, mustChange *bool) error {
	body := struct {
		Password   string `json:"password"`
		MustChange *bool  `json:"must_change,omitempty"`
	}{password, mustChange}
	return c.callJSON(ctx, request{method: "POST", path: "/api/v1/users/" + esc(id) + "/password", body: body}, nil)
}

// RemoveTOTP removes a user's second factor (conflict if they have none).
func (c *Client) RemoveTOTP(ctx context.Context, id string) error {
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/users/" + esc(id) + "/totp"}, nil)
}

// --- Groups --------------------------------------------------------------

// ListGroups lists the static groups the caller can read, in path order.
func (c *Client) ListGroups(ctx context.Context) (*List[Group], error) {
	return callAs[List[Group]](ctx, c, request{method: "GET", path: "/api/v1/groups"})
}

// GetGroup returns a group by id, with member counts.
func (c *Client) GetGroup(ctx context.Context, id string) (*Group, error) {
	return callAs[Group](ctx, c, request{method: "GET", path: "/api/v1/groups/" + esc(id)})
}

// NormalizeGroupPath turns a path given by a user into the server's
// canonical "All/..." form: "Servers", "/Servers" and "All/Servers" name the
// same group (the rule of store.NormalizeGroupPath).
func NormalizeGroupPath(path string) string {
	p := strings.Trim(strings.TrimSpace(path), "/")
	if p == "" {
		return "All"
	}
	if p != "All" && !strings.HasPrefix(p, "All/") {
		p = "All/" + p
	}
	return p
}

// GroupByPath finds a readable group by path (see NormalizeGroupPath). The
// API addresses groups by id; this lists them to resolve the path.
func (c *Client) GroupByPath(ctx context.Context, path string) (*Group, error) { // a path, or a group's id
	l, err := c.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	want := NormalizeGroupPath(path)
	for i := range l.Items {
		if l.Items[i].Path == want {
			g := l.Items[i]
			return &g, nil
		}
	}
	for i := range l.Items { // or its id, as lists show it
		if l.Items[i].ID == path {
			g := l.Items[i]
			return &g, nil
		}
	}
	return nil, errcode.New(errcode.NotFound, "static group %q not found", path)
}

// CreateGroup creates name under the group at parent path ("" for All).
func (c *Client) CreateGroup(ctx context.Context, parent, name string) (*Group, error) {
	return callAs[Group](ctx, c, request{method: "POST", path: "/api/v1/groups", body: map[string]string{"parent": parent, "name": name}})
}

// RenameGroup renames a group whose version is still version.
func (c *Client) RenameGroup(ctx context.Context, id, name string, version int64) (*Group, error) {
	body := map[string]any{"name": name, "version": version}
	return callAs[Group](ctx, c, request{method: "PATCH", path: "/api/v1/groups/" + esc(id), body: body})
}

// MoveGroup moves a group under the group at parent path; invalid when the
// destination is the group itself or below it.
func (c *Client) MoveGroup(ctx context.Context, id, parent string, version int64) (*Group, error) {
	body := map[string]any{"parent": parent, "version": version}
	return callAs[Group](ctx, c, request{method: "POST", path: "/api/v1/groups/" + esc(id) + "/move", body: body})
}

// DeleteGroup deletes an empty group, or one whose contents move to the
// group at moveTo path.
func (c *Client) DeleteGroup(ctx context.Context, id string, version int64, moveTo string) error {
	q := url.Values{"version": {strconv.FormatInt(version, 10)}}
	if moveTo != "" {
		q.Set("move_to", moveTo)
	}
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/groups/" + esc(id), query: q}, nil)
}

// --- Permission sets -----------------------------------------------------

// ListPermissionSets lists the permission sets the caller can read.
func (c *Client) ListPermissionSets(ctx context.Context) (*List[PermissionSet], error) {
	return callAs[List[PermissionSet]](ctx, c, request{method: "GET", path: "/api/v1/permission-sets"})
}

// GetPermissionSet returns a permission set by id.
func (c *Client) GetPermissionSet(ctx context.Context, id string) (*PermissionSet, error) {
	return callAs[PermissionSet](ctx, c, request{method: "GET", path: "/api/v1/permission-sets/" + esc(id)})
}

// --- Audit log -----------------------------------------------------------

// AuditQuery filters the audit log.
type AuditQuery struct {
	User, Domain, Action, Result string
	Since, Until                 time.Time
	Page
}

func (f AuditQuery) values() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"user": f.User, "domain": f.Domain, "action": f.Action, "result": f.Result} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.Format(time.RFC3339))
	}
	f.Page.add(q)
	return q
}

// ListAudit lists audit entries, newest first.
func (c *Client) ListAudit(ctx context.Context, f AuditQuery) (*List[AuditEntry], error) {
	return callAs[List[AuditEntry]](ctx, c, request{method: "GET", path: "/api/v1/audit", query: f.values()})
}

// ExportAudit streams every matching entry as CSV to w (the page of f is
// ignored) and returns the bytes written. It may take up to ExportTimeout.
func (c *Client) ExportAudit(ctx context.Context, f AuditQuery, w io.Writer) (int64, error) {
	f.Page = Page{}
	ctx, cancel := context.WithTimeout(ctx, max(ExportTimeout, c.timeout()))
	defer cancel()
	resp, err := c.send(ctx, request{method: "GET", path: "/api/v1/audit/export", query: f.values(),
		header: http.Header{"Accept": {"text/csv"}}})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, io.LimitReader(resp.Body, MaxExportBytes+1))
	if err != nil {
		return n, &ConnError{URL: c.BaseURL, Err: err}
	}
	if n > MaxExportBytes {
		return n, errcode.New(errcode.TooLarge, "export larger than %d bytes; narrow it with --since/--until", int64(MaxExportBytes))
	}
	return n, nil
}

// --- Computers -----------------------------------------------------------

// ComputerQuery filters ListComputers.
type ComputerQuery struct {
	Name   string // substring of the name
	Status string // online | offline
	Group  string // static group path (with its subgroups)
	Tag    string
	Sort   string // name, last_seen, status, enrolled_at, os_name, engine; "-" prefix descends
	Engine string // "outdated": behind the server's update mirror
	Page
}

// ListComputers lists the computers the caller can read.
func (c *Client) ListComputers(ctx context.Context, f ComputerQuery) (*List[Computer], error) {
	q := url.Values{}
	for k, v := range map[string]string{"name": f.Name, "status": f.Status, "group": f.Group, "tag": f.Tag, "sort": f.Sort, "engine": f.Engine} {
		if v != "" {
			q.Set(k, v)
		}
	}
	f.Page.add(q)
	return callAs[List[Computer]](ctx, c, request{method: "GET", path: "/api/v1/computers", query: q})
}

// GetComputer returns a computer with its inventory and recent events.
func (c *Client) GetComputer(ctx context.Context, id string) (*Computer, error) {
	return callAs[Computer](ctx, c, request{method: "GET", path: "/api/v1/computers/" + esc(id)})
}

// RevokeComputer revokes a computer's certificates: its agent is
// disconnected and refused from then on; the computer stays listed under
// status "revoked".
func (c *Client) RevokeComputer(ctx context.Context, id string) error {
	return c.callJSON(ctx, request{method: "POST", path: "/api/v1/computers/" + esc(id) + "/revoke"}, nil)
}

// MoveComputer moves a computer whose version is still version into the
// static group at path.
func (c *Client) MoveComputer(ctx context.Context, id, group string, version int64) (*Computer, error) {
	body := map[string]any{"group": group, "version": version}
	return callAs[Computer](ctx, c, request{method: "POST", path: "/api/v1/computers/" + esc(id) + "/move", body: body})
}

// Tags are a computer's tags after tagging it.
type Tags struct {
	RawJSON
	Tags []string `json:"tags"`
}

// TagComputer adds a tag to a computer and returns its tags.
func (c *Client) TagComputer(ctx context.Context, id, tag string) (*Tags, error) {
	return callAs[Tags](ctx, c, request{method: "POST", path: "/api/v1/computers/" + esc(id) + "/tags", body: map[string]string{"tag": tag}})
}

// UntagComputer removes a tag from a computer.
func (c *Client) UntagComputer(ctx context.Context, id, tag string) error {
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/computers/" + esc(id) + "/tags/" + esc(tag)}, nil)
}

// callAs performs r and decodes its JSON answer into a new T.
func callAs[T any](ctx context.Context, c *Client, r request) (*T, error) {
	var out T
	if err := c.callJSON(ctx, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// --- Dynamic groups ------------------------------------------------------

// ListDynamicGroups lists the dynamic groups the caller can read (all at
// once: the API does not page them).
func (c *Client) ListDynamicGroups(ctx context.Context) (*List[DynamicGroup], error) {
	return callAs[List[DynamicGroup]](ctx, c, request{method: "GET", path: "/api/v1/dynamic-groups"})
}

// GetDynamicGroup returns a dynamic group by id.
func (c *Client) GetDynamicGroup(ctx context.Context, id string) (*DynamicGroup, error) {
	return callAs[DynamicGroup](ctx, c, request{method: "GET", path: "/api/v1/dynamic-groups/" + esc(id)})
}

// CreateDynamicGroup creates a dynamic group; its members are evaluated in
// the background.
func (c *Client) CreateDynamicGroup(ctx context.Context, req DynamicGroupRequest) (*DynamicGroup, error) {
	return callAs[DynamicGroup](ctx, c, request{method: "POST", path: "/api/v1/dynamic-groups", body: req})
}

// UpdateDynamicGroup changes a dynamic group (conflict when u.Version is
// stale).
func (c *Client) UpdateDynamicGroup(ctx context.Context, id string, u DynamicGroupUpdate) (*DynamicGroup, error) {
	return callAs[DynamicGroup](ctx, c, request{method: "PATCH", path: "/api/v1/dynamic-groups/" + esc(id), body: u})
}

// DeleteDynamicGroup deletes a dynamic group whose version is still
// version.
func (c *Client) DeleteDynamicGroup(ctx context.Context, id string, version int64) error {
	q := url.Values{"version": {strconv.FormatInt(version, 10)}}
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/dynamic-groups/" + esc(id), query: q}, nil)
}

// DynamicGroupMembers lists a dynamic group's member computers the caller
// can read; f filters them like ListComputers.
func (c *Client) DynamicGroupMembers(ctx context.Context, id string, f ComputerQuery) (*List[Computer], error) {
	q := url.Values{}
	for k, v := range map[string]string{"name": f.Name, "status": f.Status, "group": f.Group, "tag": f.Tag, "sort": f.Sort, "engine": f.Engine} {
		if v != "" {
			q.Set(k, v)
		}
	}
	f.Page.add(q)
	return callAs[List[Computer]](ctx, c, request{method: "GET", path: "/api/v1/dynamic-groups/" + esc(id) + "/members", query: q})
}

// PreviewDynamicGroup returns the computers a template would select under
// the static group at parent path or the dynamic group parentDynamic (both
// empty: All). Total counts every match the caller can read; Items holds
// at most 1000.
func (c *Client) PreviewDynamicGroup(ctx context.Context, template json.RawMessage, parent, parentDynamic string) (*List[Computer], error) {
	q := url.Values{"template": {string(template)}}
	if parent != "" {
		q.Set("parent", parent)
	}
	if parentDynamic != "" {
		q.Set("parent_dynamic", parentDynamic)
	}
	return callAs[List[Computer]](ctx, c, request{method: "GET", path: "/api/v1/dynamic-groups/preview", query: q})
}

// --- Policies ------------------------------------------------------------

// PolicySchema returns every setting of every product.
func (c *Client) PolicySchema(ctx context.Context) (*PolicySchema, error) {
	return callAs[PolicySchema](ctx, c, request{method: "GET", path: "/api/v1/policies/schema"})
}

// ListPolicies lists the policies the caller can read, of one product
// ("" for all).
func (c *Client) ListPolicies(ctx context.Context, product string) (*List[Policy], error) {
	q := url.Values{}
	if product != "" {
		q.Set("product", product)
	}
	return callAs[List[Policy]](ctx, c, request{method: "GET", path: "/api/v1/policies", query: q})
}

// GetPolicy returns a policy by id.
func (c *Client) GetPolicy(ctx context.Context, id string) (*Policy, error) {
	return callAs[Policy](ctx, c, request{method: "GET", path: "/api/v1/policies/" + esc(id)})
}

// CreatePolicy creates a policy.
func (c *Client) CreatePolicy(ctx context.Context, req PolicyRequest) (*Policy, error) {
	return callAs[Policy](ctx, c, request{method: "POST", path: "/api/v1/policies", body: req})
}

// UpdatePolicy changes a policy (conflict when u.Version is stale); the
// computers it reaches get the new configuration.
func (c *Client) UpdatePolicy(ctx context.Context, id string, u PolicyUpdate) (*Policy, error) {
	return callAs[Policy](ctx, c, request{method: "PATCH", path: "/api/v1/policies/" + esc(id), body: u})
}

// DeletePolicy deletes a policy whose version is still version, with its
// assignments.
func (c *Client) DeletePolicy(ctx context.Context, id string, version int64) error {
	q := url.Values{"version": {strconv.FormatInt(version, 10)}}
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/policies/" + esc(id), query: q}, nil)
}

// ListAssignments lists the targets a policy is assigned to.
func (c *Client) ListAssignments(ctx context.Context, policyID string) (*List[Assignment], error) {
	return callAs[List[Assignment]](ctx, c, request{method: "GET", path: "/api/v1/policies/" + esc(policyID) + "/assignments"})
}

// AssignPolicy assigns a policy to a target.
func (c *Client) AssignPolicy(ctx context.Context, policyID string, req AssignRequest) (*Assignment, error) {
	return callAs[Assignment](ctx, c, request{method: "POST", path: "/api/v1/policies/" + esc(policyID) + "/assignments", body: req})
}

// RankAssignment sets an assignment's rank (its order among the policies
// of its target, lower first) if the assignment is still at version.
func (c *Client) RankAssignment(ctx context.Context, policyID, assignmentID string, rank int, version int64) (*Assignment, error) {
	return callAs[Assignment](ctx, c, request{method: "PATCH", path: "/api/v1/policies/" + esc(policyID) + "/assignments/" + esc(assignmentID),
		body: map[string]int64{"rank": int64(rank), "version": version}})
}

// UnassignPolicy removes an assignment if it is still at version.
func (c *Client) UnassignPolicy(ctx context.Context, policyID, assignmentID string, version int64) error {
	q := url.Values{"version": {strconv.FormatInt(version, 10)}}
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/policies/" + esc(policyID) + "/assignments/" + esc(assignmentID), query: q}, nil)
}

// EffectiveConfig returns a computer's effective configuration.
func (c *Client) EffectiveConfig(ctx context.Context, computerID string) (*EffectiveConfig, error) {
	return callAs[EffectiveConfig](ctx, c, request{method: "GET", path: "/api/v1/computers/" + esc(computerID) + "/effective-config"})
}

// --- Tasks ---------------------------------------------------------------

// TaskTypes returns the task types with their parameters, and the trigger
// kinds, events, target types and run states.
func (c *Client) TaskTypes(ctx context.Context) (*TaskTypes, error) {
	return callAs[TaskTypes](ctx, c, request{method: "GET", path: "/api/v1/tasks/types"})
}

// ListTasks lists the tasks the caller can read, of one type ("" for all).
func (c *Client) ListTasks(ctx context.Context, typ string) (*List[Task], error) {
	q := url.Values{}
	if typ != "" {
		q.Set("type", typ)
	}
	return callAs[List[Task]](ctx, c, request{method: "GET", path: "/api/v1/tasks", query: q})
}

// GetTask returns a task with its run counts and triggers.
func (c *Client) GetTask(ctx context.Context, id string) (*Task, error) {
	return callAs[Task](ctx, c, request{method: "GET", path: "/api/v1/tasks/" + esc(id)})
}

// CreateTask creates a task.
func (c *Client) CreateTask(ctx context.Context, req TaskRequest) (*Task, error) {
	return callAs[Task](ctx, c, request{method: "POST", path: "/api/v1/tasks", body: req})
}

// UpdateTask changes a task (conflict when u.Version is stale). Runs
// already planned keep their parameters.
func (c *Client) UpdateTask(ctx context.Context, id string, u TaskUpdate) (*Task, error) {
	return callAs[Task](ctx, c, request{method: "PATCH", path: "/api/v1/tasks/" + esc(id), body: u})
}

// DeleteTask deletes a task whose version is still version, with its
// triggers and runs.
func (c *Client) DeleteTask(ctx context.Context, id string, version int64) error {
	q := url.Values{"version": {strconv.FormatInt(version, 10)}}
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/tasks/" + esc(id), query: q}, nil)
}

// RunTask runs a task now: on its targets for a client task (the answer's
// Trigger plans the runs), once on the server for a server task (the
// answer's Run; no targets).
func (c *Client) RunTask(ctx context.Context, id string, req RunRequest) (*RunStarted, error) {
	return callAs[RunStarted](ctx, c, request{method: "POST", path: "/api/v1/tasks/" + esc(id) + "/run", body: req})
}

// TaskRunQuery filters ListTaskRuns.
type TaskRunQuery struct {
	State    string // planned, delivered, running, succeeded, failed, expired, cancelled
	Computer string // computer id
	Page
}

// ListTaskRuns lists a task's runs, newest first.
func (c *Client) ListTaskRuns(ctx context.Context, taskID string, f TaskRunQuery) (*List[TaskRun], error) {
	q := url.Values{}
	if f.State != "" {
		q.Set("state", f.State)
	}
	if f.Computer != "" {
		q.Set("computer", f.Computer)
	}
	f.Page.add(q)
	return callAs[List[TaskRun]](ctx, c, request{method: "GET", path: "/api/v1/tasks/" + esc(taskID) + "/runs", query: q})
}

// ListTriggers lists a task's triggers.
func (c *Client) ListTriggers(ctx context.Context, taskID string) (*List[Trigger], error) {
	return callAs[List[Trigger]](ctx, c, request{method: "GET", path: "/api/v1/tasks/" + esc(taskID) + "/triggers"})
}

// GetTrigger returns a trigger of a task.
func (c *Client) GetTrigger(ctx context.Context, taskID, triggerID string) (*Trigger, error) {
	return callAs[Trigger](ctx, c, request{method: "GET", path: "/api/v1/tasks/" + esc(taskID) + "/triggers/" + esc(triggerID)})
}

// CreateTrigger adds a trigger to a task.
func (c *Client) CreateTrigger(ctx context.Context, taskID string, req TriggerRequest) (*Trigger, error) {
	return callAs[Trigger](ctx, c, request{method: "POST", path: "/api/v1/tasks/" + esc(taskID) + "/triggers", body: req})
}

// UpdateTrigger changes a trigger (conflict when u.Version is stale); its
// schedule is computed again from now.
func (c *Client) UpdateTrigger(ctx context.Context, taskID, triggerID string, u TriggerUpdate) (*Trigger, error) {
	return callAs[Trigger](ctx, c, request{method: "PATCH", path: "/api/v1/tasks/" + esc(taskID) + "/triggers/" + esc(triggerID), body: u})
}

// DeleteTrigger deletes a trigger.
func (c *Client) DeleteTrigger(ctx context.Context, taskID, triggerID string, version int64) error {
	q := url.Values{"version": {strconv.FormatInt(version, 10)}}
	return c.callJSON(ctx, request{method: "DELETE", path: "/api/v1/tasks/" + esc(taskID) + "/triggers/" + esc(triggerID), query: q}, nil)
}

// GetTaskRun returns a task run.
func (c *Client) GetTaskRun(ctx context.Context, id string) (*TaskRun, error) {
	return callAs[TaskRun](ctx, c, request{method: "GET", path: "/api/v1/task-runs/" + esc(id)})
}

// CancelTaskRun cancels a run that has not finished (conflict for one that
// has) and returns it.
func (c *Client) CancelTaskRun(ctx context.Context, id string) (*TaskRun, error) {
	return callAs[TaskRun](ctx, c, request{method: "POST", path: "/api/v1/task-runs/" + esc(id) + "/cancel"})
}

// RetryTaskRun plans a failed, expired or cancelled run again as a new
// attempt and returns the new run.
func (c *Client) RetryTaskRun(ctx context.Context, id string) (*TaskRun, error) {
	return callAs[TaskRun](ctx, c, request{method: "POST", path: "/api/v1/task-runs/" + esc(id) + "/retry"})
}

// Attachment is the file a task run uploaded, being downloaded.
type Attachment struct {
	// Name is the server's file name (no directory part), "" if it sent
	// none.
	Name string
	// Size is the length the server announced, -1 when unknown.
	Size   int64
	body   io.ReadCloser
	cancel context.CancelFunc
	url    string
	read   int64
}

// Read reads the file; at most MaxExportBytes are read.
func (a *Attachment) Read(p []byte) (int, error) {
	if a.read >= MaxExportBytes {
		return 0, errcode.New(errcode.TooLarge, "attachment larger than %d bytes", int64(MaxExportBytes))
	}
	if rest := MaxExportBytes - a.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := a.body.Read(p)
	a.read += int64(n)
	if err != nil && err != io.EOF {
		err = &ConnError{URL: a.url, Err: err}
	}
	return n, err
}

// Close ends the download.
func (a *Attachment) Close() error {
	err := a.body.Close()
	a.cancel()
	return err
}

// OpenAttachment starts downloading the file a run uploaded (a
// diagnostics bundle); the caller reads and closes it. The download may
// take up to ExportTimeout. A run without one: not_found.
func (c *Client) OpenAttachment(ctx context.Context, runID string) (*Attachment, error) {
	ctx, cancel := context.WithTimeout(ctx, max(ExportTimeout, c.timeout()))
	resp, err := c.send(ctx, request{method: "GET", path: "/api/v1/task-runs/" + esc(runID) + "/attachment",
		header: http.Header{"Accept": {"application/gzip, application/octet-stream, */*"}}})
	if err != nil {
		cancel()
		return nil, err
	}
	a := &Attachment{Size: resp.ContentLength, body: resp.Body, cancel: cancel, url: c.BaseURL}
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
		a.Name = filepath.Base(filepath.Clean("/" + strings.ReplaceAll(params["filename"], `\`, "/")))
		if a.Name == "/" || a.Name == "." {
			a.Name = ""
		}
	}
	return a, nil
}

// --- Settings ------------------------------------------------------------

// Retention is how long events, resolved detections and finished task runs
// are kept, in days (GET/PUT /api/v1/settings/retention).
type Retention struct {
	RawJSON
	EventsDays     int   `json:"events_days"`
	DetectionsDays int   `json:"detections_days"`
	TaskRunsDays   int   `json:"task_runs_days"`
	Version        int64 `json:"version"`
}

// GetRetention reads the retention settings.
func (c *Client) GetRetention(ctx context.Context) (*Retention, error) {
	return callAs[Retention](ctx, c, request{method: "GET", path: "/api/v1/settings/retention"})
}

// PutRetention replaces the retention settings (0 fields take their
// defaults) if they are still at r.Version.
func (c *Client) PutRetention(ctx context.Context, r Retention) (*Retention, error) {
	body := map[string]any{"events_days": r.EventsDays, "detections_days": r.DetectionsDays, "task_runs_days": r.TaskRunsDays, "version": r.Version}
	return callAs[Retention](ctx, c, request{method: "PUT", path: "/api/v1/settings/retention", body: body})
}
