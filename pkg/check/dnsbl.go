package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/authres"
)

// List is a DNS list (RFC 5782): a zone, and the answers that count as
// listed. Without Codes any answer in 127.0.0.0/8 counts, except
// 127.255.255.0/24, which lists such as Spamhaus use to say that the query
// itself was refused (an open resolver, too many queries).
type List struct {
	Zone  string
	Codes []net.IP
}

// ParseList reads `ZONE` or `ZONE=127.0.0.2,127.0.0.4`.
func ParseList(s string) (List, error) {
	zone, codes, _ := strings.Cut(strings.TrimSpace(s), "=")
	zone = strings.Trim(strings.ToLower(strings.TrimSpace(zone)), ".")
	if zone == "" || strings.ContainsAny(zone, " \t/@") {
		return List{}, fmt.Errorf("check: DNS list %q: want ZONE or ZONE=127.0.0.2,…", s)
	}
	l := List{Zone: zone}
	if codes != "" {
		for _, c := range strings.Split(codes, ",") {
			ip := net.ParseIP(strings.TrimSpace(c)).To4()
			if ip == nil {
				return List{}, fmt.Errorf("check: DNS list %q: %q is not an IPv4 address", s, c)
			}
			l.Codes = append(l.Codes, ip)
		}
	}
	return l, nil
}

func (l List) String() string {
	if len(l.Codes) == 0 {
		return l.Zone
	}
	codes := make([]string, len(l.Codes))
	for i, c := range l.Codes {
		codes[i] = c.String()
	}
	return l.Zone + "=" + strings.Join(codes, ",")
}

// counts reports whether answer a means listed.
func (l List) counts(a net.IP) bool {
	a = a.To4()
	if a == nil {
		return false
	}
	if len(l.Codes) == 0 {
		return a[0] == 127 && !(a[1] == 255 && a[2] == 255)
	}
	for _, c := range l.Codes {
		if c.Equal(a) {
			return true
		}
	}
	return false
}

// listQuery returns the name to ask the list about ip: the reversed
// octets (IPv4) or nibbles (IPv6) before the zone.
func listQuery(ip net.IP, zone string) string {
	var b strings.Builder
	if v4 := ip.To4(); v4 != nil {
		for i := 3; i >= 0; i-- {
			fmt.Fprintf(&b, "%d.", v4[i])
		}
	} else {
		v6 := ip.To16()
		for i := 15; i >= 0; i-- {
			fmt.Fprintf(&b, "%x.%x.", v6[i]&0xf, v6[i]>>4)
		}
	}
	return b.String() + zone
}

// listResult is one list's answer about a client.
type listResult struct {
	list   List
	allow  bool // a DNSWL
	listed bool
	answer net.IP
	text   string // the list's TXT record, for the reply
	err    error  // the lookup failed: treated as not listed
}

func (r listResult) authres() authres.Result {
	method := "dnsbl"
	if r.allow {
		method = "dnswl"
	}
	res := &authres.GenericResult{Method: method, Params: map[string]string{"dns.zone": r.list.Zone}}
	switch {
	case r.err != nil:
		res.Value = authres.ResultTempError
	case r.listed && r.allow:
		res.Value = authres.ResultPass
		res.Params["policy.ip"] = r.answer.String()
	case r.listed:
		res.Value = authres.ResultFail
		res.Params["policy.ip"] = r.answer.String()
	case r.allow:
		res.Value = authres.ResultNone
	default:
		// Not on a block list: the check passed.
		res.Value = authres.ResultPass
	}
	return res
}

// queryLists asks every list about ip at once; a list that does not
// answer in time counts as not listing it.
func (c *Checker) queryLists(ctx context.Context, ip net.IP) []listResult {
	var lists []listResult
	for _, l := range c.cfg.DNSWL {
		lists = append(lists, listResult{list: l, allow: true})
	}
	for _, l := range c.cfg.DNSBL {
		lists = append(lists, listResult{list: l})
	}
	var wg sync.WaitGroup
	for i := range lists {
		wg.Add(1)
		go func(r *listResult) {
			defer wg.Done()
			c.queryList(ctx, ip, r)
		}(&lists[i])
	}
	wg.Wait()
	return lists
}

func (c *Checker) queryList(ctx context.Context, ip net.IP, r *listResult) {
	name := listQuery(ip, r.list.Zone)
	addrs, err := c.cfg.Resolver.LookupA(ctx, name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return // not listed
		}
		r.err = err
		return
	}
	for _, a := range addrs {
		if r.list.counts(a) {
			r.listed, r.answer = true, a
			break
		}
	}
	if !r.listed || r.allow {
		return
	}
	if txts, err := c.cfg.Resolver.LookupTXT(ctx, name); err == nil && len(txts) > 0 {
		r.text = printable(txts[0], 200)
	}
}

// printable keeps the printable ASCII of s, at most n octets of it, so
// that text from DNS is safe in a reply line or a log.
func printable(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		if c := s[i]; c >= 32 && c < 127 {
			b.WriteByte(c)
		}
	}
	return b.String()
}
