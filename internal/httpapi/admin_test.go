package httpapi

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

func withSealer(t *testing.T, f *fixture) {
	t.Helper()
	s, err := auth.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	f.api.cfg.Auth.Sealer = s
}

func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sessionCookie(t *testing.T, rec interface{ Result() *http.Response }) string {
	t.Helper()
	for _, c := range rec.Result().Cookies() {
		if c.Name == SessionCookie {
			return c.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}

func TestTOTP_EnrollLoginReuseRecoveryAndRemoval(t *testing.T) {
	f := newLoggedIn(t)
	withSealer(t, f)
	// Confirming before enrolling is a clear conflict.
	wantError(t, f.call(t, "POST", "/api/v1/session/totp/confirm", `{"code":"123456"}`), http.StatusConflict, errcode.Conflict)
	e := decodeAs[totpEnrollResponse](t, f.call(t, "POST", "/api/v1/session/totp/enroll", ""), http.StatusOK)
	if !strings.HasPrefix(e.OTPAuthURI, "otpauth://totp/Mamori:"+testUser) || !strings.HasPrefix(e.QRCodePNG, "data:image/png;base64,") || len(e.Secret) < 16 {
		t.Fatalf("enrollment %+v", e)
	}
	wantError(t, f.call(t, "POST", "/api/v1/session/totp/confirm", `{"code":"000000"}`), http.StatusBadRequest, errcode.Invalid)
	rc := decodeAs[map[string][]string](t, f.call(t, "POST", "/api/v1/session/totp/confirm", jsonString(map[string]string{"code": code(t, e.Secret, f.now)})), http.StatusOK)
	codes := rc["recovery_codes"]
	if len(codes) != 10 || codes[0] == codes[1] {
		t.Fatalf("recovery codes %v", codes)
	}
	wantError(t, f.call(t, "POST", "/api/v1/session/totp/enroll", ""), http.StatusConflict, errcode.Conflict)

	// Password only: a session restricted to the second factor.
	f.now = f.now.Add(time.Minute)
	rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword)})
	res := decodeAs[sessionResponse](t, rec, http.StatusOK)
	if res.Restriction != auth.RestrictSecondFactor {
		t.Fatalf("restriction %q", res.Restriction)
	}
	pending := sessionCookie(t, rec)
	wantError(t, f.serve(t, request{method: "GET", path: "/api/v1/computers", cookie: pending}), http.StatusUnauthorized, errcode.Unauthorized)
	c := code(t, e.Secret, f.now)
	decodeAs[sessionResponse](t, f.serve(t, request{method: "POST", path: "/api/v1/session/totp", body: `{"code":"` + c + `"}`, cookie: pending}), http.StatusOK)
	if rec := f.serve(t, request{method: "GET", path: "/api/v1/computers", cookie: pending}); rec.Code != http.StatusOK {
		t.Fatalf("after the second factor: %d %s", rec.Code, rec.Body)
	}
	// The same code cannot be used twice, even in one-step logins.
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: jsonString(loginRequest{Username: testUser, Password: testPassword, TOTPCode: c})})
	msg := wantError(t, rec, http.StatusUnauthorized, errcode.Unauthorized)
	wantContains(t, "message", msg, "already used")
	// A recovery code works once.
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: jsonString(loginRequest{Username: testUser, Password: testPassword, RecoveryCode: codes[3]})})
	if r := decodeAs[sessionResponse](t, rec, http.StatusOK); r.Restriction != "" {
		t.Fatalf("recovery login restricted: %q", r.Restriction)
	}
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: jsonString(loginRequest{Username: testUser, Password: testPassword, RecoveryCode: codes[3]})})
	wantError(t, rec, http.StatusUnauthorized, errcode.Unauthorized)
	// The next step's code works in one step.
	f.now = f.now.Add(30 * time.Second)
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: jsonString(loginRequest{Username: testUser, Password: testPassword, TOTPCode: code(t, e.Secret, f.now)})})
	f.cookie = sessionCookie(t, rec)

	// An administrator removes another user's second factor.
	w := &world{fixture: f, cookies: map[string]string{}}
	other := w.asUser(t, "bob", store.GroupAll)
	_ = other
	us := decodeAs[listResponse[userJSON]](t, f.call(t, "GET", "/api/v1/users?name=bob", ""), http.StatusOK)
	wantError(t, f.call(t, "DELETE", "/api/v1/users/"+us.Items[0].ID+"/totp", ""), http.StatusConflict, errcode.Conflict)
}

func TestTOTP_RequiredUsersMustEnrollFirst(t *testing.T) {
	f := newLoggedIn(t)
	withSealer(t, f)
	pol := decodeAs[securityJSON](t, f.call(t, "GET", "/api/v1/settings/security", ""), http.StatusOK)
	put := decodeAs[securityJSON](t, f.call(t, "PUT", "/api/v1/settings/security", fmt.Sprintf(`{"require_totp":true,"version":%d}`, pol.Version)), http.StatusOK)
	if !put.RequireTOTP || put.MinPasswordLength != 12 || put.Version != pol.Version+1 {
		t.Fatalf("policy %+v", put)
	}
	rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword)})
	if r := decodeAs[sessionResponse](t, rec, http.StatusOK); r.Restriction != auth.RestrictTOTPEnrollment {
		t.Fatalf("restriction %q", r.Restriction)
	}
	c := sessionCookie(t, rec)
	wantError(t, f.serve(t, request{method: "GET", path: "/api/v1/computers", cookie: c}), http.StatusForbidden, errcode.Forbidden)
	e := decodeAs[totpEnrollResponse](t, f.serve(t, request{method: "POST", path: "/api/v1/session/totp/enroll", cookie: c}), http.StatusOK)
	decodeAs[map[string][]string](t, f.serve(t, request{method: "POST", path: "/api/v1/session/totp/confirm", body: `{"code":"` + code(t, e.Secret, f.now) + `"}`, cookie: c}), http.StatusOK)
	if rec := f.serve(t, request{method: "GET", path: "/api/v1/computers", cookie: c}); rec.Code != http.StatusOK {
		t.Fatalf("after enrolling: %d %s", rec.Code, rec.Body)
	}
}

func TestPasswords_PolicyForcedChangeAndExpiry(t *testing.T) {
	f := newLoggedIn(t)
	for _, pw := range []string{"short", "alice-is-my-password-1", "aaaaaaaaaaaaaaa", "password1234"} {
		body := fmt.Sprintf(`{"username":"bob","password":%q}`, pw)
		if pw == "alice-is-my-password-1" {
			body = fmt.Sprintf(`{"username":"alice-is-my","password":%q}`, pw)
		}
		wantError(t, f.call(t, "POST", "/api/v1/users", body), http.StatusBadRequest, errcode.Invalid)
	}
	// A new user must change the password at first login.
	u := decodeAs[userJSON](t, f.call(t, "POST", "/api/v1/users", `{"username":"bob","password":"a fine first password","permission_sets":["reviewer"]}`), http.StatusCreated)
	if !u.MustChangePassword {
		t.Fatal("new user not forced to change the password")
	}
	rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("bob", "a fine first password")})
	c := sessionCookie(t, rec)
	wantError(t, f.serve(t, request{method: "GET", path: "/api/v1/computers", cookie: c}), http.StatusForbidden, errcode.Forbidden)
	wantError(t, f.serve(t, request{method: "POST", path: "/api/v1/session/password", body: `{"current_password":"wrong","new_password":"another fine password"}`, cookie: c}), http.StatusForbidden, errcode.Forbidden)
	wantError(t, f.serve(t, request{method: "POST", path: "/api/v1/session/password", body: `{"current_password":"a fine first password","new_password":"short"}`, cookie: c}), http.StatusBadRequest, errcode.Invalid)
	if rec := f.serve(t, request{method: "POST", path: "/api/v1/session/password", body: `{"current_password":"a fine first password","new_password":"another fine password"}`, cookie: c}); rec.Code != http.StatusNoContent {
		t.Fatalf("change: %d %s", rec.Code, rec.Body)
	}
	wantError(t, f.serve(t, request{method: "GET", path: "/api/v1/session", cookie: c}), http.StatusUnauthorized, errcode.Unauthorized) // sessions end
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("bob", "another fine password")})
	if r := decodeAs[sessionResponse](t, rec, http.StatusOK); r.Restriction != "" {
		t.Fatalf("still restricted: %q", r.Restriction)
	}
	// Password expiry forces a change again.
	pol := decodeAs[securityJSON](t, f.call(t, "GET", "/api/v1/settings/security", ""), http.StatusOK)
	decodeAs[securityJSON](t, f.call(t, "PUT", "/api/v1/settings/security", fmt.Sprintf(`{"password_max_age_days":30,"version":%d}`, pol.Version)), http.StatusOK)
	f.now = f.now.Add(31 * 24 * time.Hour)
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("bob", "another fine password")})
	if r := decodeAs[sessionResponse](t, rec, http.StatusOK); r.Restriction != auth.RestrictPasswordChange {
		t.Fatalf("expired password restriction %q", r.Restriction)
	}
}

func TestSettings_BadPoliciesAndConcurrentEdits(t *testing.T) {
	f := newLoggedIn(t)
	pol := decodeAs[securityJSON](t, f.call(t, "GET", "/api/v1/settings/security", ""), http.StatusOK)
	for _, body := range []string{`{"min_password_length":4,"version":0}`, `{"audit_retention_days":5,"version":0}`, `{"lockout_failures":-1,"version":0}`,
		`{"min_password_length":12}`, `{"unknown":1,"version":0}`} {
		rec := f.call(t, "PUT", "/api/v1/settings/security", body)
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
	decodeAs[securityJSON](t, f.call(t, "PUT", "/api/v1/settings/security", fmt.Sprintf(`{"audit_retention_days":90,"version":%d}`, pol.Version)), http.StatusOK)
	// A stale version is a conflict, and nothing changes.
	wantError(t, f.call(t, "PUT", "/api/v1/settings/security", fmt.Sprintf(`{"audit_retention_days":30,"version":%d}`, pol.Version)), http.StatusConflict, errcode.Conflict)
	now := decodeAs[securityJSON](t, f.call(t, "GET", "/api/v1/settings/security", ""), http.StatusOK)
	if now.AuditRetentionDays != 90 {
		t.Fatalf("retention %d after a refused edit", now.AuditRetentionDays)
	}
	es, _, _ := f.db.ListAudit(t.Context(), store.AuditFilter{Domain: "server_settings", Result: store.AuditSuccess})
	if len(es) != 1 || !strings.Contains(es[0].Diff, "audit_retention_days") {
		t.Fatalf("retention change not audited: %+v", es)
	}
}

func TestAPITokens_ScopedLikeTheOwnerRevocableExpiring(t *testing.T) {
	w := newWorld(t)
	rv := w.cookies["reviewer"]
	tok := decodeAs[apiTokenJSON](t, w.serve(t, request{method: "POST", path: "/api/v1/tokens", body: `{"name":"ci","ttl":"1h"}`, cookie: rv}), http.StatusCreated)
	if !strings.HasPrefix(tok.Token, "mmt_") {
		t.Fatalf("token %+v", tok)
	}
	bearer := func(method, path, body, secret string) *httptest.ResponseRecorder {
		return w.serveBearer(t, request{method: method, path: path, body: body}, secret)
	}
	if rec := bearer("GET", "/api/v1/computers", "", tok.Token); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "srv-01") {
		t.Fatalf("reviewer token read: %d %s", rec.Code, rec.Body)
	}
	wantError(t, bearer("POST", "/api/v1/groups", `{"parent":"Servers","name":"x"}`, tok.Token), http.StatusForbidden, errcode.Forbidden)
	// A token cannot mint tokens.
	wantError(t, bearer("POST", "/api/v1/tokens", `{"name":"child"}`, tok.Token), http.StatusForbidden, errcode.Forbidden)
	// The token never holds more than its owner: revoke the owner's sets.
	list := decodeAs[listResponse[apiTokenJSON]](t, w.serve(t, request{method: "GET", path: "/api/v1/tokens", cookie: rv}), http.StatusOK)
	if list.Total != 1 || list.Items[0].Token != "" {
		t.Fatalf("token list %+v (secrets must not be listed)", list)
	}
	// Expiry.
	w.now = w.now.Add(2 * time.Hour)
	wantError(t, bearer("GET", "/api/v1/computers", "", tok.Token), http.StatusUnauthorized, errcode.Unauthorized)
	w.now = w.now.Add(-2 * time.Hour)
	// Revocation.
	if rec := w.serve(t, request{method: "DELETE", path: "/api/v1/tokens/" + tok.ID, cookie: rv}); rec.Code != http.StatusNoContent {
		t.Fatalf("revoke: %d", rec.Code)
	}
	msg := wantError(t, bearer("GET", "/api/v1/computers", "", tok.Token), http.StatusUnauthorized, errcode.Unauthorized)
	wantContains(t, "message", msg, "revoked")
	for _, bad := range []string{"mmt_nope", "Basic abc", strings.Repeat("x", 300)} {
		wantError(t, bearer("GET", "/api/v1/computers", "", bad), http.StatusUnauthorized, errcode.Unauthorized)
	}
	for _, body := range []string{`{"name":""}`, `{"name":"x","ttl":"9000h"}`, `{"name":"x","ttl":"-1h"}`} {
		rec := w.serve(t, request{method: "POST", path: "/api/v1/tokens", body: body, cookie: rv})
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
}

func TestGroups_TreeOperations(t *testing.T) {
	f := newLoggedIn(t)
	a := f.createGroup(t, "", "A")
	b := f.createGroup(t, "A", "B")
	c := f.createGroup(t, "A/B", "C")
	// Cycles: into itself and into its own subtree.
	for _, parent := range []string{"A", "A/B", "A/B/C"} {
		wantError(t, f.call(t, "POST", "/api/v1/groups/"+a.ID+"/move", fmt.Sprintf(`{"parent":%q,"version":1}`, parent)), http.StatusBadRequest, errcode.Invalid)
	}
	wantError(t, f.call(t, "POST", "/api/v1/groups/all/move", `{"parent":"A","version":1}`), http.StatusBadRequest, errcode.Invalid)
	// Move C to the top, rename it; stale versions are conflicts.
	moved := decodeAs[groupJSON](t, f.call(t, "POST", "/api/v1/groups/"+c.ID+"/move", `{"parent":"All","version":1}`), http.StatusOK)
	if moved.Path != "All/C" || moved.Version != 2 {
		t.Fatalf("moved %+v", moved)
	}
	wantError(t, f.call(t, "PATCH", "/api/v1/groups/"+c.ID, `{"name":"D","version":1}`), http.StatusConflict, errcode.Conflict)
	wantError(t, f.call(t, "PATCH", "/api/v1/groups/"+c.ID, `{"name":"D"}`), http.StatusBadRequest, errcode.Invalid)
	renamed := decodeAs[groupJSON](t, f.call(t, "PATCH", "/api/v1/groups/"+c.ID, `{"name":"D","version":2}`), http.StatusOK)
	if renamed.Path != "All/D" {
		t.Fatalf("renamed %+v", renamed)
	}
	// If-Match works as well as a version field.
	rec := f.serve(t, request{method: "PATCH", path: "/api/v1/groups/" + c.ID, body: `{"name":"E"}`, cookie: f.cookie})
	wantError(t, rec, http.StatusBadRequest, errcode.Invalid)
	// Delete: only when empty, else with move_to.
	f.seed(t, computerSeed{id: "c-b", name: "in-b", group: "A/B"})
	wantError(t, f.call(t, "DELETE", "/api/v1/groups/"+a.ID+"?version=1", ""), http.StatusConflict, errcode.Conflict) // has subgroup B
	msg := wantError(t, f.call(t, "DELETE", "/api/v1/groups/"+b.ID+"?version=1", ""), http.StatusConflict, errcode.Conflict)
	wantContains(t, "message", msg, "not empty")
	if rec := f.call(t, "DELETE", "/api/v1/groups/"+b.ID+"?version=1&move_to=A", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete with move_to: %d %s", rec.Code, rec.Body)
	}
	got := decodeAs[computerDetail](t, f.call(t, "GET", "/api/v1/computers/c-b", ""), http.StatusOK)
	if got.Group.Path != "All/A" {
		t.Fatalf("computer moved to %q", got.Group.Path)
	}
	wantError(t, f.call(t, "DELETE", "/api/v1/groups/lost-found?version=1", ""), http.StatusBadRequest, errcode.Invalid)
	wantError(t, f.call(t, "DELETE", "/api/v1/groups/nope?version=1", ""), http.StatusNotFound, errcode.NotFound)
	// Computers move between groups with their version.
	wantError(t, f.call(t, "POST", "/api/v1/computers/c-b/move", `{"group":"All/D","version":99}`), http.StatusConflict, errcode.Conflict)
	mv := decodeAs[computerJSON](t, f.call(t, "POST", "/api/v1/computers/c-b/move", fmt.Sprintf(`{"group":"All/D","version":%d}`, got.Version)), http.StatusOK)
	if mv.Group.Path != "All/D" {
		t.Fatalf("computer move %+v", mv)
	}
}

func TestTags_AddFilterRemove(t *testing.T) {
	f := newFleet(t)
	decodeAs[map[string][]string](t, f.call(t, "POST", "/api/v1/computers/c-web01/tags", `{"tag":"prod"}`), http.StatusOK)
	decodeAs[map[string][]string](t, f.call(t, "POST", "/api/v1/computers/c-db01/tags", `{"tag":"prod"}`), http.StatusOK)
	decodeAs[map[string][]string](t, f.call(t, "POST", "/api/v1/computers/c-db01/tags", `{"tag":"db"}`), http.StatusOK)
	got := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/computers?tag=prod", ""), http.StatusOK)
	if got.Total != 2 {
		t.Fatalf("tag=prod: %v", names(got.Items))
	}
	tags := decodeAs[listResponse[tagJSON]](t, f.call(t, "GET", "/api/v1/tags", ""), http.StatusOK)
	if tags.Total != 2 || tags.Items[1].Tag != "prod" || tags.Items[1].Computers != 2 {
		t.Fatalf("tags %+v", tags)
	}
	for _, bad := range []string{`{"tag":""}`, `{"tag":" x"}`, `{"tag":"a,b"}`, `{"tag":"` + strings.Repeat("t", 65) + `"}`} {
		wantError(t, f.call(t, "POST", "/api/v1/computers/c-db01/tags", bad), http.StatusBadRequest, errcode.Invalid)
	}
	if rec := f.call(t, "DELETE", "/api/v1/computers/c-db01/tags/prod", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("untag: %d", rec.Code)
	}
	wantError(t, f.call(t, "DELETE", "/api/v1/computers/c-db01/tags/prod", ""), http.StatusNotFound, errcode.NotFound)
}

func TestUsers_LifecycleAndConcurrentEdits(t *testing.T) {
	f := newLoggedIn(t)
	u := decodeAs[userJSON](t, f.call(t, "POST", "/api/v1/users", `{"username":"carol","password":"a fine first password","permission_sets":["reviewer"],"must_change_password":false}`), http.StatusCreated)
	wantError(t, f.call(t, "POST", "/api/v1/users", `{"username":"carol","password":"a fine first password"}`), http.StatusConflict, errcode.Conflict)
	for _, body := range []string{`{"username":"bad name","password":"a fine first password"}`, `{"username":"x","password":"a fine first password","permission_sets":["nope"]}`,
		`{"username":"x","password":"a fine first password","extra":1}`} {
		rec := f.call(t, "POST", "/api/v1/users", body)
		if rec.Code != http.StatusBadRequest && rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
	// Two admins edit carol from the same version: the second is refused.
	first := f.call(t, "PATCH", "/api/v1/users/"+u.ID, fmt.Sprintf(`{"description":"first","version":%d}`, u.Version))
	if first.Code != http.StatusOK {
		t.Fatalf("first edit: %d %s", first.Code, first.Body)
	}
	wantError(t, f.call(t, "PATCH", "/api/v1/users/"+u.ID, fmt.Sprintf(`{"description":"second","version":%d}`, u.Version)), http.StatusConflict, errcode.Conflict)
	if got := decodeAs[userJSON](t, f.call(t, "GET", "/api/v1/users/"+u.ID, ""), http.StatusOK); got.Description != "first" {
		t.Fatalf("description %q", got.Description)
	}
	// Disabling ends carol's sessions and logins.
	rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("carol", "a fine first password")})
	cs := sessionCookie(t, rec)
	cur := decodeAs[userJSON](t, f.call(t, "GET", "/api/v1/users/"+u.ID, ""), http.StatusOK)
	decodeAs[userJSON](t, f.call(t, "PATCH", "/api/v1/users/"+u.ID, fmt.Sprintf(`{"disabled":true,"version":%d}`, cur.Version)), http.StatusOK)
	wantError(t, f.serve(t, request{method: "GET", path: "/api/v1/session", cookie: cs}), http.StatusUnauthorized, errcode.Unauthorized)
	wantError(t, f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("carol", "a fine first password")}), http.StatusUnauthorized, errcode.Unauthorized)
	// Reset password, delete.
	if rec := f.call(t, "POST", "/api/v1/users/"+u.ID+"/password", `{"password":"a reset password 1"}`); rec.Code != http.StatusNoContent {
		t.Fatalf("reset: %d %s", rec.Code, rec.Body)
	}
	if rec := f.call(t, "DELETE", "/api/v1/users/"+u.ID, ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	wantError(t, f.call(t, "GET", "/api/v1/users/"+u.ID, ""), http.StatusNotFound, errcode.NotFound)
	me := decodeAs[sessionResponse](t, f.call(t, "GET", "/api/v1/session", ""), http.StatusOK)
	wantError(t, f.call(t, "DELETE", "/api/v1/users/"+me.User.ID, ""), http.StatusForbidden, errcode.Forbidden)
}

func TestPermissionSets_CRUDAndBuiltins(t *testing.T) {
	f := newLoggedIn(t)
	f.createGroup(t, "", "Servers")
	ps := decodeAs[permSetJSON](t, f.call(t, "POST", "/api/v1/permission-sets", `{"name":"Server ops","groups":["Servers"],"grants":{"computers":"write","detections":"read"}}`), http.StatusCreated)
	if ps.Grants["computers"] != "write" || len(ps.Groups) != 1 || ps.Groups[0].Path != "All/Servers" {
		t.Fatalf("set %+v", ps)
	}
	for _, body := range []string{`{"name":"x","grants":{"coffee":"read"}}`, `{"name":"x","grants":{"computers":"admin"}}`, `{"name":"x","groups":["Nope"]}`, `{"grants":{}}`} {
		rec := f.call(t, "POST", "/api/v1/permission-sets", body)
		if rec.Code != http.StatusBadRequest && rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
	wantError(t, f.call(t, "POST", "/api/v1/permission-sets", `{"name":"Server ops"}`), http.StatusConflict, errcode.Conflict)
	up := decodeAs[permSetJSON](t, f.call(t, "PATCH", "/api/v1/permission-sets/"+ps.ID, fmt.Sprintf(`{"grants":{"computers":"read"},"version":%d}`, ps.Version)), http.StatusOK)
	if up.Grants["computers"] != "read" || len(up.Grants) != 1 {
		t.Fatalf("updated %+v", up)
	}
	wantError(t, f.call(t, "PATCH", "/api/v1/permission-sets/administrator", `{"description":"mine","version":1}`), http.StatusConflict, errcode.Conflict)
	wantError(t, f.call(t, "DELETE", "/api/v1/permission-sets/reviewer", ""), http.StatusConflict, errcode.Conflict)
	if rec := f.call(t, "DELETE", "/api/v1/permission-sets/"+ps.ID, ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete: %d", rec.Code)
	}
}

// serveBearer sends r with an API token instead of a cookie.
func (f *fixture) serveBearer(t *testing.T, r request, secret string) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req := httptest.NewRequest(r.method, r.path, body)
	if r.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if strings.HasPrefix(secret, "Basic ") {
		req.Header.Set("Authorization", secret)
	} else {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	req.RemoteAddr = defaultRemote
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req)
	return rec
}

func TestSettings_RetentionDefaultsBoundsAndConcurrentEdits(t *testing.T) {
	f := newLoggedIn(t)
	got := decodeAs[retentionJSON](t, f.call(t, "GET", "/api/v1/settings/retention", ""), http.StatusOK)
	if got.Version != 0 || got.EventsDays != 30 || got.DetectionsDays != 90 || got.TaskRunsDays != 90 {
		t.Fatalf("defaults %+v", got)
	}
	for _, body := range []string{`{"events_days":-1,"version":0}`, `{"detections_days":3651,"version":0}`, `{"task_runs_days":"90","version":0}`,
		`{"events_days":7}`, `{"keep_forever":true,"version":0}`, `[]`} {
		if rec := f.call(t, "PUT", "/api/v1/settings/retention", body); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
	saved := decodeAs[retentionJSON](t, f.call(t, "PUT", "/api/v1/settings/retention", `{"events_days":7,"detections_days":365,"version":0}`), http.StatusOK)
	if saved.EventsDays != 7 || saved.DetectionsDays != 365 || saved.TaskRunsDays != 90 || saved.Version == 0 {
		t.Fatalf("saved %+v", saved)
	}
	wantError(t, f.call(t, "PUT", "/api/v1/settings/retention", `{"events_days":1,"version":0}`), http.StatusConflict, errcode.Conflict)
	if now := decodeAs[retentionJSON](t, f.call(t, "GET", "/api/v1/settings/retention", ""), http.StatusOK); now != saved {
		t.Fatalf("after a refused edit %+v, want %+v", now, saved)
	}
	es, _, _ := f.db.ListAudit(t.Context(), store.AuditFilter{Domain: "server_settings", Result: store.AuditSuccess})
	if len(es) != 1 || es[0].Action != "retention" || !strings.Contains(es[0].Diff, "events_days") {
		t.Fatalf("retention change not audited: %+v", es)
	}
}
