package apiclient

import (
	"encoding/json"
	"time"
)

// The JSON shapes of the API (internal/httpapi). Times are RFC 3339; null
// decodes to the zero time.

// List is a page of a list endpoint: {"items":[...],"total":N}.
type List[T any] struct {
	RawJSON
	Items []T `json:"items"`
	Total int `json:"total"` // matches in all pages
}

// GroupRef names a static group.
type GroupRef struct {
	ID   string `json:"id"`
	Path string `json:"path"`
}

// Session is who a client is (POST and GET /api/v1/session).
type Session struct {
	RawJSON
	User struct {
		ID          string `json:"id"`
		Username    string `json:"username"`
		HomeGroupID string `json:"home_group_id"`
	} `json:"user"`
	Via       string    `json:"via"` // "session" or "api_token"
	ExpiresAt time.Time `json:"expires_at"`
	// Restriction is what a session must do before anything else:
	// "second_factor", "password_change" or "totp_enrollment"; "" none.
	Restriction string  `json:"restriction"`
	Permissions []Grant `json:"permissions"`
}

// Restrictions of a session (auth.Restrict*).
const (
	RestrictSecondFactor   = "second_factor"
	RestrictPasswordChange = "password_change"
	RestrictTOTPEnrollment = "totp_enrollment"
)

// Grant is one permission of a session.
type Grant struct {
	Functionality string   `json:"functionality"`
	Level         string   `json:"level"`
	GroupIDs      []string `json:"group_ids"`
}

// CAInfo is GET /api/v1/ca.
type CAInfo struct {
	RawJSON
	Fingerprint    string `json:"fingerprint"`
	CertificatePEM string `json:"certificate_pem"`
}

// TOTPEnrollment is a second factor being set up.
type TOTPEnrollment struct {
	RawJSON
	Secret     string `json:"secret"`
	OTPAuthURI string `json:"otpauth_uri"`
}

// APIToken is a personal API token; Token (the secret) only on creation.
type APIToken struct {
	RawJSON
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Token      string    `json:"token"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	RevokedAt  time.Time `json:"revoked_at"`
}

// EnrollmentToken lets agents enroll; Token (the secret) only on creation.
type EnrollmentToken struct {
	RawJSON
	ID          string    `json:"id"`
	Token       string    `json:"token"`
	Group       GroupRef  `json:"group"`
	AccessGroup GroupRef  `json:"access_group"`
	Description string    `json:"description"`
	ExpiresAt   time.Time `json:"expires_at"`
	UsesAllowed int       `json:"uses_allowed"` // 0: unlimited
	Uses        int       `json:"uses"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	RevokedAt   time.Time `json:"revoked_at"`
}

// EnrollmentTokenRequest creates an enrollment token.
type EnrollmentTokenRequest struct {
	Group       string `json:"group,omitempty"`        // path; default Lost & Found
	AccessGroup string `json:"access_group,omitempty"` // path; default the caller's home group
	TTL         string `json:"ttl,omitempty"`          // Go duration; default 24h
	Uses        int    `json:"uses,omitempty"`         // 0: unlimited
	Description string `json:"description,omitempty"`
}

// User is a console user.
type User struct {
	RawJSON
	ID                 string    `json:"id"`
	Username           string    `json:"username"`
	Description        string    `json:"description"`
	HomeGroup          GroupRef  `json:"home_group"`
	Disabled           bool      `json:"disabled"`
	MustChangePassword bool      `json:"must_change_password"`
	TOTPEnabled        bool      `json:"totp_enabled"`
	TOTPRequired       bool      `json:"totp_required"`
	PermissionSets     []string  `json:"permission_sets"`
	CreatedAt          time.Time `json:"created_at"`
	LastLoginAt        time.Time `json:"last_login_at"`
	LastLoginAddr      string    `json:"last_login_addr"`
	LockedUntil        time.Time `json:"locked_until"`
	Version            int64     `json:"version"`
}

// UserRequest creates a user.
type UserRequest struct {
	Username           string   `json:"username"`
	Password           string   `json:"password"`
	Description        string   `json:"description,omitempty"`
	HomeGroup          string   `json:"home_group,omitempty"` // path; default the caller's home group
	PermissionSets     []string `json:"permission_sets,omitempty"`
	TOTPRequired       bool     `json:"totp_required,omitempty"`
	MustChangePassword *bool    `json:"must_change_password,omitempty"` // default true
}

// UserUpdate changes a user; nil fields stay as they are. Version is the
// version the change is based on (from GetUser).
type UserUpdate struct {
	Description    *string   `json:"description,omitempty"`
	HomeGroup      *string   `json:"home_group,omitempty"`
	Disabled       *bool     `json:"disabled,omitempty"`
	TOTPRequired   *bool     `json:"totp_required,omitempty"`
	PermissionSets *[]string `json:"permission_sets,omitempty"`
	Unlock         bool      `json:"unlock,omitempty"` // clears failed logins and a lockout
	Version        int64     `json:"version"`
}

// Group is a static group; Members only from GetGroup.
type Group struct {
	RawJSON
	ID        string        `json:"id"`
	Name      string        `json:"name"`
	Path      string        `json:"path"`
	ParentID  string        `json:"parent_id"` // "" for All
	CreatedAt time.Time     `json:"created_at"`
	Version   int64         `json:"version"`
	Members   *GroupMembers `json:"members,omitempty"`
}

// GroupMembers counts what a group holds.
type GroupMembers struct {
	Subgroups        int `json:"subgroups"`
	Computers        int `json:"computers"`
	EnrollmentTokens int `json:"enrollment_tokens"`
	PermissionSets   int `json:"permission_sets"`
	Users            int `json:"users"`
	DynamicGroups    int `json:"dynamic_groups"`
	Policies         int `json:"policies"`
	Tasks            int `json:"tasks"`
}

// PermissionSet grants functionalities over groups.
type PermissionSet struct {
	RawJSON
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Group       GroupRef          `json:"group"`
	Builtin     bool              `json:"builtin"`
	Groups      []GroupRef        `json:"groups"`
	Grants      map[string]string `json:"grants"` // functionality -> read | use | write
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
	Version     int64             `json:"version"`
}

// Computer is a managed computer; the detail fields only from GetComputer.
// Engine is a computer's detection engine (nil until its agent reported it).
type Engine struct {
	Version     uint64    `json:"version"`
	UpdateState string    `json:"update_state"`
	LastSuccess time.Time `json:"last_success"`
	LastError   string    `json:"last_error"`
	Latest      uint64    `json:"latest"`
	Outdated    bool      `json:"outdated"`
}

type Computer struct {
	RawJSON
	ID                string    `json:"id"`
	Name              string    `json:"name"`
	Hostname          string    `json:"hostname"`
	Instance          string    `json:"instance"`
	Status            string    `json:"status"`
	LastSeen          time.Time `json:"last_seen"`
	ConnectedSince    time.Time `json:"connected_since"`
	ConnectionWarning string    `json:"connection_warning"`
	OS                struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"os"`
	Platform             string    `json:"platform"`
	AgentVersion         string    `json:"agent_version"`
	CloneSuspected       bool      `json:"clone_suspected"`
	CloneReason          string    `json:"clone_reason"`
	Group                GroupRef  `json:"group"`
	EnrolledAt           time.Time `json:"enrolled_at"`
	Revoked              bool      `json:"revoked"`
	UnresolvedDetections int       `json:"unresolved_detections"`
	Tags                 []string  `json:"tags"`
	Engine               *Engine   `json:"engine"`
	Version              int64     `json:"version"`

	HardwareFingerprint string                     `json:"hardware_fingerprint"`
	Inventory           map[string]json.RawMessage `json:"inventory"`
	InventoryUpdatedAt  map[string]time.Time       `json:"inventory_updated_at"`
	RecentEvents        []Event                    `json:"recent_events"`
}

// Event is an agent event.
type Event struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	OccurredAt time.Time       `json:"occurred_at"`
	ReceivedAt time.Time       `json:"received_at"`
	Data       json.RawMessage `json:"data"`
	// Withheld says why Data is empty (an area the caller may not read).
	Withheld string `json:"withheld,omitempty"`
}

// AuditEntry is one entry of the audit log.
type AuditEntry struct {
	Seq        int64           `json:"seq"`
	At         time.Time       `json:"at"`
	UserID     string          `json:"user_id"`
	Username   string          `json:"username"`
	Via        string          `json:"via"`
	RemoteAddr string          `json:"remote_addr"`
	Domain     string          `json:"domain"`
	Action     string          `json:"action"`
	ObjectID   string          `json:"object_id"`
	ObjectName string          `json:"object_name"`
	Diff       json.RawMessage `json:"diff"`
	Result     string          `json:"result"` // success | failure
	Detail     string          `json:"detail"`
}

// DynamicGroup is a group whose members its template selects. It sits under
// a static group (Parent) or under another dynamic group (ParentDynamic).
type DynamicGroup struct {
	RawJSON
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	Description   string          `json:"description"`
	Parent        *GroupRef       `json:"parent"`         // static parent; nil under a dynamic group
	ParentDynamic *string         `json:"parent_dynamic"` // dynamic parent's id; nil under a static group
	AccessGroup   GroupRef        `json:"access_group"`   // the static group it ultimately sits under
	Template      json.RawMessage `json:"template"`       // {"op": "and|or|nand|nor", "rules": [{"field","operator","value"}]}
	Members       int             `json:"members"`
	EvaluatedAt   time.Time       `json:"evaluated_at"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
	Version       int64           `json:"version"`
}

// DynamicGroupRequest creates a dynamic group; at most one of Parent and
// ParentDynamic (none: under All).
type DynamicGroupRequest struct {
	Name          string          `json:"name"`
	Description   string          `json:"description,omitempty"`
	Parent        string          `json:"parent,omitempty"`         // static group path
	ParentDynamic string          `json:"parent_dynamic,omitempty"` // dynamic group id
	Template      json.RawMessage `json:"template"`
}

// DynamicGroupUpdate changes a dynamic group; nil (empty) fields stay as
// they are. A dynamic group cannot move.
type DynamicGroupUpdate struct {
	Name        *string         `json:"name,omitempty"`
	Description *string         `json:"description,omitempty"`
	Template    json.RawMessage `json:"template,omitempty"`
	Version     int64           `json:"version"`
}

// PolicyValue is one setting of a policy. Value is the setting's JSON value
// (a list of strings for list settings); Merge applies to lists only.
type PolicyValue struct {
	Flag  string          `json:"flag"` // apply | force
	Value json.RawMessage `json:"value"`
	Merge string          `json:"merge,omitempty"` // replace | append | prepend
}

// Policy configures one product for the targets it is assigned to.
type Policy struct {
	RawJSON
	ID          string                 `json:"id"`
	Name        string                 `json:"name"`
	Product     string                 `json:"product"`
	Description string                 `json:"description"`
	Group       GroupRef               `json:"group"` // where it lives (access), not where it applies
	Settings    map[string]PolicyValue `json:"settings"`
	CreatedAt   time.Time              `json:"created_at"`
	UpdatedAt   time.Time              `json:"updated_at"`
	Version     int64                  `json:"version"`
}

// PolicyRequest creates a policy.
type PolicyRequest struct {
	Name        string                 `json:"name"`
	Product     string                 `json:"product"`
	Description string                 `json:"description,omitempty"`
	Group       string                 `json:"group,omitempty"` // path; default the caller's home group
	Settings    map[string]PolicyValue `json:"settings,omitempty"`
}

// PolicyUpdate changes a policy; nil fields stay as they are. Settings,
// when given, replace all of the policy's settings.
type PolicyUpdate struct {
	Name        *string                 `json:"name,omitempty"`
	Description *string                 `json:"description,omitempty"`
	Group       *string                 `json:"group,omitempty"`
	Settings    *map[string]PolicyValue `json:"settings,omitempty"`
	Version     int64                   `json:"version"`
}

// PolicySchema is GET /api/v1/policies/schema: every setting of every
// product.
type PolicySchema struct {
	RawJSON
	Products   []string      `json:"products"`
	Settings   []SettingInfo `json:"settings"`
	Flags      []string      `json:"flags"`
	MergeRules []string      `json:"merge_rules"`
}

// SettingInfo describes one setting.
type SettingInfo struct {
	Key     string          `json:"key"`
	Product string          `json:"product"`
	Type    string          `json:"type"` // bool, int, duration, size, string, enum, list
	Default json.RawMessage `json:"default"`
	Unit    string          `json:"unit"`
	Min     *float64        `json:"min"`
	Max     *float64        `json:"max"`
	Enum    []string        `json:"enum"`
	Doc     string          `json:"doc"`
}

// Assignment puts a policy on a target. Target.Path is the static group's
// path, the dynamic group's name or the computer's name.
type Assignment struct {
	RawJSON
	ID         string    `json:"id"`
	PolicyID   string    `json:"policy_id"`
	TargetType string    `json:"target_type"` // static | dynamic | computer
	Target     GroupRef  `json:"target"`
	Rank       int       `json:"rank"`
	CreatedAt  time.Time `json:"created_at"`
	Version    int64     `json:"version"`
}

// Policy assignment target types.
const (
	TargetStatic   = "static"
	TargetDynamic  = "dynamic"
	TargetComputer = "computer"
)

// AssignRequest assigns a policy: Target is a static group path, a
// dynamic group id or a computer id.
type AssignRequest struct {
	TargetType string `json:"target_type"`
	Target     string `json:"target"`
	Rank       int    `json:"rank"`
}

// EffectiveConfig is a computer's effective configuration: every setting
// with where its value came from.
type EffectiveConfig struct {
	RawJSON
	ComputerID     string             `json:"computer_id"`
	Version        string             `json:"version"`         // computed by the server now
	AppliedVersion string             `json:"applied_version"` // reported applied by the agent
	AgentError     string             `json:"agent_error"`
	ReportedAt     time.Time          `json:"reported_at"`
	Settings       []EffectiveSetting `json:"settings"`
}

// EffectiveSetting is one setting of an effective configuration.
type EffectiveSetting struct {
	Product string          `json:"product"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	Default bool            `json:"default"` // no policy sets it
	Forced  bool            `json:"forced"`
	Source  *SettingSource  `json:"source"`  // the policy that set the value last; nil for the default
	Sources []SettingSource `json:"sources"` // every policy that contributed to a list
}

// SettingSource is a policy (and the assignment that brought it) a value
// came from.
type SettingSource struct {
	PolicyID     string `json:"policy_id"`
	PolicyName   string `json:"policy_name"`
	AssignmentID string `json:"assignment_id"`
	TargetType   string `json:"target_type"`
	TargetID     string `json:"target_id"`
	TargetName   string `json:"target_name"`
	Flag         string `json:"flag"`
	Merge        string `json:"merge"`
}

// TaskTypes is GET /api/v1/tasks/types: the task model.
type TaskTypes struct {
	RawJSON
	Types        []TaskType `json:"types"`
	TriggerKinds []string   `json:"trigger_kinds"`
	Events       []string   `json:"events"`
	TargetTypes  []string   `json:"target_types"`
	RunStates    []string   `json:"run_states"`
}

// TaskType describes a task type and its parameters.
type TaskType struct {
	Type   string      `json:"type"`
	Server bool        `json:"server"` // runs on the server, not on computers
	Params []TaskParam `json:"params"`
	Doc    string      `json:"doc"`
}

// TaskParam describes one parameter of a task type.
type TaskParam struct {
	Name     string          `json:"name"`
	Type     string          `json:"type"` // list, string, int, size, duration, "enum a|b"
	Required bool            `json:"required"`
	Default  json.RawMessage `json:"default"`
	Doc      string          `json:"doc"`
}

// Task is what computers (or the server) are made to do; Triggers only
// from GetTask.
type Task struct {
	RawJSON
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Type        string          `json:"type"`
	Server      bool            `json:"server"`
	Params      json.RawMessage `json:"params"`
	Group       GroupRef        `json:"group"`
	CreatedBy   string          `json:"created_by"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	Version     int64           `json:"version"`
	Runs        map[string]int  `json:"runs"` // run counts by state
	Triggers    []Trigger       `json:"triggers"`
}

// TaskRequest creates a task.
type TaskRequest struct {
	Name        string          `json:"name"`
	Type        string          `json:"type"`
	Description string          `json:"description,omitempty"`
	Params      json.RawMessage `json:"params,omitempty"`
	Group       string          `json:"group,omitempty"` // path; default the caller's home group
}

// TaskUpdate changes a task; nil (empty) fields stay as they are. Params,
// when given, replace all parameters (missing ones take their defaults).
type TaskUpdate struct {
	Name        *string         `json:"name,omitempty"`
	Description *string         `json:"description,omitempty"`
	Group       *string         `json:"group,omitempty"`
	Params      json.RawMessage `json:"params,omitempty"`
	Version     int64           `json:"version"`
}

// Target is a target of a trigger or run: a computer (ID), a static group
// (ID or, in requests, Path) or a dynamic group (ID).
type Target struct {
	Type string `json:"type"` // computer | static_group | dynamic_group
	ID   string `json:"id,omitempty"`
	Path string `json:"path,omitempty"`
}

// Task target types.
const (
	TaskTargetComputer     = "computer"
	TaskTargetStaticGroup  = "static_group"
	TaskTargetDynamicGroup = "dynamic_group"
)

// Trigger says when a task runs and on what.
type Trigger struct {
	RawJSON
	ID          string          `json:"id"`
	TaskID      string          `json:"task_id"`
	Trigger     json.RawMessage `json:"trigger"` // the specification: {"kind": ..., ...}
	Targets     []Target        `json:"targets"`
	Enabled     bool            `json:"enabled"`
	CreatedBy   string          `json:"created_by"`
	CreatedAt   time.Time       `json:"created_at"`
	NextFireAt  time.Time       `json:"next_fire_at"`
	LastFiredAt time.Time       `json:"last_fired_at"`
	Version     int64           `json:"version"`
}

// TriggerRequest adds a trigger to a task.
type TriggerRequest struct {
	Trigger json.RawMessage `json:"trigger"`
	Targets []Target        `json:"targets,omitempty"`
	Enabled *bool           `json:"enabled,omitempty"` // default true
}

// TriggerUpdate changes a trigger; nil (empty) fields stay as they are.
type TriggerUpdate struct {
	Trigger json.RawMessage `json:"trigger,omitempty"`
	Targets *[]Target       `json:"targets,omitempty"`
	Enabled *bool           `json:"enabled,omitempty"`
	Version int64           `json:"version"`
}

// RunRequest runs a task now.
type RunRequest struct {
	Targets     []Target `json:"targets,omitempty"`
	RandomDelay string   `json:"random_delay,omitempty"`
	Expiry      string   `json:"expiry,omitempty"`
}

// RunStarted is the answer to running a task now: the "as soon as possible"
// trigger that plans a run per computer (client tasks), or the one run of a
// server task.
type RunStarted struct {
	RawJSON
	Trigger *Trigger `json:"trigger"`
	Run     *TaskRun `json:"run"`
}

// TaskRun is one execution of a task on one computer (or on the server:
// Computer nil). Computer.Path holds the computer's name.
type TaskRun struct {
	RawJSON
	ID          string          `json:"id"`
	TaskID      string          `json:"task_id"`
	TriggerID   string          `json:"trigger_id"`
	Computer    *GroupRef       `json:"computer"`
	Type        string          `json:"type"`
	Params      json.RawMessage `json:"params"`
	State       string          `json:"state"` // planned, delivered, running, succeeded, failed, expired, cancelled
	Attempt     int             `json:"attempt"`
	CreatedAt   time.Time       `json:"created_at"`
	NotBefore   time.Time       `json:"not_before"`
	ExpiresAt   time.Time       `json:"expires_at"`
	DeliveredAt time.Time       `json:"delivered_at"`
	StartedAt   time.Time       `json:"started_at"`
	FinishedAt  time.Time       `json:"finished_at"`
	ExitCode    *int            `json:"exit_code"`
	Output      string          `json:"output"`
	Error       string          `json:"error"`
	Attachment  bool            `json:"attachment"`
}

// Finished reports whether the run reached a final state.
func (r *TaskRun) Finished() bool {
	switch r.State {
	case RunSucceeded, RunFailed, RunExpired, RunCancelled:
		return true
	}
	return false
}

// Run states.
const (
	RunPlanned   = "planned"
	RunDelivered = "delivered"
	RunRunning   = "running"
	RunSucceeded = "succeeded"
	RunFailed    = "failed"
	RunExpired   = "expired"
	RunCancelled = "cancelled"
)
