package pop3

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Modes are the listener modes, for listen.Listeners: "pop3" (plain, STLS
// offered when TLS is configured) and "pop3s" (implicit TLS, RFC 8314).
var Modes = []string{"pop3", "pop3s"}

// Config is the server's policy and limits (DESIGN.md § Guarantees).
type Config struct {
	Hostname string
	Backend  Backend
	// TLS enables STLS and pop3s listeners; nil: neither.
	TLS *tls.Config
	// AllowInsecureAuth permits USER/PASS and AUTH PLAIN on connections
	// that are neither TLS nor from loopback.
	AllowInsecureAuth bool
	// AuthFailureDelay is waited after each failed login (default 1s; a
	// negative value means none, for tests).
	AuthFailureDelay time.Duration
	// MaxAuthFailures closes the connection after that many failed logins
	// (default 3).
	MaxAuthFailures int
	// MaxErrors closes the connection after that many protocol errors:
	// unknown commands, commands in the wrong state, bad syntax, overlong
	// lines (default 10).
	MaxErrors int
	// MaxPreauthCommands closes a connection that sends that many commands
	// without logging in (default 50).
	MaxPreauthCommands int
	// IdleTimeout ends a session after that long without a command
	// (default 10m, RFC 1939's minimum).
	IdleTimeout time.Duration
	Log         *slog.Logger

	// SwitchProcess: this process serves one session (inetd, stdio), and
	// when the maildrop's owner is another user it switches to that user
	// for good. Otherwise such a session goes on in a child running as
	// the owner (handoff.Spawn).
	SwitchProcess bool
	// LogLevel and LogFormat are the log settings the child processes
	// set up (config keys log-level and log-format).
	LogLevel, LogFormat string
}

// MaxLine is the longest command line accepted, CRLF included. RFC 2449
// limits commands to 255 octets; we accept up to 512 (DESIGN.md's command
// line limit) because some clients send long AUTH PLAIN initial responses.
const MaxLine = 512

// Server serves POP3 sessions on listeners.
type Server struct {
	cfg Config

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	wg        sync.WaitGroup
	closing   atomic.Bool
}

// New returns a server with cfg, defaults filled in.
func New(cfg Config) *Server {
	if cfg.AuthFailureDelay == 0 {
		cfg.AuthFailureDelay = time.Second
	}
	if cfg.AuthFailureDelay < 0 {
		cfg.AuthFailureDelay = 0
	}
	if cfg.MaxAuthFailures <= 0 {
		cfg.MaxAuthFailures = 3
	}
	if cfg.MaxErrors <= 0 {
		cfg.MaxErrors = 10
	}
	if cfg.MaxPreauthCommands <= 0 {
		cfg.MaxPreauthCommands = 50
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(discard{}, nil))
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	return &Server{cfg: cfg, listeners: map[net.Listener]struct{}{}, sessions: map[*session]struct{}{}}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Serve accepts connections on l until it is closed or Shutdown is called;
// implicitTLS makes it a pop3s listener. It returns nil after Shutdown or
// when a one-connection listener (inetd mode) is done, once that
// connection's session has ended.
func (s *Server) Serve(l net.Listener, implicitTLS bool) error {
	if implicitTLS && s.cfg.TLS == nil {
		return errors.New("pop3: pop3s listener without tls-cert/tls-key")
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				s.wg.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of descriptors or the like: back off, don't spin.
				if delay == 0 {
					delay = 5 * time.Millisecond
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if !s.add(c, implicitTLS) {
			c.Close()
		}
	}
}

// add starts a session on c, unless the server is shutting down.
func (s *Server) add(c net.Conn, implicitTLS bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	ss := newSession(s, c, implicitTLS)
	s.sessions[ss] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ss.serve()
		s.mu.Lock()
		delete(s.sessions, ss)
		s.mu.Unlock()
	}()
	return true
}

// Shutdown stops accepting, tells idle sessions "-ERR" and ends them
// without UPDATE (nothing is deleted that was not QUIT), lets a command in
// progress finish, and after timeout closes whatever is left.
func (s *Server) Shutdown(timeout time.Duration) {
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	for ss := range s.sessions {
		ss.interrupt()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		s.mu.Lock()
		for ss := range s.sessions {
			ss.kill()
		}
		s.mu.Unlock()
		<-done
	}
}
