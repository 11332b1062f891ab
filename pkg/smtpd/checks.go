package smtpd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/check"
	"letterbox/pkg/config"
	"letterbox/pkg/listen"
	"letterbox/pkg/spool"
)

// The checks on mail from strangers (DESIGN.md § Checks on mail in,
// pkg/check) hook into the session here: at connect, HELO, MAIL, RCPT,
// DATA (or the first BDAT), the end of the message, and whenever the
// transaction ends. They run for clients of an smtp listener that are not
// in relay-networks and whose address is known (a stdio session on pipes
// is local), and per transaction only while the client has not
// authenticated.

// applyChecks sets up the checks from the flags of check.Flags; the
// staging files go to the spool's tmp/.
func (s *Server) applyChecks(c *cli.Context, cm *config.Common) error {
	ch, err := check.FromContext(c, s.Hostname, s.MaxMessageSize, filepath.Join(cm.Spool, "tmp"), s.Log)
	if err != nil {
		return fmt.Errorf("smtpd: %w", err)
	}
	s.Checks = ch
	if addr := c.String("dns"); addr != "" && s.ReverseLookup == nil {
		// The client's name, in the Received field and the milters'
		// macros, comes from the resolver of every other lookup.
		r, err := check.NewResolver(addr)
		if err != nil {
			return fmt.Errorf("smtpd: %w", err)
		}
		s.ReverseLookup = r.ReverseLookup
	}
	return nil
}

// checking reports whether the current transaction is checked.
func (s *session) checking() bool { return s.chk != nil && s.authUser == "" }

// checkConnect starts the checks of the connection; a reply refuses it.
func (s *session) checkConnect() *Reply {
	if s.srv.Checks == nil || s.mode != ModeSMTP || s.trusted || s.ip == "" {
		return nil
	}
	info := check.ConnInfo{IP: net.ParseIP(s.ip), PTR: s.ptrResult, Log: s.log}
	if a, ok := s.remote.(*net.TCPAddr); ok {
		info.Port = a.Port
	}
	if a, ok := s.conn.LocalAddr().(*net.TCPAddr); ok {
		info.LocalIP, info.LocalPort = a.IP, a.Port
	} else if ip := listen.IP(s.conn.LocalAddr()); ip != nil {
		info.LocalIP = ip
	}
	cn, v := s.srv.Checks.Connect(info)
	s.chk = cn
	return fromVerdict(v)
}

// refusedCommand answers a command of a refused connection: only QUIT is
// accepted (RFC 5321 § 3.1).
func (s *session) refusedCommand(verb string) bool {
	if s.refused == nil || verb == "QUIT" {
		return false
	}
	s.reply(503, "5.7.1", "Bad sequence of commands: "+s.refused.Text)
	return true
}

func (s *session) checkHelo(name string) *Reply {
	if s.chk == nil {
		return nil
	}
	return fromVerdict(s.chk.Helo(name))
}

func (s *session) checkTLS(st tls.ConnectionState) {
	if s.chk == nil {
		return
	}
	bits := 256
	if strings.Contains(tls.CipherSuiteName(st.CipherSuite), "128") {
		bits = 128
	}
	s.chk.TLS(tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), bits)
}

// checkMail checks the sender; the transaction's queue id is chosen here,
// so that every decision about the message is logged with it.
func (s *session) checkMail(from, params string) *Reply {
	if !s.checking() {
		return nil
	}
	s.txID = s.newID()
	return fromVerdict(s.chk.Mail(s.txID, from, strings.TrimSpace(params)))
}

func (s *session) checkRcpt(to string) *Reply {
	if !s.checking() {
		return nil
	}
	return fromVerdict(s.chk.Rcpt(to, ""))
}

func (s *session) checkData() *Reply {
	if !s.checking() {
		return nil
	}
	return fromVerdict(s.chk.Data())
}

// checkReset ends the checks' transaction.
func (s *session) checkReset() {
	if s.chk != nil {
		s.chk.Reset()
	}
	s.txID = ""
}

func (s *session) checkClose() {
	if s.chk != nil {
		s.chk.Close()
	}
}

// newID returns a queue id from the queue, or "" when it gives none.
func (s *session) newID() string {
	if g, ok := s.srv.Queue.(interface{ NewID() string }); ok {
		return g.NewID()
	}
	return ""
}

// submit commits the message: straight to the queue, or through the
// checks, which stage it, may refuse it (a *Reply error; errDiscarded) or
// change it and its envelope.
func (s *session) submit(env *spool.Envelope, data io.Reader) (string, error) {
	if !s.checking() {
		return s.srv.Queue.Submit(env, data)
	}
	id, err := s.chk.Message(data, func(res *check.Result) (string, error) {
		env.From, env.Junk = res.From, res.Junk
		env.Recipients = env.Recipients[:0]
		for _, r := range res.Rcpts {
			env.Recipients = append(env.Recipients, &spool.Recipient{Address: r, State: spool.Pending})
		}
		return s.srv.Queue.Submit(env, res.Data)
	})
	var v *check.Verdict
	if errors.As(err, &v) {
		if v.Discard {
			return "", errDiscarded
		}
		return "", fromVerdict(v)
	}
	return id, err
}

// errDiscarded: a milter discarded the message; the client is told 250.
var errDiscarded = errors.New("smtpd: message discarded by a milter")

// checkRefusal answers a message the checks refused or discarded; it
// reports whether err was one.
func (s *session) checkRefusal(err error) bool {
	var r *Reply
	switch {
	case errors.Is(err, errDiscarded):
		s.log.Info("discarded", "id", s.presetID, "from", s.from, "rcpts", s.rcpts)
		s.reply(250, "2.0.0", "OK: queued as "+s.presetID)
	case errors.As(err, &r):
		s.log.Info("message rejected", "id", s.presetID, "from", s.from, "rcpts", s.rcpts, "reason", r.Text)
		s.replyErr(r)
	default:
		return false
	}
	return true
}

func fromVerdict(v *check.Verdict) *Reply {
	if v == nil {
		return nil
	}
	return &Reply{Code: v.Code, Enh: v.Enh, Text: v.Text}
}
