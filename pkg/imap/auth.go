package imap

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-sasl"

	"letterbox/pkg/privsep"
)

const privacyRequired = "Plaintext authentication disallowed on non-secure connections; use STARTTLS"

func (s *session) cmdLogin(a loginArgs) result {
	if !s.plaintextAllowed() {
		return no("PRIVACYREQUIRED", privacyRequired)
	}
	name, err := s.cfg.Backend.Login(a.user, a.password)
	return s.loggedIn(a.user, name, err, "LOGIN")
}

func (s *session) cmdAuthenticate(a authArgs) result {
	if a.mech != "PLAIN" {
		return no("CANNOT", "Unsupported authentication mechanism")
	}
	if !s.plaintextAllowed() {
		return no("PRIVACYREQUIRED", privacyRequired)
	}
	var user, name string
	var loginErr error
	srv := sasl.NewPlainServer(func(identity, username, password string) error {
		user = username
		name, loginErr = s.cfg.Backend.Login(username, password)
		if loginErr == nil && identity != "" && identity != username && identity != name {
			// One user may not act as another.
			name, loginErr = "", ErrAuth
		}
		return loginErr
	})
	var resp []byte
	if a.hasIR {
		resp = []byte{}
		if a.initial != nil {
			var err error
			if resp, err = base64.StdEncoding.DecodeString(string(a.initial)); err != nil {
				return bad("Invalid base64 in the initial response")
			}
		}
	}
	for {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			if loginErr == nil {
				// The exchange itself failed (a malformed PLAIN message):
				// a failed login all the same.
				loginErr = ErrAuth
			}
			return s.loggedIn(user, "", loginErr, "PLAIN")
		}
		if done {
			return s.loggedIn(user, name, nil, "PLAIN")
		}
		s.bw.WriteString("+ ")
		s.bw.WriteString(base64.StdEncoding.EncodeToString(challenge))
		s.bw.WriteString("\r\n")
		if err := s.bw.Flush(); err != nil {
			return result{status: "BAD", text: "write", end: "write-error", noUpdate: true}
		}
		if err := s.rd.readLine(); err != nil {
			return result{status: "BAD", text: "Authentication aborted", end: "disconnect", noUpdate: true}
		}
		line := strings.TrimSpace(string(s.rd.line))
		s.rd.pos = len(s.rd.line)
		if line == "*" {
			return bad("AUTHENTICATE cancelled")
		}
		if resp, err = base64.StdEncoding.DecodeString(line); err != nil {
			return bad("Invalid base64 in the response")
		}
	}
}

// loggedIn finishes a login attempt; on success it opens the user's store.
func (s *session) loggedIn(user, name string, err error, mech string) result {
	if err != nil {
		if errors.Is(err, errUnavailable) {
			s.log.Error("login cannot be checked", "user", user, "mech", mech, "err", err)
			return no("UNAVAILABLE", "Authentication is temporarily unavailable")
		}
		s.authFailures++
		s.log.Info("login failed", "user", user, "mech", mech, "failures", s.authFailures, "err", err)
		// The same delay and reply for an unknown user and a wrong
		// password.
		s.bw.Flush()
		if s.cfg.AuthFailureDelay > 0 {
			t := time.NewTimer(s.cfg.AuthFailureDelay)
			select {
			case <-t.C:
			case <-s.stop:
				t.Stop()
			}
		}
		res := no("AUTHENTICATIONFAILED", "Authentication failed")
		if s.authFailures >= s.cfg.MaxAuthFailures {
			s.writeTagged(s.tag, res)
			s.bye("Too many authentication failures")
			return result{written: true, end: "auth-failures"}
		}
		return res
	}
	loc, err := s.cfg.Backend.Locate(name)
	if err != nil {
		return s.openFailed(name, err)
	}
	self := privsep.Self()
	switch {
	case loc.Owner.UID == self.UID && (loc.Owner.GID == self.GID || !privsep.IsRoot()):
		// Already the owner: a mail user serving its virtual mailboxes,
		// or a mailbox that belongs to whoever runs imapd.
	case !privsep.IsRoot():
		return s.openFailed(name, fmt.Errorf("imap: mailbox %s belongs to %s; imapd runs as %s and cannot become its owner", loc.Root, loc.Owner, self))
	case s.cfg.SwitchProcess:
		// This process serves this one session: it becomes the owner
		// for good.
		if err := loc.Owner.Switch(); err != nil {
			res := s.openFailed(name, err)
			res.end = "switch-failed"
			return res
		}
	default:
		return s.handOff(loc, mech)
	}
	st, err := s.cfg.Backend.Open(loc)
	if err != nil {
		return s.openFailed(name, err)
	}
	return s.authenticated(name, mech, st)
}

// openFailed answers a login whose mailbox could not be opened.
func (s *session) openFailed(name string, err error) result {
	s.log.Error("mailbox open", "user", name, "err", err)
	return no("UNAVAILABLE", "Cannot open the mailbox now; try again later")
}

// authenticated enters the authenticated state with the user's store.
func (s *session) authenticated(name, mech string, st Store) result {
	if err := st.EnsureSpecialUse(); err != nil {
		s.log.Error("creating the special-use folders", "user", name, "err", err)
	}
	s.store, s.user, s.state = st, name, stateAuth
	s.rd.maxLiteral = int64(s.cfg.MaxLine)
	s.log = s.log.With("user", name)
	s.log.Info("login", "mech", mech, "tls", s.tls, "uid", os.Geteuid())
	return okCode("CAPABILITY "+s.capabilities(), "Logged in")
}

func (s *session) cmdStartTLS() result {
	if s.cfg.TLS == nil {
		return bad("TLS is not configured")
	}
	if s.tls {
		return bad("TLS is already active")
	}
	s.writeTagged(s.tag, ok("Begin TLS negotiation now"))
	if err := s.bw.Flush(); err != nil {
		return result{written: true, end: "write-error"}
	}
	// Whatever the client sent after STARTTLS came in plaintext and may
	// have been injected (CVE-2011-0411 class): it is dropped, never run
	// under TLS.
	if n := s.br.Buffered(); n > 0 {
		s.br.Discard(n)
		s.log.Info("STARTTLS: dropped plaintext sent before the handshake", "bytes", n)
	}
	tc := tls.Server(s.count, s.cfg.TLS)
	s.raw.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		s.log.Info("STARTTLS handshake failed", "err", err)
		return result{written: true, end: "tls-failed"}
	}
	s.raw.SetDeadline(time.Time{})
	s.conn, s.tls = tc, true
	s.br.Reset(tc)
	s.bw.Reset(tc)
	return result{written: true}
}
