package awsfake

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EC2 Query protocol: a form-encoded POST with Action and Version; XML
// responses named <Action>Response; errors as
// <Response><Errors><Error><Code>…</Code><Message>…</Message></Error></Errors><RequestID>…</RequestID></Response>
// ("Error codes for the Amazon EC2 API", EC2 API Reference).

const ec2Version = "2016-11-15"

type ec2Error struct {
	status int
	code   string
	msg    string
}

func ec2Err(code, format string, args ...any) *ec2Error {
	return &ec2Error{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
}

// ec2Req is one decoded EC2 request.
type ec2Req struct {
	form   url.Values
	region string
	now    time.Time
}

func (q *ec2Req) get(k string) string { return q.form.Get(k) }

func (q *ec2Req) bool(k string) (bool, *ec2Error) {
	v := q.form.Get(k)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, ec2Err("InvalidParameterValue", "Value (%s) for parameter %s is invalid.", v, k)
	}
	return b, nil
}

// list returns the values of a flat list prefix.1, prefix.2, …
func (q *ec2Req) list(prefix string) []string {
	var out []string
	for _, i := range q.indices(prefix) {
		out = append(out, q.form.Get(prefix+"."+strconv.Itoa(i)))
	}
	return out
}

// indices returns the member numbers N present as prefix.N[.…], ascending.
func (q *ec2Req) indices(prefix string) []int {
	var out []int
	for k := range q.form {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(n); err == nil && !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

// tags decodes prefix.N.Key / prefix.N.Value.
func (q *ec2Req) tags(prefix string) (map[string]string, *ec2Error) {
	tags := map[string]string{}
	for _, i := range q.indices(prefix) {
		p := fmt.Sprintf("%s.%d.", prefix, i)
		k := q.get(p + "Key")
		// Tag keys: 1-128 characters, may not begin with aws:.
		if k == "" || len(k) > 128 || strings.HasPrefix(strings.ToLower(k), "aws:") {
			return nil, ec2Err("InvalidParameterValue", "Tag key %q is invalid.", k)
		}
		tags[k] = q.get(p + "Value")
	}
	return tags, nil
}

// tagSpecs decodes TagSpecification.N.{ResourceType,Tag.M.*} into tags per
// resource type, accepting only the given resource types.
func (q *ec2Req) tagSpecs(allowed ...string) (map[string]map[string]string, *ec2Error) {
	out := map[string]map[string]string{}
	for _, i := range q.indices("TagSpecification") {
		p := fmt.Sprintf("TagSpecification.%d.", i)
		rt := q.get(p + "ResourceType")
		if !slices.Contains(allowed, rt) {
			return nil, ec2Err("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
		tags, e := q.tags(p + "Tag")
		if e != nil {
			return nil, e
		}
		if out[rt] == nil {
			out[rt] = map[string]string{}
		}
		for k, v := range tags {
			out[rt][k] = v
		}
	}
	return out, nil
}

// filters decodes Filter.N.Name / Filter.N.Value.M.
func (q *ec2Req) filters() map[string][]string {
	out := map[string][]string{}
	for _, i := range q.indices("Filter") {
		p := fmt.Sprintf("Filter.%d.", i)
		out[q.get(p+"Name")] = append(out[q.get(p+"Name")], q.list(p+"Value")...)
	}
	return out
}

// matchFilters reports whether an object passes every filter: for each
// filter, one of the object's values for that name matches one filter value
// (with * and ? wildcards). values returns nil for unknown names.
func matchFilters(filters map[string][]string, tags map[string]string, values func(name string) []string) bool {
	for name, want := range filters {
		var have []string
		switch {
		case strings.HasPrefix(name, "tag:"):
			if v, ok := tags[strings.TrimPrefix(name, "tag:")]; ok {
				have = []string{v}
			}
		case name == "tag-key":
			have = sortedKeys(tags)
		default:
			have = values(name)
		}
		if !slices.ContainsFunc(have, func(h string) bool {
			return slices.ContainsFunc(want, func(w string) bool {
				ok, _ := path.Match(w, h)
				return ok
			})
		}) {
			return false
		}
	}
	return true
}

// regional is a snapshot, an image or an instance: each lives in one region and carries tags.
// Describe* and the inspection methods select them by region.
type regional interface {
	regionAndTags() (string, map[string]string)
}

func (s *snapshot) regionAndTags() (string, map[string]string)  { return s.Region, s.Tags }
func (im *image) regionAndTags() (string, map[string]string)    { return im.Region, im.Tags }
func (in *instance) regionAndTags() (string, map[string]string) { return in.Region, in.Tags }

// described returns, by ID, the objects a Describe* request lists: those of the request's
// region, among ids when it names any, that pass its filters. values gives an object's values
// for a filter other than the tag filters (nil for a filter the fake does not know).
func described[T regional](q *ec2Req, objs map[string]T, ids []string, values func(o T, filter string) []string) []T {
	filters := q.filters()
	var out []T
	for _, id := range sortedKeys(objs) {
		o := objs[id]
		region, tags := o.regionAndTags()
		if region != q.region || (len(ids) > 0 && !slices.Contains(ids, id)) {
			continue
		}
		if matchFilters(filters, tags, func(filter string) []string { return values(o, filter) }) {
			out = append(out, o)
		}
	}
	return out
}

// xb builds an XML document.
type xb struct{ strings.Builder }

func (b *xb) open(name string)  { b.WriteString("<" + name + ">") }
func (b *xb) close(name string) { b.WriteString("</" + name + ">") }
func (b *xb) elem(name, v string) {
	b.open(name)
	xml.EscapeText(b, []byte(v))
	b.close(name)
}

func (b *xb) tagSet(tags map[string]string) {
	b.open("tagSet")
	for _, k := range sortedKeys(tags) {
		b.open("item")
		b.elem("key", k)
		b.elem("value", tags[k])
		b.close("item")
	}
	b.close("tagSet")
}

type ec2Handler func(f *Fake, q *ec2Req, b *xb) *ec2Error

var ec2Actions = map[string]ec2Handler{
	"DescribeSnapshots":    (*Fake).describeSnapshots,
	"DeleteSnapshot":       (*Fake).deleteSnapshot,
	"RegisterImage":        (*Fake).registerImage,
	"DescribeImages":       (*Fake).describeImages,
	"CopyImage":            (*Fake).copyImage,
	"DeregisterImage":      (*Fake).deregisterImage,
	"CreateTags":           (*Fake).createTags,
	"RunInstances":         (*Fake).runInstances,
	"DescribeInstances":    (*Fake).describeInstances,
	"TerminateInstances":   (*Fake).terminateInstances,
	"GetConsoleOutput":     (*Fake).getConsoleOutput,
	"GetConsoleScreenshot": (*Fake).getConsoleScreenshot,
}

func (f *Fake) serveEC2(w http.ResponseWriter, r *http.Request, region string) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		writeEC2Error(w, ec2Err("InvalidParameterValue", "expected a form-encoded POST"))
		return
	}
	action := r.PostForm.Get("Action")
	h, ok := ec2Actions[action]
	if !ok {
		writeEC2Error(w, ec2Err("InvalidAction", "The action %s is not valid for this web service.", action))
		return
	}
	now, ft := f.begin(action)
	var b xb
	e := func() *ec2Error {
		defer f.mu.Unlock()
		if ft != nil {
			return ec2Fault(ft)
		}
		if v := r.PostForm.Get("Version"); v != ec2Version {
			return ec2Err("InvalidParameterValue", "Version %q is not supported; this fake speaks %s.", v, ec2Version)
		}
		if dry, _ := strconv.ParseBool(r.PostForm.Get("DryRun")); dry {
			return &ec2Error{http.StatusPreconditionFailed, "DryRunOperation", "Request would have succeeded, but DryRun flag is set."}
		}
		return h(f, &ec2Req{form: r.PostForm, region: region, now: now}, &b)
	}()
	if e != nil {
		writeEC2Error(w, e)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<%sResponse xmlns="http://ec2.amazonaws.com/doc/%s/"><requestId>%s</requestId>%s</%sResponse>`,
		action, ec2Version, requestID(), b.String(), action)
}

func ec2Fault(ft *Fault) *ec2Error {
	switch ft.Kind {
	case FaultThrottle, FaultThrottling429:
		// "RequestLimitExceeded: The maximum request rate permitted by the
		// Amazon EC2 APIs has been exceeded" — HTTP 503.
		return &ec2Error{http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded."}
	case FaultUnavailable:
		return &ec2Error{http.StatusServiceUnavailable, "Unavailable", "The server is overloaded and can't handle the request."}
	default:
		return &ec2Error{http.StatusInternalServerError, "InternalError", "An internal error has occurred."}
	}
}

func writeEC2Error(w http.ResponseWriter, e *ec2Error) {
	var b xb
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.open("Response")
	b.open("Errors")
	b.open("Error")
	b.elem("Code", e.code)
	b.elem("Message", e.msg)
	b.close("Error")
	b.close("Errors")
	b.elem("RequestID", requestID())
	b.close("Response")
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.status)
	w.Write([]byte(b.String()))
}

func requestID() string { return "00000000-0000-4000-8000-000000000000" }

func ec2Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
