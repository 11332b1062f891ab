package check

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
)

// spfOutcome is the SPF result of one transaction (RFC 7208).
type spfOutcome struct {
	result spf.Result
	err    error
	domain string // the domain checked: MAIL FROM's, or HELO's for <>
	from   string // MAIL FROM ("" for <>)
	helo   string
}

// checkSPF evaluates the SPF record of the MAIL FROM domain, or of the
// HELO name for the null sender, for the client ip. Every lookup goes to
// our resolver; RFC 7208 § 4.6.4's limits (10 lookups, 2 void lookups)
// are the library's.
func (c *Checker) checkSPF(ip net.IP, helo, from string) spfOutcome {
	o := spfOutcome{from: from, helo: helo, domain: helo}
	if i := strings.LastIndexByte(from, '@'); i >= 0 {
		o.domain = from[i+1:]
	}
	sender := from
	if sender == "" {
		// RFC 7208 § 2.4: "postmaster@" the HELO name.
		sender = "postmaster@" + helo
	}
	key := spfKey{ip: string(ip.To16()), helo: strings.ToLower(helo), sender: strings.ToLower(sender)}
	if r, ok := c.spfResults.get(key); ok {
		o.result, o.err = r.result, r.err
		return o
	}
	keep := &kept{}
	ctx, cancel := context.WithTimeout(withKept(context.Background(), keep), c.cfg.DNSTimeout)
	defer cancel()
	o.result, o.err = spf.CheckHostWithSender(ip, helo, sender,
		spf.WithResolver(c.cfg.Resolver), spf.WithContext(ctx))
	if ctx.Err() != nil && o.result != spf.Pass && o.result != spf.Fail {
		o.result, o.err = spf.TempError, fmt.Errorf("SPF evaluation timed out: %w", ctx.Err())
		return o
	}
	if until, ok := keep.deadline(); ok && o.result != spf.TempError {
		c.spfResults.put(key, spfResult{result: o.result, err: o.err, expires: until})
	}
	return o
}

// spfResults keeps SPF results across connections for as long as every
// DNS answer they were computed from is kept (the first TTL to run out):
// the same sender from the same client is not evaluated again for each
// message. A result that used an answer not kept (a TTL of 0, a failure)
// is not kept, nor is temperror.
type spfResults struct {
	mu sync.Mutex
	m  map[spfKey]spfResult
}

// spfKey is what an SPF evaluation depends on besides DNS: the client's
// address, the HELO name and the sender (its macros may use each).
type spfKey struct{ ip, helo, sender string }

type spfResult struct {
	result  spf.Result
	err     error
	expires time.Time
}

func (c *spfResults) get(k spfKey) (spfResult, bool) {
	c.mu.Lock()
	r, ok := c.m[k]
	c.mu.Unlock()
	return r, ok && time.Now().Before(r.expires)
}

func (c *spfResults) put(k spfKey, r spfResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCache {
		c.m = map[spfKey]spfResult{}
	}
	c.m[k] = r
}

// verdict is what spf mode makes of the outcome: fail refused with
// 550 5.7.23 and temperror with 451 4.7.24 under reject (RFC 7372's
// codes); everything else only tagged.
func (o spfOutcome) verdict(mode string, ip net.IP) *Verdict {
	if mode != ModeReject {
		return nil
	}
	switch o.result {
	case spf.Fail:
		return verdict(550, "5.7.23", "SPF: %s does not designate %s as a permitted sender", o.domain, ip)
	case spf.TempError:
		return verdict(451, "4.7.24", "SPF: temporary error checking %s, try again later", o.domain)
	}
	return nil
}

func (o spfOutcome) authres() authres.Result {
	r := &authres.SPFResult{Value: authres.ResultValue(o.result)}
	if o.from != "" {
		r.From = o.from
	} else {
		r.Helo = o.helo
	}
	return r
}
