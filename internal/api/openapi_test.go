package api

import (
	"encoding"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
	"github.com/imaged/imaged/internal/store"
)

// No OpenAPI validator is available offline (swagger-cli, openapi-spec-validator), so these
// tests check the document's structure themselves and, above all, check it against the code:
// the routes Register adds, their scopes, and the json tags of the types on the wire.

// openAPIServer is a Server with a real inventory, its mux and its routes.
func openAPIServer(t *testing.T) (*Server, *http.ServeMux) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	inv, err := inventory.New(st, inventory.Config{Log: log, TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://10.99.0.1:8080")
	s := New(Deps{Inventory: inv, Catalog: catalog.New(st, nil, nil), PublicURL: u, Log: log})
	mux := http.NewServeMux()
	s.Register(mux)
	return s, mux
}

// openAPIDoc is the served document, decoded.
func openAPIDoc(t *testing.T) map[string]any {
	t.Helper()
	b, err := openAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operation is one method of one path of the document.
type operation struct {
	path, method string
	item, op     map[string]any // the path item and the operation
}

func (o operation) String() string { return strings.ToUpper(o.method) + " " + o.path }

func operations(t *testing.T, doc map[string]any) []operation {
	t.Helper()
	var out []operation
	for path, item := range obj(doc, "paths") {
		item := item.(map[string]any)
		for _, m := range httpMethods {
			if op, ok := item[m].(map[string]any); ok {
				out = append(out, operation{path: path, method: m, item: item, op: op})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	if len(out) == 0 {
		t.Fatal("the document has no operations")
	}
	return out
}

// obj returns v[key] as an object (nil when absent or not one).
func obj(v map[string]any, key string) map[string]any {
	o, _ := v[key].(map[string]any)
	return o
}

// routeKey turns a ServeMux pattern ("POST /api/v1/machines/{id}/reimage") into the
// document's method and path template.
func routeKey(pattern string) (method, path string) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		return "", pattern // a pattern without a method: matches them all
	}
	path = strings.ReplaceAll(path, "{$}", "")
	path = regexp.MustCompile(`\{([^}.]+)\.\.\.\}`).ReplaceAllString(path, "{$1}")
	return strings.ToLower(method), path
}

func TestOpenAPIServed(t *testing.T) {
	_, mux := openAPIServer(t)
	// Through the TCP listener's authentication without anonymous reads: the document is open.
	h := Authenticate(AuthConfig{}, mux)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var doc map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatalf("the served document is not JSON: %v", err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Errorf("openapi %q, want 3.x", v)
	}
	if obj(doc, "info")["title"] != "imaged" || len(obj(doc, "paths")) == 0 {
		t.Errorf("the document lacks info.title or paths")
	}
	want, _ := openAPIJSON()
	if !slices.Equal(w.Body.Bytes(), want) {
		t.Errorf("the served bytes are not the converted document")
	}
}

func TestOpenAPIConversionError(t *testing.T) {
	_, mux := openAPIServer(t)
	saved := openAPIJSON
	t.Cleanup(func() { openAPIJSON = saved })
	openAPIJSON = func() ([]byte, error) { return nil, errors.New("broken") }
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
	var e Error
	if w.Code != http.StatusInternalServerError || json.Unmarshal(w.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, "broken") {
		t.Errorf("status %d, body %s; want 500 with the Error body", w.Code, w.Body)
	}
}

func TestYAMLToJSON(t *testing.T) {
	b, err := yamlToJSON([]byte("responses:\n  200: {description: ok}\n  '404': {description: no}\nflag: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"flag":true,"responses":{"200":{"description":"ok"},"404":{"description":"no"}}}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	for _, bad := range []string{"? [a, b]\n: c\n", "a: [\n", "a: 1\na: 2\n"} {
		if _, err := yamlToJSON([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestOpenAPIRoutes checks the document against Register: every route is there with its method
// and scope, and nothing under /api/ or /agent/ is there that Register does not add.
func TestOpenAPIRoutes(t *testing.T) {
	s, _ := openAPIServer(t)
	doc := openAPIDoc(t)
	paths := obj(doc, "paths")
	routes := map[string]Route{} // "get /api/v1/machines" → route
	for _, r := range s.Routes() {
		m, p := routeKey(r.Pattern)
		if m == "" {
			t.Errorf("route %q has no method", r.Pattern)
			continue
		}
		routes[m+" "+p] = r
		op := obj(obj(paths, p), m)
		if op == nil {
			t.Errorf("route %q (scope %s) is not in the document", r.Pattern, r.Scope)
			continue
		}
		if got := op["x-imaged-scope"]; got != r.Scope.String() {
			t.Errorf("%s: x-imaged-scope %v, the route's scope is %s", r.Pattern, got, r.Scope)
		}
	}
	if len(routes) < 30 {
		t.Fatalf("only %d routes: Register changed shape?", len(routes))
	}
	for _, o := range operations(t, doc) {
		api := strings.HasPrefix(o.path, "/api/") || strings.HasPrefix(o.path, "/agent/")
		_, registered := routes[o.method+" "+o.path]
		switch {
		case api && !registered:
			t.Errorf("%s is in the document but not a route of Register", o)
		case !api && !slices.Equal(tags(o.op), []string{"appliance"}):
			t.Errorf("%s is not a route of Register, so it must be tagged appliance (only), not %v", o, tags(o.op))
		case api && slices.Contains(tags(o.op), "appliance"):
			t.Errorf("%s is a route of Register, not an appliance endpoint", o)
		}
	}
}

func tags(op map[string]any) []string {
	var out []string
	for _, t := range asSlice(op["tags"]) {
		s, _ := t.(string)
		out = append(out, s)
	}
	return out
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// TestOpenAPIScopes checks that each operation states its scope in x-imaged-scope, in its
// description and in its security requirements, and declares the answers of that scope.
func TestOpenAPIScopes(t *testing.T) {
	doc := openAPIDoc(t)
	scopes := map[string]bool{}
	for _, v := range asSlice(obj(obj(obj(doc, "components"), "schemas"), "Scope")["enum"]) {
		scopes[v.(string)] = true
	}
	for _, sc := range []Scope{ScopeNone, ScopeRead, ScopeOperate, ScopeAdmin} {
		if !scopes[sc.String()] {
			t.Errorf("components.schemas.Scope lacks %q", sc)
		}
	}
	if len(scopes) != 4 {
		t.Errorf("components.schemas.Scope has %d values, want 4", len(scopes))
	}
	for _, o := range operations(t, doc) {
		scope, _ := o.op["x-imaged-scope"].(string)
		if !scopes[scope] {
			t.Errorf("%s: x-imaged-scope %q is not a scope", o, scope)
			continue
		}
		if d, _ := o.op["description"].(string); !strings.Contains(d, "Scope: "+scope) {
			t.Errorf("%s: the description does not say %q", o, "Scope: "+scope)
		}
		sec, ok := o.op["security"].([]any)
		if !ok {
			t.Errorf("%s: no security requirements (use [] for none)", o)
			continue
		}
		var reqs []string // "apiToken:read", "" for anonymous
		for _, r := range sec {
			var parts []string
			for name, roles := range r.(map[string]any) {
				p := name
				for _, role := range asSlice(roles) {
					p += ":" + role.(string)
				}
				parts = append(parts, p)
			}
			sort.Strings(parts)
			reqs = append(reqs, strings.Join(parts, "+"))
		}
		codes := responseCodes(o.op)
		switch scope {
		case "none":
			switch {
			case len(reqs) == 0:
			case slices.Equal(reqs, []string{"agentSession"}):
				// The agent's work loop: the hello's session token and the MAC it was issued for.
				if !hasParam(doc, o, "header", agentapi.HeaderMAC) {
					t.Errorf("%s: an agent-session operation must declare the %s header", o, agentapi.HeaderMAC)
				}
				for _, c := range []string{"400", "401", "403"} {
					if !codes[c] {
						t.Errorf("%s: an agent-session operation must declare %s (agentAuth answers it)", o, c)
					}
				}
			default:
				t.Errorf("%s: scope none, but security %v", o, reqs)
			}
		case "read":
			if !slices.Equal(reqs, []string{"apiToken:read", ""}) {
				t.Errorf("%s: security %v, want a read token or anonymous (api.anonymous_read)", o, reqs)
			}
		default:
			if !slices.Equal(reqs, []string{"apiToken:" + scope}) {
				t.Errorf("%s: security %v, want [apiToken:%s]", o, reqs, scope)
			}
		}
		if scope != "none" {
			if !codes["403"] {
				t.Errorf("%s: scope %s, but no 403", o, scope)
			}
			if r := response(doc, o.op, "401"); r == nil || obj(r, "headers")["WWW-Authenticate"] == nil {
				t.Errorf("%s: scope %s, but no 401 with WWW-Authenticate", o, scope)
			}
		}
		if strings.HasPrefix(o.path, "/api/") && !codes["401"] {
			// Authenticate refuses an unknown token on every /api/ path, even an open one.
			t.Errorf("%s: no 401", o)
		}
		if !slices.ContainsFunc(slices.Collect(maps.Keys(codes)), func(c string) bool { return strings.HasPrefix(c, "2") }) {
			t.Errorf("%s: no 2xx response", o)
		}
	}
}

func responseCodes(op map[string]any) map[string]bool {
	out := map[string]bool{}
	for c := range obj(op, "responses") {
		out[c] = true
	}
	return out
}

// response returns an operation's response for code, its $ref resolved.
func response(doc, op map[string]any, code string) map[string]any {
	r := obj(obj(op, "responses"), code)
	if r == nil {
		return nil
	}
	return deref(doc, r)
}

// deref follows $ref until it reaches an object that is not a reference.
func deref(doc, v map[string]any) map[string]any {
	for range 10 {
		ref, ok := v["$ref"].(string)
		if !ok {
			return v
		}
		t, _ := pointer(doc, ref).(map[string]any)
		if t == nil {
			return nil
		}
		v = t
	}
	return nil
}

// pointer resolves a local JSON reference ("#/components/schemas/Job"); nil if it does not.
func pointer(doc map[string]any, ref string) any {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	var cur any = doc
	for _, tok := range strings.Split(rest, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[tok]; !ok {
			return nil
		}
	}
	return cur
}

// params are the parameters of an operation and its path item, resolved.
func params(doc map[string]any, o operation) []map[string]any {
	var out []map[string]any
	for _, p := range append(asSlice(o.item["parameters"]), asSlice(o.op["parameters"])...) {
		if m, ok := p.(map[string]any); ok {
			out = append(out, deref(doc, m))
		}
	}
	return out
}

func hasParam(doc map[string]any, o operation, in, name string) bool {
	return slices.ContainsFunc(params(doc, o), func(p map[string]any) bool { return p["in"] == in && p["name"] == name })
}

// TestOpenAPIErrors checks the error answers every operation must declare and their bodies.
func TestOpenAPIErrors(t *testing.T) {
	doc := openAPIDoc(t)
	for _, o := range operations(t, doc) {
		codes := responseCodes(o.op)
		if o.op["requestBody"] != nil {
			// decode answers these itself.
			for _, c := range []string{"400", "413", "415"} {
				if !codes[c] {
					t.Errorf("%s: it takes a JSON body, so it must declare %s", o, c)
				}
			}
		}
		if !strings.HasPrefix(o.path, "/api/") && !strings.HasPrefix(o.path, "/agent/") {
			continue
		}
		for c := range codes {
			if c < "400" {
				continue
			}
			r := response(doc, o.op, c)
			if r == nil {
				t.Errorf("%s %s: the response does not resolve", o, c)
				continue
			}
			s := obj(obj(obj(r, "content"), "application/json"), "schema")
			if s["$ref"] != "#/components/schemas/Error" {
				t.Errorf("%s %s: the body is not the Error schema", o, c)
			}
		}
	}
}

// TestOpenAPIStructure is the validator's part: every $ref resolves, every path parameter is
// declared (and every declared one is in the template), operation ids are unique, tags are
// declared, and every component is used.
func TestOpenAPIStructure(t *testing.T) {
	doc := openAPIDoc(t)
	used := map[string]bool{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"]; ok {
				s, _ := ref.(string)
				if pointer(doc, s) == nil {
					t.Errorf("%s: $ref %v does not resolve", path, ref)
				}
				used[s] = true
			}
			for k, e := range v {
				walk(path+"/"+k, e)
			}
		case []any:
			for _, e := range v {
				walk(path+"[]", e)
			}
		}
	}
	walk("#", doc)
	used["#/components/schemas/Scope"] = true // the values of x-imaged-scope (TestOpenAPIScopes)
	for kind, comps := range obj(doc, "components") {
		if kind == "securitySchemes" {
			continue
		}
		for name := range comps.(map[string]any) {
			if ref := "#/components/" + kind + "/" + name; !used[ref] {
				t.Errorf("%s is never used", ref)
			}
		}
	}

	declared := map[string]bool{}
	for _, tg := range asSlice(doc["tags"]) {
		declared[tg.(map[string]any)["name"].(string)] = true
	}
	schemes := obj(obj(doc, "components"), "securitySchemes")
	ids := map[string]string{}
	tmpl := regexp.MustCompile(`\{([^}]*)\}`)
	for _, o := range operations(t, doc) {
		id, _ := o.op["operationId"].(string)
		if id == "" {
			t.Errorf("%s: no operationId", o)
		} else if prev, dup := ids[id]; dup {
			t.Errorf("%s: operationId %s is also %s's", o, id, prev)
		}
		ids[id] = o.String()
		if len(tags(o.op)) == 0 {
			t.Errorf("%s: no tags", o)
		}
		for _, tg := range tags(o.op) {
			if !declared[tg] {
				t.Errorf("%s: tag %q is not declared", o, tg)
			}
		}
		for _, r := range asSlice(o.op["security"]) {
			for name := range r.(map[string]any) {
				if schemes[name] == nil {
					t.Errorf("%s: security scheme %q is not declared", o, name)
				}
			}
		}
		inPath := map[string]bool{}
		for _, m := range tmpl.FindAllStringSubmatch(o.path, -1) {
			inPath[m[1]] = true
		}
		seen := map[string]bool{}
		for _, p := range params(doc, o) {
			if p == nil {
				t.Errorf("%s: a parameter does not resolve", o)
				continue
			}
			name, _ := p["name"].(string)
			in, _ := p["in"].(string)
			if seen[in+" "+name] {
				t.Errorf("%s: parameter %s %q is declared twice", o, in, name)
			}
			seen[in+" "+name] = true
			if in != "path" {
				continue
			}
			if !inPath[name] {
				t.Errorf("%s: path parameter %q is not in the path", o, name)
			}
			if p["required"] != true {
				t.Errorf("%s: path parameter %q is not required", o, name)
			}
			delete(inPath, name)
		}
		for name := range inPath {
			t.Errorf("%s: path parameter {%s} is not declared", o, name)
		}
	}
}

// requestTypes are the Go types of the request bodies, by operationId.
var requestTypes = map[string]any{
	"agentHello":     agentapi.HelloRequest{},
	"agentProgress":  agentapi.Progress{},
	"agentResult":    agentapi.Result{},
	"registerImage":  RegisterRequest{},
	"promoteImage":   PromoteRequest{},
	"pruneImages":    PruneRequest{},
	"assignImage":    AssignRequest{},
	"powerMachine":   PowerRequest{},
	"setBootOnce":    BootRequest{},
	"reimageMachine": ReimageRequest{},
	"rebootMachine":  RebootRequest{},
	"checkIn":        CheckInRequest{},
}

// schemaTypes are the Go types of the component schemas. Response types are always encoded the
// same way, so their required properties are exactly the fields without omitempty/omitzero;
// a request type's required properties are the ones its handler refuses to go without.
var (
	responseSchemas = map[string]any{
		"Error": Error{}, "MachineView": MachineView{}, "Machine": machines.Machine{}, "Hello": machines.Hello{},
		"JobSummary": JobSummary{}, "CheckIn": machines.CheckIn{}, "Event": machines.Event{}, "Unknown": machines.Unknown{},
		"Image": images.Image{}, "ChannelMove": images.ChannelMove{}, "Channel": images.Channel{}, "Catalog": Catalog{},
		"ImageInfo": ImageInfo{}, "DeleteReply": DeleteReply{}, "PruneReply": PruneReply{}, "AssignReply": AssignReply{},
		"BMCHealth": BMCHealth{}, "BootOverride": BootOverride{}, "BMCSystem": BMCSystem{}, "MachinePower": MachinePower{},
		"BMCInfo": BMCInfo{}, "Probe": jobs.Probe{}, "Job": jobs.Job{}, "Netboot": jobs.Netboot{},
		"JobProgress": jobs.Progress{}, "JobResult": jobs.Result{}, "Ready": jobs.Ready{}, "Cancel": jobs.Cancel{},
		"End": jobs.End{}, "PhaseTime": jobs.PhaseTime{}, "TimelineEntry": jobs.Entry{}, "Queue": jobs.Queue{},
		"RollerTask": RollerTask{}, "Metadata": Metadata{}, "HelloReply": agentapi.HelloReply{}, "Plan": agentapi.Plan{},
		"PlanImage": agentapi.PlanImage{}, "PlanTarget": agentapi.PlanTarget{}, "ResultReply": agentapi.ResultReply{},
		"Challenge": agentapi.Challenge{},
	}
	requestSchemas = map[string]any{
		"HelloRequest": agentapi.HelloRequest{}, "AgentProgress": agentapi.Progress{}, "AgentResult": agentapi.Result{},
		"AgentProof": agentapi.Proof{}, "RegisterRequest": RegisterRequest{}, "PromoteRequest": PromoteRequest{}, "PruneRequest": PruneRequest{},
		"AssignRequest": AssignRequest{}, "PowerRequest": PowerRequest{}, "BootRequest": BootRequest{},
		"ReimageRequest": ReimageRequest{}, "RebootRequest": RebootRequest{}, "CheckInRequest": CheckInRequest{},
	}
	// Object schemas of the appliance endpoints, written as maps by imagehttp and cmd/imaged.
	mapSchemas = []string{"ImageError", "Health"}
)

// TestOpenAPIRequestBodies checks that each operation with a body documents the Go type its
// handler decodes, field for field.
func TestOpenAPIRequestBodies(t *testing.T) {
	doc := openAPIDoc(t)
	c := newSchemaChecker(t, doc)
	seen := map[string]bool{}
	for _, o := range operations(t, doc) {
		id, _ := o.op["operationId"].(string)
		rb := obj(o.op, "requestBody")
		want, mapped := requestTypes[id]
		switch {
		case rb == nil && !mapped:
			continue
		case rb == nil:
			t.Errorf("%s (%s): no requestBody, but its handler decodes %T", o, id, want)
			continue
		case !mapped:
			t.Errorf("%s (%s): a requestBody, but requestTypes does not say which Go type it is", o, id)
			continue
		}
		seen[id] = true
		content := obj(rb, "content")
		if len(content) != 1 || obj(content, "application/json") == nil {
			t.Errorf("%s: the body must be application/json only", o)
		}
		ref, _ := obj(obj(content, "application/json"), "schema")["$ref"].(string)
		name, _ := strings.CutPrefix(ref, "#/components/schemas/")
		if got := c.types[name]; got != reflect.TypeOf(want) {
			t.Errorf("%s: the body schema is %q (%v), the handler decodes %T", o, ref, got, want)
		}
	}
	for id, typ := range requestTypes {
		if !seen[id] {
			t.Errorf("requestTypes[%s] (%T) is not an operation with a body", id, typ)
		}
	}
}

// TestOpenAPISchemas checks every object schema against its Go type's json tags.
func TestOpenAPISchemas(t *testing.T) {
	doc := openAPIDoc(t)
	c := newSchemaChecker(t, doc)
	for name, s := range obj(obj(doc, "components"), "schemas") {
		s := s.(map[string]any)
		if s["type"] != "object" && s["allOf"] == nil {
			continue
		}
		if c.types[name] == nil && !slices.Contains(mapSchemas, name) {
			t.Errorf("schema %s has no Go type in the test's tables", name)
		}
	}
	for name := range c.types {
		c.component(name)
	}
	for name := range requestSchemas {
		if s := obj(obj(obj(doc, "components"), "schemas"), name); s["additionalProperties"] != false {
			t.Errorf("schema %s: bodies are decoded strictly, so additionalProperties must be false", name)
		}
	}
}

// TestOpenAPIEnums checks the enums against the values the code knows.
func TestOpenAPIEnums(t *testing.T) {
	doc := openAPIDoc(t)
	schemas := obj(obj(doc, "components"), "schemas")
	strs := func(vs ...any) []string {
		var out []string
		for _, v := range vs {
			out = append(out, reflect.ValueOf(v).String())
		}
		return out
	}
	each := func(s any) []any {
		v := reflect.ValueOf(s)
		out := make([]any, v.Len())
		for i := range out {
			out[i] = v.Index(i).Interface()
		}
		return out
	}
	want := map[string][]string{
		"PowerAction": strs(each(power.Actions)...),
		"BootTarget":  strs(each(power.BootTargets)...),
		"PowerState":  strs(power.On, power.Off, power.PoweringOn, power.PoweringOff, power.Unknown),
		"JobKind":     strs(jobs.KindReimage, jobs.KindReboot),
		"JobState":    strs(jobs.StateQueued, jobs.StateRunning, jobs.StateStopping, jobs.StateSucceeded, jobs.StateFailed, jobs.StateCancelled),
		"JobPhase": strs(jobs.PhaseQueued, jobs.PhaseFencing, jobs.PhaseBootSet, jobs.PhasePoweringOn, jobs.PhaseNetbooting,
			jobs.PhaseWriting, jobs.PhaseVerifying, jobs.PhaseRebooting, jobs.PhaseBootingOS, jobs.PhaseReady),
		"Scope": {ScopeNone.String(), ScopeRead.String(), ScopeOperate.String(), ScopeAdmin.String()},
	}
	want["PhaseName"] = append(slices.Clone(want["JobPhase"]), string(jobs.PhaseStopping))
	for name, w := range want {
		var got []string
		for _, v := range asSlice(obj(schemas, name)["enum"]) {
			s, _ := v.(string)
			got = append(got, s)
		}
		if d := cmp.Diff(w, got); d != "" {
			t.Errorf("schema %s enum (-code +document):\n%s", name, d)
		}
	}
	action := obj(obj(obj(schemas, "Plan"), "properties"), "action")
	if d := cmp.Diff([]any{agentapi.ActionWrite, agentapi.ActionWait}, asSlice(action["enum"])); d != "" {
		t.Errorf("Plan.action enum (-code +document):\n%s", d)
	}
}

// schemaChecker compares schemas with Go types.
type schemaChecker struct {
	t      *testing.T
	doc    map[string]any
	types  map[string]reflect.Type // component name → Go type
	strict map[string]bool         // response types: required = fields always encoded
}

func newSchemaChecker(t *testing.T, doc map[string]any) *schemaChecker {
	c := &schemaChecker{t: t, doc: doc, types: map[string]reflect.Type{}, strict: map[string]bool{}}
	for name, v := range responseSchemas {
		c.types[name], c.strict[name] = reflect.TypeOf(v), true
	}
	for name, v := range requestSchemas {
		c.types[name] = reflect.TypeOf(v)
	}
	return c
}

// jsonField is a field as encoding/json sees it.
type jsonField struct {
	name     string
	typ      reflect.Type
	optional bool // omitempty or omitzero
}

// jsonFields lists the fields encoding/json encodes for struct type t, embedded structs
// flattened.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		optional := slices.Contains(strings.Split(opts, ","), "omitempty") || slices.Contains(strings.Split(opts, ","), "omitzero")
		out = append(out, jsonField{name: name, typ: f.Type, optional: optional})
	}
	return out
}

// object merges a schema's properties and required lists, through allOf.
func (c *schemaChecker) object(s map[string]any) (props map[string]any, required []string) {
	props = map[string]any{}
	s = deref(c.doc, s)
	for _, part := range asSlice(s["allOf"]) {
		p, r := c.object(part.(map[string]any))
		for k, v := range p {
			props[k] = v
		}
		required = append(required, r...)
	}
	for k, v := range obj(s, "properties") {
		props[k] = v
	}
	for _, r := range asSlice(s["required"]) {
		required = append(required, r.(string))
	}
	return props, required
}

// component checks schema name against its Go type.
func (c *schemaChecker) component(name string) {
	t := c.t
	s := obj(obj(obj(c.doc, "components"), "schemas"), name)
	if s == nil {
		t.Errorf("schema %s (%v) is not in components.schemas", name, c.types[name])
		return
	}
	props, required := c.object(s)
	var fields, always []string
	for _, f := range jsonFields(c.types[name]) {
		fields = append(fields, f.name)
		if !f.optional {
			always = append(always, f.name)
		}
		p, ok := props[f.name].(map[string]any)
		if !ok {
			continue // reported with the property lists below
		}
		c.value(name+"."+f.name, f.typ, p)
	}
	var documented []string
	for k := range props {
		documented = append(documented, k)
	}
	sort.Strings(fields)
	sort.Strings(documented)
	if d := cmp.Diff(fields, documented); d != "" {
		t.Errorf("schema %s: properties differ from %v's json fields (-Go +document):\n%s", name, c.types[name], d)
	}
	sort.Strings(required)
	if c.strict[name] {
		sort.Strings(always)
		if d := cmp.Diff(always, required); d != "" {
			t.Errorf("schema %s: required differs from %v's fields without omitempty (-Go +document):\n%s", name, c.types[name], d)
		}
	} else {
		for _, r := range required {
			if !slices.Contains(fields, r) {
				t.Errorf("schema %s: required %q is not a field of %v", name, r, c.types[name])
			}
		}
	}
}

var (
	timeType          = reflect.TypeFor[time.Time]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// value checks that schema s describes values of Go type typ.
func (c *schemaChecker) value(where string, typ reflect.Type, s map[string]any) {
	t := c.t
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	kind := typ.Kind()
	if typ != timeType && typ.Implements(textMarshalerType) {
		kind = reflect.String // encoding/json writes its text: a digest, a hash, an address
	}
	if kind == reflect.Struct && typ != timeType {
		ref, _ := s["$ref"].(string)
		name, _ := strings.CutPrefix(ref, "#/components/schemas/")
		if c.types[name] != typ {
			t.Errorf("%s: %v must be a $ref to its schema, not %v", where, typ, s)
		}
		return
	}
	r := deref(c.doc, s)
	if r == nil {
		t.Errorf("%s: $ref %v does not resolve", where, s["$ref"])
		return
	}
	want := ""
	switch kind {
	case reflect.String:
		want = "string"
	case reflect.Bool:
		want = "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		want = "integer"
	case reflect.Float32, reflect.Float64:
		want = "number"
	case reflect.Slice, reflect.Array:
		want = "array"
	case reflect.Map:
		want = "object"
	case reflect.Struct: // time.Time
		want = "string"
		if r["format"] != "date-time" {
			t.Errorf("%s: a time must have format date-time", where)
		}
	default:
		t.Errorf("%s: no JSON schema type for %v", where, typ)
		return
	}
	if r["type"] != want {
		t.Errorf("%s: type %v, want %s for %v", where, r["type"], want, typ)
		return
	}
	switch kind {
	case reflect.Slice, reflect.Array:
		items, _ := r["items"].(map[string]any)
		if items == nil {
			t.Errorf("%s: an array without items", where)
			return
		}
		c.value(where+"[]", typ.Elem(), items)
	case reflect.Map:
		ap, _ := r["additionalProperties"].(map[string]any)
		if ap == nil {
			t.Errorf("%s: a map without an additionalProperties schema", where)
			return
		}
		c.value(where+"{}", typ.Elem(), ap)
	}
}
