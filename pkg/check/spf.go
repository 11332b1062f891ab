package check

import (
	"context"
	"fmt"
	"net"
	"strings"

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
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DNSTimeout)
	defer cancel()
	o.result, o.err = spf.CheckHostWithSender(ip, helo, sender,
		spf.WithResolver(c.cfg.Resolver), spf.WithContext(ctx))
	if ctx.Err() != nil && o.result != spf.Pass && o.result != spf.Fail {
		o.result, o.err = spf.TempError, fmt.Errorf("SPF evaluation timed out: %w", ctx.Err())
	}
	return o
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
