// Package httpapi is the REST API under /api/v1 plus the operational
// endpoints (/healthz, /readyz, /metrics). Every route is declared once in
// the route table (routes.go) with its audience; authentication happens in
// one middleware, and errors leave in one shape:
//
//	{"error": {"code": "not_found", "message": "computer not found"}}
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/enrollment"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// Store is everything the API reads and writes; each area of the API
// declares the few methods it needs next to its handlers.
type Store interface {
	opsStore
	computerStore
	detectionStore
	groupStore
	tokenStore
	userStore
	permSetStore
	dynGroupStore
	policyStore
	taskStore
	auditStore
	auth.PolicyStore
}

type opsStore interface {
	Ping(ctx context.Context) error
}

// Presence answers live connection questions.
type Presence interface {
	Live(computerID string) (online bool, lastSeen time.Time)
	Wake(computerID, reason string) (string, error)
	WakeMany(computerIDs []string, reason string) int
	Disconnect(computerID string)
}

// Config wires the API.
type Config struct {
	Store      Store
	Auth       *auth.Service
	Enrollment *enrollment.Service
	Presence   Presence
	// ServerID is this server's id: Presence knows the computers connected
	// here (or nowhere); a computer another server holds (servers sharing
	// a PostgreSQL store) is shown as its row says.
	ServerID string
	// DynamicGroups evaluates dynamic group templates; nil disables
	// previews and background re-evaluation.
	DynamicGroups DynamicGroups
	// Configurations computes effective configurations; nil disables the
	// effective-config endpoint and configuration pushes.
	Configurations Configurations
	// Scheduler is kicked when triggers and runs are created; nil: they
	// wait for its tick (or nobody runs them, in tests).
	Scheduler Scheduler
	// Runs stops cancelled runs on connected agents; nil: they learn it
	// from the run's state only.
	Runs RunCanceller
	// AttachmentDir holds the files agents upload for task runs
	// (diagnostics bundles).
	AttachmentDir string
	CAFingerprint string
	// LatestEngine returns the newest engine version the server's update
	// mirror holds (0: unknown or no mirror); computers behind it are
	// flagged outdated. Nil: no flag.
	LatestEngine func() uint64
	CAPEM        []byte
	Metrics      http.Handler
	Log          *slog.Logger
	// Connection warning thresholds for computers not seen for a while.
	OfflineWarning  time.Duration // default 48h
	OfflineCritical time.Duration // default 14 days
	Now             func() time.Time
}

// Limits.
const (
	MaxBodyBytes  = 64 << 10
	SessionCookie = "mamori_session"
)

// API is the HTTP handler.
type API struct {
	cfg         Config
	mux         *http.ServeMux
	retentionAt atomic.Int64 // Unix seconds of the last audit retention pass
}

// New builds the API handler.
func New(cfg Config) *API {
	if cfg.OfflineWarning == 0 {
		cfg.OfflineWarning = 48 * time.Hour
	}
	if cfg.OfflineCritical == 0 {
		cfg.OfflineCritical = 14 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	a := &API{cfg: cfg, mux: http.NewServeMux()}
	for _, r := range a.routes() {
		a.mux.Handle(r.Method+" "+r.Pattern, a.wrap(r))
	}
	return a
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	h, pattern := a.mux.Handler(r)
	if pattern == "" {
		// The mux's own 404/405: keep its status and Allow header, answer in
		// the API's error shape.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		if rec.status == http.StatusMethodNotAllowed {
			writeError(w, errcode.New(errcode.Invalid, "method %s not allowed on %s", r.Method, r.URL.Path), http.StatusMethodNotAllowed)
			return
		}
		writeError(w, errcode.New(errcode.NotFound, "no such endpoint: %s %s", r.Method, r.URL.Path), 0)
		return
	}
	a.mux.ServeHTTP(w, r)
}

type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.status = code }

type errorBody struct {
	Error struct {
		Code    errcode.Code `json:"code"`
		Message string       `json:"message"`
	} `json:"error"`
}

// writeError writes err in the API's error shape; status 0 means "from the
// error's code".
func writeError(w http.ResponseWriter, err error, status int) {
	var b errorBody
	b.Error.Code = errcode.Of(err)
	b.Error.Message = errcode.Message(err)
	if status == 0 {
		status = errcode.HTTPStatus(err)
	}
	if b.Error.Code == errcode.TooManyRequests {
		w.Header().Set("Retry-After", "60")
	}
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, `{"error":{"code":"internal","message":"internal error"}}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// decode reads a JSON body strictly: application/json only, at most
// MaxBodyBytes, no unknown fields, exactly one value.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return errcode.New(errcode.Invalid, "Content-Type must be application/json")
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			return errcode.New(errcode.TooLarge, "request body larger than %d bytes", MaxBodyBytes)
		case errors.Is(err, io.EOF):
			return errcode.New(errcode.Invalid, "request body is empty")
		case errors.As(err, &syn):
			return errcode.New(errcode.Invalid, "malformed JSON at byte %d", syn.Offset)
		case errors.As(err, &typ):
			return errcode.New(errcode.Invalid, "field %q must be a %s", typ.Field, typ.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return errcode.New(errcode.Invalid, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return errcode.New(errcode.Invalid, "malformed JSON body")
	}
	// Only white space may follow the value. dec.More is not enough: it
	// reports false before a stray '}' or ']'.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errcode.New(errcode.TooLarge, "request body larger than %d bytes", MaxBodyBytes)
		}
		return errcode.New(errcode.Invalid, "request body must hold one JSON value")
	}
	return nil
}

// page reads limit and offset query parameters.
func page(r *http.Request) (limit, offset int, err error) {
	q := r.URL.Query()
	if limit, err = intParam(q.Get("limit"), "limit", 1, store.MaxLimit, store.DefaultLimit); err != nil {
		return
	}
	offset, err = intParam(q.Get("offset"), "offset", 0, 1<<31-1, 0)
	return
}

func intParam(s, name string, lo, hi, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, errcode.New(errcode.Invalid, "%s must be an integer from %d to %d", name, lo, hi)
	}
	return n, nil
}

func remoteAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// timeJSON renders a time as RFC 3339 in UTC with milliseconds, or null.
func timeJSON(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	return &s
}

type listResponse[T any] struct {
	Items []T `json:"items"`
	Total int `json:"total"`
}

func list[T any](items []T, total int) listResponse[T] {
	if items == nil {
		items = []T{}
	}
	return listResponse[T]{Items: items, Total: total}
}

func durationParam(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errcode.New(errcode.Invalid, "ttl %q is not a positive duration like 24h or 90m", s)
	}
	return d, nil
}

// writeETag sets the ETag of a versioned object ("v" + version).
func writeETag(w http.ResponseWriter, version int64) {
	w.Header().Set("ETag", `"v`+strconv.FormatInt(version, 10)+`"`)
}

// versionOf returns the version a write is based on: the body's version
// field, else the If-Match header ("v3" as sent in ETag). One of them is
// required, so that concurrent edits are detected instead of overwriting.
// deleteVersion is the version a DELETE names: ?version=N or If-Match.
func deleteVersion(r *http.Request) (int64, error) {
	var vp *int64
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, errcode.New(errcode.Invalid, "version must be an integer")
		}
		vp = &n
	}
	return versionOf(r, vp)
}

func versionOf(r *http.Request, body *int64) (int64, error) {
	if body != nil {
		return *body, nil
	}
	if m := strings.TrimSpace(r.Header.Get("If-Match")); m != "" {
		v, err := strconv.ParseInt(strings.TrimPrefix(strings.Trim(m, `"`), "v"), 10, 64)
		if err != nil {
			return 0, errcode.New(errcode.Invalid, "If-Match must be an ETag this API sent, like \"v3\"")
		}
		return v, nil
	}
	return 0, errcode.New(errcode.Invalid, "give the version you edited (\"version\" in the body or an If-Match header) so that concurrent changes are detected")
}

// rawOr returns s as raw JSON, or def when s is empty (stored data written
// before a field existed).
func rawOr(s, def string) json.RawMessage {
	if s == "" {
		return json.RawMessage(def)
	}
	return json.RawMessage(s)
}
