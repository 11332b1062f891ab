// Package smtpd is letterbox's SMTP server: incoming mail (port 25),
// submission (587, AUTH required) and implicit-TLS submission (465). It puts
// accepted mail in the spool and answers 250 only after the spool's durable
// commit.
//
// The protocol engine is our own rather than go-smtp's Conn: go-smtp
// hard-codes HELP (502), a 3-error limit ending in 500 instead of 421, one
// line limit and one timeout for commands and data alike, and gives no way to
// answer 421 to idle sessions on shutdown, all of which DESIGN.md requires.
// SASL mechanisms come from go-sasl (PLAIN) and this package (LOGIN).
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"letterbox/pkg/check"
	"letterbox/pkg/spool"
	"letterbox/pkg/submission"
	"letterbox/pkg/users"
)

// Mode is what a listener serves.
type Mode string

const (
	ModeSMTP        Mode = "smtp"        // incoming mail; AUTH optional
	ModeSubmission  Mode = "submission"  // AUTH required before MAIL
	ModeSubmissions Mode = "submissions" // submission over implicit TLS
)

// Modes are the listener modes, for listen.Listeners.
var Modes = []string{string(ModeSMTP), string(ModeSubmission), string(ModeSubmissions)}

// Queue is where accepted mail goes: *spool.Spool.
type Queue interface {
	Submit(env *spool.Envelope, data io.Reader) (string, error)
}

// Authenticator checks a user's password; any error is a failed login.
type Authenticator interface {
	Authenticate(user, password string) error
}

// UsersAuth adapts a users.DB to Authenticator.
type UsersAuth struct{ DB *users.DB }

func (u UsersAuth) Authenticate(user, password string) error {
	_, err := u.DB.Authenticate(user, password)
	return err
}

// Config holds the policy and limits (DESIGN.md § Guarantees).
type Config struct {
	Hostname          string
	Greeting          string                 // extra banner text
	IsLocal           func(string) bool      // local domain?
	IsRelayDomain     func(string) bool      // relay-domains (backup MX): accepted from anyone, users unknown; nil = none
	PrimaryDomain     string                 // domain of a bare <postmaster>
	MaxMessageSize    int64                  // 552 5.3.4 above; announced in SIZE
	MaxRecipients     int                    // 452 4.5.3 above
	MaxErrors         int                    // then 421
	MaxReceived       int                    // 554 5.4.6 above
	MaxAuthFailures   int                    // then 421
	AuthFailureDelay  time.Duration          // before each failed AUTH reply
	CommandTimeout    time.Duration          // waiting for a command
	DataTimeout       time.Duration          // waiting for data inside DATA/BDAT
	AllowInsecureAuth bool                   // AUTH without TLS from non-loopback peers
	BareNewline       string                 // BareNewlineReject (default) or BareNewlineNormalize
	RelayNetworks     []*net.IPNet           // peers that may relay
	RelayClient       bool                   // RELAYCLIENT: every peer may relay
	TLS               *tls.Config            // STARTTLS and submissions; nil = none
	LocalUser         string                 // sendmail -bs: the local user submitting
	Log               *slog.Logger           // never nil after Defaults
	ReverseLookup     func(ip string) string // PTR name for Received; nil = net lookup
}

// The values of the bare-newline key, with Postfix 3.9's meanings for its
// smtpd_forbid_bare_newline: a bare LF in message data is refused with 550
// 5.6.11, or taken as a line end and stored as CRLF. Either way DATA ends
// only at CRLF . CRLF, and a bare CR is refused.
const (
	BareNewlineReject    = "reject"
	BareNewlineNormalize = "normalize"
)

// Defaults fills in the documented defaults for zero fields.
func (c *Config) Defaults() {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.PrimaryDomain == "" {
		c.PrimaryDomain = c.Hostname
	}
	if c.IsLocal == nil {
		c.IsLocal = func(d string) bool { return d == c.PrimaryDomain }
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 35 << 20
	}
	if c.BareNewline == "" {
		c.BareNewline = BareNewlineReject
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = 100
	}
	if c.MaxErrors == 0 {
		c.MaxErrors = 10
	}
	if c.MaxReceived == 0 {
		c.MaxReceived = 100
	}
	if c.MaxAuthFailures == 0 {
		c.MaxAuthFailures = 3
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = 5 * time.Minute
	}
	if c.DataTimeout == 0 {
		c.DataTimeout = 10 * time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Server serves SMTP sessions on any number of listeners.
type Server struct {
	Config
	Queue      Queue
	Recipients submission.Recipients // nil: every local recipient exists
	Auth       Authenticator         // nil: no AUTH offered
	Senders    submission.Senders    // MAIL FROM after AUTH; nil: only the user's own address
	Checks     *check.Checker        // mail from strangers (checks.go); nil: none

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	stopping  bool
	wg        sync.WaitGroup
}

// Serve accepts connections on l until Shutdown, each served in mode.
func (s *Server) Serve(l net.Listener, mode Mode) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if stopping || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// EMFILE and the like: back off instead of spinning.
				if delay == 0 {
					delay = 5 * time.Millisecond
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				s.Log.Warn("accept failed; retrying", "err", err, "after", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.ServeConn(c, mode)
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// ServeConn serves one session on c (already accepted) and closes it.
func (s *Server) ServeConn(c net.Conn, mode Mode) {
	sess := newSession(s, c, mode)
	s.mu.Lock()
	if s.sessions == nil {
		s.sessions = map[*session]struct{}{}
	}
	if s.stopping {
		s.mu.Unlock()
		c.Write([]byte("421 4.3.2 " + s.Hostname + " shutting down, try again later\r\n"))
		c.Close()
		return
	}
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
	}()
	sess.serve()
}

// Shutdown stops accepting, answers 421 to sessions waiting for a command,
// lets transactions in flight finish until ctx is done, then cuts them off
// (their data is not committed, and the client is told 421) and waits for
// the sessions to end. Nothing that got a 250 is lost: the spool committed
// it before the reply.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	for l := range s.listeners {
		l.Close()
	}
	for sess := range s.sessions {
		sess.stop(false)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		for {
			s.mu.Lock()
			n := len(s.sessions)
			s.mu.Unlock()
			if n == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for sess := range s.sessions {
		sess.stop(true)
	}
	s.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-time.After(time.Second):
		return errors.New("smtpd: sessions still running after shutdown")
	}
}
