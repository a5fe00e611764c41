package api

import (
	"net/http"
	"net/url"
)

// RegisterPlain adds to mux, the plain-HTTP listener's when the API is served over HTTPS at
// httpsURL, the two routes that stay in clear text, and an answer for everything else under
// /api/ and /agent/ that sends the caller to httpsURL.
//
// GET /api/v1/metadata and POST /api/v1/check-in stay: a booted OS calls them with the URL baked
// into its image, holds no credential and no certificate to check, and imaged knows it only by
// its source address, which TLS would not change; what they carry (a machine's id and groups, a
// digest) is no secret. Everything else carries a token, a plan or a result and is served over
// HTTPS only. There is no redirect: it would teach clients to send their tokens in clear first.
func (s *Server) RegisterPlain(mux *http.ServeMux, httpsURL *url.URL) {
	mux.HandleFunc("GET /api/v1/metadata", s.metadata)
	mux.HandleFunc("POST /api/v1/check-in", s.checkIn)
	mux.Handle("/api/", HTTPSOnly(httpsURL))
	mux.Handle("/agent/", HTTPSOnly(httpsURL))
}

// HTTPSOnly answers every request with 403 and a JSON error naming the same path at httpsURL.
func HTTPSOnly(httpsURL *url.URL) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := httpsURL.JoinPath(r.URL.Path)
		u.RawQuery = r.URL.RawQuery
		fail(w, http.StatusForbidden, "", "%s is served over HTTPS only, so that tokens, plans and results never cross the network in clear: use %s", r.URL.Path, u)
	})
}
