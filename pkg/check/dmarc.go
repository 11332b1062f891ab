package check

import (
	"errors"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// dmarcOutcome is the DMARC result (RFC 7489) of one From domain.
type dmarcOutcome struct {
	domain    string
	result    authres.ResultValue
	published dmarc.Policy // the policy that applies to domain
	policy    dmarc.Policy // after pct sampling: what we apply
	reason    string
}

func (o dmarcOutcome) authres() authres.Result {
	r := &authres.DMARCResult{Value: o.result, From: o.domain, Reason: o.reason}
	if o.result == authres.ResultFail {
		r.Reason = strings.TrimSpace("p=" + string(o.published) + " " + o.reason)
	}
	return r
}

// orgDomain returns the organizational domain of d (RFC 7489 § 3.2): the
// public suffix and one label more.
func orgDomain(d string) string {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

// aligned reports whether a and b are aligned in mode (RFC 7489 § 3.1):
// equal under strict, with the same organizational domain under relaxed.
func aligned(a, b string, mode dmarc.AlignmentMode) bool {
	a = strings.TrimSuffix(strings.ToLower(a), ".")
	b = strings.TrimSuffix(strings.ToLower(b), ".")
	if a == "" || b == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return a == b
	}
	return orgDomain(a) == orgDomain(b)
}

// checkDMARC evaluates the policy of the From domain: pass when SPF passed
// for an aligned MAIL FROM (or HELO) domain or a DKIM signature of an
// aligned domain verified. The record is looked up at the domain, then at
// its organizational domain, whose sp= (else p=) then applies.
func (c *Checker) checkDMARC(limit *lookupLimit, from string, spfOut spfOutcome, dkimPass []string) dmarcOutcome {
	o := dmarcOutcome{domain: from}
	lookup := &dmarc.LookupOptions{LookupTXT: c.cfg.Resolver.txtFunc(limit)}
	rec, err := dmarc.LookupWithOptions(from, lookup)
	sub := false
	if errors.Is(err, dmarc.ErrNoPolicy) {
		if org := orgDomain(from); org != from {
			rec, err = dmarc.LookupWithOptions(org, lookup)
			sub = true
		}
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		o.result = authres.ResultNone
		return o
	case dmarc.IsTempFail(err):
		o.result, o.reason = authres.ResultTempError, "DNS error"
		return o
	case err != nil:
		// An invalid record is no record (RFC 7489 § 6.6.3).
		o.result, o.reason = authres.ResultPermError, "invalid record"
		return o
	}
	o.published = rec.Policy
	if sub && rec.SubdomainPolicy != "" {
		o.published = rec.SubdomainPolicy
	}
	pass := spfOut.result == spf.Pass && aligned(spfOut.domain, from, rec.SPFAlignment)
	for _, d := range dkimPass {
		pass = pass || aligned(d, from, rec.DKIMAlignment)
	}
	if pass {
		o.result = authres.ResultPass
		return o
	}
	o.result = authres.ResultFail
	o.policy = o.published
	if rec.Percent != nil && *rec.Percent < 100 && c.cfg.Percent() >= *rec.Percent {
		// Not sampled (RFC 7489 § 6.6.4): the next policy down.
		switch o.policy {
		case dmarc.PolicyReject:
			o.policy = dmarc.PolicyQuarantine
		case dmarc.PolicyQuarantine:
			o.policy = dmarc.PolicyNone
		}
		o.reason = "pct sampled out"
	}
	return o
}
