package httpapi

import (
	"net/http"
	"slices"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/store"
)

type audience int

const (
	// public routes need no credentials; each says why below.
	public audience = iota
	// user routes need an authenticated user without pending restrictions.
	user
	// login routes are the ones a restricted principal (second factor due,
	// password to change, second factor to set up) may still reach.
	login
)

type route struct {
	Method   string
	Pattern  string
	Audience audience
	// Audit is "domain.action" for routes that change something: every
	// request to them leaves exactly one audit entry, success or failure.
	Audit   string
	Handler func(http.ResponseWriter, *http.Request) error
	// lifts lists the restrictions a login route serves.
	lifts []string
}

func (rt route) allows(restriction string) bool { return slices.Contains(rt.lifts, restriction) }

var (
	anyRestriction = []string{auth.RestrictSecondFactor, auth.RestrictPasswordChange, auth.RestrictTOTPEnrollment}
	pwAndTOTP      = []string{auth.RestrictPasswordChange, auth.RestrictTOTPEnrollment}
)

// routes is the one table of every endpoint.
func (a *API) routes() []route {
	return []route{
		// Operational probes carry nothing but up or down and are polled by
		// load balancers without credentials.
		{Method: "GET", Pattern: "/healthz", Audience: public, Handler: a.healthz},
		{Method: "GET", Pattern: "/readyz", Audience: public, Handler: a.readyz},
		// Metrics tell the fleet's size and the server's state: a scraper
		// sends a user's API token (or uses the server's --metrics-listen).
		{Method: "GET", Pattern: "/metrics", Audience: user, Handler: a.metrics},
		// The CA fingerprint is what installers pin; it is public by nature.
		{Method: "GET", Pattern: "/api/v1/ca", Audience: public, Handler: a.getCA},
		// The API description is public documentation.
		{Method: "GET", Pattern: "/api/v1/openapi.json", Audience: public, Handler: a.openAPI},
		// Logging in is how credentials are obtained.
		{Method: "POST", Pattern: "/api/v1/session", Audience: public, Audit: "session.login", Handler: a.login},

		{Method: "GET", Pattern: "/api/v1/session", Audience: login, Handler: a.whoami, lifts: anyRestriction},
		{Method: "DELETE", Pattern: "/api/v1/session", Audience: login, Audit: "session.logout", Handler: a.logout, lifts: anyRestriction},
		{Method: "POST", Pattern: "/api/v1/session/totp", Audience: login, Audit: "session.second_factor", Handler: a.secondFactor, lifts: []string{auth.RestrictSecondFactor}},
		{Method: "POST", Pattern: "/api/v1/session/totp/enroll", Audience: login, Audit: "users.totp_enroll", Handler: a.totpEnroll, lifts: []string{auth.RestrictTOTPEnrollment}},
		{Method: "POST", Pattern: "/api/v1/session/totp/confirm", Audience: login, Audit: "users.totp_confirm", Handler: a.totpConfirm, lifts: []string{auth.RestrictTOTPEnrollment}},
		{Method: "POST", Pattern: "/api/v1/session/password", Audience: login, Audit: "users.password_change", Handler: a.changePassword, lifts: pwAndTOTP},

		{Method: "GET", Pattern: "/api/v1/tokens", Audience: user, Handler: a.listAPITokens},
		{Method: "POST", Pattern: "/api/v1/tokens", Audience: user, Audit: "api_tokens.create", Handler: a.createAPIToken},
		{Method: "DELETE", Pattern: "/api/v1/tokens/{id}", Audience: user, Audit: "api_tokens.revoke", Handler: a.revokeAPIToken},

		{Method: "GET", Pattern: "/api/v1/computers", Audience: user, Handler: a.listComputers},
		{Method: "POST", Pattern: "/api/v1/computers/wakeup", Audience: user, Audit: "computers.wakeup", Handler: a.wakeComputers},
		{Method: "GET", Pattern: "/api/v1/computers/{id}", Audience: user, Handler: a.getComputer},
		{Method: "GET", Pattern: "/api/v1/computers/{id}/events", Audience: user, Handler: a.listComputerEvents},
		{Method: "POST", Pattern: "/api/v1/computers/{id}/wakeup", Audience: user, Audit: "computers.wakeup", Handler: a.wakeComputer},
		{Method: "POST", Pattern: "/api/v1/computers/{id}/revoke", Audience: user, Audit: "computers.revoke", Handler: a.revokeComputer},
		{Method: "POST", Pattern: "/api/v1/computers/{id}/move", Audience: user, Audit: "computers.move", Handler: a.moveComputer},
		{Method: "POST", Pattern: "/api/v1/computers/{id}/tags", Audience: user, Audit: "computers.tag", Handler: a.addTag},
		{Method: "DELETE", Pattern: "/api/v1/computers/{id}/tags/{tag}", Audience: user, Audit: "computers.untag", Handler: a.removeTag},
		{Method: "GET", Pattern: "/api/v1/tags", Audience: user, Handler: a.listTags},

		{Method: "GET", Pattern: "/api/v1/detections", Audience: user, Handler: a.listDetections},
		{Method: "GET", Pattern: "/api/v1/detections/{id}", Audience: user, Handler: a.getDetection},
		{Method: "POST", Pattern: "/api/v1/detections/{id}/resolve", Audience: user, Audit: "detections.resolve", Handler: a.setDetectionState(store.DetectionResolved)},
		{Method: "POST", Pattern: "/api/v1/detections/{id}/unresolve", Audience: user, Audit: "detections.unresolve", Handler: a.setDetectionState(store.DetectionUnresolved)},

		{Method: "GET", Pattern: "/api/v1/groups", Audience: user, Handler: a.listGroups},
		{Method: "POST", Pattern: "/api/v1/groups", Audience: user, Audit: "groups.create", Handler: a.createGroup},
		{Method: "GET", Pattern: "/api/v1/groups/{id}", Audience: user, Handler: a.getGroup},
		{Method: "PATCH", Pattern: "/api/v1/groups/{id}", Audience: user, Audit: "groups.rename", Handler: a.renameGroup},
		{Method: "POST", Pattern: "/api/v1/groups/{id}/move", Audience: user, Audit: "groups.move", Handler: a.moveGroup},
		{Method: "DELETE", Pattern: "/api/v1/groups/{id}", Audience: user, Audit: "groups.delete", Handler: a.deleteGroup},

		{Method: "GET", Pattern: "/api/v1/dynamic-groups", Audience: user, Handler: a.listDynGroups},
		{Method: "POST", Pattern: "/api/v1/dynamic-groups", Audience: user, Audit: "dynamic_groups.create", Handler: a.createDynGroup},
		{Method: "GET", Pattern: "/api/v1/dynamic-groups/fields", Audience: user, Handler: a.dynFields},
		{Method: "GET", Pattern: "/api/v1/dynamic-groups/preview", Audience: user, Handler: a.previewDynGroup},
		{Method: "GET", Pattern: "/api/v1/dynamic-groups/{id}", Audience: user, Handler: a.getDynGroup},
		{Method: "PATCH", Pattern: "/api/v1/dynamic-groups/{id}", Audience: user, Audit: "dynamic_groups.update", Handler: a.updateDynGroup},
		{Method: "DELETE", Pattern: "/api/v1/dynamic-groups/{id}", Audience: user, Audit: "dynamic_groups.delete", Handler: a.deleteDynGroup},
		{Method: "GET", Pattern: "/api/v1/dynamic-groups/{id}/members", Audience: user, Handler: a.dynMembers},

		{Method: "GET", Pattern: "/api/v1/policies/schema", Audience: user, Handler: a.policySchema},
		{Method: "GET", Pattern: "/api/v1/policies", Audience: user, Handler: a.listPolicies},
		{Method: "POST", Pattern: "/api/v1/policies", Audience: user, Audit: "policies.create", Handler: a.createPolicy},
		{Method: "GET", Pattern: "/api/v1/policies/{id}", Audience: user, Handler: a.getPolicy},
		{Method: "PATCH", Pattern: "/api/v1/policies/{id}", Audience: user, Audit: "policies.update", Handler: a.updatePolicy},
		{Method: "DELETE", Pattern: "/api/v1/policies/{id}", Audience: user, Audit: "policies.delete", Handler: a.deletePolicy},
		{Method: "GET", Pattern: "/api/v1/policies/{id}/assignments", Audience: user, Handler: a.listAssignments},
		{Method: "POST", Pattern: "/api/v1/policies/{id}/assignments", Audience: user, Audit: "policies.assign", Handler: a.assignPolicy},
		{Method: "PATCH", Pattern: "/api/v1/policies/{id}/assignments/{aid}", Audience: user, Audit: "policies.rank", Handler: a.rankAssignment},
		{Method: "DELETE", Pattern: "/api/v1/policies/{id}/assignments/{aid}", Audience: user, Audit: "policies.unassign", Handler: a.unassignPolicy},
		{Method: "GET", Pattern: "/api/v1/computers/{id}/effective-config", Audience: user, Handler: a.effectiveConfig},

		{Method: "GET", Pattern: "/api/v1/tasks/types", Audience: user, Handler: a.taskTypes},
		{Method: "GET", Pattern: "/api/v1/tasks", Audience: user, Handler: a.listTasks},
		{Method: "POST", Pattern: "/api/v1/tasks", Audience: user, Audit: "tasks.create", Handler: a.createTask},
		{Method: "GET", Pattern: "/api/v1/tasks/{id}", Audience: user, Handler: a.getTask},
		{Method: "PATCH", Pattern: "/api/v1/tasks/{id}", Audience: user, Audit: "tasks.update", Handler: a.updateTask},
		{Method: "DELETE", Pattern: "/api/v1/tasks/{id}", Audience: user, Audit: "tasks.delete", Handler: a.deleteTask},
		{Method: "POST", Pattern: "/api/v1/tasks/{id}/run", Audience: user, Audit: "tasks.run", Handler: a.runTask},
		{Method: "GET", Pattern: "/api/v1/tasks/{id}/runs", Audience: user, Handler: a.listTaskRuns},
		{Method: "GET", Pattern: "/api/v1/tasks/{id}/triggers", Audience: user, Handler: a.listTriggers},
		{Method: "POST", Pattern: "/api/v1/tasks/{id}/triggers", Audience: user, Audit: "tasks.trigger_create", Handler: a.createTrigger},
		{Method: "GET", Pattern: "/api/v1/tasks/{id}/triggers/{tid}", Audience: user, Handler: a.getTrigger},
		{Method: "PATCH", Pattern: "/api/v1/tasks/{id}/triggers/{tid}", Audience: user, Audit: "tasks.trigger_update", Handler: a.updateTrigger},
		{Method: "DELETE", Pattern: "/api/v1/tasks/{id}/triggers/{tid}", Audience: user, Audit: "tasks.trigger_delete", Handler: a.deleteTrigger},
		{Method: "GET", Pattern: "/api/v1/task-runs/{id}", Audience: user, Handler: a.getRun},
		{Method: "POST", Pattern: "/api/v1/task-runs/{id}/cancel", Audience: user, Audit: "tasks.run_cancel", Handler: a.cancelRun},
		{Method: "POST", Pattern: "/api/v1/task-runs/{id}/retry", Audience: user, Audit: "tasks.run_retry", Handler: a.retryRun},
		{Method: "GET", Pattern: "/api/v1/task-runs/{id}/attachment", Audience: user, Handler: a.runAttachment},
		{Method: "GET", Pattern: "/api/v1/computers/{id}/task-runs", Audience: user, Handler: a.listComputerRuns},

		{Method: "GET", Pattern: "/api/v1/enrollment-tokens", Audience: user, Handler: a.listTokens},
		{Method: "POST", Pattern: "/api/v1/enrollment-tokens", Audience: user, Audit: "enrollment_tokens.create", Handler: a.createToken},
		{Method: "DELETE", Pattern: "/api/v1/enrollment-tokens/{id}", Audience: user, Audit: "enrollment_tokens.revoke", Handler: a.revokeToken},

		{Method: "GET", Pattern: "/api/v1/users", Audience: user, Handler: a.listUsers},
		{Method: "POST", Pattern: "/api/v1/users", Audience: user, Audit: "users.create", Handler: a.createUser},
		{Method: "GET", Pattern: "/api/v1/users/{id}", Audience: user, Handler: a.getUser},
		{Method: "PATCH", Pattern: "/api/v1/users/{id}", Audience: user, Audit: "users.update", Handler: a.updateUser},
		{Method: "DELETE", Pattern: "/api/v1/users/{id}", Audience: user, Audit: "users.delete", Handler: a.deleteUser},
		{Method: "POST", Pattern: "/api/v1/users/{id}/password", Audience: user, Audit: "users.password_reset", Handler: a.resetPassword},
		{Method: "DELETE", Pattern: "/api/v1/users/{id}/totp", Audience: user, Audit: "users.totp_remove", Handler: a.removeTOTP},

		{Method: "GET", Pattern: "/api/v1/permission-sets", Audience: user, Handler: a.listPermSets},
		{Method: "POST", Pattern: "/api/v1/permission-sets", Audience: user, Audit: "permission_sets.create", Handler: a.createPermSet},
		{Method: "GET", Pattern: "/api/v1/permission-sets/{id}", Audience: user, Handler: a.getPermSet},
		{Method: "PATCH", Pattern: "/api/v1/permission-sets/{id}", Audience: user, Audit: "permission_sets.update", Handler: a.updatePermSet},
		{Method: "DELETE", Pattern: "/api/v1/permission-sets/{id}", Audience: user, Audit: "permission_sets.delete", Handler: a.deletePermSet},

		{Method: "GET", Pattern: "/api/v1/audit", Audience: user, Handler: a.listAudit},
		{Method: "GET", Pattern: "/api/v1/audit/export", Audience: user, Handler: a.exportAudit},

		{Method: "GET", Pattern: "/api/v1/settings/security", Audience: user, Handler: a.getSecurity},
		{Method: "PUT", Pattern: "/api/v1/settings/security", Audience: user, Audit: "server_settings.security", Handler: a.putSecurity},
		{Method: "GET", Pattern: "/api/v1/settings/retention", Audience: user, Handler: a.getRetention},
		{Method: "PUT", Pattern: "/api/v1/settings/retention", Audience: user, Audit: "server_settings.retention", Handler: a.putRetention},
	}
}
