package imap

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config"
	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/listen"
	"letterbox/pkg/users"
	// Authentication needs the password code, which pkg/users leaves out
	// for deliver's sake.
	_ "letterbox/pkg/users/passwd"
)

// Flags are imapd's own flags (the shared ones come from config).
func Flags() []cli.Flag {
	return append(cliapp.Flags(config.ProxyFlags()),
		&cli.StringSliceFlag{Name: "listen", Usage: "listen on `[MODE=]ADDR` (MODE imap or imaps, each also MODE+proxy behind HAProxy; repeatable)"},
		&cli.StringFlag{Name: "mode", Usage: "`MODE` of the stdin/stdout session: imap or imaps", Value: "imap"},
		&cli.StringFlag{Name: "user", Usage: "after binding, run as `USER` (its group and supplementary groups)"},
		&cli.BoolFlag{Name: "allow-insecure-auth", Usage: "allow LOGIN and AUTHENTICATE PLAIN without TLS from non-loopback clients"},
		&cli.IntFlag{Name: "max-auth-failures", Usage: "failed logins per connection before it is closed", Value: 3},
		&cli.DurationFlag{Name: "auth-failure-delay", Usage: "pause before answering a failed login", Value: time.Second},
		&cli.IntFlag{Name: "max-errors", Usage: "invalid commands (BAD) in a row before the connection is closed", Value: 10},
		&cli.DurationFlag{Name: "idle-timeout", Usage: "end a session idle this long, IDLE included (RFC 9051: at least 30m)", Value: 30 * time.Minute},
		&cli.Int64Flag{Name: "max-message-size", Usage: "largest APPEND in `OCTETS` (announced as APPENDLIMIT)", Value: 35 << 20},
		&cli.IntFlag{Name: "max-line-length", Usage: "longest command in `OCTETS`, literals other than APPEND's message included", Value: 64 << 10},
		&cli.Int64Flag{Name: "max-preauth-literal", Usage: "largest literal in `OCTETS` before login", Value: 4096},
		&cli.DurationFlag{Name: "poll-interval", Usage: "also look for changes this often (file systems without inotify, e.g. NFS); 0: inotify only"},
	)
}

// Main is the imapd command after flag parsing: get the listeners (or the
// stdio session), drop privileges, serve until SIGTERM. A session whose
// mailbox belongs to another user is served as that user: by this process
// switching to it (the stdio session) or by a child process
// (ServeHandoff).
func Main(c *cli.Context) error {
	cm, err := cliapp.Load(c)
	if err != nil {
		return err
	}
	// No password code linked would fail every login as a wrong password:
	// refuse to start instead. ({PLAIN} costs nothing to check.)
	if !users.Verify("{PLAIN}x", "x") {
		return errors.New("imapd: " + users.ErrNoPasswords.Error())
	}
	ln, err := listen.Open(listen.Options{Listen: c.StringSlice("listen"), DefaultMode: "imap", StdioMode: c.String("mode"),
		Modes: Modes, User: c.String("user"), TLSCert: cm.TLSCert, TLSKey: cm.TLSKey,
		ProxyNetworks: c.StringSlice("proxy-networks"), ProxyTimeout: c.Duration("proxy-timeout"), Log: cm.Log})
	if err != nil {
		return fmt.Errorf("imapd: %w", err)
	}
	db, err := users.Load(cm.Users)
	if err != nil {
		return fmt.Errorf("imapd: %w", err)
	}
	for _, l := range ln.Listeners {
		if l.Mode == "imaps" && ln.TLS == nil {
			return fmt.Errorf("imapd: an imaps listener needs tls-cert and tls-key")
		}
	}
	delay := c.Duration("auth-failure-delay")
	if delay == 0 {
		delay = -1 // Config's zero means the default
	}
	maxSize := c.Int64("max-message-size")
	srv := New(Config{
		Hostname: cm.Hostname,
		Backend: &UsersBackend{DB: db, MailRoot: cm.MailRoot, MailUser: cm.MailUser, Hostname: cm.Hostname,
			MaxMessageSize: maxSize, PollInterval: c.Duration("poll-interval"), Log: cm.Log},
		TLS:               ln.TLS,
		AllowInsecureAuth: c.Bool("allow-insecure-auth"),
		AuthFailureDelay:  delay,
		MaxAuthFailures:   c.Int("max-auth-failures"),
		MaxErrors:         c.Int("max-errors"),
		IdleTimeout:       c.Duration("idle-timeout"),
		MaxLine:           c.Int("max-line-length"),
		MaxPreauthLiteral: c.Int64("max-preauth-literal"),
		MaxMessageSize:    maxSize,
		PollInterval:      c.Duration("poll-interval"),
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
			if err := srv.Serve(l.Listener, l.Mode == "imaps"); err != nil {
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
