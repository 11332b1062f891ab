package pop3

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"letterbox/pkg/config"
	"letterbox/pkg/listen"
	"letterbox/pkg/privsep/handoff"
)

// A session whose maildrop belongs to another user than pop3d's (root
// serving mailboxes in home directories) goes on, after login, in a child
// process running as the owner (handoff.Spawn): the child opens the
// maildrop and serves the TRANSACTION and UPDATE states. handoffState is
// all it needs from its parent; it reads no configuration file.
type handoffState struct {
	Location    Location
	Mech        string // how the user logged in, for the log
	Remote      string // the client's address, for the log
	TLS         bool   // the parent speaks TLS with the client
	Pending     []byte // commands the client sent after logging in, already read
	Errors      int    // protocol errors so far
	Hostname    string
	IdleTimeout time.Duration
	MaxErrors   int
	LogLevel    string
	LogFormat   string
}

// refusal is a child's report when it cannot open the maildrop: the parent
// answers as if it had failed to open it itself.
type refusal struct {
	Kind string // "in-use", "perm" or "temp"
	Err  string
}

func refusalOf(err error) []byte {
	r := refusal{Kind: "temp", Err: err.Error()}
	var pe *PermError
	switch {
	case errors.Is(err, ErrInUse):
		r.Kind = "in-use"
	case errors.As(err, &pe):
		r.Kind = "perm"
	}
	b, _ := json.Marshal(r)
	return b
}

func (r refusal) err() error {
	switch r.Kind {
	case "in-use":
		return ErrInUse
	case "perm":
		return &PermError{errors.New(r.Err)}
	}
	return errors.New(r.Err)
}

// handOff starts the child that serves the rest of the session as
// loc.Owner. When it takes the session, this process only waits for it;
// when it cannot open the maildrop, the session goes on here, as after any
// failed open.
func (s *session) handOff(loc Location, mech string) string {
	if s.interrupted.Load() {
		s.err("[SYS/TEMP] server shutting down, try again later")
		return "shutdown"
	}
	// What we owe the client goes out before the child writes.
	if err := s.w.Flush(); err != nil {
		return "disconnect"
	}
	pending, _ := s.r.Peek(s.r.Buffered())
	st := handoffState{Location: loc, Mech: mech, Remote: s.remote, TLS: s.tls, Pending: pending, Errors: s.errors,
		Hostname: s.cfg.Hostname, IdleTimeout: s.cfg.IdleTimeout, MaxErrors: s.cfg.MaxErrors,
		LogLevel: s.cfg.LogLevel, LogFormat: s.cfg.LogFormat}
	state, err := json.Marshal(st)
	if err != nil {
		s.openFailed(loc.User, err)
		return ""
	}
	c, err := handoff.Spawn(handoff.Session{Cred: loc.Owner, Conn: s.conn, State: state, Name: "pop3d: session"})
	if err != nil {
		s.openFailed(loc.User, err)
		return ""
	}
	s.setChild(c)
	if s.interrupted.Load() {
		c.Signal(syscall.SIGTERM) // interrupt ran before the child was known
	}
	ok, report, err := c.Report()
	if !ok {
		s.setChild(nil)
		if err == nil {
			var r refusal
			if jerr := json.Unmarshal(report, &r); jerr != nil {
				r = refusal{Err: fmt.Sprintf("pop3: session process: bad report %q", report)}
			}
			err = r.err()
		}
		s.openFailed(loc.User, err)
		return ""
	}
	s.name = loc.User
	s.log = s.log.With("user", loc.User)
	s.log.Debug("session handed to a process running as the maildrop's owner", "pid", c.Pid(), "owner", loc.Owner.String())
	return reasonHandedOff
}

// ServeHandoff is the child's side: pop3d's main calls it, and exits with
// its result, when handoff.IsHandoffChild says this process was started
// for a session.
func ServeHandoff() int {
	listen.OneSessionGC()
	h, err := handoff.TakeHandoff()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pop3d: session:", err)
		return 71
	}
	var st handoffState
	if err := json.Unmarshal(h.State, &st); err != nil {
		h.Refuse(refusalOf(fmt.Errorf("pop3: session process: state: %w", err)))
		return 70
	}
	log, err := config.NewLogger(os.Stderr, st.LogLevel, st.LogFormat, "pop3d")
	if err != nil {
		h.Refuse(refusalOf(err))
		return 78
	}
	drop, err := OpenLocation(st.Location)
	if err != nil {
		h.Refuse(refusalOf(err))
		return 0
	}
	srv := New(Config{Hostname: st.Hostname, IdleTimeout: st.IdleTimeout, MaxErrors: st.MaxErrors, Log: log})
	conn := newWaitConn(h.Conn) // this process serves this one session
	s := &session{srv: srv, cfg: &srv.cfg, raw: conn, conn: conn, remote: st.Remote, tls: st.TLS, errors: st.Errors}
	s.log = log.With("remote", st.Remote)
	s.r = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(st.Pending), conn), 1024)
	s.w = bufio.NewWriterSize(conn, 64*1024)
	// SIGTERM from the parent's shutdown (or from the kernel when the
	// parent died) ends the session as a shutdown does: no UPDATE.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		s.interrupt()
	}()
	if err := h.Accept(nil); err != nil {
		drop.Close()
		return 71
	}
	s.transaction(st.Location.User, st.Mech, drop)
	s.end(s.loop())
	return 0
}
