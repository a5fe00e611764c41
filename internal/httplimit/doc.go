// Package httplimit bounds what one client can hold of imaged's HTTP listeners, so that no
// client address, and no crowd of them, can take the doors away from the blades:
//
//   - Connections: Listen wraps a TCP listener with a cap on the connections open at once, in
//     total and per client address (a refused connection is closed at once, before a byte of it
//     is read, and costs the daemon nothing more).
//
//   - Deadlines by route class: Handler gives every request a class (Classify) and sets its
//     connection's deadlines with http.ResponseController. A Request (the JSON APIs, boot
//     scripts) must deliver its body within ReadTimeout and take its answer within WriteTimeout
//     of its first byte; a Transfer (blobs, boot assets: gigabytes are legitimate) has no total
//     bound, but each write must move within TransferStall, so the deadline moves on while bytes
//     flow; a Stream (Server-Sent Events) has no total bound either, each of its writes must go
//     out within WriteTimeout, and its handler sends a heartbeat so that a dead peer is found.
//
//   - Event streams: at most MaxStreams at once, MaxStreamsPerClient from one address; one more
//     is answered 503 with a JSON error ({"error": …}, the API's format) and Retry-After.
//
//   - Error lines: ErrorLog, for http.Server.ErrorLog, logs at most ErrorLogBurst of net/http's
//     lines a minute (a TLS handshake dropped halfway, a malformed request line: each one a
//     client's choice) and says how many it left out.
//
// Every refusal is counted in imaged_http_refused_total{reason} with a reason among
// connections, client_connections, sse, client_sse, read_timeout and write_timeout (alert rules
// match these names: keep them); imaged_http_connections is the number of connections open.
//
// The package is a leaf: it knows nothing of imaged's routes (cmd/imaged classifies them) and
// only cmd/imaged imports it. The control socket is not limited: only root and imaged's own user
// reach it.
package httplimit
