package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"

	"letterbox/pkg/address"
	"letterbox/pkg/check"
	"letterbox/pkg/listen"
	"letterbox/pkg/route"
	"letterbox/pkg/spool"
	"letterbox/pkg/submission"
)

const (
	maxCommandLine = 512   // RFC 5321 § 4.5.3.1.4, CRLF included
	maxTextLine    = 1000  // RFC 5321 § 4.5.3.1.6, CRLF included
	maxAuthLine    = 12288 // RFC 4954 § 4: SASL responses may be long

	// readBufSize: message data reaches the spool in pieces of up to this
	// size (the dot reader hands over what is buffered), so a typical
	// message is one or two write(2)s, not one per line.
	readBufSize = 32 << 10
)

var errShutdown = errors.New("smtpd: shutting down")

type readState int

const (
	stateCommand readState = iota
	stateData
)

type session struct {
	srv  *Server
	mode Mode
	log  *slog.Logger

	mu       sync.Mutex // guards conn, state, stopping, killed
	conn     net.Conn
	state    readState
	stopping bool
	killed   bool

	br *bufio.Reader
	bw *bufio.Writer

	remote  net.Addr
	ip      string
	trusted bool
	isTLS   bool
	ptr     chan string
	ptrName string

	helo     string
	esmtp    bool
	authUser string
	authFail int
	errors   int
	closed   bool

	// transaction
	inTx     bool
	from     string
	utf8     bool
	rcpts    []string
	bdat     *bdatState
	bdatFail bool   // a BDAT chunk of this transaction was refused
	presetID string // the queue id named in the Received header

	chk     *check.Conn // checks on mail from strangers (checks.go)
	refused *Reply      // the checks refused the connection: only QUIT
	txID    string      // the transaction's queue id, chosen at MAIL when checked
}

type bdatState struct {
	pw   *io.PipeWriter
	chk  *checker
	lf   lfNormalizer // bare-newline = normalize
	done chan submitResult
	env  *spool.Envelope
}

type submitResult struct {
	id  string
	err error
}

func newSession(srv *Server, c net.Conn, mode Mode) *session {
	s := &session{srv: srv, mode: mode, conn: c, remote: c.RemoteAddr()}
	if ip := listen.IP(s.remote); ip != nil {
		s.ip = ip.String()
	}
	s.trusted = srv.RelayClient || listen.IsTrusted(s.remote, srv.RelayNetworks)
	s.log = srv.Log.With("ip", s.clientIP(), "mode", string(mode))
	s.br = bufio.NewReaderSize(connReader{s}, readBufSize)
	s.bw = bufio.NewWriterSize(c, 4096)
	return s
}

func (s *session) clientIP() string {
	if s.ip == "" {
		return "unknown"
	}
	return s.ip
}

// connReader refreshes the read deadline before every read, with the
// command or the data timeout, and refuses to block once the server stops.
type connReader struct{ s *session }

func (r connReader) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	if s.killed || s.stopping && s.state == stateCommand {
		s.mu.Unlock()
		return 0, errShutdown
	}
	d := s.srv.CommandTimeout
	if s.state == stateData {
		d = s.srv.DataTimeout
	}
	c := s.conn
	c.SetReadDeadline(time.Now().Add(d))
	s.mu.Unlock()
	n, err := c.Read(p)
	if err != nil {
		s.mu.Lock()
		if s.killed || s.stopping && s.state == stateCommand {
			err = errShutdown
		}
		s.mu.Unlock()
	}
	return n, err
}

func (s *session) setState(st readState) {
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
}

// stop asks the session to end: at once if it waits for a command, after
// the transaction in flight otherwise; kill cuts the transaction off too.
func (s *session) stop(kill bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	if kill {
		s.killed = true
	}
	if kill || s.state == stateCommand {
		s.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

func (s *session) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// reply writes one reply; errors (4xx, 5xx) count towards max-errors.
func (s *session) reply(code int, enh string, text string) {
	s.writeReply(code, enh, text)
	if code >= 400 && code != 421 {
		s.errors++
		if s.srv.MaxErrors > 0 && s.errors >= s.srv.MaxErrors && !s.closed {
			s.log.Info("too many errors", "errors", s.errors)
			s.writeReply(421, "4.7.0", "Too many errors, closing connection")
			s.close()
		}
	}
}

func (s *session) replyErr(r *Reply) { s.reply(r.Code, r.Enh, r.Text) }

func (s *session) writeReply(code int, enh string, text string, more ...string) {
	if s.closed {
		return
	}
	s.writeReplyLine(code, len(more) > 0, enh, text)
	for i, l := range more {
		s.writeReplyLine(code, i < len(more)-1, enh, l)
	}
	if code == 421 || code == 221 {
		s.flush()
	}
}

// writeReplyLine buffers one line of a reply: "250-text" when more lines
// follow, "250 text" for the last, with the enhanced code after the
// separator.
func (s *session) writeReplyLine(code int, more bool, enh, text string) {
	var num [8]byte
	s.bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	if more {
		s.bw.WriteByte('-')
	} else {
		s.bw.WriteByte(' ')
	}
	if enh != "" {
		s.bw.WriteString(enh)
		s.bw.WriteByte(' ')
	}
	s.bw.WriteString(text)
	s.bw.WriteString("\r\n")
}

// flush sends buffered replies. Under PIPELINING replies are only flushed
// when the client has nothing more buffered, as RFC 2920 intends.
func (s *session) flush() {
	if s.closed {
		return
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	c.SetWriteDeadline(time.Now().Add(s.srv.CommandTimeout))
	if err := s.bw.Flush(); err != nil {
		s.close()
	}
}

func (s *session) close() {
	if s.closed {
		return
	}
	s.bw.Flush()
	s.closed = true
	s.mu.Lock()
	s.conn.Close()
	s.mu.Unlock()
}

// readLine reads one line of at most limit octets (CRLF included); a longer
// line is read to its end and reported with tooLong.
func (s *session) readLine(limit int) (line string, tooLong bool, err error) {
	if s.br.Buffered() == 0 {
		s.flush()
	}
	var buf []byte
	for {
		chunk, err := s.br.ReadSlice('\n')
		if len(buf)+len(chunk) <= limit {
			buf = append(buf, chunk...)
		} else {
			tooLong = true
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", false, err
		}
		break
	}
	if tooLong {
		return "", true, nil
	}
	return strings.TrimRight(string(buf), "\r\n"), false, nil
}

func (s *session) serve() {
	defer s.close()
	s.log.Info("connect")
	defer func() { s.log.Info("disconnect", "errors", s.errors) }()
	if s.mode == ModeSubmissions {
		if s.srv.TLS == nil {
			s.log.Error("submissions listener without tls-cert/tls-key")
			return
		}
		tc := tls.Server(s.conn, s.srv.TLS)
		tc.SetDeadline(time.Now().Add(s.srv.CommandTimeout))
		if err := tc.Handshake(); err != nil {
			s.log.Info("TLS handshake failed", "err", err)
			tc.Close()
			return
		}
		tc.SetDeadline(time.Time{})
		s.mu.Lock()
		s.conn = tc
		s.mu.Unlock()
		s.isTLS = true
		s.br = bufio.NewReaderSize(connReader{s}, readBufSize)
		s.bw = bufio.NewWriterSize(tc, 4096)
	}
	s.startPTR()
	defer s.checkClose()
	banner := s.srv.Hostname + " ESMTP letterbox ready"
	if s.srv.Greeting != "" {
		banner += "; " + s.srv.Greeting
	}
	if s.refused = s.checkConnect(); s.refused != nil {
		s.writeReply(s.refused.Code, s.refused.Enh, s.refused.Text)
	} else {
		s.writeReply(220, "", banner+" (type HELP for the commands)")
	}
	for !s.closed {
		if s.isStopping() {
			s.abortBDAT()
			s.writeReply(421, "4.3.2", s.srv.Hostname+" shutting down, try again later")
			return
		}
		limit := maxCommandLine
		line, tooLong, err := s.readLine(limit)
		if err != nil {
			s.abortBDAT()
			var ne net.Error
			switch {
			case errors.Is(err, errShutdown):
				s.writeReply(421, "4.3.2", s.srv.Hostname+" shutting down, try again later")
			case errors.As(err, &ne) && ne.Timeout():
				s.log.Info("command timeout")
				s.writeReply(421, "4.4.2", "Timeout waiting for a command, closing connection")
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			default:
				s.log.Info("read failed", "err", err)
			}
			return
		}
		if tooLong {
			s.reply(500, "5.5.2", fmt.Sprintf("Command line too long (max %d octets)", limit))
			continue
		}
		s.command(line)
	}
}

func (s *session) command(line string) {
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < 32 && c != '\t' || c == 127 {
			// A CR or NUL in a HELO name or address would end up in the
			// Received header or the envelope.
			s.reply(501, "5.5.2", "Control character in command")
			return
		}
	}
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	if s.refusedCommand(verb) {
		return
	}
	switch verb {
	case "EHLO", "HELO":
		s.hello(verb == "EHLO", strings.TrimSpace(arg))
	case "MAIL":
		s.mail(arg)
	case "RCPT":
		s.rcpt(arg)
	case "DATA":
		s.data(arg)
	case "BDAT":
		s.bdatCmd(arg)
	case "RSET":
		s.abortBDAT()
		s.resetTx()
		s.reply(250, "2.0.0", "Reset OK")
	case "NOOP":
		s.reply(250, "2.0.0", "OK")
	case "QUIT":
		s.abortBDAT()
		s.writeReply(221, "2.0.0", s.srv.Hostname+" closing connection")
		s.close()
	case "HELP":
		s.help()
	case "VRFY":
		// No user enumeration: the same answer for every argument.
		s.reply(252, "2.5.0", "Cannot VRFY user; send the message and it will be delivered or bounced")
	case "EXPN":
		s.reply(502, "5.5.1", "EXPN is disabled")
	case "AUTH":
		s.auth(arg)
	case "STARTTLS":
		s.starttls(arg)
	case "":
		s.reply(500, "5.5.2", "Empty command; type HELP for the commands")
	default:
		if s.bdat != nil {
			// RFC 3030: anything but BDAT/RSET/QUIT inside a chunked
			// transaction aborts it.
			s.abortBDAT()
			s.resetTx()
		}
		s.reply(500, "5.5.1", fmt.Sprintf("Command %q unrecognized; type HELP for the commands", truncate(verb, 20)))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (s *session) help() {
	s.writeReply(214, "2.0.0", "letterbox SMTP server on "+s.srv.Hostname+". Commands:",
		"  EHLO your.name        start (HELO also works)",
		"  MAIL FROM:<address>   sender (<> for bounces)",
		"  RCPT TO:<address>     a recipient (repeat for more)",
		"  DATA                  then the message, ended by a line with a single dot",
		"  BDAT size [LAST]      send the message in chunks instead of DATA",
		"  RSET NOOP QUIT        reset, do nothing, leave",
		"  STARTTLS AUTH         encrypt, log in (PLAIN, LOGIN)",
		"  VRFY and EXPN do not reveal users.",
		"End of HELP")
}

func (s *session) hello(ehlo bool, arg string) {
	if arg == "" {
		s.reply(501, "5.5.4", "Syntax: EHLO your.host.name")
		return
	}
	name, _, _ := strings.Cut(arg, " ")
	s.abortBDAT()
	s.resetTx()
	s.helo, s.esmtp = name, ehlo
	if r := s.checkHelo(name); r != nil {
		s.helo = ""
		s.replyErr(r)
		return
	}
	greet := fmt.Sprintf("%s Hello %s [%s]", s.srv.Hostname, name, s.clientIP())
	if !ehlo {
		s.writeReply(250, "", greet)
		return
	}
	ext := []string{
		"PIPELINING",
		fmt.Sprintf("SIZE %d", s.srv.MaxMessageSize),
		"8BITMIME",
		"SMTPUTF8",
		"ENHANCEDSTATUSCODES",
		"CHUNKING",
	}
	if s.srv.TLS != nil && !s.isTLS {
		ext = append(ext, "STARTTLS")
	}
	if s.authOffered() && s.authUser == "" {
		ext = append(ext, "AUTH PLAIN LOGIN")
	}
	ext = append(ext, "HELP")
	s.writeReply(250, "", greet, ext...)
}

// authOffered: plaintext passwords only over TLS or from loopback, unless
// --allow-insecure-auth.
func (s *session) authOffered() bool {
	return s.srv.Auth != nil && (s.isTLS || listen.IsLoopback(s.remote) || s.srv.AllowInsecureAuth)
}

func (s *session) resetTx() {
	s.inTx = false
	s.from = ""
	s.utf8 = false
	s.rcpts = nil
	s.bdatFail = false
	s.checkReset()
}

func cutFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func (s *session) mail(arg string) {
	if s.helo == "" {
		s.reply(503, "5.5.1", "Send EHLO (or HELO) first")
		return
	}
	if s.inTx {
		s.reply(503, "5.5.1", "Sender already given; RSET to start again")
		return
	}
	if (s.mode == ModeSubmission || s.mode == ModeSubmissions) && s.authUser == "" {
		s.reply(530, "5.7.0", "Authentication required on the submission port: AUTH first")
		return
	}
	rest, ok := cutFold(arg, "FROM:")
	if !ok {
		s.reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
		return
	}
	addr, null, params, err := address.ParsePath(rest, true)
	if err != nil {
		s.reply(501, "5.1.7", "Bad sender address syntax: "+err.Error())
		return
	}
	p, err := parseParams(params)
	if err != nil {
		s.reply(501, "5.5.4", "Bad MAIL parameters")
		return
	}
	utf8 := false
	for k, v := range p {
		switch k {
		case "SIZE":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				s.reply(501, "5.5.4", "Bad SIZE value")
				return
			}
			if n > s.srv.MaxMessageSize {
				s.reply(552, "5.3.4", fmt.Sprintf("Message size %d exceeds the maximum of %d octets", n, s.srv.MaxMessageSize))
				return
			}
		case "BODY":
			switch strings.ToUpper(v) {
			case "7BIT", "8BITMIME":
			default:
				s.reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
				return
			}
		case "SMTPUTF8":
			if v != "" {
				s.reply(501, "5.5.4", "SMTPUTF8 takes no value")
				return
			}
			utf8 = true
		case "AUTH":
			// RFC 4954 § 5: accepted and not trusted.
		default:
			s.reply(555, "5.5.4", fmt.Sprintf("MAIL parameter %s not supported", truncate(k, 20)))
			return
		}
	}
	from := ""
	if !null {
		if addr.Domain == "" {
			addr.Domain = s.srv.PrimaryDomain
		}
		from = addr.String()
		if !utf8 && !isASCII(from) {
			s.reply(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter")
			return
		}
		// The null sender is not checked: vacation and other
		// auto-replies, and MUAs sending DSNs or MDNs, must use it (RFC
		// 3834 § 3.3, RFC 5321 § 4.5.5), and it names nobody who could
		// be impersonated.
		if s.authUser != "" {
			ok, err := s.senderAllowed(from)
			if err != nil {
				s.log.Error("sender check failed", "from", from, "user", s.authUser, "err", err)
				s.reply(451, "4.3.0", "Temporary failure checking the sender, try again later")
				return
			}
			if !ok {
				// Postfix's reject_sender_login_mismatch wording, with
				// RFC 3463's 5.7.1 (delivery not authorized).
				s.log.Info("sender rejected", "from", from, "user", s.authUser, "reason", "not owned")
				s.reply(553, "5.7.1", "Sender address rejected: <"+from+"> not owned by user "+s.authUser)
				return
			}
		}
	}
	if r := s.checkMail(from, params); r != nil {
		s.replyErr(r)
		return
	}
	s.inTx, s.from, s.utf8, s.bdatFail = true, from, utf8, false
	s.reply(250, "2.1.0", "Sender <"+from+"> OK")
}

func (s *session) rcpt(arg string) {
	if !s.inTx {
		s.reply(503, "5.5.1", "Need MAIL before RCPT")
		return
	}
	rest, ok := cutFold(arg, "TO:")
	if !ok {
		s.reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
		return
	}
	addr, null, params, err := address.ParsePath(rest, true)
	if err != nil || null {
		s.log.Info("recipient rejected", "from", s.from, "rcpt", truncate(rest, 200), "reason", "syntax")
		s.reply(501, "5.1.3", "Bad recipient address syntax")
		return
	}
	if strings.TrimSpace(params) != "" {
		s.reply(555, "5.5.4", "RCPT parameters not supported")
		return
	}
	if addr.Domain == "" {
		addr.Domain = s.srv.PrimaryDomain
	}
	to := addr.String()
	if !s.utf8 && !isASCII(to) {
		s.reply(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter on MAIL")
		return
	}
	if len(s.rcpts) >= s.srv.MaxRecipients {
		s.reply(452, "4.5.3", fmt.Sprintf("Too many recipients (max %d per message)", s.srv.MaxRecipients))
		return
	}
	local := !addr.Literal && s.srv.IsLocal(addr.Domain)
	// A relay domain's users are its primary MX's business (Postfix's
	// relay_domains): anyone may send to any address there.
	relay := !local && !addr.Literal && s.srv.IsRelayDomain != nil && s.srv.IsRelayDomain(addr.Domain)
	if !local && !relay {
		if s.authUser == "" && !s.trusted {
			s.log.Info("relay denied", "from", s.from, "rcpt", to)
			s.reply(554, "5.7.1", "Relay access denied: <"+to+"> is not a local address and you are not authenticated")
			return
		}
	} else if local && s.srv.Recipients != nil {
		if err := s.srv.Recipients.Check(to); err != nil {
			s.log.Info("recipient rejected", "from", s.from, "rcpt", to, "err", err)
			switch {
			case errors.Is(err, route.ErrNoSuchUser):
				s.reply(550, "5.1.1", "No such user here: <"+to+">")
			case errors.Is(err, route.ErrBadAddress):
				s.reply(501, "5.1.3", "Bad recipient address: <"+to+">")
			case errors.Is(err, route.ErrLoop):
				s.reply(550, "5.4.6", "Alias loop for <"+to+">")
			default:
				s.reply(451, "4.3.0", "Temporary failure checking <"+to+">, try again later")
			}
			return
		}
	}
	for _, r := range s.rcpts {
		if r == to {
			s.reply(250, "2.1.5", "Recipient <"+to+"> OK (duplicate)")
			return
		}
	}
	if r := s.checkRcpt(to); r != nil {
		s.replyErr(r)
		return
	}
	s.rcpts = append(s.rcpts, to)
	s.reply(250, "2.1.5", "Recipient <"+to+"> OK")
}

func (s *session) newEnvelope() *spool.Envelope {
	env := &spool.Envelope{From: s.from, Arrived: time.Now(), AuthUser: s.authUser, Relay: s.trusted}
	if env.AuthUser == "" {
		env.AuthUser = s.srv.LocalUser
	}
	for _, r := range s.rcpts {
		env.Recipients = append(env.Recipients, &spool.Recipient{Address: r, State: spool.Pending})
	}
	env.ID = s.txID
	if env.ID == "" {
		env.ID = s.newID()
	}
	s.presetID = env.ID
	return env
}

func (s *session) data(arg string) {
	if arg != "" {
		s.reply(501, "5.5.4", "DATA takes no argument")
		return
	}
	if s.bdat != nil || s.bdatFail {
		s.reply(503, "5.5.1", "DATA not allowed after BDAT")
		return
	}
	if !s.inTx {
		s.reply(503, "5.5.1", "Need MAIL and RCPT before DATA")
		return
	}
	if len(s.rcpts) == 0 {
		s.reply(554, "5.5.1", "No valid recipients")
		return
	}
	if r := s.checkData(); r != nil {
		s.replyErr(r)
		return
	}
	s.writeReply(354, "", "Send the message, end with <CR><LF>.<CR><LF>")
	s.flush()
	env := s.newEnvelope()
	s.setState(stateData)
	dr := &dotReader{r: s.br, normalize: s.srv.BareNewline == BareNewlineNormalize}
	chk := newChecker(s.srv.MaxMessageSize, maxTextLine, s.srv.MaxReceived)
	body := io.MultiReader(strings.NewReader(s.received(env.ID)), s.ownMessage(&checkedReader{r: dr, c: chk}))
	id, err := s.submit(env, body)
	derr := dr.drain()
	s.setState(stateCommand)
	s.finishMessage(env, id, err, derr, chk)
}

// ownMessage adds Date and Message-ID when missing to a message from one
// of our users: an authenticated session, or a local user under sendmail
// -bs (plain sendmail adds them too). Mail from other hosts is passed on as
// it is, as Postfix's local_header_rewrite_clients does: their headers are
// their own business.
func (s *session) ownMessage(r io.Reader) io.Reader {
	if s.authUser == "" && s.srv.LocalUser == "" {
		return r
	}
	return submission.NewHeaderFixer(r, s.srv.Hostname, nil)
}

// finishMessage replies to the end of DATA or the last BDAT chunk.
func (s *session) finishMessage(env *spool.Envelope, id string, err, connErr error, chk *checker) {
	defer s.resetTx()
	if connErr != nil {
		// The client went away or timed out mid-message: nothing was
		// committed (the reader failed under Submit), nothing to answer.
		var ne net.Error
		switch {
		case errors.Is(connErr, errShutdown):
			s.log.Info("message aborted by shutdown", "from", s.from, "rcpts", s.rcpts)
			s.writeReply(421, "4.3.2", s.srv.Hostname+" shutting down; message not accepted, try again later")
		case errors.As(connErr, &ne) && ne.Timeout():
			s.log.Info("data timeout", "from", s.from, "rcpts", s.rcpts)
			s.writeReply(421, "4.4.2", "Timeout waiting for message data, closing connection")
		default:
			s.log.Info("connection lost during data", "from", s.from, "rcpts", s.rcpts, "err", connErr)
		}
		if err == nil && id != "" {
			// Cannot happen with a correct spool (the reader failed);
			// say so loudly if it does.
			s.log.Error("spool committed a message whose data failed", "id", id)
		}
		s.close()
		return
	}
	if chk.err != nil {
		s.log.Info("message rejected", "from", s.from, "rcpts", s.rcpts, "size", chk.size, "reason", chk.err.Text)
		if err == nil && id != "" {
			s.log.Error("spool committed a message the checker rejected", "id", id)
		}
		s.replyErr(chk.err)
		return
	}
	if s.checkRefusal(err) {
		return
	}
	if err != nil {
		s.log.Error("spool submit failed", "from", s.from, "rcpts", s.rcpts, "err", err)
		s.reply(451, "4.3.0", "Local error queueing the message, try again later")
		return
	}
	if s.presetID != "" && id != s.presetID {
		// The Received header names presetID; keep both greppable.
		s.log.Warn("spool chose another queue id than the Received header's", "id", id, "received_id", s.presetID)
	}
	s.log.Info("accepted", "id", id, "from", s.from, "rcpts", s.rcpts, "size", chk.size, "auth", s.authUser, "tls", s.isTLS)
	s.reply(250, "2.0.0", "OK: queued as "+id)
}

// bdatCmd handles one BDAT chunk (RFC 3030). The chunk always follows the
// command, so it is always read, even when the command is refused: that is
// what keeps a pipelining client in step (go-smtp issue 315).
func (s *session) bdatCmd(arg string) {
	f := strings.Fields(arg)
	var size int64 = -1
	if len(f) >= 1 && len(f) <= 2 {
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil && n >= 0 {
			size = n
		}
	}
	last := len(f) == 2 && strings.EqualFold(f[1], "LAST")
	if size < 0 || len(f) == 2 && !last {
		// Without a size we can't find the next command: give up.
		s.writeReply(501, "5.5.4", "Syntax: BDAT size [LAST]; closing connection")
		s.close()
		return
	}
	chunk := io.LimitReader(s.br, size)
	discard := func() bool {
		s.setState(stateData)
		_, err := io.Copy(io.Discard, chunk)
		s.setState(stateCommand)
		if err != nil {
			s.close()
			return false
		}
		return true
	}
	if s.bdatFail {
		if discard() {
			s.reply(503, "5.5.1", "Transaction already failed; send RSET")
		}
		return
	}
	if !s.inTx || len(s.rcpts) == 0 {
		if discard() {
			s.reply(503, "5.5.1", "Need MAIL and RCPT before BDAT")
		}
		return
	}
	if s.bdat == nil {
		if r := s.checkData(); r != nil {
			if discard() {
				s.replyErr(r)
				s.bdatFail = true
			}
			return
		}
		env := s.newEnvelope()
		pr, pw := io.Pipe()
		b := &bdatState{pw: pw, env: env, done: make(chan submitResult, 1),
			chk: newChecker(s.srv.MaxMessageSize, maxTextLine, s.srv.MaxReceived)}
		hdr := s.received(env.ID)
		data := s.ownMessage(pr)
		go func() {
			id, err := s.submit(env, io.MultiReader(strings.NewReader(hdr), data))
			pr.CloseWithError(errors.New("smtpd: submit returned"))
			b.done <- submitResult{id, err}
		}()
		s.bdat = b
	}
	b := s.bdat
	s.setState(stateData)
	buf := make([]byte, 32*1024)
	var connErr error
	for {
		n, err := chunk.Read(buf)
		if n > 0 && b.chk.err == nil {
			data := buf[:n]
			if s.srv.BareNewline == BareNewlineNormalize {
				data = b.lf.normalize(data)
			}
			b.chk.write(data)
			if b.chk.err != nil {
				b.pw.CloseWithError(b.chk.err)
			} else {
				// An error here means Submit gave up early; its own
				// error is reported below.
				b.pw.Write(data)
			}
		}
		if err == io.EOF {
			if chunk.(*io.LimitedReader).N > 0 {
				connErr = io.ErrUnexpectedEOF
			}
			break
		}
		if err != nil {
			connErr = err
			break
		}
	}
	s.setState(stateCommand)
	if connErr != nil {
		b.pw.CloseWithError(connErr)
		r := <-b.done
		s.bdat = nil
		s.finishMessage(b.env, r.id, r.err, connErr, b.chk)
		return
	}
	if b.chk.err != nil {
		// Refuse this chunk; the rest of the pipelined chunks are read
		// and refused with 503 until RSET.
		r := <-b.done
		s.bdat = nil
		s.bdatFail = true
		s.log.Info("message rejected", "from", s.from, "rcpts", s.rcpts, "size", b.chk.size, "reason", b.chk.err.Text)
		if r.err == nil && r.id != "" {
			s.log.Error("spool committed a message the checker rejected", "id", r.id)
		}
		s.replyErr(b.chk.err)
		s.resetTx()
		s.bdatFail = true
		return
	}
	if !last {
		select {
		case r := <-b.done:
			// Submit failed before the end of the data.
			s.bdat = nil
			s.log.Error("spool submit failed", "from", s.from, "rcpts", s.rcpts, "err", r.err)
			s.reply(451, "4.3.0", "Local error queueing the message, try again later")
			s.resetTx()
			s.bdatFail = true
		default:
			s.reply(250, "2.0.0", fmt.Sprintf("%d octets received", size))
		}
		return
	}
	b.chk.finish()
	if b.chk.err != nil {
		b.pw.CloseWithError(b.chk.err)
	} else {
		b.pw.Close()
	}
	r := <-b.done
	s.bdat = nil
	s.finishMessage(b.env, r.id, r.err, nil, b.chk)
}

// abortBDAT ends a chunked transaction that won't be completed (RSET, QUIT,
// EHLO, disconnect): the spool sees a failing reader and commits nothing.
func (s *session) abortBDAT() {
	if s.bdat == nil {
		return
	}
	s.bdat.pw.CloseWithError(errors.New("smtpd: chunked transaction aborted"))
	<-s.bdat.done
	s.bdat = nil
}

// received returns the trace header (RFC 5321 § 4.4) prepended to the
// message.
func (s *session) received(id string) string {
	proto := "SMTP"
	if s.esmtp {
		proto = "ESMTP"
		if s.isTLS {
			proto += "S"
		}
		if s.authUser != "" {
			proto += "A"
		}
	}
	var from string
	if s.ip == "" {
		from = fmt.Sprintf("from %s (%s)", s.helo, "local")
	} else {
		name := s.ptrResult()
		if name == "" {
			name = "unknown"
		}
		from = fmt.Sprintf("from %s (%s [%s])", s.helo, name, s.ip)
	}
	var b strings.Builder
	b.WriteString("Received: " + from + "\r\n\tby " + s.srv.Hostname + " (letterbox) with " + proto)
	if id != "" {
		b.WriteString(" id " + id)
	}
	if len(s.rcpts) == 1 {
		b.WriteString("\r\n\tfor <" + s.rcpts[0] + ">")
	}
	b.WriteString("; " + time.Now().Format(time.RFC1123Z) + "\r\n")
	return b.String()
}

// startPTR looks up the client's name in the background, so the Received
// header has it without making the client wait for DNS.
func (s *session) startPTR() {
	if s.ip == "" {
		return
	}
	s.ptr = make(chan string, 1)
	ip := s.ip
	look := s.srv.ReverseLookup
	go func() {
		if look != nil {
			s.ptr <- look(ip)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		names, err := net.DefaultResolver.LookupAddr(ctx, ip)
		if err != nil || len(names) == 0 {
			s.ptr <- ""
			return
		}
		s.ptr <- strings.TrimSuffix(names[0], ".")
	}()
}

func (s *session) ptrResult() string {
	if s.ptr != nil {
		s.ptrName = <-s.ptr
		s.ptr = nil
	}
	return s.ptrName
}

func (s *session) starttls(arg string) {
	if s.srv.TLS == nil {
		s.reply(502, "5.5.1", "STARTTLS not available (no tls-cert configured)")
		return
	}
	if s.isTLS {
		s.reply(503, "5.5.1", "Already in TLS")
		return
	}
	if strings.TrimSpace(arg) != "" {
		s.reply(501, "5.5.4", "STARTTLS takes no argument")
		return
	}
	s.abortBDAT()
	s.writeReply(220, "2.0.0", "Ready to start TLS")
	s.flush()
	if s.closed {
		return
	}
	s.mu.Lock()
	raw := s.conn
	s.mu.Unlock()
	raw.SetReadDeadline(time.Now().Add(s.srv.CommandTimeout))
	tc := tls.Server(raw, s.srv.TLS)
	if err := tc.Handshake(); err != nil {
		s.log.Info("STARTTLS handshake failed", "err", err)
		s.closed = true
		raw.Close()
		return
	}
	s.mu.Lock()
	s.conn = tc
	s.mu.Unlock()
	// A new reader: whatever the client sent in plaintext after STARTTLS
	// (and we had already buffered) is dropped, not run as if it came
	// over TLS (CVE-2011-0411).
	s.br = bufio.NewReaderSize(connReader{s}, readBufSize)
	s.bw = bufio.NewWriterSize(tc, 4096)
	s.isTLS = true
	s.checkTLS(tc.ConnectionState())
	// RFC 3207 § 4.2: forget everything learnt before TLS.
	s.helo, s.esmtp, s.authUser = "", false, ""
	s.resetTx()
	s.log.Info("TLS started", "version", tls.VersionName(tc.ConnectionState().Version))
}

func (s *session) auth(arg string) {
	if !s.esmtp {
		s.reply(503, "5.5.1", "Send EHLO first")
		return
	}
	if s.authUser != "" {
		s.reply(503, "5.5.1", "Already authenticated")
		return
	}
	if s.inTx {
		s.reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
		return
	}
	if s.srv.Auth == nil {
		s.reply(502, "5.5.1", "AUTH not available")
		return
	}
	if !s.authOffered() {
		s.reply(538, "5.7.11", "Encryption required: use STARTTLS before AUTH")
		return
	}
	f := strings.Fields(arg)
	if len(f) < 1 || len(f) > 2 {
		s.reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
		return
	}
	var user string
	check := func(u, p string) error {
		user = u
		return s.srv.Auth.Authenticate(u, p)
	}
	var srv sasl.Server
	switch strings.ToUpper(f[0]) {
	case "PLAIN":
		srv = sasl.NewPlainServer(func(identity, u, p string) error {
			if identity != "" && identity != u {
				user = u
				return errors.New("authorization identity differs")
			}
			return check(u, p)
		})
	case "LOGIN":
		srv = newLoginServer(check)
	default:
		s.reply(504, "5.5.4", "Unsupported mechanism; use PLAIN or LOGIN")
		return
	}
	var resp []byte
	if len(f) == 2 {
		if f[1] == "=" {
			resp = []byte{}
		} else {
			b, err := base64.StdEncoding.DecodeString(f[1])
			if err != nil {
				s.reply(501, "5.5.2", "Bad base64 in initial response")
				return
			}
			resp = b
		}
	}
	for {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			s.authFailed(user, err)
			return
		}
		if done {
			break
		}
		s.writeReply(334, "", base64.StdEncoding.EncodeToString(challenge))
		line, tooLong, rerr := s.readLine(maxAuthLine)
		if rerr != nil {
			s.close()
			return
		}
		if tooLong {
			s.reply(500, "5.5.6", "Authentication exchange line too long")
			return
		}
		if line == "*" {
			s.reply(501, "5.0.0", "Authentication cancelled")
			return
		}
		b, derr := base64.StdEncoding.DecodeString(line)
		if derr != nil {
			s.reply(501, "5.5.2", "Bad base64 in response")
			return
		}
		resp = b
	}
	s.authUser = user
	s.log.Info("auth ok", "user", user)
	s.reply(235, "2.7.0", "Authentication successful")
}

func (s *session) authFailed(user string, err error) {
	s.authFail++
	s.log.Info("auth failed", "user", truncate(user, 100), "failures", s.authFail, "err", err)
	if s.srv.AuthFailureDelay > 0 {
		// Slow down password guessing, one failure at a time.
		s.flush()
		time.Sleep(s.srv.AuthFailureDelay)
	}
	if s.authFail >= s.srv.MaxAuthFailures {
		s.writeReply(421, "4.7.0", "Too many authentication failures, closing connection")
		s.close()
		return
	}
	s.reply(535, "5.7.8", "Authentication credentials invalid")
}

// senderAllowed applies the rule to MAIL FROM of an authenticated session;
// from is the canonical address (not empty). Without Senders only the
// user's own address is allowed.
func (s *session) senderAllowed(from string) (bool, error) {
	if s.srv.Senders != nil {
		return s.srv.Senders.Owns(s.authUser, from)
	}
	a, err := address.Parse(from)
	if err != nil || a.Literal || a.CheckLimits() != nil {
		return false, nil
	}
	return submission.OwnsAddress(s.authUser, a.Local, a.Domain), nil
}
