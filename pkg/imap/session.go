package imap

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"letterbox/pkg/listen"
	"letterbox/pkg/privsep/handoff"
)

type state int

const (
	stateNotAuth state = iota
	stateAuth
	stateSelected
	stateLogout
)

// result is a command's tagged response.
type result struct {
	status string // OK, NO, BAD
	code   string // response code without brackets, or ""
	text   string
	// noUpdate: don't send pending mailbox updates before the tagged
	// response (BAD, and commands that already did).
	noUpdate bool
	// end: close the connection after the response.
	end string
	// written: the command wrote its tagged response itself.
	written bool
}

func ok(text string) result           { return result{status: "OK", text: text} }
func okCode(code, text string) result { return result{status: "OK", code: code, text: text} }
func no(code, text string) result     { return result{status: "NO", code: code, text: text} }
func bad(text string) result          { return result{status: "BAD", text: text, noUpdate: true} }
func badCode(code, text string) result {
	return result{status: "BAD", code: code, text: text, noUpdate: true}
}

// stateError: a command not valid in the session's state.
type stateError struct{ msg string }

func (e *stateError) Error() string { return e.msg }

// countConn counts the octets of a connection both ways.
type countConn struct {
	net.Conn
	in, out atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// session is one IMAP connection.
type session struct {
	srv    *Server
	cfg    *Config
	raw    net.Conn   // the accepted connection; closed on forced shutdown
	count  *countConn // raw, counted
	conn   net.Conn   // count, or the TLS connection over it
	br     *bufio.Reader
	bw     *bufio.Writer
	rd     *reader
	tls    bool
	log    *slog.Logger
	remote net.Addr

	interrupted atomic.Bool
	stop        chan struct{} // closed by interrupt

	// child serves the session after login, as the mailbox's owner (nil:
	// this process does).
	childMu sync.Mutex
	child   *handoff.Child

	state state
	tag   string // of the command running
	user  string
	store Store
	sel   *selected

	// Extensions the client enabled (RFC 5161), and CONDSTORE enabled
	// by use (RFC 7162 § 3.1).
	rev2, utf8, condstore, qresync bool

	authFailures, errors, preauth int
	// closeAfter ends the session after the current command (the folder
	// was replaced under it).
	closeAfter string

	// For the session's log line.
	selects, fetched, appended, expunged, copied, moved int
	fetchedBytes, appendedBytes                         int64

	scratch []byte
	crlf    *crlfReader   // reused for the bodies FETCH sends
	small   *bufio.Writer // the session's own writer while bw is a FETCH's
	// stCache is the last message structure parsed.
	stCache struct {
		view View
		uid  uint32
		st   *structure
	}
}

func newSession(srv *Server, c net.Conn, implicitTLS bool) *session {
	s := &session{srv: srv, cfg: &srv.cfg, raw: c, remote: c.RemoteAddr(), stop: make(chan struct{})}
	s.count = &countConn{Conn: c}
	s.conn = s.count
	s.log = srv.cfg.Log.With("remote", s.remote.String())
	if implicitTLS {
		s.conn = tls.Server(s.count, srv.cfg.TLS)
		s.tls = true
	}
	s.br = bufio.NewReaderSize(s.conn, 4096)
	s.bw = bufio.NewWriterSize(s.conn, 4096)
	s.rd = newReader(s.br, s.continuation)
	s.rd.maxCmd = s.cfg.MaxLine
	s.rd.maxLiteral = s.cfg.MaxPreauthLiteral
	return s
}

// interrupt makes a blocked read return so the session sees the shutdown;
// a session served by a child is the child's to end, on SIGTERM.
func (s *session) interrupt() {
	if s.interrupted.CompareAndSwap(false, true) {
		close(s.stop)
	}
	if c := s.getChild(); c != nil {
		c.Signal(syscall.SIGTERM)
		return
	}
	s.raw.SetReadDeadline(time.Now())
}

// kill ends the session at once (shutdown's deadline passed).
func (s *session) kill() {
	if c := s.getChild(); c != nil {
		c.Kill()
	}
	s.raw.Close()
}

func (s *session) getChild() *handoff.Child {
	s.childMu.Lock()
	defer s.childMu.Unlock()
	return s.child
}

func (s *session) setChild(c *handoff.Child) {
	s.childMu.Lock()
	s.child = c
	s.childMu.Unlock()
}

// continuation asks for a synchronizing literal.
func (s *session) continuation() error {
	s.bw.WriteString("+ Ready for literal data\r\n")
	return s.bw.Flush()
}

func (s *session) serve() {
	reason := s.run()
	if reason == reasonHandedOff {
		// The child logs the session's end; one that died could not.
		c := s.getChild()
		if err := c.Wait(); err != nil {
			s.log.Error("session end", "reason", "session-process-failed", "pid", c.Pid(), "err", err)
		}
		return
	}
	s.end(reason)
}

// reasonHandedOff: the session goes on in a child process.
const reasonHandedOff = "handed-off"

// end finishes a session this process served: the last responses, the
// store, the session's log line and the connection.
func (s *session) end(reason string) {
	s.bw.Flush()
	s.closeMailbox()
	// The client is done before the store closes: closing it may finish
	// taking a large new/ into cur/ (mailstore's Store.Close).
	s.raw.Close()
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.log.Error("store close", "err", err)
		}
	}
	attrs := []any{"reason", reason, "bytes_in", s.count.in.Load(), "bytes_out", s.count.out.Load()}
	if s.user != "" {
		attrs = append(attrs, "folders_selected", s.selects,
			"fetched", s.fetched, "fetched_bytes", s.fetchedBytes,
			"appended", s.appended, "appended_bytes", s.appendedBytes,
			"expunged", s.expunged, "copied", s.copied, "moved", s.moved)
	}
	s.log.Info("session end", attrs...)
}

func (s *session) closeMailbox() {
	if s.sel != nil {
		s.sel.close()
		s.sel = nil
	}
}

// untagged writes "* " + text + CRLF.
func (s *session) untagged(text string) {
	s.bw.WriteString("* ")
	s.bw.WriteString(text)
	s.bw.WriteString("\r\n")
}

func (s *session) bye(text string) {
	// The command's deadline may be past (an idle timeout): a few more
	// seconds to say goodbye.
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	s.untagged("BYE " + text)
	s.bw.Flush()
}

// run is the command loop; it returns why the session ended.
func (s *session) run() string {
	if s.tls {
		s.raw.SetDeadline(time.Now().Add(30 * time.Second))
		if err := s.conn.(*tls.Conn).Handshake(); err != nil {
			s.log.Info("TLS handshake failed", "err", err)
			return "tls-failed"
		}
		s.raw.SetDeadline(time.Time{})
	}
	s.log.Debug("connect", "tls", s.tls)
	s.untagged("OK [CAPABILITY " + s.capabilities() + "] " + s.cfg.Hostname + " letterbox IMAP ready")
	for {
		if end := s.one(); end != "" {
			return end
		}
	}
}

// one reads and runs one command; a non-empty result ends the session.
func (s *session) one() string {
	if !s.commandBuffered() {
		if err := s.bw.Flush(); err != nil {
			return "write-error"
		}
	}
	s.conn.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if s.interrupted.Load() {
		s.bye("Server shutting down")
		return "shutdown"
	}
	err := s.rd.begin()
	if err != nil {
		var se *syntaxError
		if !errors.As(err, &se) {
			return s.readFailed(err)
		}
	}
	var c *command
	if err == nil {
		c, err = parseCommandIn(s.rd, s.checkState)
	}
	if err != nil {
		return s.parseFailed(c, err)
	}
	if s.state == stateNotAuth {
		s.preauth++
		if s.preauth > s.cfg.MaxPreauthCommands {
			s.bye("Too many commands without login")
			return "preauth-commands"
		}
	}
	s.tag = c.tag
	res := s.dispatch(c)
	return s.finish(c, res)
}

// readFailed ends the session after a read error.
func (s *session) readFailed(err error) string {
	var tl *tooLongError
	var le *literalError
	var ne net.Error
	switch {
	case s.interrupted.Load():
		s.bye("Server shutting down")
		return "shutdown"
	case errors.As(err, &tl):
		s.bye("[TOOBIG] Command line too long")
		return "line-too-long"
	case errors.As(err, &le):
		s.bye("[TOOBIG] Literal too big")
		return "literal-too-big"
	case errors.As(err, &ne) && ne.Timeout():
		s.bye("Autologout; idle for too long")
		return "idle-timeout"
	case err == io.EOF:
		return "disconnect"
	}
	return "disconnect"
}

// parseFailed answers a command that did not parse and skips its rest.
func (s *session) parseFailed(c *command, err error) string {
	tag := "*"
	if c != nil && c.tag != "" {
		tag = c.tag
	}
	var se *syntaxError
	var st *stateError
	var le *literalError
	var ue *useError
	var res result
	switch {
	case errors.As(err, &se):
		res = bad(se.msg)
		if c != nil && c.name != "" && parsers[c.name] != nil {
			res.text = "Error in IMAP command " + clip(c.name) + ": " + se.msg
		}
	case errors.As(err, &st):
		res = bad(st.msg)
	case errors.As(err, &le):
		if !le.sync && (le.size > s.rd.discardLimit() || s.state == stateNotAuth && le.size > s.cfg.MaxPreauthLiteral) {
			s.bye("[TOOBIG] Literal too big")
			return "literal-too-big"
		}
		res = badCode("TOOBIG", "Literal too big")
	case errors.As(err, &ue):
		// CREATE parsed as far as an attribute we don't keep: the rest is
		// skipped below.
		res = result{status: "NO", code: "USEATTR", text: ue.Error(), noUpdate: true}
	default:
		return s.readFailed(err)
	}
	if err := s.rd.skip(); err != nil {
		return s.readFailed(err)
	}
	s.writeTagged(tag, res)
	if res.status == "BAD" {
		return s.countError()
	}
	return ""
}

// countError counts a BAD; true means the session must end. Before login
// every BAD counts; after, only BADs in a row.
func (s *session) countError() string {
	s.errors++
	if s.errors >= s.cfg.MaxErrors {
		s.bye("Too many invalid commands")
		return "errors"
	}
	return ""
}

// finish sends pending updates and the tagged response.
func (s *session) finish(c *command, res result) string {
	if res.written {
		if res.end != "" {
			s.bw.Flush()
		}
		return res.end
	}
	if res.status != "BAD" && !res.noUpdate && s.sel != nil {
		if err := s.update(expungeAllowed(c)); err != nil {
			s.log.Error("mailbox update", "folder", s.sel.name, "err", err)
		}
	}
	s.writeTagged(c.tag, res)
	if res.status == "BAD" {
		if end := s.countError(); end != "" {
			return end
		}
	} else if s.state != stateNotAuth {
		s.errors = 0
	}
	if res.end == "" {
		res.end = s.closeAfter
	}
	if res.end != "" {
		s.bw.Flush()
		return res.end
	}
	return ""
}

// expungeAllowed: EXPUNGE responses may not be sent during FETCH, STORE
// and SEARCH (RFC 9051 § 7.5.1), nor SORT and THREAD, which also answer
// with sequence numbers; their UID forms may.
func expungeAllowed(c *command) bool {
	switch c.name {
	case "FETCH", "STORE", "SEARCH", "SORT", "THREAD":
		return c.uid
	}
	return true
}

func (s *session) writeTagged(tag string, res result) {
	s.bw.WriteString(tag)
	s.bw.WriteByte(' ')
	s.bw.WriteString(res.status)
	s.bw.WriteByte(' ')
	if res.code != "" {
		s.bw.WriteByte('[')
		s.bw.WriteString(res.code)
		s.bw.WriteString("] ")
	}
	s.bw.WriteString(oneLine(res.text))
	s.bw.WriteString("\r\n")
}

// oneLine keeps a response text on its line.
func oneLine(t string) string {
	if t == "" {
		return "done"
	}
	if strings.IndexFunc(t, func(r rune) bool { return r < 0x20 || r == 0x7f }) < 0 {
		return t
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, t)
}

// commandBuffered reports whether a whole command line is already read
// (a pipelining client): replies are then flushed later, together.
func (s *session) commandBuffered() bool {
	n := s.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := s.br.Peek(n)
	for _, c := range b {
		if c == '\n' {
			return true
		}
	}
	return false
}

// Which commands each state allows.
var (
	anyState     = map[string]bool{"CAPABILITY": true, "NOOP": true, "LOGOUT": true, "ID": true}
	notAuthState = map[string]bool{"STARTTLS": true, "AUTHENTICATE": true, "LOGIN": true}
	authState    = map[string]bool{"ENABLE": true, "SELECT": true, "EXAMINE": true, "CREATE": true,
		"DELETE": true, "RENAME": true, "SUBSCRIBE": true, "UNSUBSCRIBE": true, "LIST": true,
		"LSUB": true, "NAMESPACE": true, "STATUS": true, "APPEND": true, "IDLE": true}
	selectedState = map[string]bool{"CHECK": true, "CLOSE": true, "UNSELECT": true, "EXPUNGE": true,
		"SEARCH": true, "FETCH": true, "STORE": true, "COPY": true, "MOVE": true, "SORT": true, "THREAD": true}
)

// checkState refuses a command the state does not allow, before its
// arguments are read.
func (s *session) checkState(c *command) error {
	n := c.name
	switch {
	case anyState[n]:
		return nil
	case notAuthState[n]:
		if s.state == stateNotAuth {
			return nil
		}
		return &stateError{"Already logged in"}
	case authState[n]:
		if s.state == stateAuth || s.state == stateSelected {
			return nil
		}
		return &stateError{"Log in first"}
	case selectedState[n]:
		if s.state == stateSelected {
			return nil
		}
		if s.state == stateNotAuth {
			return &stateError{"Log in first"}
		}
		return &stateError{"No mailbox selected"}
	}
	return nil // unknown commands are the parser's
}

func (s *session) dispatch(c *command) result {
	switch c.name {
	case "CAPABILITY":
		s.untagged("CAPABILITY " + s.capabilities())
		return ok("CAPABILITY completed")
	case "NOOP":
		return ok("NOOP completed")
	case "CHECK":
		return ok("CHECK completed")
	case "LOGOUT":
		s.untagged("BYE Logging out")
		s.state = stateLogout
		res := ok("LOGOUT completed")
		res.noUpdate, res.end = true, "logout"
		return res
	case "ID":
		return s.cmdID(c.args.(idArgs))
	case "STARTTLS":
		return s.cmdStartTLS()
	case "LOGIN":
		return s.cmdLogin(c.args.(loginArgs))
	case "AUTHENTICATE":
		return s.cmdAuthenticate(c.args.(authArgs))
	case "ENABLE":
		return s.cmdEnable(c.args.(enableArgs))
	case "NAMESPACE":
		s.untagged(`NAMESPACE (("" ".")) NIL NIL`)
		return ok("NAMESPACE completed")
	case "SELECT", "EXAMINE":
		return s.cmdSelect(c.args.(selectArgs), c.name == "EXAMINE")
	case "CREATE":
		return s.cmdCreate(c.args.(createArgs))
	case "DELETE":
		return s.cmdDelete(c.args.(mailboxArgs).name)
	case "RENAME":
		return s.cmdRename(c.args.(renameArgs))
	case "SUBSCRIBE", "UNSUBSCRIBE":
		return s.cmdSubscribe(c.args.(mailboxArgs).name, c.name == "SUBSCRIBE")
	case "LIST", "LSUB":
		return s.cmdList(c.args.(listArgs))
	case "STATUS":
		return s.cmdStatus(c.args.(statusArgs))
	case "APPEND":
		return s.cmdAppend(c.args.(appendArgs))
	case "IDLE":
		return s.cmdIdle()
	case "CLOSE":
		return s.cmdClose(true)
	case "UNSELECT":
		return s.cmdClose(false)
	case "EXPUNGE":
		return s.cmdExpunge(c.args.(expungeArgs))
	case "SEARCH":
		return s.cmdSearch(c.tag, c.uid, c.args.(searchArgs))
	case "FETCH":
		return s.cmdFetch(c.uid, c.args.(fetchArgs))
	case "STORE":
		return s.cmdStore(c.uid, c.args.(storeArgs))
	case "COPY", "MOVE":
		return s.cmdCopy(c.uid, c.name == "MOVE", c.args.(copyArgs))
	case "SORT":
		return s.cmdSort(c.uid, c.args.(sortArgs))
	case "THREAD":
		return s.cmdThread(c.uid, c.args.(threadArgs))
	}
	return bad("Unknown command")
}

// parseCommandIn is parseCommand with the state checked as soon as the
// command's name is known.
func parseCommandIn(r *reader, check func(*command) error) (*command, error) {
	r.check = check
	defer func() { r.check = nil }()
	return parseCommand(r)
}

// capabilities lists what the session offers now (RFC 9051 § 7.2.2).
func (s *session) capabilities() string {
	var b strings.Builder
	b.WriteString("IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE")
	if s.state == stateNotAuth {
		if s.cfg.TLS != nil && !s.tls {
			b.WriteString(" STARTTLS")
		}
		if s.plaintextAllowed() {
			b.WriteString(" AUTH=PLAIN")
		} else {
			b.WriteString(" LOGINDISABLED")
		}
		return b.String()
	}
	b.WriteString(" NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE CREATE-SPECIAL-USE" +
		" LIST-EXTENDED LIST-STATUS ESEARCH SEARCHRES STATUS=SIZE")
	b.WriteString(" APPENDLIMIT=")
	b.WriteString(itoa(s.cfg.MaxMessageSize))
	b.WriteString(" CONDSTORE QRESYNC SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES UTF8=ACCEPT BINARY")
	return b.String()
}

func (s *session) plaintextAllowed() bool {
	return s.tls || s.cfg.AllowInsecureAuth || listen.IsLoopback(s.remote)
}

func (s *session) cmdID(a idArgs) result {
	s.untagged(`ID ("name" "letterbox" "vendor" "letterbox")`)
	if len(a.params) > 0 {
		var kv []any
		for i := 0; i+1 < len(a.params) && i < 20; i += 2 {
			kv = append(kv, clip(a.params[i]), clip(a.params[i+1]))
		}
		s.log.Debug("client id", kv...)
	}
	return ok("ID completed")
}

func (s *session) cmdEnable(a enableArgs) result {
	var enabled []string
	for _, c := range a.caps {
		switch c {
		case "CONDSTORE":
			if !s.condstore {
				s.condstore = true
				enabled = append(enabled, c)
			}
		case "QRESYNC":
			if !s.qresync {
				s.qresync, s.condstore = true, true
				enabled = append(enabled, c)
			}
		case "IMAP4REV2":
			if !s.rev2 {
				s.rev2, s.rd.utf8 = true, true
				enabled = append(enabled, "IMAP4rev2")
			}
		case "UTF8=ACCEPT":
			if !s.utf8 {
				s.utf8, s.rd.utf8 = true, true
				enabled = append(enabled, c)
			}
		}
	}
	s.untagged(strings.TrimSpace("ENABLED " + strings.Join(enabled, " ")))
	return ok("ENABLE completed")
}

// utf8Names reports whether mailbox names go out in UTF-8.
func (s *session) utf8Names() bool { return s.rev2 || s.utf8 }
