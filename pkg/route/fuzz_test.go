package route

import (
	"errors"
	"os"
	"strings"
	"testing"

	"letterbox/pkg/aliases"
	"letterbox/pkg/users"
)

func FuzzParseAddress(f *testing.F) {
	b, err := os.ReadFile("../../testdata/aliases/addresses.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			f.Add(l)
		}
	}
	db, _ := users.Parse(strings.NewReader(testUsers))
	al, _ := aliases.Parse(strings.NewReader(testAliases))
	r := &Router{Domains: []string{"example.test", "other.test", "catch.test", "loopy.test"}, MailRoot: "/m", Users: db, Aliases: al, AllowPipes: true}
	f.Fuzz(func(t *testing.T, addr string) {
		local, domain, err := ParseAddress(addr)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("%q: error %v is not ErrBadAddress", addr, err)
			}
			return
		}
		if domain != lowerASCII(domain) || strings.HasSuffix(domain, ".") {
			t.Fatalf("%q: domain %q not normalised", addr, domain)
		}
		if domain != "" {
			l2, d2, err := ParseAddress(FormatAddress(local, domain))
			if err != nil || l2 != local || d2 != domain {
				t.Fatalf("%q: FormatAddress round trip: %q %q %v", addr, l2, d2, err)
			}
		}
		ds, err := r.Resolve(addr)
		if err != nil {
			return
		}
		if r.IsLocal(domain) || domain == "" {
			for _, d := range ds {
				// Only aliases in the test table forward (fwd, mixed, sales→other.test is local).
				if d.Kind == Remote && d.Address != "someone@remote.test" {
					t.Fatalf("%q: local address resolved to remote %q", addr, d.Address)
				}
			}
		}
	})
}
