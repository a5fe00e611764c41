package images

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestRedactSource(t *testing.T) {
	for _, c := range []struct {
		src, clean string
		removed    []string
	}{
		{"/var/tmp/debian.raw", "/var/tmp/debian.raw", nil},
		{"relative/x.qcow2?token=1", "relative/x.qcow2?token=1", nil}, // a file name, not a URL
		{"https://mirror.example/debian-12.raw.xz", "https://mirror.example/debian-12.raw.xz", nil},
		{"http://user:password@host:8080/img.raw", "http://host:8080/img.raw", []string{"userinfo"}},
		{"http://user@host/img.raw", "http://host/img.raw", []string{"userinfo"}},
		// An S3 presigned URL (SigV4): the signature, the credential and the session token go;
		// what only describes the signature stays.
		{"https://b.s3.amazonaws.com/k.raw?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-Security-Token=FwoG&X-Amz-SignedHeaders=host&X-Amz-Signature=0123abcd&versionId=3",
			"https://b.s3.amazonaws.com/k.raw?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&versionId=3",
			[]string{"X-Amz-Credential", "X-Amz-Security-Token", "X-Amz-Signature"}},
		{"https://b.s3.amazonaws.com/k?AWSAccessKeyId=AKIA&Expires=1700000000&Signature=abc%3D", "https://b.s3.amazonaws.com/k?Expires=1700000000", []string{"AWSAccessKeyId", "Signature"}},
		{"https://storage.googleapis.com/b/k?x-goog-algorithm=GOOG4-RSA-SHA256&x-goog-credential=sa%40p.iam&x-goog-signature=ff", "https://storage.googleapis.com/b/k?x-goog-algorithm=GOOG4-RSA-SHA256", []string{"x-goog-credential", "x-goog-signature"}},
		{"https://a.blob.core.windows.net/c/k.vhd?sv=2022-11-02&se=2026-01-01&sr=b&sp=r&sig=abc%2Bdef", "https://a.blob.core.windows.net/c/k.vhd?sv=2022-11-02&se=2026-01-01&sr=b&sp=r", []string{"sig"}},
		{"https://h/k?Token=1&access_token=2&API_KEY=3&x-oss-signature=4&x-custom-token=5&page=2", "https://h/k?page=2", []string{"Token", "access_token", "API_KEY", "x-oss-signature", "x-custom-token"}},
		{"https://h/k?a=1;sig=2", "https://h/k?a=1", []string{"sig"}},
		{"https://h/k?X%2DAmz%2DSignature=1", "https://h/k", []string{"X-Amz-Signature"}},
		{"https://h/k?token=1#access_token=2", "https://h/k", []string{"token", "fragment"}},
		{"s3://AKIA:secret@bucket/key.raw?x-amz-security-token=1", "s3://bucket/key.raw", []string{"userinfo", "x-amz-security-token"}},
		{"http://us er:pa ss@host/x", unparsable, []string{"the whole URL"}},
	} {
		clean, removed := RedactSource(c.src)
		if clean != c.clean || !slices.Equal(removed, c.removed) {
			t.Errorf("RedactSource(%q)\n = %q %q\nwant %q %q", c.src, clean, removed, c.clean, c.removed)
		}
		if again, r := RedactSource(clean); again != clean || r != nil {
			t.Errorf("RedactSource(%q) = %q %q: not its own redaction", clean, again, r)
		}
	}
}

// FuzzRedactSource: whatever the source, what comes back holds no userinfo, no fragment and no
// secret query parameter, and redacts to itself.
func FuzzRedactSource(f *testing.F) {
	f.Add("http://u:p@h/x?X-Amz-Signature=1&a=2#f")
	f.Add("s3://b/k?sig=1;token=2")
	f.Add("/a/b://c?d")
	f.Fuzz(func(t *testing.T, src string) {
		clean, removed := RedactSource(src)
		if again, r := RedactSource(clean); again != clean || r != nil {
			t.Fatalf("RedactSource(%q) = %q, which redacts to %q %q", src, clean, again, r)
		}
		if removed == nil && clean != src {
			t.Fatalf("RedactSource(%q) = %q, but says it removed nothing", src, clean)
		}
		if !strings.Contains(clean, "://") {
			return
		}
		u, err := url.Parse(clean)
		if err != nil {
			t.Fatalf("RedactSource(%q) = %q, which does not parse: %v", src, clean, err)
		}
		if u.User != nil || u.Fragment != "" {
			t.Fatalf("RedactSource(%q) = %q: userinfo or fragment left", src, clean)
		}
		for _, kv := range strings.FieldsFunc(u.RawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
			name, _, _ := strings.Cut(kv, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if secretParam(name) {
				t.Fatalf("RedactSource(%q) = %q: %q left", src, clean, name)
			}
		}
	})
}
