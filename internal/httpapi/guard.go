package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// reqState is what the middleware and the handler share about a request.
type reqState struct {
	principal *auth.Principal
	checked   bool // an authorization decision was made (the backstop checks)
	tree      *store.GroupTree
	audit     *auditRecord // nil for reads
}

type stateKey struct{}

func state(r *http.Request) *reqState {
	s, _ := r.Context().Value(stateKey{}).(*reqState)
	return s
}

// principal returns the authenticated caller of a route that has one.
func principal(r *http.Request) *auth.Principal { return state(r).principal }

// wrap runs one route: authentication for its audience, the backstop that
// fails any response of a handler that made no authorization decision, and
// the audit record of every write.
func (a *API) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		st := &reqState{}
		if rt.Audit != "" {
			st.audit = newAuditRecord(rt.Audit, r)
		}
		r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
		sw := &guardWriter{ResponseWriter: w, st: st, log: a.cfg.Log, route: rt, r: r}
		defer func() {
			if st.audit != nil {
				a.writeAudit(r, st, sw.status)
			}
			if sw.status >= 500 || (rt.Audience != public && a.cfg.Log.Enabled(r.Context(), slog.LevelDebug)) {
				a.cfg.Log.Debug("api", "method", r.Method, "path", r.URL.Path, "status", sw.status, "ms", time.Since(start).Milliseconds())
			}
		}()
		if rt.Audience == public {
			st.checked = true // public routes: no credentials, nothing to authorize (each says why in routes.go)
		} else {
			p, err := a.authenticate(r)
			if err != nil {
				st.checked = true
				if st.audit != nil {
					st.audit.detail = errcode.Message(err)
				}
				writeError(sw, err, 0)
				return
			}
			st.principal = p
			if st.audit != nil {
				st.audit.principal(p)
			}
			if p.Restriction != "" && !rt.allows(p.Restriction) {
				st.checked = true
				writeError(sw, restrictionError(p.Restriction), 0)
				return
			}
		}
		if err := rt.Handler(sw, r); err != nil {
			if errcode.Of(err) == errcode.Internal {
				a.cfg.Log.Error("api handler failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			if st.audit != nil {
				st.audit.detail = errcode.Message(err)
			}
			st.checked = true // an error response reveals nothing the check would have hidden
			writeError(sw, err, 0)
		}
	})
}

func restrictionError(r string) error {
	switch r {
	case auth.RestrictSecondFactor:
		return errcode.New(errcode.Unauthorized, "a second factor is required: POST /api/v1/session/totp with a TOTP or recovery code")
	case auth.RestrictPasswordChange:
		return errcode.New(errcode.Forbidden, "the password must be changed first: POST /api/v1/session/password")
	case auth.RestrictTOTPEnrollment:
		return errcode.New(errcode.Forbidden, "a second factor must be set up first: POST /api/v1/session/totp/enroll")
	}
	return errcode.New(errcode.Forbidden, "not allowed")
}

// authenticate accepts a session cookie or an API token (Authorization:
// Bearer mmt_...).
func (a *API) authenticate(r *http.Request) (*auth.Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return nil, errcode.New(errcode.Unauthorized, "Authorization must be \"Bearer <API token>\"")
		}
		return a.cfg.Auth.AuthenticateBearer(r.Context(), strings.TrimSpace(tok))
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return nil, errcode.New(errcode.Unauthorized, "authentication required")
	}
	return a.cfg.Auth.Authenticate(r.Context(), c.Value)
}

// guardWriter is the authorization backstop: a handler that writes a
// response without having made an authorization decision gets a 500
// instead, and the omission is logged.
type guardWriter struct {
	http.ResponseWriter
	st     *reqState
	log    *slog.Logger
	route  route
	r      *http.Request
	status int
	denied bool
}

func (w *guardWriter) guard() bool {
	if w.st.checked || w.denied {
		return !w.denied
	}
	w.denied = true
	w.log.Error("handler answered without an authorization check", "method", w.route.Method, "pattern", w.route.Pattern)
	w.status = http.StatusInternalServerError
	w.ResponseWriter.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.ResponseWriter.WriteHeader(http.StatusInternalServerError)
	w.ResponseWriter.Write([]byte(`{"error":{"code":"internal","message":"internal error"}}` + "\n"))
	return false
}

func (w *guardWriter) WriteHeader(code int) {
	if !w.guard() {
		return
	}
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *guardWriter) Write(b []byte) (int, error) {
	if !w.guard() {
		return len(b), nil
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// groups returns the group tree, loaded once per request.
func (a *API) groups(r *http.Request) (*store.GroupTree, error) {
	st := state(r)
	if st.tree == nil {
		t, err := a.cfg.Store.Groups(r.Context())
		if err != nil {
			return nil, err
		}
		st.tree = t
	}
	return st.tree, nil
}

// allow is the authorization check for acting on something in group (for
// creating, the group it will live in): forbidden when not allowed.
func (a *API) allow(r *http.Request, f authz.Functionality, l authz.Level, group string) error {
	st := state(r)
	st.checked = true
	tree, err := a.groups(r)
	if err != nil {
		return err
	}
	if !st.principal.Permissions.Allows(f, l, group, tree) {
		g := group
		if gr, ok := tree.Get(group); ok {
			g = gr.Path
		}
		return errcode.New(errcode.Forbidden, "you need %s on %s in %s", l, f, g)
	}
	return nil
}

// allowObject is the check for an existing object in group: not_found when
// the caller may not even read it (its existence must not leak), forbidden
// when they may read but not act at level l.
func (a *API) allowObject(r *http.Request, f authz.Functionality, l authz.Level, group, what string) error {
	st := state(r)
	st.checked = true
	tree, err := a.groups(r)
	if err != nil {
		return err
	}
	if !st.principal.Permissions.Allows(f, authz.Read, group, tree) {
		return errcode.New(errcode.NotFound, "%s not found", what)
	}
	return a.allow(r, f, l, group)
}

// allowGlobal is the check for a functionality that is not about objects
// in groups (audit log, server settings).
func (a *API) allowGlobal(r *http.Request, f authz.Functionality, l authz.Level) error {
	st := state(r)
	st.checked = true
	if !st.principal.Permissions.Allows(f, l, store.GroupAll, st.tree) {
		return errcode.New(errcode.Forbidden, "you need %s on %s", l, f)
	}
	return nil
}

// scope is the check for listing: the groups in which the caller may see
// f at level (empty when none; the list is then empty, not an error).
func (a *API) scope(r *http.Request, f authz.Functionality, l authz.Level) ([]string, error) {
	st := state(r)
	st.checked = true
	tree, err := a.groups(r)
	if err != nil {
		return nil, err
	}
	return st.principal.Permissions.Groups(f, l, tree), nil
}

// self marks a route that acts only on the caller's own account (their
// session, password, second factor, API tokens): being authenticated is the
// authorization.
func self(r *http.Request) { state(r).checked = true }

// resolveGroup finds a static group by the path a caller gave, or by its
// id (as lists show it); a group the caller may not see at all answers
// not_found like a missing one, so paths cannot be probed (All, the root,
// is known to everyone).
func (a *API) resolveGroup(r *http.Request, path string) (*store.Group, error) {
	tree, err := a.groups(r)
	if err != nil {
		return nil, err
	}
	g, err := tree.Resolve(path)
	if errcode.Of(err) == errcode.NotFound {
		if byID, ok := tree.Get(path); ok {
			g, err = byID, nil
		}
	}
	if err != nil {
		return nil, err
	}
	if g.ID != store.GroupAll && !principal(r).Permissions.SeesGroup(g.ID, tree) { // everyone knows All
		return nil, errcode.New(errcode.NotFound, "static group %q not found", path)
	}
	return g, nil
}
