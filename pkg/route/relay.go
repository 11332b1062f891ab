package route

import (
	"errors"
	"fmt"
	"strings"

	"letterbox/pkg/address"
)

// Backup MX (relay-domains, Postfix's relay_domains).
//
// A relay domain is not local: we know none of its users, smtpd accepts
// RCPT for any address in it from anyone, and its mail resolves to a Remote
// destination like any other. Where that mail may go is decided here, in
// UsableMX, for every domain delivered by MX, as Postfix's smtp client does:
// a host that is ourselves, and every host of the same or a higher
// preference value than our own most preferred entry, is left out ("deliver
// only to MX hosts with a lower preference value than our own"), so mail
// only ever moves towards the primary. When no host is more preferred than
// we are, the mail would come back to us: ErrMailLoop, bounced with 5.4.6
// as Postfix's "mail for DOMAIN loops back to myself". Loops that pass
// through other hosts are caught by smtpd's Received count (max-received).

// ErrMailLoop means we are the best MX of a domain that is not local:
// permanent, 5.4.6.
var ErrMailLoop = errors.New("mail loops back to myself")

// MX is one mail exchanger of a domain, as DNS lists it (or the domain
// itself, preference 0, for an implicit MX).
type MX struct {
	Host string
	Pref int
	// Ours: the host is named by our hostname or resolves to one of our
	// addresses (the machine's, and proxy-interfaces).
	Ours bool
}

// UsableMX returns the hosts of mxs, in their order, that mail for domain
// may be sent to: all of them when none is ours; else those whose
// preference value is lower than that of our most preferred entry, or
// ErrMailLoop when there is none.
func UsableMX(domain string, mxs []MX) ([]MX, error) {
	best, ours := 0, false
	for _, m := range mxs {
		if m.Ours && (!ours || m.Pref < best) {
			best, ours = m.Pref, true
		}
	}
	if !ours {
		return mxs, nil
	}
	var out []MX
	for _, m := range mxs {
		if !m.Ours && m.Pref < best {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: mail for %s: we are its best MX (preference %d)", ErrMailLoop, domain, best)
	}
	return out, nil
}

// IsRelay reports whether domain is one of relay-domains: a name listed
// as is, or a subdomain of a name listed with a leading dot. A local
// domain is never a relay domain.
func (r *Router) IsRelay(domain string) bool {
	domain = strings.TrimSuffix(address.LowerASCII(domain), ".")
	if domain == "" || r.IsLocal(domain) {
		return false
	}
	for _, d := range r.RelayDomains {
		d = strings.TrimSuffix(address.LowerASCII(d), ".")
		if d == domain || strings.HasPrefix(d, ".") && len(d) > 1 && strings.HasSuffix(domain, d) {
			return true
		}
	}
	return false
}
