package pop3

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"letterbox/pkg/config"
	"letterbox/pkg/listen"
	"letterbox/pkg/users"
	// Authentication needs the password code, which pkg/users leaves out
	// for deliver's sake.
	_ "letterbox/pkg/users/passwd"
)

// Flags are pop3d's own flags (the shared ones come from config). pop3d
// parses them with config's lean parser, not urfave/cli: started once per
// connection in inetd mode, it pays at every login for each package it
// links, and urfave/cli's config file support links net/http and YAML.
func Flags() []config.Flag {
	return append(config.ProxyFlags(),
		config.Flag{Name: "listen", Kind: config.StringSlice, Usage: "listen on `[MODE=]ADDR` (MODE pop3 or pop3s, each also MODE+proxy behind HAProxy; repeatable)"},
		config.Flag{Name: "mode", Default: "pop3", Usage: "`MODE` of the stdin/stdout session: pop3 or pop3s"},
		config.Flag{Name: "user", Usage: "after binding, run as `USER` (its group and supplementary groups)"},
		config.Flag{Name: "allow-insecure-auth", Kind: config.Bool, Usage: "allow USER/PASS and AUTH PLAIN without TLS from non-loopback clients"},
		config.Flag{Name: "max-auth-failures", Kind: config.Int, Default: 3, Usage: "failed logins per connection before it is closed"},
		config.Flag{Name: "auth-failure-delay", Kind: config.Duration, Default: time.Second, Usage: "pause before answering a failed login"},
		config.Flag{Name: "max-errors", Kind: config.Int, Default: 10, Usage: "protocol errors per session before it is closed"},
		config.Flag{Name: "idle-timeout", Kind: config.Duration, Default: 10 * time.Minute, Usage: "end a session idle this long (RFC 1939: at least 10m)"},
		config.Flag{Name: "no-flag-updates", Kind: config.Bool, Usage: "leave Maildirs untouched by RETR (don't mark messages seen or move them to cur/)"},
		config.Flag{Name: "mbox-lock-timeout", Kind: config.Duration, Default: 2 * time.Second, Usage: "wait this long for an mbox lock before answering [IN-USE]"},
	)
}

// Main is the pop3d command after flag parsing: get the listeners (or the
// stdio session), drop privileges, serve until SIGTERM. A session whose
// maildrop belongs to another user is served as that user: by this
// process switching to it (the stdio session) or by a child process
// (ServeHandoff). stderr receives the log.
func Main(c *config.Set, stderr io.Writer) error {
	cm, err := config.Load(c, "pop3d", stderr)
	if err != nil {
		return err
	}
	ln, err := listen.Open(listen.Options{Listen: c.StringSlice("listen"), DefaultMode: "pop3", StdioMode: c.String("mode"),
		Modes: Modes, User: c.String("user"), TLSCert: cm.TLSCert, TLSKey: cm.TLSKey,
		ProxyNetworks: c.StringSlice("proxy-networks"), ProxyTimeout: c.Duration("proxy-timeout"), Log: cm.Log})
	if err != nil {
		return fmt.Errorf("pop3d: %w", err)
	}
	db, err := users.Load(cm.Users)
	if err != nil {
		return fmt.Errorf("pop3d: %w", err)
	}
	for _, l := range ln.Listeners {
		if l.Mode == "pop3s" && ln.TLS == nil {
			return fmt.Errorf("pop3d: a pop3s listener needs tls-cert and tls-key")
		}
	}
	delay := c.Duration("auth-failure-delay")
	if delay == 0 {
		delay = -1 // Config's zero means the default
	}
	srv := New(Config{
		Hostname: cm.Hostname,
		Backend: &UsersBackend{DB: db, MailRoot: cm.MailRoot, FlagUpdates: !c.Bool("no-flag-updates"),
			MboxLockTimeout: c.Duration("mbox-lock-timeout"), MailUser: cm.MailUser},
		TLS:               ln.TLS,
		AllowInsecureAuth: c.Bool("allow-insecure-auth"),
		AuthFailureDelay:  delay,
		MaxAuthFailures:   c.Int("max-auth-failures"),
		MaxErrors:         c.Int("max-errors"),
		IdleTimeout:       c.Duration("idle-timeout"),
		Log:               cm.Log,
		SwitchProcess:     ln.Stdio,
		LogLevel:          c.String("log-level"),
		LogFormat:         c.String("log-format"),
	})
	return Run(srv, ln.Listeners, cm)
}

// Run serves ls until they all end (inetd mode) or SIGTERM/SIGINT arrives,
// then shuts down within 5 seconds.
func Run(srv *Server, ls []listen.Listener, cm *config.Common) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	var wg sync.WaitGroup
	errs := make(chan error, len(ls))
	for _, l := range ls {
		wg.Add(1)
		cm.Log.Debug("listening", "addr", l.Addr().String(), "mode", l.Name())
		go func(l listen.Listener) {
			defer wg.Done()
			if err := srv.Serve(l.Listener, l.Mode == "pop3s"); err != nil {
				errs <- err
			}
		}(l)
	}
	served := make(chan struct{})
	go func() { wg.Wait(); close(served) }()
	select {
	case <-served:
	case sg := <-sig:
		cm.Log.Info("stopping", "signal", sg.String())
		srv.Shutdown(4 * time.Second)
		<-served
	}
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}
