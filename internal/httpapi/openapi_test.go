package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The tests in this file keep openapi.json (embedded as openAPISpec and
// served at GET /api/v1/openapi.json) in step with the route table in
// routes.go. When one fails, the fix is almost always in openapi.json.

const specHint = "internal/httpapi/openapi.json must describe exactly the routes of (*API).routes() in routes.go: " +
	"when you add, remove or change a route, update its operation under \"paths\" in openapi.json"

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

type specOp struct {
	key    string // "METHOD /path"
	path   string
	item   map[string]any // the path item (for path-level parameters)
	object map[string]any // the operation object
}

// loadSpec parses the embedded document.
func loadSpec(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(openAPISpec))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err == nil {
		t.Fatal("openapi.json holds more than one JSON value")
	}
	return doc
}

func specOps(t *testing.T, doc map[string]any) map[string]specOp {
	t.Helper()
	paths, _ := doc["paths"].(map[string]any)
	ops := map[string]specOp{}
	for path, v := range paths {
		item, ok := v.(map[string]any)
		if !ok {
			t.Errorf("paths[%q] is not an object", path)
			continue
		}
		for _, m := range httpMethods {
			o, ok := item[m].(map[string]any)
			if !ok {
				if item[m] != nil {
					t.Errorf("paths[%q].%s is not an object", path, m)
				}
				continue
			}
			key := strings.ToUpper(m) + " " + path
			ops[key] = specOp{key: key, path: path, item: item, object: o}
		}
	}
	return ops
}

// tableRoutes is the route table keyed "METHOD /pattern". routes() only
// takes method values of a, so a zero API is enough.
func tableRoutes(t *testing.T) map[string]route {
	t.Helper()
	out := map[string]route{}
	for _, rt := range (&API{}).routes() {
		key := rt.Method + " " + rt.Pattern
		if _, dup := out[key]; dup {
			t.Errorf("route %s is in the route table twice", key)
		}
		out[key] = rt
	}
	return out
}

func TestOpenAPI_IsAnOpenAPI3Document(t *testing.T) {
	doc := loadSpec(t)
	if v, _ := doc["openapi"].(string); !regexp.MustCompile(`^3\.[01]\.\d+$`).MatchString(v) {
		t.Errorf("openapi = %q, want a 3.0.x or 3.1.x version", v)
	}
	info, _ := doc["info"].(map[string]any)
	for _, f := range []string{"title", "version"} {
		if s, _ := info[f].(string); strings.TrimSpace(s) == "" {
			t.Errorf("info.%s is missing or empty", f)
		}
	}
	if paths, _ := doc["paths"].(map[string]any); len(paths) == 0 {
		t.Error("the document has no paths")
	}
}

func TestOpenAPI_MatchesRouteTable(t *testing.T) {
	ops := specOps(t, loadSpec(t))
	table := tableRoutes(t)
	if len(table) < 10 {
		t.Fatalf("route table has only %d routes", len(table))
	}
	var missing, extra []string
	for key := range table {
		if _, ok := ops[key]; !ok {
			missing = append(missing, key)
		}
	}
	for key := range ops {
		if _, ok := table[key]; !ok {
			extra = append(extra, key)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing) > 0 {
		t.Errorf("%s.\nRoutes in the route table but not in openapi.json (add them):\n\t%s", specHint, strings.Join(missing, "\n\t"))
	}
	if len(extra) > 0 {
		t.Errorf("%s.\nOperations in openapi.json that no route serves (remove them, or fix their method or path):\n\t%s",
			specHint, strings.Join(extra, "\n\t"))
	}
}

func TestOpenAPI_OperationsAreComplete(t *testing.T) {
	doc := loadSpec(t)
	ops := specOps(t, doc)
	table := tableRoutes(t)
	components, _ := doc["components"].(map[string]any)
	schemes, _ := components["securitySchemes"].(map[string]any)
	operationIDs := map[string]string{}
	for key, rt := range table {
		op, ok := ops[key]
		if !ok {
			continue // reported by TestOpenAPI_MatchesRouteTable
		}
		o := op.object
		if s, _ := o["summary"].(string); strings.TrimSpace(s) == "" {
			t.Errorf("%s: operation has no summary", key)
		}
		if id, _ := o["operationId"].(string); id == "" {
			t.Errorf("%s: operation has no operationId", key)
		} else if other, dup := operationIDs[id]; dup {
			t.Errorf("%s: operationId %q is also used by %s", key, id, other)
		} else {
			operationIDs[id] = key
		}

		responses, _ := o["responses"].(map[string]any)
		has2xx := false
		for code, r := range responses {
			if len(code) == 3 && code[0] == '2' {
				has2xx = true
			}
			if n, err := strconv.Atoi(code); err == nil && n >= 400 {
				if ref, _ := r.(map[string]any)["$ref"].(string); !strings.HasPrefix(ref, "#/components/responses/") {
					t.Errorf("%s: response %s should be a $ref to a shared error response in #/components/responses", key, code)
				}
			}
		}
		if !has2xx {
			t.Errorf("%s: operation declares no 2xx response", key)
		}

		// Security: public routes say so with an empty list; the others
		// need credentials (their own list or the document's) and answer
		// 401 without them.
		sec, declared := o["security"]
		if !declared {
			sec = doc["security"]
		}
		reqs, _ := sec.([]any)
		if rt.Audience == public {
			if !declared || len(reqs) != 0 {
				t.Errorf("%s: a public route must declare \"security\": [] in its operation", key)
			}
		} else {
			if len(reqs) == 0 {
				t.Errorf("%s: route needs credentials but the operation (and the document) declare no security", key)
			}
			for _, r := range reqs {
				req, _ := r.(map[string]any)
				if len(req) == 0 {
					t.Errorf("%s: an empty security requirement would make the route public", key)
				}
				for name := range req {
					if _, ok := schemes[name]; !ok {
						t.Errorf("%s: security scheme %q is not in components.securitySchemes", key, name)
					}
				}
			}
			if _, ok := responses["401"]; !ok {
				t.Errorf("%s: route needs credentials but declares no 401 response", key)
			}
		}

		// The audit name and the restrictions a login route serves are
		// documented as extensions, kept equal to the table.
		if got, _ := o["x-mamori-audit"].(string); got != rt.Audit {
			t.Errorf("%s: x-mamori-audit = %q, route table says %q", key, got, rt.Audit)
		}
		var lifts []string
		if l, ok := o["x-mamori-restrictions"].([]any); ok {
			for _, v := range l {
				s, _ := v.(string)
				lifts = append(lifts, s)
			}
		}
		want := slices.Clone(rt.lifts)
		slices.Sort(lifts)
		slices.Sort(want)
		if !slices.Equal(lifts, want) {
			t.Errorf("%s: x-mamori-restrictions = %q, route table lifts %q", key, lifts, want)
		}

		checkPathParams(t, doc, op)
	}
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// checkPathParams requires every {name} of the path to be declared as a
// required path parameter, and no other path parameter.
func checkPathParams(t *testing.T, doc map[string]any, op specOp) {
	t.Helper()
	declared := map[string]bool{}
	for _, list := range []any{op.item["parameters"], op.object["parameters"]} {
		params, _ := list.([]any)
		for _, p := range params {
			pm, _ := p.(map[string]any)
			if ref, ok := pm["$ref"].(string); ok {
				resolved, err := resolveRef(doc, ref)
				if err != nil {
					continue // reported by TestOpenAPI_RefsResolve
				}
				pm, _ = resolved.(map[string]any)
			}
			if pm["in"] != "path" {
				continue
			}
			name, _ := pm["name"].(string)
			if pm["required"] != true {
				t.Errorf("%s: path parameter %q must be required", op.key, name)
			}
			declared[name] = true
		}
	}
	inPath := map[string]bool{}
	for _, m := range pathParam.FindAllStringSubmatch(op.path, -1) {
		name := strings.TrimSuffix(m[1], "...")
		inPath[name] = true
		if !declared[name] {
			t.Errorf("%s: path parameter {%s} is not declared in parameters", op.key, name)
		}
	}
	for name := range declared {
		if !inPath[name] {
			t.Errorf("%s: declares path parameter %q that is not in the path", op.key, name)
		}
	}
}

func TestOpenAPI_RequestBodiesMatchHandlers(t *testing.T) {
	ops := specOps(t, loadSpec(t))
	decodes := handlersThatDecode(t)
	for key, rt := range tableRoutes(t) {
		op, ok := ops[key]
		if !ok {
			continue
		}
		name := handlerName(rt.Handler)
		reads, known := decodes[name]
		if !known {
			t.Errorf("%s: cannot find the handler %q among the functions of package httpapi", key, name)
			continue
		}
		body, hasBody := op.object["requestBody"].(map[string]any)
		switch {
		case reads && !hasBody:
			t.Errorf("%s: handler %s reads a JSON body (decode) but the operation has no requestBody; %s", key, name, specHint)
		case !reads && hasBody:
			t.Errorf("%s: the operation has a requestBody but handler %s reads none", key, name)
		case hasBody:
			content, _ := body["content"].(map[string]any)
			mt, _ := content["application/json"].(map[string]any)
			if len(content) != 1 || mt["schema"] == nil {
				t.Errorf("%s: requestBody must have exactly an application/json content with a schema (decode accepts nothing else)", key)
			}
			if body["required"] != true {
				t.Errorf("%s: requestBody must be required (an empty body is refused)", key)
			}
		}
	}
}

// handlerName is the name of the *API method behind a route's handler:
// "login" for the method value a.login, "setDetectionState" for a closure
// it returns.
func handlerName(h func(http.ResponseWriter, *http.Request) error) string {
	full := runtime.FuncForPC(reflect.ValueOf(h).Pointer()).Name()
	_, rest, ok := strings.Cut(full, "(*API).")
	if !ok {
		_, rest, _ = strings.Cut(full[strings.LastIndex(full, "/")+1:], ".")
	}
	if i := strings.IndexAny(rest, ".-"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// handlersThatDecode maps every function and *API method of the package
// (by name) to whether it reads a request body with decode, directly or
// through the package's functions and methods it calls.
func handlersThatDecode(t *testing.T) map[string]bool {
	t.Helper()
	g := parsePackage(t)
	if _, ok := g.funcs["decode"]; !ok {
		t.Fatal("no func decode in package httpapi: update handlersThatDecode")
	}
	out := map[string]bool{}
	for name := range g.funcs {
		out[name] = g.reaches(name, "decode")
	}
	return out
}

// pkgGraph is what the tests read from the package's source: for every
// function and *API method (by name), the package functions and receiver
// methods it calls and the 2xx status constants (http.StatusOK, ...) it
// names.
type pkgGraph struct {
	funcs map[string]*pkgFunc
}

type pkgFunc struct {
	calls    []string
	statuses []int
}

var successStatuses = map[string]int{
	"StatusOK": http.StatusOK, "StatusCreated": http.StatusCreated, "StatusAccepted": http.StatusAccepted,
	"StatusNonAuthoritativeInfo": http.StatusNonAuthoritativeInfo, "StatusNoContent": http.StatusNoContent,
	"StatusResetContent": http.StatusResetContent, "StatusPartialContent": http.StatusPartialContent,
	"StatusMultiStatus": http.StatusMultiStatus, "StatusAlreadyReported": http.StatusAlreadyReported, "StatusIMUsed": http.StatusIMUsed,
}

func parsePackage(t *testing.T) *pkgGraph {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	g := &pkgGraph{funcs: map[string]*pkgFunc{}}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatalf("parsing %s: %v", f, err)
		}
		for _, d := range file.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			recv := ""
			if fn.Recv != nil && len(fn.Recv.List) == 1 && len(fn.Recv.List[0].Names) == 1 {
				recv = fn.Recv.List[0].Names[0].Name
			}
			pf := g.funcs[fn.Name.Name]
			if pf == nil {
				pf = &pkgFunc{}
				g.funcs[fn.Name.Name] = pf
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					switch fun := n.Fun.(type) {
					case *ast.Ident:
						pf.calls = append(pf.calls, fun.Name)
					case *ast.IndexExpr: // a generic function with explicit type arguments
						if id, ok := fun.X.(*ast.Ident); ok {
							pf.calls = append(pf.calls, id.Name)
						}
					case *ast.SelectorExpr:
						if x, ok := fun.X.(*ast.Ident); ok && recv != "" && x.Name == recv {
							pf.calls = append(pf.calls, fun.Sel.Name)
						}
					}
				case *ast.SelectorExpr:
					if x, ok := n.X.(*ast.Ident); ok && x.Name == "http" {
						if code, ok := successStatuses[n.Sel.Name]; ok {
							pf.statuses = append(pf.statuses, code)
						}
					}
				}
				return true
			})
		}
	}
	return g
}

// reaches reports whether from calls target, directly or through the
// package's functions and methods.
func (g *pkgGraph) reaches(from, target string) bool {
	seen := map[string]bool{}
	var walk func(name string) bool
	walk = func(name string) bool {
		if name == target {
			return true
		}
		if seen[name] {
			return false
		}
		seen[name] = true
		if f := g.funcs[name]; f != nil {
			for _, c := range f.calls {
				if walk(c) {
					return true
				}
			}
		}
		return false
	}
	return walk(from)
}

// statuses is the set of 2xx statuses that from, or what it calls in the
// package, names.
func (g *pkgGraph) statuses(from string) map[int]bool {
	out := map[int]bool{}
	seen := map[string]bool{}
	var walk func(name string)
	walk = func(name string) {
		f := g.funcs[name]
		if f == nil || seen[name] {
			return
		}
		seen[name] = true
		for _, s := range f.statuses {
			out[s] = true
		}
		for _, c := range f.calls {
			walk(c)
		}
	}
	walk(from)
	return out
}

// TestOpenAPI_SuccessStatusesMatchHandlers: every 2xx status a handler
// writes (by the http.Status constants it and its helpers name) is
// documented, and an operation documents no 2xx its handler never writes.
func TestOpenAPI_SuccessStatusesMatchHandlers(t *testing.T) {
	ops := specOps(t, loadSpec(t))
	g := parsePackage(t)
	for key, rt := range tableRoutes(t) {
		op, ok := ops[key]
		if !ok {
			continue
		}
		name := handlerName(rt.Handler)
		if _, known := g.funcs[name]; !known {
			t.Errorf("%s: cannot find the handler %q among the functions of package httpapi", key, name)
			continue
		}
		written := g.statuses(name)
		responses, _ := op.object["responses"].(map[string]any)
		declared := map[int]bool{}
		for code := range responses {
			if n, err := strconv.Atoi(code); err == nil && n >= 200 && n < 300 {
				declared[n] = true
			}
		}
		for code := range written {
			if !declared[code] {
				t.Errorf("%s: handler %s writes status %d but the operation does not declare it", key, name, code)
			}
		}
		if len(written) == 0 {
			continue // the status comes from elsewhere (http.ServeContent, a delegated handler)
		}
		for code := range declared {
			if !written[code] {
				t.Errorf("%s: the operation declares status %d but handler %s never writes it", key, code, name)
			}
		}
	}
}

// TestOpenAPI_VersioningMatchesHandlers: a handler that sends an ETag
// (writeETag) documents the header on its success response, and one that
// takes the edited version (versionOf) documents the If-Match header;
// neither is documented where the handler does not do it.
func TestOpenAPI_VersioningMatchesHandlers(t *testing.T) {
	doc := loadSpec(t)
	ops := specOps(t, doc)
	g := parsePackage(t)
	for _, fn := range []string{"writeETag", "versionOf"} {
		if _, ok := g.funcs[fn]; !ok {
			t.Fatalf("no func %s in package httpapi: update TestOpenAPI_VersioningMatchesHandlers", fn)
		}
	}
	for key, rt := range tableRoutes(t) {
		op, ok := ops[key]
		if !ok {
			continue
		}
		name := handlerName(rt.Handler)
		if _, known := g.funcs[name]; !known {
			continue // reported by TestOpenAPI_SuccessStatusesMatchHandlers
		}
		responses, _ := op.object["responses"].(map[string]any)
		etag := false
		for code, r := range responses {
			if len(code) == 3 && code[0] == '2' {
				headers, _ := r.(map[string]any)["headers"].(map[string]any)
				if _, ok := headers["ETag"]; ok {
					etag = true
				}
			}
		}
		switch sends := g.reaches(name, "writeETag"); {
		case sends && !etag:
			t.Errorf("%s: handler %s sends an ETag (writeETag) but no 2xx response declares the ETag header", key, name)
		case !sends && etag:
			t.Errorf("%s: a 2xx response declares an ETag header but handler %s sends none", key, name)
		}
		ifMatch := false
		for _, list := range []any{op.item["parameters"], op.object["parameters"]} {
			params, _ := list.([]any)
			for _, p := range params {
				pm, _ := p.(map[string]any)
				if ref, ok := pm["$ref"].(string); ok {
					resolved, err := resolveRef(doc, ref)
					if err != nil {
						continue // reported by TestOpenAPI_RefsResolve
					}
					pm, _ = resolved.(map[string]any)
				}
				if pm["in"] == "header" && strings.EqualFold(fmt.Sprint(pm["name"]), "If-Match") {
					ifMatch = true
				}
			}
		}
		switch takes := g.reaches(name, "versionOf"); {
		case takes && !ifMatch:
			t.Errorf("%s: handler %s takes the edited version (versionOf) but the operation declares no If-Match header parameter", key, name)
		case !takes && ifMatch:
			t.Errorf("%s: the operation declares an If-Match header but handler %s ignores it", key, name)
		}
	}
}

func TestOpenAPI_RefsResolve(t *testing.T) {
	doc := loadSpec(t)
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, err := resolveRef(doc, ref); err != nil {
					t.Errorf("%s: $ref %q: %v", at, ref, err)
				}
			}
			for k, c := range v {
				walk(c, at+"/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(k))
			}
		case []any:
			for i, c := range v {
				walk(c, at+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(doc, "#")
}

// resolveRef follows a local JSON pointer ("#/components/schemas/Error").
func resolveRef(doc map[string]any, ref string) (any, error) {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("only local references (#/...) are used in this document")
	}
	var cur any = doc
	for _, tok := range strings.Split(p, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q is not an object", tok)
		}
		if cur, ok = m[tok]; !ok {
			return nil, fmt.Errorf("no %q", tok)
		}
	}
	return cur, nil
}

func TestOpenAPI_ServedAtItsRoute(t *testing.T) {
	api := New(Config{})
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /api/v1/openapi.json: status %d, body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if !bytes.Equal(rec.Body.Bytes(), openAPISpec) {
		t.Error("the served document differs from the embedded openapi.json")
	}
}
