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
