package submission

import (
	"errors"
	"fmt"

	"letterbox/pkg/config"
	"letterbox/pkg/route"
	"letterbox/pkg/users"
)

// Recipients checks a local recipient: nil if it exists, an error wrapping
// route.ErrNoSuchUser (550 5.1.1, sendmail's 67), route.ErrBadAddress
// (501 5.1.3, 65) or route.ErrLoop (550 5.4.6, 65); anything else is a
// temporary failure (451, 75).
type Recipients interface {
	Check(addr string) error
}

// RouterRecipients adapts a route.Router to Recipients.
type RouterRecipients struct{ Router *route.Router }

func (r RouterRecipients) Check(addr string) (err error) {
	defer func() {
		// A router bug must cost one 451, not the whole server.
		if p := recover(); p != nil {
			err = errors.New("route: internal error")
		}
	}()
	return r.Router.Exists(addr)
}

// NewRouter returns the router of the configuration (users file and
// aliases, re-read as they change) that checks recipients, and its users
// file for AUTH; the router runs no pipes.
func NewRouter(cm *config.Common) (*route.Router, *users.DB, error) {
	rt, err := route.New(cm, false)
	if err != nil {
		return nil, nil, fmt.Errorf("submission: %w", err)
	}
	return rt, rt.Users, nil
}
