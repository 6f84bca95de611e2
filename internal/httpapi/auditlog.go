package httpapi

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

type auditStore interface {
	AppendAudit(ctx context.Context, e *store.AuditEntry) error
	ListAudit(ctx context.Context, f store.AuditFilter) ([]*store.AuditEntry, int, error)
	EachAudit(ctx context.Context, f store.AuditFilter, fn func(*store.AuditEntry) error) error
	DeleteAuditBefore(ctx context.Context, t time.Time) (int64, error)
}

// auditRecord collects, during a write request, what its audit entry says.
type auditRecord struct {
	e      store.AuditEntry
	detail string
}

func newAuditRecord(domainAction string, r *http.Request) *auditRecord {
	d, a, _ := strings.Cut(domainAction, ".")
	return &auditRecord{e: store.AuditEntry{Domain: d, Action: a, RemoteAddr: remoteAddr(r)}}
}

func (ar *auditRecord) principal(p *auth.Principal) {
	ar.e.UserID, ar.e.Username, ar.e.Via = p.UserID, p.Username, p.Via
}

// auditObject names the object a write is about.
func auditObject(r *http.Request, id, name string) {
	if ar := state(r).audit; ar != nil {
		ar.e.ObjectID, ar.e.ObjectName = id, name
	}
}

// auditDiff records what changed: the fields of before and after (values
// marshalled to JSON objects) that differ, as {"field":[before, after]}.
// Either side may be nil (creation, deletion).
func auditDiff(r *http.Request, before, after any) {
	ar := state(r).audit
	if ar == nil {
		return
	}
	b, a := asMap(before), asMap(after)
	keys := map[string]bool{}
	for k := range b {
		keys[k] = true
	}
	for k := range a {
		keys[k] = true
	}
	diff := map[string][2]any{}
	for k := range keys {
		if !reflect.DeepEqual(b[k], a[k]) {
			diff[k] = [2]any{b[k], a[k]}
		}
	}
	if len(diff) == 0 {
		return
	}
	out, err := json.Marshal(diff)
	if err == nil {
		ar.e.Diff = string(out)
	}
}

func asMap(v any) map[string]any {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// auditUsername records who tried to log in (before anyone is
// authenticated).
func auditUsername(r *http.Request, name string) {
	if ar := state(r).audit; ar != nil && ar.e.Username == "" {
		ar.e.Username = name
	}
}

// writeAudit appends the entry of a finished write request: exactly one per
// request, success or failure.
func (a *API) writeAudit(r *http.Request, st *reqState, status int) {
	ar := st.audit
	ar.e.At = a.cfg.Now().UTC()
	ar.e.Result = store.AuditSuccess
	if status >= 400 || status == 0 {
		ar.e.Result = store.AuditFailure
		if ar.detail == "" {
			ar.detail = http.StatusText(status)
		}
	}
	ar.e.Detail = ar.detail
	// The request may have been cancelled; the record is still written.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	if err := a.cfg.Store.AppendAudit(ctx, &ar.e); err != nil {
		a.cfg.Log.Error("writing audit entry", "domain", ar.e.Domain, "action", ar.e.Action, "err", err)
	}
	a.enforceRetention(ctx)
}

// enforceRetention deletes audit entries older than the policy's retention,
// at most once an hour (the only deletion of audit entries).
func (a *API) enforceRetention(ctx context.Context) {
	now := a.cfg.Now()
	last := a.retentionAt.Load()
	if now.Unix()-last < 3600 || !a.retentionAt.CompareAndSwap(last, now.Unix()) {
		return
	}
	pol, _, err := auth.LoadPolicy(ctx, a.cfg.Store)
	if err != nil || pol.AuditRetentionDays == 0 {
		return
	}
	n, err := a.cfg.Store.DeleteAuditBefore(ctx, now.Add(-time.Duration(pol.AuditRetentionDays)*24*time.Hour))
	if err != nil {
		a.cfg.Log.Error("audit retention", "err", err)
	} else if n > 0 {
		a.cfg.Log.Info("audit retention removed old entries", "entries", n, "days", pol.AuditRetentionDays)
	}
}

type auditJSON struct {
	Seq        int64           `json:"seq"`
	At         *string         `json:"at"`
	UserID     string          `json:"user_id"`
	Username   string          `json:"username"`
	Via        string          `json:"via"`
	RemoteAddr string          `json:"remote_addr"`
	Domain     string          `json:"domain"`
	Action     string          `json:"action"`
	ObjectID   string          `json:"object_id"`
	ObjectName string          `json:"object_name"`
	Diff       json.RawMessage `json:"diff"`
	Result     string          `json:"result"`
	Detail     string          `json:"detail"`
}

func auditView(e *store.AuditEntry) auditJSON {
	diff := json.RawMessage("null")
	if e.Diff != "" {
		diff = json.RawMessage(e.Diff)
	}
	return auditJSON{Seq: e.Seq, At: timeJSON(e.At), UserID: e.UserID, Username: e.Username, Via: e.Via, RemoteAddr: e.RemoteAddr,
		Domain: e.Domain, Action: e.Action, ObjectID: e.ObjectID, ObjectName: e.ObjectName, Diff: diff, Result: e.Result, Detail: e.Detail}
}

func auditFilter(r *http.Request) (store.AuditFilter, error) {
	q := r.URL.Query()
	f := store.AuditFilter{Username: q.Get("user"), Domain: q.Get("domain"), Action: q.Get("action"), Result: q.Get("result")}
	for _, v := range []string{f.Username, f.Domain, f.Action} {
		if len(v) > 256 {
			return f, errcode.New(errcode.Invalid, "filter value too long")
		}
	}
	var err error
	if f.Since, err = timeParam(q.Get("since"), "since"); err != nil {
		return f, err
	}
	if f.Until, err = timeParam(q.Get("until"), "until"); err != nil {
		return f, err
	}
	return f, nil
}

// listAudit: GET /api/v1/audit?user=&domain=&action=&result=&since=&until=&limit=&offset=
func (a *API) listAudit(w http.ResponseWriter, r *http.Request) error {
	if err := a.allowGlobal(r, authz.AuditLog, authz.Read); err != nil {
		return err
	}
	f, err := auditFilter(r)
	if err != nil {
		return err
	}
	if f.Limit, f.Offset, err = page(r); err != nil {
		return err
	}
	es, total, err := a.cfg.Store.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	items := make([]auditJSON, 0, len(es))
	for _, e := range es {
		items = append(items, auditView(e))
	}
	writeJSON(w, http.StatusOK, list(items, total))
	return nil
}

// exportAudit: GET /api/v1/audit/export (CSV, same filters, every match).
func (a *API) exportAudit(w http.ResponseWriter, r *http.Request) error {
	if err := a.allowGlobal(r, authz.AuditLog, authz.Read); err != nil {
		return err
	}
	f, err := auditFilter(r)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	cw.Write([]string{"seq", "at", "user_id", "username", "via", "remote_addr", "domain", "action", "object_id", "object_name", "diff", "result", "detail"})
	err = a.cfg.Store.EachAudit(r.Context(), f, func(e *store.AuditEntry) error {
		return cw.Write([]string{strconv.FormatInt(e.Seq, 10), e.At.UTC().Format("2006-01-02T15:04:05.000Z07:00"), e.UserID, csvSafe(e.Username), e.Via, e.RemoteAddr, e.Domain, e.Action,
			csvSafe(e.ObjectID), csvSafe(e.ObjectName), csvSafe(e.Diff), e.Result, csvSafe(e.Detail)})
	})
	if err != nil {
		return err
	}
	cw.Flush()
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="mamori-audit-%s.csv"`, a.cfg.Now().UTC().Format("20060102-150405")))
	w.WriteHeader(http.StatusOK)
	w.Write(buf.Bytes())
	return nil
}

// csvSafe defuses spreadsheet formulas in values users control.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
