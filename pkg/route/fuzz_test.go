package route

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"letterbox/pkg/address"
	"letterbox/pkg/aliases"
	"letterbox/pkg/users"
)

// addressSeeds adds the address parser's corpus (pkg/address, the one
// corpus of address forms) as seeds.
func addressSeeds(f *testing.F) {
	dir := "../address/testdata/fuzz/FuzzRoundTrip"
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		f.Fatalf("seeds in %s: %v", dir, err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		_, v, _ := strings.Cut(strings.TrimSpace(string(b)), "\nstring(")
		s, err := strconv.Unquote(strings.TrimSuffix(v, ")"))
		if err != nil {
			f.Fatalf("seed %s: %v", e.Name(), err)
		}
		f.Add(s)
	}
}

// FuzzResolve: the router's parse is canonical and round-trips through
// address.Format, and no address form makes a local address remote.
func FuzzResolve(f *testing.F) {
	addressSeeds(f)
	db, _ := users.Parse(strings.NewReader(testUsers))
	al, _ := aliases.Parse(strings.NewReader(testAliases))
	r := &Router{Domains: []string{"example.test", "other.test", "catch.test", "loopy.test"}, MailRoot: "/m", Users: db, Aliases: al, AllowPipes: true}
	f.Fuzz(func(t *testing.T, addr string) {
		local, domain, err := parseAddress(addr)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("%q: error %v is not ErrBadAddress", addr, err)
			}
			return
		}
		if domain != address.LowerASCII(domain) || strings.HasSuffix(domain, ".") {
			t.Fatalf("%q: domain %q not normalised", addr, domain)
		}
		if domain != "" {
			l2, d2, err := parseAddress(address.Format(local, domain))
			if err != nil || l2 != local || d2 != domain {
				t.Fatalf("%q: address.Format round trip: %q %q %v", addr, l2, d2, err)
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
