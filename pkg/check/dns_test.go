package check

import (
	"context"
	"testing"
	"time"

	"letterbox/pkg/dnsclient"
)

// TestResolverCache: answers are kept for their TTL; a TTL of 0 is not
// kept; NXDOMAIN is kept only with an SOA's negative TTL; failures are
// never kept.
func TestResolverCache(t *testing.T) {
	z := startDNS(t)
	z.add(t, "kept.test. 60 IN TXT \"v=spf1 -all\"", "zero.test. 0 IN TXT \"v=spf1 -all\"")
	z.add(t, "neg.test. 60 IN SOA ns.neg.test. admin.neg.test. 1 3600 600 86400 30")
	z.mark(z.servfail, "fail.test.")
	r := &Resolver{DNS: &dnsclient.Client{Servers: []string{z.addr}, Timeout: time.Second}}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		r.LookupTXT(ctx, "kept.test")
		r.LookupTXT(ctx, "zero.test")
		r.LookupTXT(ctx, "fail.test")
		r.LookupTXT(ctx, "gone.test")
		r.LookupTXT(ctx, "x.neg.test")
		r.LookupTXT(ctx, "neg.test")
	}
	for name, want := range map[string]int{"kept.test": 1, "zero.test": 3, "fail.test": 3, "gone.test": 3, "x.neg.test": 1, "neg.test": 1} {
		if n := z.asked(name); n != want {
			t.Errorf("%s asked %d times, want %d", name, n, want)
		}
	}
}
