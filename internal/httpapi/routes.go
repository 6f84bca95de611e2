package httpapi

import (
	"net/http"

	"github.com/mamori/mamori/internal/store"
)

type audience int

const (
	// public routes need no credentials; each says why.
	public audience = iota
	// user routes need an authenticated console/API user.
	user
)

type route struct {
	Method   string
	Pattern  string
	Audience audience
	Handler  func(http.ResponseWriter, *http.Request) error
}

// routes is the one table of every endpoint.
func (a *API) routes() []route {
	return []route{
		// Operational probes and metrics carry no secrets and are scraped
		// by tooling without credentials.
		{"GET", "/healthz", public, a.healthz},
		{"GET", "/readyz", public, a.readyz},
		{"GET", "/metrics", public, a.metrics},
		// The CA fingerprint is what installers pin; it is public by nature.
		{"GET", "/api/v1/ca", public, a.getCA},
		// Logging in is how credentials are obtained.
		{"POST", "/api/v1/session", public, a.login},

		{"GET", "/api/v1/session", user, a.whoami},
		{"DELETE", "/api/v1/session", user, a.logout},

		{"GET", "/api/v1/computers", user, a.listComputers},
		{"POST", "/api/v1/computers/wakeup", user, a.wakeComputers},
		{"GET", "/api/v1/computers/{id}", user, a.getComputer},
		{"GET", "/api/v1/computers/{id}/events", user, a.listComputerEvents},
		{"POST", "/api/v1/computers/{id}/wakeup", user, a.wakeComputer},
		{"POST", "/api/v1/computers/{id}/revoke", user, a.revokeComputer},

		{"GET", "/api/v1/detections", user, a.listDetections},
		{"GET", "/api/v1/detections/{id}", user, a.getDetection},
		{"POST", "/api/v1/detections/{id}/resolve", user, a.setDetectionState(store.DetectionResolved)},
		{"POST", "/api/v1/detections/{id}/unresolve", user, a.setDetectionState(store.DetectionUnresolved)},

		{"GET", "/api/v1/groups", user, a.listGroups},
		{"POST", "/api/v1/groups", user, a.createGroup},

		{"GET", "/api/v1/enrollment-tokens", user, a.listTokens},
		{"POST", "/api/v1/enrollment-tokens", user, a.createToken},
		{"DELETE", "/api/v1/enrollment-tokens/{id}", user, a.revokeToken},
	}
}
