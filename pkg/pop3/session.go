package pop3

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"letterbox/pkg/maildir"
	"letterbox/pkg/privsep"
	"letterbox/pkg/privsep/handoff"
)

type state int

const (
	stateAuth state = iota
	stateTransaction
	stateDone
)

var errLineTooLong = errors.New("line too long")

// session is one POP3 connection.
type session struct {
	srv    *Server
	cfg    *Config
	raw    net.Conn // the accepted connection; closed on forced shutdown
	conn   net.Conn // raw, or the TLS connection over it
	r      *bufio.Reader
	w      *bufio.Writer
	tls    bool
	log    *slog.Logger
	remote string

	interrupted atomic.Bool

	// child serves the session after login, as the maildrop's owner
	// (nil: this process does).
	childMu sync.Mutex
	child   *handoff.Child

	state     state
	timestamp string // APOP challenge; "" when APOP is not offered
	user      string // from USER, waiting for PASS
	name      string // authenticated user
	drop      Maildrop
	msgs      []MessageInfo
	deleted   []bool
	retrieved []bool

	authFailures, errors, preauth int
	retrN, delN                   int
	retrBytes, delBytes           int64

	ahead readAhead
}

func newSession(srv *Server, c net.Conn, implicitTLS bool) *session {
	if srv.cfg.SwitchProcess {
		// This process serves this one session (inetd mode).
		c = newWaitConn(c)
	}
	s := &session{srv: srv, cfg: &srv.cfg, raw: c, conn: c, remote: c.RemoteAddr().String()}
	s.log = srv.cfg.Log.With("remote", s.remote)
	if implicitTLS {
		s.conn = tls.Server(c, srv.cfg.TLS)
		s.tls = true
	}
	s.r = bufio.NewReaderSize(s.conn, 1024)
	s.w = bufio.NewWriterSize(s.conn, 64*1024)
	return s
}

// interrupt makes a blocked read return so the session sees the shutdown;
// a session served by a child is the child's to end, on SIGTERM.
func (s *session) interrupt() {
	s.interrupted.Store(true)
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

func (s *session) reply(format string, args ...any) {
	fmt.Fprintf(s.w, format, args...)
	s.w.WriteString("\r\n")
}

func (s *session) ok(format string, args ...any) { s.reply("+OK "+format, args...) }
func (s *session) err(format string, args ...any) {
	s.reply("-ERR "+format, args...)
}

func (s *session) serve() {
	reason := s.run()
	if reason == reasonHandedOff {
		s.waitChild()
		return
	}
	s.end(reason)
}

// reasonHandedOff: the session goes on in a child process.
const reasonHandedOff = "handed-off"

// waitChild waits for the child serving the session. The child logs the
// session's end; one that died could not, so its parent does.
func (s *session) waitChild() {
	c := s.getChild()
	if err := c.Wait(); err != nil {
		s.log.Error("session end", "reason", "session-process-failed", "pid", c.Pid(), "err", err)
	}
}

// end finishes a session this process served: the last replies, the
// session's log line, the maildrop's lock and the connection.
func (s *session) end(reason string) {
	defer s.raw.Close()
	defer s.closeDrop()
	s.w.Flush()
	attrs := []any{"reason", reason}
	if s.name != "" {
		attrs = append(attrs, "retrieved", s.retrN, "retrieved_bytes", s.retrBytes,
			"deleted", s.delN, "deleted_bytes", s.delBytes)
	}
	s.log.Info("session end", attrs...)
}

// closeDrop releases the maildrop's lock, once.
func (s *session) closeDrop() {
	if s.drop == nil {
		return
	}
	if err := s.drop.Close(); err != nil {
		s.log.Error("maildrop close", "err", err)
	}
	s.drop = nil
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
	if s.cfg.Backend.HasAPOP() {
		var rnd [8]byte
		rand.Read(rnd[:])
		s.timestamp = fmt.Sprintf("<%d.%s@%s>", os.Getpid(), hex.EncodeToString(rnd[:]), s.cfg.Hostname)
		s.ok("POP3 server ready %s", s.timestamp)
	} else {
		s.ok("POP3 server ready")
	}
	return s.loop()
}

// loop reads and runs commands until the session ends, and says why.
func (s *session) loop() string {
	for {
		line, err := s.readLine()
		if err == errLineTooLong {
			s.err("line too long")
			if s.protocolError() {
				return "errors"
			}
			continue
		}
		if err != nil {
			if s.interrupted.Load() {
				s.err("[SYS/TEMP] server shutting down, try again later")
				return "shutdown"
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.err("idle timeout, closing connection")
				return "idle-timeout"
			}
			return "disconnect"
		}
		if s.state == stateAuth {
			s.preauth++
			if s.preauth > s.cfg.MaxPreauthCommands {
				s.err("too many commands without login")
				return "preauth-commands"
			}
		}
		if end := s.command(line); end != "" {
			return end
		}
		if s.state == stateDone {
			return "quit"
		}
	}
}

// protocolError counts an error; true means the session must end.
func (s *session) protocolError() bool {
	s.errors++
	if s.errors >= s.cfg.MaxErrors {
		s.err("too many errors, closing connection")
		return true
	}
	return false
}

// readLine reads one command line, flushing replies first unless the
// client has already pipelined a whole next command.
func (s *session) readLine() (string, error) {
	if !s.haveLine() {
		if err := s.w.Flush(); err != nil {
			return "", err
		}
		// The client reads the reply; meanwhile, the message it will
		// likely ask for next.
		s.readAhead()
	}
	s.raw.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if s.interrupted.Load() {
		return "", os.ErrDeadlineExceeded
	}
	line, err := s.r.ReadSlice('\n')
	if err == nil && len(line) <= MaxLine {
		return strings.TrimRight(string(line), "\r\n"), nil
	}
	if err != nil && err != bufio.ErrBufferFull {
		return "", err
	}
	// Too long: discard up to the end of the line.
	for err == bufio.ErrBufferFull || (err == nil && len(line) > MaxLine) {
		if err == nil {
			return "", errLineTooLong
		}
		line, err = s.r.ReadSlice('\n')
	}
	if err != nil {
		return "", err
	}
	return "", errLineTooLong
}

// haveLine reports whether a complete line is already buffered.
func (s *session) haveLine() bool {
	n := s.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := s.r.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// command runs one command line; a non-empty result ends the session.
func (s *session) command(line string) string {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	args := strings.Fields(arg)
	if s.state == stateAuth {
		switch verb {
		case "CAPA":
			return s.capa(args)
		case "USER":
			return s.cmdUser(args)
		case "PASS":
			// The password may contain spaces (RFC 1939 allows it).
			return s.cmdPass(arg)
		case "APOP":
			return s.cmdAPOP(args)
		case "AUTH":
			return s.cmdAuth(args)
		case "STLS":
			return s.cmdSTLS(args)
		case "QUIT":
			s.ok("%s POP3 server signing off", s.cfg.Hostname)
			s.state = stateDone
			return ""
		case "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL":
			s.err("command not valid in this state: log in first")
			return s.errEnd()
		}
	} else {
		switch verb {
		case "CAPA":
			return s.capa(args)
		case "STAT":
			return s.cmdStat(args)
		case "LIST":
			return s.cmdList(args)
		case "UIDL":
			return s.cmdUIDL(args)
		case "RETR":
			return s.cmdRetr(args)
		case "TOP":
			return s.cmdTop(args)
		case "DELE":
			return s.cmdDele(args)
		case "NOOP":
			if len(args) != 0 {
				return s.syntax("NOOP takes no argument")
			}
			s.ok("")
			return ""
		case "RSET":
			return s.cmdRset(args)
		case "QUIT":
			return s.cmdQuit(args)
		case "USER", "PASS", "APOP", "AUTH", "STLS":
			s.err("command not valid in this state: already logged in")
			return s.errEnd()
		}
	}
	s.err("unknown command")
	return s.errEnd()
}

func (s *session) errEnd() string {
	if s.protocolError() {
		return "errors"
	}
	return ""
}

func (s *session) syntax(msg string) string {
	s.err("syntax: %s", msg)
	return s.errEnd()
}

func (s *session) plaintextAllowed() bool {
	return s.tls || s.cfg.AllowInsecureAuth || isLoopback(s.raw.RemoteAddr())
}

func isLoopback(a net.Addr) bool {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.IsLoopback()
	}
	return false
}

func (s *session) capa(args []string) string {
	if len(args) != 0 {
		return s.syntax("CAPA takes no argument")
	}
	s.ok("Capability list follows")
	s.w.WriteString("TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n")
	if s.state == stateAuth {
		if s.plaintextAllowed() {
			s.w.WriteString("USER\r\nSASL PLAIN\r\n")
		}
		if s.cfg.TLS != nil && !s.tls {
			s.w.WriteString("STLS\r\n")
		}
	}
	s.w.WriteString("IMPLEMENTATION letterbox\r\n.\r\n")
	return ""
}

func (s *session) cmdUser(args []string) string {
	if len(args) != 1 {
		s.user = ""
		return s.syntax("USER name")
	}
	if !s.plaintextAllowed() {
		s.err("[AUTH] plaintext authentication disallowed on non-secure connections; use STLS")
		return s.errEnd()
	}
	s.user = args[0]
	// The same reply for every name: no hint whether the user exists.
	s.ok("send PASS")
	return ""
}

func (s *session) cmdPass(pw string) string {
	user := s.user
	s.user = ""
	if user == "" {
		s.err("USER first")
		return s.errEnd()
	}
	if !s.plaintextAllowed() {
		s.err("[AUTH] plaintext authentication disallowed on non-secure connections; use STLS")
		return s.errEnd()
	}
	name, err := s.cfg.Backend.Login(user, pw)
	return s.loggedIn(user, name, err, "USER")
}

func (s *session) cmdAPOP(args []string) string {
	if len(args) != 2 {
		return s.syntax("APOP name digest")
	}
	if s.timestamp == "" {
		s.err("APOP not available")
		return s.errEnd()
	}
	name, err := s.cfg.Backend.APOP(args[0], s.timestamp, strings.ToLower(args[1]))
	return s.loggedIn(args[0], name, err, "APOP")
}

func (s *session) cmdAuth(args []string) string {
	if len(args) == 0 {
		// Not in RFC 5034, but clients (and Dovecot) use it to list
		// mechanisms.
		s.ok("")
		if s.plaintextAllowed() {
			s.w.WriteString("PLAIN\r\n")
		}
		s.w.WriteString(".\r\n")
		return ""
	}
	if len(args) > 2 {
		return s.syntax("AUTH mechanism [initial-response]")
	}
	if !strings.EqualFold(args[0], "PLAIN") {
		s.err("unsupported SASL mechanism")
		return s.errEnd()
	}
	if !s.plaintextAllowed() {
		s.err("[AUTH] plaintext authentication disallowed on non-secure connections; use STLS")
		return s.errEnd()
	}
	var resp string
	if len(args) == 2 {
		resp = args[1]
	} else {
		s.w.WriteString("+ \r\n")
		l, err := s.readLine()
		if err == errLineTooLong {
			s.err("line too long")
			return s.errEnd()
		}
		if err != nil {
			return "disconnect"
		}
		resp = strings.TrimSpace(l)
	}
	if resp == "*" {
		s.err("AUTH cancelled")
		return ""
	}
	if resp == "=" {
		resp = ""
	}
	raw, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		s.err("bad base64 in SASL response")
		return s.errEnd()
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 || parts[1] == "" {
		return s.loggedIn("", "", ErrAuth, "PLAIN")
	}
	authz, authc, pw := parts[0], parts[1], parts[2]
	name, err := s.cfg.Backend.Login(authc, pw)
	if err == nil && authz != "" && !strings.EqualFold(authz, authc) && !strings.EqualFold(authz, name) {
		// We don't let one user act as another.
		name, err = "", ErrAuth
	}
	return s.loggedIn(authc, name, err, "PLAIN")
}

// loggedIn finishes a login attempt: on success it opens the maildrop and
// enters TRANSACTION.
func (s *session) loggedIn(user, name string, err error, mech string) string {
	if err != nil {
		s.authFailures++
		s.log.Info("login failed", "user", user, "mech", mech, "failures", s.authFailures, "err", err)
		// The same delay and reply for unknown user and bad password.
		s.w.Flush()
		time.Sleep(s.cfg.AuthFailureDelay)
		if s.authFailures >= s.cfg.MaxAuthFailures {
			s.err("[AUTH] authentication failed; too many failures, closing connection")
			return "auth-failures"
		}
		s.err("[AUTH] authentication failed")
		return ""
	}
	loc, err := s.cfg.Backend.Locate(name)
	if err != nil {
		s.openFailed(name, err)
		return ""
	}
	self := privsep.Self()
	switch {
	case loc.Owner.UID == self.UID && (loc.Owner.GID == self.GID || !privsep.IsRoot()):
		// Already the owner: a mail user serving its virtual mailboxes,
		// or a mailbox that belongs to whoever runs pop3d.
	case !privsep.IsRoot():
		s.openFailed(name, &PermError{fmt.Errorf("pop3: maildrop %s belongs to %s; pop3d runs as %s and cannot become its owner", loc.Path, loc.Owner, self)})
		return ""
	case s.cfg.SwitchProcess:
		// This process serves this one session: it becomes the owner for
		// good (a later login to another owner's maildrop is refused by
		// the case above).
		if err := loc.Owner.Switch(); err != nil {
			s.openFailed(name, err)
			return "switch-failed"
		}
	default:
		return s.handOff(loc, mech)
	}
	drop, err := s.cfg.Backend.Open(loc)
	if err != nil {
		s.openFailed(name, err)
		return ""
	}
	s.transaction(name, mech, drop)
	return ""
}

// openFailed answers a login whose maildrop could not be opened.
func (s *session) openFailed(name string, err error) {
	var pe *PermError
	switch {
	case errors.Is(err, ErrInUse):
		s.log.Info("maildrop in use", "user", name)
		s.err("[IN-USE] maildrop is locked by another session")
	case errors.As(err, &pe):
		s.log.Error("maildrop open", "user", name, "err", err)
		s.err("[SYS/PERM] cannot open maildrop")
	default:
		s.log.Error("maildrop open", "user", name, "err", err)
		s.err("[SYS/TEMP] cannot open maildrop, try again later")
	}
}

// transaction enters the TRANSACTION state with the opened maildrop.
func (s *session) transaction(name, mech string, drop Maildrop) {
	s.name, s.drop, s.state = name, drop, stateTransaction
	s.msgs = drop.Messages()
	s.deleted = make([]bool, len(s.msgs))
	s.retrieved = make([]bool, len(s.msgs))
	n, size := s.totals()
	s.log = s.log.With("user", name)
	if sk, ok := drop.(interface{ Skipped() []string }); ok && len(sk.Skipped()) > 0 {
		s.log.Warn("maildrop entries skipped: not regular files or not readable", "entries", sk.Skipped())
	}
	s.log.Info("login", "mech", mech, "tls", s.tls, "uid", os.Geteuid(), "messages", n, "bytes", size)
	s.ok("maildrop has %d messages (%d octets)", n, size)
}

// totals counts the messages not marked deleted.
func (s *session) totals() (int, int64) {
	n, size := 0, int64(0)
	for i, m := range s.msgs {
		if !s.deleted[i] {
			n++
			size += m.Size
		}
	}
	return n, size
}

func (s *session) cmdSTLS(args []string) string {
	if len(args) != 0 {
		return s.syntax("STLS takes no argument")
	}
	if s.cfg.TLS == nil {
		s.err("STLS not available")
		return s.errEnd()
	}
	if s.tls {
		s.err("already using TLS")
		return s.errEnd()
	}
	s.ok("begin TLS negotiation")
	if err := s.w.Flush(); err != nil {
		return "disconnect"
	}
	// Whatever the client sent after STLS was sent in plaintext and may
	// have been injected (CVE-2011-0411 class): it is dropped, never run
	// under TLS.
	if n := s.r.Buffered(); n > 0 {
		s.r.Discard(n)
		s.log.Info("STLS: dropped plaintext sent before the handshake", "bytes", n)
	}
	tc := tls.Server(s.raw, s.cfg.TLS)
	s.raw.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		s.log.Info("STLS handshake failed", "err", err)
		return "tls-failed"
	}
	s.raw.SetDeadline(time.Time{})
	s.conn, s.tls = tc, true
	s.r.Reset(tc)
	s.w.Reset(tc)
	s.user = ""
	return ""
}

// msgArg parses a message number: a positive decimal, naming a message of
// the snapshot that is not deleted. On error it has replied.
func (s *session) msgArg(a string) (int, bool) {
	n, err := strconv.Atoi(a)
	if err != nil || n < 1 || a[0] == '+' {
		s.err("invalid message number %q", clip(a))
		return 0, false
	}
	if n > len(s.msgs) {
		s.err("no such message, only %d in maildrop", len(s.msgs))
		return 0, false
	}
	if s.deleted[n-1] {
		s.err("message %d already deleted", n)
		return 0, false
	}
	return n - 1, true
}

func clip(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}

func (s *session) cmdStat(args []string) string {
	if len(args) != 0 {
		return s.syntax("STAT takes no argument")
	}
	n, size := s.totals()
	s.ok("%d %d", n, size)
	return ""
}

func (s *session) cmdList(args []string) string {
	switch len(args) {
	case 0:
		n, size := s.totals()
		s.ok("%d messages (%d octets)", n, size)
		for i, m := range s.msgs {
			if !s.deleted[i] {
				s.w.WriteString(strconv.Itoa(i + 1))
				s.w.WriteByte(' ')
				s.w.WriteString(strconv.FormatInt(m.Size, 10))
				s.w.WriteString("\r\n")
			}
		}
		s.w.WriteString(".\r\n")
	case 1:
		if i, ok := s.msgArg(args[0]); ok {
			s.ok("%d %d", i+1, s.msgs[i].Size)
		}
	default:
		return s.syntax("LIST [msg]")
	}
	return ""
}

func (s *session) cmdUIDL(args []string) string {
	switch len(args) {
	case 0:
		s.ok("unique-id listing follows")
		for i, m := range s.msgs {
			if !s.deleted[i] {
				s.w.WriteString(strconv.Itoa(i + 1))
				s.w.WriteByte(' ')
				s.w.WriteString(m.UID)
				s.w.WriteString("\r\n")
			}
		}
		s.w.WriteString(".\r\n")
	case 1:
		if i, ok := s.msgArg(args[0]); ok {
			s.ok("%d %s", i+1, s.msgs[i].UID)
		}
	default:
		return s.syntax("UIDL [msg]")
	}
	return ""
}

func (s *session) cmdRetr(args []string) string {
	if len(args) != 1 {
		return s.syntax("RETR msg")
	}
	i, ok := s.msgArg(args[0])
	if !ok {
		return ""
	}
	return s.send(i, -1)
}

func (s *session) cmdTop(args []string) string {
	if len(args) != 2 {
		return s.syntax("TOP msg lines")
	}
	lines, err := strconv.Atoi(args[1])
	if err != nil || lines < 0 || args[1][0] == '+' {
		s.err("invalid number of lines %q", clip(args[1]))
		return ""
	}
	i, ok := s.msgArg(args[0])
	if !ok {
		return ""
	}
	return s.send(i, lines)
}

// send writes message i (all of it, or TOP's header and lines of body).
func (s *session) send(i, lines int) string {
	if lines < 0 {
		s.ahead.next = i + 2 // message i+1, as index+1
		if data, n, ok := s.ahead.take(i); ok {
			s.ok("%d octets", s.msgs[i].Size)
			if _, err := s.w.Write(data); err != nil {
				s.log.Error("send message", "msg", i+1, "err", err)
				return "io-error"
			}
			s.sent(i, n)
			return ""
		}
	}
	rc, err := s.drop.Open(i)
	if err != nil {
		s.log.Error("open message", "msg", i+1, "err", err)
		s.err("[SYS/TEMP] cannot read message %d", i+1)
		return ""
	}
	defer rc.Close()
	size := int64(-1)
	if f, ok := rc.(*maildir.RegularFile); ok {
		size = f.Size()
	}
	s.ok("%d octets", s.msgs[i].Size)
	n, err := writeMessage(s.w, rc, lines, size)
	if err != nil {
		// The multi-line response is cut: the client cannot resync, so the
		// session ends (without UPDATE).
		s.log.Error("send message", "msg", i+1, "err", err)
		return "io-error"
	}
	if lines < 0 {
		s.sent(i, n)
	}
	return ""
}

// sent counts message i, n octets, as retrieved.
func (s *session) sent(i int, n int64) {
	if n != s.msgs[i].Size {
		s.log.Warn("message size changed since listed", "msg", i+1, "listed", s.msgs[i].Size, "sent", n)
	}
	s.retrieved[i] = true
	s.retrN++
	s.retrBytes += n
}

func (s *session) cmdDele(args []string) string {
	if len(args) != 1 {
		return s.syntax("DELE msg")
	}
	i, ok := s.msgArg(args[0])
	if !ok {
		return ""
	}
	s.deleted[i] = true
	s.ok("message %d deleted", i+1)
	return ""
}

func (s *session) cmdRset(args []string) string {
	if len(args) != 0 {
		return s.syntax("RSET takes no argument")
	}
	for i := range s.deleted {
		s.deleted[i] = false
	}
	n, size := s.totals()
	s.ok("maildrop has %d messages (%d octets)", n, size)
	return ""
}

// cmdQuit is the UPDATE state: the only place deletions happen.
func (s *session) cmdQuit(args []string) string {
	if len(args) != 0 {
		return s.syntax("QUIT takes no argument")
	}
	var retrieved, deleted []int
	var delBytes int64
	for i := range s.msgs {
		if s.deleted[i] {
			deleted = append(deleted, i)
			delBytes += s.msgs[i].Size
		} else if s.retrieved[i] {
			retrieved = append(retrieved, i)
		}
	}
	s.state = stateDone
	err := s.drop.Commit(retrieved, deleted)
	// The UPDATE state is committed and the lock released before the
	// reply: the client may reconnect the moment it reads it.
	s.closeDrop()
	if err != nil {
		s.log.Error("update", "err", err)
		s.err("[SYS/TEMP] some deleted messages not removed: %v", shortErr(err))
		return "update-failed"
	}
	s.delN, s.delBytes = len(deleted), delBytes
	n := len(s.msgs) - len(deleted)
	s.ok("%s POP3 server signing off (%d messages left)", s.cfg.Hostname, n)
	return ""
}

func shortErr(err error) string {
	m := err.Error()
	if i := strings.LastIndex(m, ": "); i >= 0 {
		m = m[i+2:]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, m)
}
