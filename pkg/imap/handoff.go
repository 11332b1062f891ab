package imap

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"letterbox/pkg/config"
	"letterbox/pkg/listen"
	"letterbox/pkg/privsep/handoff"
)

// A session whose mailbox belongs to another user than imapd's (root
// serving mailboxes in home directories) goes on, after login, in a child
// process running as the owner (handoff.Spawn), as pop3d's do: the child
// opens the store and serves the rest of the session. handoffState is all
// it needs from its parent; it reads no configuration file.
type handoffState struct {
	Location Location
	Tag      string // of the LOGIN or AUTHENTICATE the child answers
	Mech     string
	Remote   string
	TLS      bool
	Pending  []byte // what the client sent after logging in, already read
	Config   handoffConfig
}

type handoffConfig struct {
	Hostname                  string
	IdleTimeout               time.Duration
	MaxErrors, MaxLine        int
	MaxMessageSize            int64
	PollInterval              time.Duration
	LogLevel, LogFormat       string
	MaxAuthFailures           int
	AllowInsecureAuth, HasTLS bool
}

// handOff starts the child that serves the rest of the session as
// loc.Owner. When it takes the session, this process only waits for it;
// when it cannot open the store, the login fails here.
func (s *session) handOff(loc Location, mech string) result {
	if s.interrupted.Load() {
		return result{status: "NO", code: "UNAVAILABLE", text: "Server shutting down", end: "shutdown"}
	}
	if err := s.bw.Flush(); err != nil {
		return result{written: true, end: "write-error"}
	}
	pending, _ := s.br.Peek(s.br.Buffered())
	c := s.cfg
	st := handoffState{Location: loc, Tag: s.tag, Mech: mech, Remote: s.remote.String(), TLS: s.tls,
		Pending: pending, Config: handoffConfig{Hostname: c.Hostname, IdleTimeout: c.IdleTimeout,
			MaxErrors: c.MaxErrors, MaxLine: c.MaxLine, MaxMessageSize: c.MaxMessageSize,
			PollInterval: c.PollInterval, LogLevel: c.LogLevel, LogFormat: c.LogFormat,
			HasTLS: c.TLS != nil}}
	state, err := json.Marshal(st)
	if err != nil {
		return s.openFailed(loc.User, err)
	}
	child, err := handoff.Spawn(handoff.Session{Cred: loc.Owner, Conn: s.conn, State: state, Name: "imapd: session"})
	if err != nil {
		return s.openFailed(loc.User, err)
	}
	s.setChild(child)
	if s.interrupted.Load() {
		child.Signal(syscall.SIGTERM) // interrupt ran before the child was known
	}
	ok, report, err := child.Report()
	if !ok {
		s.setChild(nil)
		if err == nil {
			err = fmt.Errorf("imap: session process: %s", report)
		}
		return s.openFailed(loc.User, err)
	}
	s.user = loc.User
	s.log = s.log.With("user", loc.User)
	s.log.Debug("session handed to a process running as the mailbox's owner", "pid", child.Pid(), "owner", loc.Owner.String())
	return result{written: true, end: reasonHandedOff}
}

// ServeHandoff is the child's side: imapd's main calls it, and exits with
// its result, when handoff.IsHandoffChild says this process was started
// for a session.
func ServeHandoff() int {
	listen.OneSessionGC()
	h, err := handoff.TakeHandoff()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapd: session:", err)
		return 71
	}
	var st handoffState
	if err := json.Unmarshal(h.State, &st); err != nil {
		h.Refuse([]byte(err.Error()))
		return 70
	}
	c := st.Config
	log, err := config.NewLogger(os.Stderr, c.LogLevel, c.LogFormat, "imapd")
	if err != nil {
		h.Refuse([]byte(err.Error()))
		return 78
	}
	store, err := openStore(st.Location, c.Hostname, c.MaxMessageSize, c.PollInterval, log)
	if err != nil {
		h.Refuse([]byte(err.Error()))
		return 0
	}
	srv := New(Config{Hostname: c.Hostname, IdleTimeout: c.IdleTimeout, MaxErrors: c.MaxErrors,
		MaxLine: c.MaxLine, MaxMessageSize: c.MaxMessageSize, Log: log})
	s := newSession(srv, h.Conn, false)
	s.remote = stringAddr(st.Remote)
	s.log = log.With("remote", st.Remote)
	s.tls = st.TLS
	s.br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(st.Pending), s.conn), 4096)
	s.rd.br = s.br
	// SIGTERM from the parent's shutdown (or from the kernel when the
	// parent died) ends the session as a shutdown does.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		s.interrupt()
	}()
	if err := h.Accept(nil); err != nil {
		store.Close()
		return 71
	}
	s.tag = st.Tag
	s.writeTagged(st.Tag, s.authenticated(st.Location.User, st.Mech, store))
	reason := ""
	for reason == "" {
		reason = s.one()
	}
	s.end(reason)
	return 0
}

// stringAddr is the client's address as the parent saw it.
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

var _ net.Addr = stringAddr("")
