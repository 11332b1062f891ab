package check

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"letterbox/pkg/dnsclient"
)

// Resolver answers the questions of the checks (SPF's TXT, MX, A, AAAA and
// PTR; DKIM keys and DMARC policies in TXT; DNS lists in A and TXT) through
// the name servers of the `dns` key. Its errors are *net.DNSError, as
// blitiri.com.ar/go/spf and go-msgauth expect: IsNotFound for NXDOMAIN,
// IsTemporary for a timeout, SERVFAIL, REFUSED or an answer that does not
// parse.
type Resolver struct {
	DNS *dnsclient.Client

	mu      sync.Mutex
	cache   map[cacheKey]cacheEntry
	flights map[cacheKey]*flight // questions being asked

	now func() time.Time // the clock of the cache (tests); nil: time.Now
}

func (r *Resolver) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// Answers are kept for their TTL, at most maxCacheTTL, up to maxCache
// names: the same senders' records are asked for message after message.
// NXDOMAIN and empty answers are kept for the negative TTL of the SOA
// the server sent with them (none, none kept); failures are never kept.
const (
	maxCache    = 10000
	maxCacheTTL = 10 * time.Minute
)

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	rrs      []dns.RR
	notFound bool
	expires  time.Time
	// txt is a TXT answer's records, each one's strings joined, done
	// once for as long as the answer is kept: a DKIM key (2048-bit RSA)
	// comes in several strings, and is asked for message after message.
	txt []string
}

// NewResolver returns a Resolver asking addr (see dnsclient.New).
func NewResolver(addr string) (*Resolver, error) {
	c, err := dnsclient.New(addr)
	if err != nil {
		return nil, err
	}
	return &Resolver{DNS: c}, nil
}

func dnsErr(name, msg string, notFound, temporary bool) *net.DNSError {
	return &net.DNSError{Err: msg, Name: strings.TrimSuffix(name, "."), IsNotFound: notFound, IsTemporary: temporary}
}

// lookup returns the answers of type qtype for name. A name that exists
// without records of that type returns no answers and no error (as
// net.Resolver's NODATA is not an error to SPF's void-lookup count either:
// the count looks at the number of answers). A question already in flight
// (a prefetch) is waited for rather than asked again.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	key := cacheKey{strings.ToLower(dns.Fqdn(name)), qtype}
	keep, _ := ctx.Value(keptKey{}).(*kept)
	if rrs, err, ok := r.cachedUntil(key, keep); ok {
		return rrs, err
	}
	f, mine := r.begin(key)
	if !mine {
		select {
		case <-f.done:
		case <-ctx.Done():
			e := dnsErr(name, ctx.Err().Error(), false, true)
			e.IsTimeout = true
			keep.until(time.Time{})
			return nil, e
		}
		var de *net.DNSError
		if f.err == nil || errors.As(f.err, &de) && de.IsNotFound {
			// How long it is kept, if at all, is the asker's to say.
			if _, _, ok := r.cachedUntil(key, keep); !ok {
				keep.until(time.Time{})
			}
			return f.rrs, f.err
		}
		// It failed, maybe for its asker's context only: ask again.
		return r.ask(ctx, key, name, qtype)
	}
	rrs, err := r.ask(ctx, key, name, qtype)
	r.end(key, f, rrs, err)
	return rrs, err
}

// cached returns the answer kept for key, if any (ok).
func (r *Resolver) cached(key cacheKey) (rrs []dns.RR, err error, ok bool) {
	return r.cachedUntil(key, nil)
}

// cachedUntil is cached, telling keep how long the answer is kept.
func (r *Resolver) cachedUntil(key cacheKey, keep *kept) (rrs []dns.RR, err error, ok bool) {
	e, err, ok := r.entry(key, keep)
	return e.rrs, err, ok
}

// entry returns the entry kept for key, if any (ok), telling keep how
// long it is kept; err is NXDOMAIN's error for a name kept as not found.
func (r *Resolver) entry(key cacheKey, keep *kept) (e cacheEntry, err error, ok bool) {
	r.mu.Lock()
	e, ok = r.cache[key]
	r.mu.Unlock()
	if !ok || !r.clock().Before(e.expires) {
		return cacheEntry{}, nil, false
	}
	keep.until(e.expires)
	if e.notFound {
		return cacheEntry{}, dnsErr(key.name, "no such host", true, false), true
	}
	return e, nil, true
}

// flight is a question being asked: those who ask the same wait for it.
type flight struct {
	done chan struct{}
	rrs  []dns.RR
	err  error
}

// begin returns the flight of key; mine says the caller is to ask it
// and then call end.
func (r *Resolver) begin(key cacheKey) (f *flight, mine bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f := r.flights[key]; f != nil {
		return f, false
	}
	if r.flights == nil {
		r.flights = map[cacheKey]*flight{}
	}
	f = &flight{done: make(chan struct{})}
	r.flights[key] = f
	return f, true
}

func (r *Resolver) end(key cacheKey, f *flight, rrs []dns.RR, err error) {
	f.rrs, f.err = rrs, err
	r.mu.Lock()
	delete(r.flights, key)
	r.mu.Unlock()
	close(f.done)
}

// kept collects how long the answers of a series of lookups (an SPF
// evaluation) are kept: until the first of them expires, or not at all
// when one of them is not kept (a TTL of 0, a failure). A result computed
// from them may be kept as long.
type kept struct {
	mu      sync.Mutex
	expires time.Time
	never   bool
}

type keptKey struct{}

// withKept returns ctx whose lookups tell k how long their answers are kept.
func withKept(ctx context.Context, k *kept) context.Context {
	return context.WithValue(ctx, keptKey{}, k)
}

// until records an answer kept until t (zero: not kept).
func (k *kept) until(t time.Time) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case t.IsZero():
		k.never = true
	case k.expires.IsZero() || t.Before(k.expires):
		k.expires = t
	}
}

// deadline returns until when a result of the lookups may be kept; ok is
// false when it may not.
func (k *kept) deadline() (t time.Time, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.expires, !k.never && !k.expires.IsZero()
}

// uncachedTXT returns the names of names whose TXT records are not kept.
func (r *Resolver) uncachedTXT(names []string) []string {
	out := names[:0]
	for _, name := range names {
		if _, _, ok := r.cached(cacheKey{strings.ToLower(dns.Fqdn(name)), dns.TypeTXT}); !ok {
			out = append(out, name)
		}
	}
	return out
}

// prefetchTXT looks up the TXT records of the names that are not cached,
// in the background, bound to ctx: a later LookupTXT of one of them finds
// the answer kept, or waits for it.
func (r *Resolver) prefetchTXT(ctx context.Context, names ...string) {
	for _, name := range names {
		key := cacheKey{strings.ToLower(dns.Fqdn(name)), dns.TypeTXT}
		if _, _, ok := r.cached(key); ok {
			continue
		}
		f, mine := r.begin(key)
		if !mine {
			continue
		}
		go func() {
			rrs, err := r.ask(ctx, key, name, dns.TypeTXT)
			r.end(key, f, rrs, err)
		}()
	}
}

// ask sends the question and keeps the answer for its TTL.
func (r *Resolver) ask(ctx context.Context, key cacheKey, name string, qtype uint16) ([]dns.RR, error) {
	now := r.clock()
	rrs, ttl, err := r.exchange(ctx, name, qtype)
	keep, _ := ctx.Value(keptKey{}).(*kept)
	if ttl <= 0 {
		keep.until(time.Time{})
	} else {
		keep.until(now.Add(min(ttl, maxCacheTTL)))
	}
	if ttl > 0 {
		var de *net.DNSError
		e := cacheEntry{rrs: rrs, expires: now.Add(min(ttl, maxCacheTTL)), notFound: errors.As(err, &de) && de.IsNotFound}
		if qtype == dns.TypeTXT && err == nil {
			e.txt = txtStrings(rrs)
		}
		r.mu.Lock()
		if r.cache == nil || len(r.cache) >= maxCache {
			r.cache = map[cacheKey]cacheEntry{}
		}
		r.cache[key] = e
		r.mu.Unlock()
	}
	return rrs, err
}

// exchange sends the question; ttl is how long the answer may be kept
// (0: not at all).
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (rrs []dns.RR, ttl time.Duration, err error) {
	resp, err := r.DNS.Exchange(ctx, name, qtype)
	if err != nil {
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
		e := dnsErr(name, err.Error(), false, true)
		e.IsTimeout = timeout
		return nil, 0, e
	}
	// The negative TTL (RFC 2308): the SOA's, bounded by its minimum.
	negTTL := time.Duration(0)
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			negTTL = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, negTTL, dnsErr(name, "no such host", true, false)
	default:
		return nil, 0, dnsErr(name, "server answered "+dns.RcodeToString[resp.Rcode], false, true)
	}
	var out []dns.RR
	ttl = maxCacheTTL
	for _, rr := range resp.Answer {
		if h := rr.Header(); h.Rrtype == qtype {
			out = append(out, rr)
		}
		// CNAMEs on the way count too.
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
	}
	if len(out) == 0 {
		ttl = negTTL
	}
	return out, ttl, nil
}

// LookupTXT returns the TXT records of name, each one's strings joined
// (RFC 7208 § 3.3, RFC 6376 § 3.6.2.2).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	keep, _ := ctx.Value(keptKey{}).(*kept)
	if txt, err, ok := r.cachedTXT(name, keep); ok {
		return txt, err
	}
	rrs, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	return txtStrings(rrs), nil
}

// cachedTXT returns the TXT records of name as kept (joined once), if
// they are (ok). The slice is shared: not to be changed.
func (r *Resolver) cachedTXT(name string, keep *kept) (txt []string, err error, ok bool) {
	e, err, ok := r.entry(cacheKey{strings.ToLower(dns.Fqdn(name)), dns.TypeTXT}, keep)
	return e.txt, err, ok
}

// txtStrings returns the TXT records rrs, each one's strings joined.
func txtStrings(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		parts := rr.(*dns.TXT).Txt
		if len(parts) == 1 {
			// SPF and DMARC records: no copy (the answer is kept
			// and asked for message after message).
			out = append(out, unescapeTXT(parts[0]))
			continue
		}
		n := 0
		for _, part := range parts {
			n += len(part)
		}
		var b strings.Builder
		b.Grow(n)
		for _, part := range parts {
			b.WriteString(unescapeTXT(part))
		}
		out = append(out, b.String())
	}
	return out
}

// unescapeTXT undoes miekg/dns's presentation escapes of a character
// string (\DDD and \X, RFC 1035 § 5.1) to give the octets of the record.
func unescapeTXT(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); n < 256 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// LookupMX returns the MX records of name.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupIPAddr returns the IPv4 and IPv6 addresses of host. It fails only
// when both questions fail; NXDOMAIN for one is NXDOMAIN for the name.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IPAddr{{IP: ip}}, nil
	}
	var out []net.IPAddr
	var firstErr error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.lookup(ctx, host, qt)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			var de *net.DNSError
			if errors.As(err, &de) && de.IsNotFound {
				break
			}
			continue
		}
		for _, rr := range rrs {
			switch rr := rr.(type) {
			case *dns.A:
				out = append(out, net.IPAddr{IP: rr.A})
			case *dns.AAAA:
				out = append(out, net.IPAddr{IP: rr.AAAA})
			}
		}
	}
	if len(out) == 0 && firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// LookupAddr returns the PTR names of addr.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, dnsErr(addr, "not an IP address", true, false)
	}
	rrs, err := r.lookup(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// LookupA returns the IPv4 addresses of name (a DNS list's answer).
func (r *Resolver) LookupA(ctx context.Context, name string) ([]net.IP, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	out := make([]net.IP, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.A).A)
	}
	return out, nil
}

// lookupLimit is the time limit of the lookups of one check (a message's
// DKIM keys, its DMARC policies). Its context, and the timer that comes
// with it, is made at the first question the resolver does not have the
// answer of: most messages' answers are kept, and cost no timer. Safe for
// concurrent use (go-msgauth looks up several signatures' keys at once).
type lookupLimit struct {
	timeout time.Duration
	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
}

func newLookupLimit(timeout time.Duration) *lookupLimit { return &lookupLimit{timeout: timeout} }

// context returns the lookups' context, starting their time limit at the
// first call.
func (l *lookupLimit) context() context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx == nil {
		l.ctx, l.cancel = context.WithTimeout(context.Background(), l.timeout)
	}
	return l.ctx
}

// stop ends the lookups still running.
func (l *lookupLimit) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cancel != nil {
		l.cancel()
	} else {
		// A lookup that starts now finds it over.
		l.ctx, l.cancel = context.WithCancel(context.Background())
		l.cancel()
	}
}

// txtFunc adapts LookupTXT to go-msgauth's LookupTXT option, under the
// time limit l: an answer kept is returned without it.
func (r *Resolver) txtFunc(l *lookupLimit) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		if txt, err, ok := r.cachedTXT(name, nil); ok {
			return txt, err
		}
		return r.LookupTXT(l.context(), name)
	}
}

// ReverseLookup returns the first PTR name of ip ("" for none, or when
// it takes more than 2 seconds): smtpd's Received field and the milters'
// client name.
func (r *Resolver) ReverseLookup(ip string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	names, err := r.LookupAddr(ctx, ip)
	if err != nil || len(names) == 0 {
		return ""
	}
	return strings.TrimSuffix(names[0], ".")
}
