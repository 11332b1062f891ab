package imap

import (
	"errors"
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

// Flags are imapd's own flags (the shared ones come from config). imapd
// parses them with config's lean parser, not urfave/cli: started once per
// connection in inetd mode (and, as root, once more per session as the
// mailbox owner's child), it pays at every login for each package it links
// and the pages their start-up touches, and urfave/cli's config file
// support links net/http and YAML.
func Flags() []config.Flag {
	return append(config.ProxyFlags(),
		config.Flag{Name: "listen", Kind: config.StringSlice, Usage: "listen on `[MODE=]ADDR` (MODE imap or imaps, each also MODE+proxy behind HAProxy; repeatable)"},
		config.Flag{Name: "mode", Default: "imap", Usage: "`MODE` of the stdin/stdout session: imap or imaps"},
		config.Flag{Name: "user", Usage: "after binding, run as `USER` (its group and supplementary groups)"},
		config.Flag{Name: "allow-insecure-auth", Kind: config.Bool, Usage: "allow LOGIN and AUTHENTICATE PLAIN without TLS from non-loopback clients"},
		config.Flag{Name: "max-auth-failures", Kind: config.Int, Default: 3, Usage: "failed logins per connection before it is closed"},
		config.Flag{Name: "auth-failure-delay", Kind: config.Duration, Default: time.Second, Usage: "pause before answering a failed login"},
		config.Flag{Name: "max-errors", Kind: config.Int, Default: 10, Usage: "invalid commands (BAD) in a row before the connection is closed"},
		config.Flag{Name: "idle-timeout", Kind: config.Duration, Default: 30 * time.Minute, Usage: "end a session idle this long, IDLE included (RFC 9051: at least 30m)"},
		config.Flag{Name: "max-message-size", Kind: config.Int64, Default: int64(35 << 20), Usage: "largest APPEND in `OCTETS` (announced as APPENDLIMIT)"},
		config.Flag{Name: "max-line-length", Kind: config.Int, Default: 64 << 10, Usage: "longest command in `OCTETS`, literals other than APPEND's message included"},
		config.Flag{Name: "max-preauth-literal", Kind: config.Int64, Default: int64(4096), Usage: "largest literal in `OCTETS` before login"},
		config.Flag{Name: "poll-interval", Kind: config.Duration, Usage: "also look for changes this often (file systems without inotify, e.g. NFS); 0: inotify only"},
	)
}

// Main is the imapd command after flag parsing: get the listeners (or the
// stdio session), drop privileges, serve until SIGTERM. A session whose
// mailbox belongs to another user is served as that user: by this process
// switching to it (the stdio session) or by a child process
// (ServeHandoff). stderr receives the log.
func Main(c *config.Set, stderr io.Writer) error {
	cm, err := config.Load(c, "imapd", stderr)
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
