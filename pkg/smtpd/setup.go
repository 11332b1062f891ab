package smtpd

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/check"
	"letterbox/pkg/config"
	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/listen"
	"letterbox/pkg/spool"
	"letterbox/pkg/submission"
	// Authentication needs the password code, which pkg/users leaves out
	// for deliver's sake.
	_ "letterbox/pkg/users/passwd"
)

// Flags are smtpd's own flags (the shared ones come from config).
func Flags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringSliceFlag{Name: "listen", Usage: "listen on `[MODE=]ADDR` (MODE smtp, submission or submissions, each also MODE+proxy behind HAProxy; repeatable)"},
		&cli.StringFlag{Name: "mode", Usage: "`MODE` of the stdin/stdout session (inetd, tcpserver, systemd Accept=yes)", Value: "smtp"},
		&cli.StringFlag{Name: "user", Usage: "after binding, run as `USER` (its group and supplementary groups)"},
		&cli.StringSliceFlag{Name: "relay-networks", Usage: "`CIDR`s of clients that may relay without AUTH", Value: cli.NewStringSlice("127.0.0.0/8", "::1/128")},
		&cli.Int64Flag{Name: "max-message-size", Usage: "largest message in `OCTETS` (announced in SIZE)", Value: 35 << 20},
		&cli.IntFlag{Name: "max-recipients", Usage: "recipients per message", Value: 100},
		&cli.IntFlag{Name: "max-errors", Usage: "error replies per session before 421", Value: 10},
		&cli.IntFlag{Name: "max-received", Usage: "Received headers before a message is refused as a loop", Value: 100},
		&cli.IntFlag{Name: "max-auth-failures", Usage: "failed AUTH attempts per connection before it is closed", Value: 3},
		&cli.DurationFlag{Name: "auth-failure-delay", Usage: "pause before answering a failed AUTH", Value: time.Second},
		&cli.DurationFlag{Name: "command-timeout", Usage: "wait this long for a command", Value: 5 * time.Minute},
		&cli.DurationFlag{Name: "data-timeout", Usage: "wait this long for message data", Value: 10 * time.Minute},
		&cli.BoolFlag{Name: "allow-insecure-auth", Usage: "allow AUTH without TLS from non-loopback clients"},
		&cli.StringFlag{Name: "greeting", Usage: "extra `TEXT` in the 220 banner"},
		&cli.StringFlag{Name: "bare-newline", Usage: "a bare LF in message data: `reject` (550 5.6.11) or normalize (taken as CRLF)", Value: BareNewlineReject},
	}, append(cliapp.Flags(config.ProxyFlags()), check.Flags()...)...)
}

// New returns a server for the shared configuration with the default
// limits: the spool, the router (users and aliases) for RCPT checks and
// the users file for AUTH. TLS is the caller's (listen.Open reads the key
// before dropping privileges).
func New(cm *config.Common) (*Server, error) {
	sp, err := spool.Open(cm.Spool)
	if err != nil {
		return nil, fmt.Errorf("smtpd: spool %s: %w", cm.Spool, err)
	}
	rt, db, err := submission.NewRouter(cm)
	if err != nil {
		return nil, err
	}
	srv := &Server{
		Config: Config{
			Hostname:      cm.Hostname,
			IsLocal:       cm.IsLocalDomain,
			IsRelayDomain: rt.IsRelay,
			PrimaryDomain: cm.Domains[0],
			Log:           cm.Log,
		},
		Queue:      spoolQueue{sp},
		Recipients: submission.RouterRecipients{Router: rt},
		Auth:       UsersAuth{DB: db},
		Senders:    submission.NewRouterSenders(rt),
	}
	srv.RelayNetworks, _ = listen.ParseNetworks([]string{"127.0.0.0/8", "::1/128"})
	srv.AuthFailureDelay = time.Second
	srv.Defaults()
	return srv, nil
}

// spoolQueue gives the session a queue id before Submit, for the Received
// header; the spool keeps an ID set by its caller.
type spoolQueue struct{ *spool.Spool }

func (spoolQueue) NewID() string { return spool.NewID() }

// ApplyFlags sets the limits and policy from smtpd's flags.
func (s *Server) ApplyFlags(c *cli.Context) error {
	nets, err := listen.ParseNetworks(c.StringSlice("relay-networks"))
	if err != nil {
		return err
	}
	s.RelayNetworks = nets
	s.MaxMessageSize = c.Int64("max-message-size")
	s.MaxRecipients = c.Int("max-recipients")
	s.MaxErrors = c.Int("max-errors")
	s.MaxReceived = c.Int("max-received")
	s.MaxAuthFailures = c.Int("max-auth-failures")
	s.AuthFailureDelay = c.Duration("auth-failure-delay")
	s.CommandTimeout = c.Duration("command-timeout")
	s.DataTimeout = c.Duration("data-timeout")
	s.AllowInsecureAuth = c.Bool("allow-insecure-auth")
	s.Greeting = c.String("greeting")
	switch bn := c.String("bare-newline"); bn {
	case BareNewlineReject, BareNewlineNormalize:
		s.BareNewline = bn
	default:
		return fmt.Errorf("smtpd: bare-newline %q: want %s or %s", bn, BareNewlineReject, BareNewlineNormalize)
	}
	s.Defaults()
	return nil
}

// Main is the smtpd command after flag parsing: get the listeners (or the
// stdio session), drop privileges, open the spool and serve until SIGTERM.
func Main(c *cli.Context) error {
	cm, err := cliapp.Load(c)
	if err != nil {
		return err
	}
	ln, err := listen.Open(listen.Options{Listen: c.StringSlice("listen"), DefaultMode: string(ModeSMTP),
		StdioMode: c.String("mode"), Modes: Modes, User: c.String("user"), TLSCert: cm.TLSCert, TLSKey: cm.TLSKey,
		ProxyNetworks: c.StringSlice("proxy-networks"), ProxyTimeout: c.Duration("proxy-timeout"), Log: cm.Log})
	if err != nil {
		return err
	}
	srv, err := New(cm)
	if err != nil {
		return err
	}
	srv.TLS = ln.TLS
	if err := srv.ApplyFlags(c); err != nil {
		return err
	}
	if err := srv.applyChecks(c, cm); err != nil {
		return err
	}
	if ln.Stdio && !ln.Listeners[0].Proxy {
		// qmail's convention: tcpserver sets RELAYCLIENT for clients that
		// may relay. Only here, for the one session we were handed, and
		// not behind a proxy: tcpserver judged the proxy, not the client.
		_, srv.RelayClient = os.LookupEnv("RELAYCLIENT")
	}
	for _, l := range ln.Listeners {
		if Mode(l.Mode) == ModeSubmissions && srv.TLS == nil {
			return fmt.Errorf("smtpd: a submissions listener needs tls-cert and tls-key")
		}
	}
	return srv.Run(ln.Listeners)
}

// Run serves ls until they all end or SIGTERM/SIGINT arrives, then shuts
// down within 5 seconds.
func (s *Server) Run(ls []listen.Listener) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	var wg sync.WaitGroup
	errs := make(chan error, len(ls))
	for _, l := range ls {
		wg.Add(1)
		s.Log.Info("listening", "addr", l.Addr().String(), "mode", l.Name())
		go func(l listen.Listener) {
			defer wg.Done()
			if err := s.Serve(l.Listener, Mode(l.Mode)); err != nil {
				errs <- err
			}
		}(l)
	}
	served := make(chan struct{})
	go func() { wg.Wait(); close(served) }()
	select {
	case <-served:
		// Only the one-connection listener ends by itself; wait for the
		// session it started.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.waitSessions(ctx)
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	case sg := <-sig:
		s.Log.Info("stopping", "signal", sg.String())
	}
	// 3 s for transfers in flight, then they are cut off (421, nothing
	// queued) and Shutdown waits at most 1 s more: gone within 5 s.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

func (s *Server) waitSessions(ctx context.Context) {
	for ctx.Err() == nil {
		s.mu.Lock()
		n := len(s.sessions)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
