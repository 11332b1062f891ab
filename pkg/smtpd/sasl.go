package smtpd

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// loginServer is the server side of the obsolete but ubiquitous LOGIN
// mechanism (draft-murchison-sasl-login), which go-sasl only has as a
// client: "Username:" and "Password:" challenges, then the check.
type loginServer struct {
	step     int
	username string
	check    func(user, password string) error
}

func newLoginServer(check func(user, password string) error) sasl.Server {
	return &loginServer{check: check}
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.username = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check(l.username, string(response))
	}
	return nil, false, errors.New("sasl: unexpected LOGIN response")
}
