package submission

import (
	"os"
	"strings"
	"testing"
)

// Seeds live in testdata/smtpd/ at the top of the module and run as normal
// tests; `go test -fuzz` explores from them.

func pathSeeds(f *testing.F) {
	b, err := os.ReadFile("../../testdata/smtpd/paths.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			f.Add(l)
		}
	}
}

// FuzzParsePath: never panics; what parses is canonical (its String form
// parses back to the same mailbox), so the address the relay check sees is
// the address that is queued.
func FuzzParsePath(f *testing.F) {
	pathSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		a, null, rest, err := ParsePath(s, true)
		if err != nil || null {
			return
		}
		if a.Domain != strings.ToLower(a.Domain) || strings.HasSuffix(a.Domain, ".") {
			t.Fatalf("%q: domain %q not canonical", s, a.Domain)
		}
		if a.Domain == "" {
			if !strings.EqualFold(a.Local, "postmaster") {
				t.Fatalf("%q: no domain for %q", s, a.Local)
			}
			return
		}
		b, null2, rest2, err := ParsePath("<"+a.String()+">", true)
		if err != nil || null2 || rest2 != "" || b != a {
			t.Fatalf("%q -> %q -> %+v %v (rest %q)", s, a.String(), b, err, rest)
		}
	})
}
