package submission

import (
	"errors"
	"fmt"
	"strings"

	"letterbox/pkg/address"
	"letterbox/pkg/route"
	"letterbox/pkg/users"
)

// Senders decides which envelope senders an authenticated user may use
// (Postfix's reject_sender_login_mismatch).
type Senders interface {
	// Owns reports whether user, as authenticated, may send as addr (a
	// full address, never the null sender). An error is a temporary
	// failure (451), not a refusal.
	Owns(user, addr string) (bool, error)
}

// RouterSenders is the rule of DESIGN.md for a route.Router: a user owns
// its own address as the users file spells it (domain in any case), with
// any +detail, and every local address whose alias expansion delivers to
// its mailbox.
type RouterSenders struct {
	// Router must allow pipes, because an alias that also names a
	// |command or /file is still owned by the users it reaches; nothing is
	// run, the router only lists the destinations.
	Router *route.Router
}

// NewRouterSenders returns the rule for the router that checks RCPT (the
// same users and aliases, re-read as they change), with pipes allowed.
func NewRouterSenders(rt *route.Router) RouterSenders {
	r := *rt
	r.AllowPipes = true
	return RouterSenders{Router: &r}
}

func (r RouterSenders) Owns(user, addr string) (bool, error) {
	name := user
	if u := r.Router.Users.Lookup(user); u != nil {
		// AUTH accepts the name in any case; the users file's spelling
		// is the one the rule compares with.
		name = u.Name
	}
	a, err := address.Parse(addr)
	if err != nil || a.Domain == "" || a.Literal || a.CheckLimits() != nil {
		return false, nil
	}
	local, domain := a.Local, a.Domain
	if OwnsAddress(name, local, domain) {
		return true, nil
	}
	if !r.Router.IsLocal(domain) {
		return false, nil
	}
	base, _, _ := strings.Cut(local, "+")
	for _, l := range []string{local, base} {
		if u := r.Router.Users.Lookup(address.Format(l, domain)); u != nil && users.Key(u.Name) == users.Key(name) {
			// The user's own address spelled another way (ALICE for
			// alice): the users file's spelling is the rule, and the
			// alias expansion below would wave it through.
			return false, nil
		}
	}
	dests, err := r.Router.Resolve(addr)
	switch {
	case errors.Is(err, route.ErrNoSuchUser), errors.Is(err, route.ErrLoop),
		errors.Is(err, route.ErrBadAddress), errors.Is(err, route.ErrNotAllowed):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("submission: sender %s of %s: %w", addr, user, err)
	}
	for _, d := range dests {
		if d.User != nil && users.Key(d.User.Name) == users.Key(name) {
			return true, nil
		}
	}
	return false, nil
}

// OwnsAddress reports whether local@domain is user's own address: the
// same local part, or the local part followed by +detail, and the same
// domain in any ASCII case (a trailing dot ignored).
func OwnsAddress(user, local, domain string) bool {
	i := strings.LastIndexByte(user, '@')
	if i < 0 {
		return false
	}
	ul, ud := user[:i], user[i+1:]
	if users.Key(strings.TrimSuffix(domain, ".")) != users.Key(strings.TrimSuffix(ud, ".")) {
		return false
	}
	return local == ul || strings.HasPrefix(local, ul+"+")
}
