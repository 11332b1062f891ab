package remote

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/miekg/dns"

	"letterbox/pkg/dnsclient"
)

// dnsError is a lookup failure, classified: Permanent only when the name
// server said the name does not exist (NXDOMAIN) or published a null MX.
type dnsError struct {
	Permanent bool
	Status    string
	Msg       string
}

func (e *dnsError) Error() string { return e.Msg }

// resolver asks the name servers of --dns (pkg/dnsclient), so that tests
// and relays can point lookups at their own server.
type resolver struct {
	*dnsclient.Client
}

func newResolver(addr string) (*resolver, error) {
	c, err := dnsclient.New(addr)
	if err != nil {
		return nil, fmt.Errorf("remote: %w", err)
	}
	return &resolver{c}, nil
}

func tempDNS(name string, qtype uint16, err error) *dnsError {
	return &dnsError{Status: "4.4.3", Msg: fmt.Sprintf("DNS lookup of %s %s failed: %v", name, dns.TypeToString[qtype], err)}
}

// lookup returns the answer records of qtype, following the CNAMEs the
// resolver included. NXDOMAIN is permanent; SERVFAIL, REFUSED and timeouts
// are temporary.
func (r *resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	resp, err := r.Exchange(ctx, name, qtype)
	if err != nil {
		return nil, tempDNS(name, qtype, err)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, &dnsError{Permanent: true, Status: "5.1.2", Msg: fmt.Sprintf("domain %s not found (NXDOMAIN)", strings.TrimSuffix(name, "."))}
	default:
		return nil, tempDNS(name, qtype, errors.New(dns.RcodeToString[resp.Rcode]))
	}
	var out []dns.RR
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	return out, nil
}

// addrs returns the IPv4 then IPv6 addresses of host. An IP literal is
// returned as is.
func (r *resolver) addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	h := strings.Trim(host, "[]")
	if ip, err := netip.ParseAddr(h); err == nil {
		return []netip.Addr{ip}, nil
	}
	var out []netip.Addr
	var firstErr error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.lookup(ctx, h, qt)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			var de *dnsError
			if errors.As(err, &de) && de.Permanent {
				break // NXDOMAIN for A means NXDOMAIN for AAAA too
			}
			continue
		}
		for _, rr := range rrs {
			switch rr := rr.(type) {
			case *dns.A:
				if ip, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					out = append(out, ip)
				}
			case *dns.AAAA:
				if ip, ok := netip.AddrFromSlice(rr.AAAA); ok {
					out = append(out, ip)
				}
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, &dnsError{Permanent: true, Status: "5.1.2", Msg: fmt.Sprintf("host %s has no address", strings.TrimSuffix(h, "."))}
}

// mxHost is one host to try, in order.
type mxHost struct {
	Name string
	Pref int
}

// mx returns the hosts serving domain in preference order, equal preferences
// shuffled (RFC 5321 §5.1), the domain itself when it has no MX (implicit
// MX), and a permanent error for a null MX (RFC 7505).
func (r *resolver) mx(ctx context.Context, domain string, rnd func(int) int) (hosts []mxHost, implicit bool, err error) {
	rrs, err := r.lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, false, err
	}
	null := false
	for _, rr := range rrs {
		m := rr.(*dns.MX)
		if m.Mx == "." {
			null = true
			continue
		}
		hosts = append(hosts, mxHost{Name: strings.TrimSuffix(m.Mx, "."), Pref: int(m.Preference)})
	}
	if null && len(hosts) == 0 {
		return nil, false, &dnsError{Permanent: true, Status: "5.1.10", Msg: fmt.Sprintf("domain %s accepts no mail (null MX, RFC 7505)", domain)}
	}
	if len(hosts) == 0 {
		// Implicit MX (RFC 5321 §5.1): the domain itself, if it has an address.
		return []mxHost{{Name: strings.TrimSuffix(domain, ".")}}, true, nil
	}
	// Shuffle, then a stable sort keeps the shuffled order within a preference.
	for i := len(hosts) - 1; i > 0; i-- {
		j := rnd(i + 1)
		hosts[i], hosts[j] = hosts[j], hosts[i]
	}
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Pref < hosts[j].Pref })
	return hosts, false, nil
}
