package images

import (
	"net/url"
	"strings"
)

// RedactSource returns an import source (a path, or a URL) without what would let its reader
// fetch it: the catalog keeps and serves sources to anyone allowed to read it, and logs and
// errors show them. removed names what was taken out, in order, never its value: "userinfo"
// (user and password), "fragment", "the whole URL" (one that does not parse), and the name of
// each query parameter taken out, as written. A path, or a URL with nothing to remove, comes back
// as it is; a redacted source redacts to itself.
//
// Query parameters are taken out by name, compared case-insensitively (secretParams): the
// credentials and signatures of presigned URLs (AWS SigV4 and SigV2, Google Cloud Storage V4 and
// V2, Azure SAS, Alibaba OSS) and generic token, key and password parameters; and any parameter
// whose name ends in "signature", "credential", "token" or "secret", which catches the other
// vendors' variants. What only describes a signature (X-Amz-Date, X-Amz-Expires, Azure's se and
// sp) is kept: it grants nothing. A credential carried in the path itself cannot be told from a
// file name and is kept.
func RedactSource(src string) (clean string, removed []string) {
	if !strings.Contains(src, "://") {
		return src, nil // a path
	}
	u, err := url.Parse(src)
	if err != nil || u.Scheme == "" {
		return unparsable, []string{"the whole URL"}
	}
	if u.User != nil {
		u.User = nil
		removed = append(removed, "userinfo")
	}
	if u.RawQuery != "" {
		var kept []string
		// Both separators: some servers still split on ';' (Go's own parser refuses it).
		for _, kv := range strings.FieldsFunc(u.RawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
			name, _, _ := strings.Cut(kv, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if secretParam(name) {
				removed = append(removed, name)
				continue
			}
			kept = append(kept, kv)
		}
		u.RawQuery = strings.Join(kept, "&")
		u.ForceQuery = false
	}
	if u.Fragment != "" || u.RawFragment != "" {
		// Never sent to a server, but where some put a token (OAuth's implicit grant does).
		u.Fragment, u.RawFragment = "", ""
		removed = append(removed, "fragment")
	}
	if removed == nil {
		return src, nil
	}
	clean = u.String()
	if _, err := url.Parse(clean); err != nil {
		return unparsable, []string{"the whole URL"}
	}
	return clean, removed
}

// unparsable stands for a source that looks like a URL but does not parse: nothing of it can be
// told safe to keep.
const unparsable = "(a URL that does not parse, redacted)"

// secretParams are the query parameters RedactSource takes out, lower-cased, besides those
// ending in a secretSuffixes:
//   - AWS Signature Version 4 query authentication (S3 presigned URLs): X-Amz-Credential (the
//     access key id and scope), X-Amz-Signature, X-Amz-Security-Token (temporary credentials);
//   - AWS Signature Version 2 and Google Cloud Storage V2 signed URLs: AWSAccessKeyId,
//     GoogleAccessId, Signature; Alibaba OSS: OSSAccessKeyId, security-token;
//   - Google Cloud Storage V4 signed URLs: X-Goog-Credential, X-Goog-Signature;
//   - Azure shared access signatures: sig;
//   - bearer tokens, API keys and passwords: token, access_token, id_token, refresh_token,
//     auth, authorization, key, api_key, apikey, api-key, password, passwd, pwd, secret,
//     client_secret.
var secretParams = map[string]bool{
	"x-amz-credential": true, "x-amz-signature": true, "x-amz-security-token": true,
	"awsaccesskeyid": true, "googleaccessid": true, "signature": true,
	"ossaccesskeyid": true, "security-token": true,
	"x-goog-credential": true, "x-goog-signature": true,
	"sig":   true,
	"token": true, "access_token": true, "id_token": true, "refresh_token": true,
	"auth": true, "authorization": true,
	"key": true, "api_key": true, "apikey": true, "api-key": true,
	"password": true, "passwd": true, "pwd": true, "secret": true, "client_secret": true,
}

var secretSuffixes = []string{"signature", "credential", "token", "secret"}

func secretParam(name string) bool {
	name = strings.ToLower(name)
	if secretParams[name] {
		return true
	}
	for _, s := range secretSuffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}
