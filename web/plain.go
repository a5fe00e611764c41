package web

import (
	"html/template"
	"net/http"
	"net/url"
)

// The plain-HTTP listener, when the dashboard is served over HTTPS, answers a GET of a
// dashboard page with a small page that links to the same page over HTTPS (and says how to
// check the certificate), and anything else with 403. It does not redirect: a redirect from
// clear text is an automatic hop that anyone on the path can rewrite, and the API already
// refuses to teach its clients one (api.HTTPSOnly); here the reader sees where the link goes
// before following it. Nothing on that page is secret, and the session cookie is Secure: a
// browser never sends it in clear.

var plainPage = template.Must(template.New("plain").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>imaged: the dashboard is served over HTTPS</title>
</head>
<body>
<main>
<h1>imaged's dashboard is served over HTTPS</h1>
<p>Open <a id="https-link" href="{{.}}">{{.}}</a>.</p>
<p>Its certificate is imaged's own unless an operator configured one (<code>http.tls.cert_file</code>): before trusting it, compare its SHA-256 fingerprint with the one imaged logs when it starts (<code>https_sha256</code>), or with <code>openssl x509 -noout -fingerprint -sha256 -in &lt;state_dir&gt;/tls/cert.pem</code> on imaged's host.</p>
</main>
</body>
</html>
`))

// PlainHandler answers the dashboard's pages on the plain-HTTP listener: a link to the same page
// at httpsURL for a GET or HEAD, 403 otherwise.
func PlainHandler(httpsURL *url.URL) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := httpsURL.JoinPath(r.URL.Path)
		u.RawQuery = r.URL.RawQuery
		securityHeaders(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.WriteHeader(http.StatusForbidden)
			plainPage.Execute(w, u.String())
			return
		}
		plainPage.Execute(w, u.String())
	})
}
