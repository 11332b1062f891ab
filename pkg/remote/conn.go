package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
)

// hostError is why one host could not take the message; the next host is
// tried. Code is the reply code if the host answered.
type hostError struct {
	Code   int
	Status string
	Msg    string
	// tlsFailed: the TLS handshake failed; under policy may the same host
	// is tried again in plaintext.
	tlsFailed bool
}

func (e *hostError) Error() string { return e.Msg }

// Reply limits. RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; we
// take up to the reader's buffer (as go-smtp's client allowed 2000) so a
// verbose server still works, but a peer streaming an endless line or
// reply cannot make us buffer without bound.
const (
	readBufSize   = 4096
	maxReplyLines = 500
)

// reply is one SMTP reply, multiline ones joined.
type reply struct {
	code   int
	status string   // the enhanced status code the peer gave ("5.1.1"), or ""
	lines  []string // each line's text after the code (and after the enhanced status)
}

// text is the reply's text on one line.
func (r reply) text() string { return strings.TrimSpace(strings.Join(r.lines, " ")) }

// String is the reply as the peer wrote it: "550 5.1.1 user unknown".
func (r reply) String() string {
	if r.status != "" {
		return fmt.Sprintf("%d %s %s", r.code, r.status, r.text())
	}
	return fmt.Sprintf("%d %s", r.code, r.text())
}

func (r reply) positive() bool { return r.code >= 200 && r.code < 300 }

// errProtocol marks replies we cannot parse: the session is unusable.
var errProtocol = errors.New("malformed reply")

// deadlineWriter puts a write deadline of *d on every write, so that a
// peer that stops reading cannot hold us: RFC 5321 §4.5.3.2 gives each
// command and each block of message data its own limit.
type deadlineWriter struct {
	c net.Conn
	d *time.Duration
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(*w.d))
	return w.c.Write(b)
}

// conn is one SMTP session: the client side of RFC 5321 with the
// extensions we use (STARTTLS, AUTH, PIPELINING, SIZE, 8BITMIME, SMTPUTF8).
// We speak it ourselves rather than through go-smtp's Client because that
// client waits for each reply before sending the next command (no RFC 2920
// pipelining) and adds BODY=8BITMIME to every message.
type conn struct {
	nc       net.Conn // the TCP connection: closing it aborts whatever is in flight
	c        net.Conn // what the session runs over: nc, or TLS on nc
	br       *bufio.Reader
	bw       *bufio.Writer
	wt       time.Duration     // write deadline of the writes under way
	ext      map[string]string // EHLO keywords in upper case → their parameters
	t        Timeouts
	host     string // name as we looked it up, for messages
	ip       netip.Addr
	tls      bool
	key      string
	lastUsed time.Time
	msgs     int
}

func newConn(nc net.Conn, host string, ip netip.Addr, t Timeouts) *conn {
	cn := &conn{nc: nc, host: host, ip: ip, t: t, ext: map[string]string{}}
	cn.setTransport(nc)
	return cn
}

// setTransport makes the session read and write through c. The buffers are
// new, so nothing read before a TLS handshake is taken as protected.
func (cn *conn) setTransport(c net.Conn) {
	cn.c = c
	cn.br = bufio.NewReaderSize(c, readBufSize)
	cn.bw = bufio.NewWriterSize(deadlineWriter{c: c, d: &cn.wt}, 32<<10)
}

// who names the peer in messages: "mx.example.com[192.0.2.1]".
func (cn *conn) who() string { return who(cn.host, cn.ip) }

func who(host string, ip netip.Addr) string {
	if host == ip.String() {
		return "[" + host + "]"
	}
	return host + "[" + ip.String() + "]"
}

func (cn *conn) has(ext string) bool { _, ok := cn.ext[ext]; return ok }

// maxSize is the peer's SIZE limit; 0 = none announced.
func (cn *conn) maxSize() int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(cn.ext["SIZE"]), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func (cn *conn) close() { cn.nc.Close() }

// quit ends the session politely, without waiting long.
func (cn *conn) quit() {
	cn.nc.SetDeadline(time.Now().Add(2 * time.Second))
	if r, err := cn.cmd(2*time.Second, "QUIT"); err == nil && r.code == 221 {
		cn.c.Close()
		return
	}
	cn.nc.Close()
}

// send writes one command line (flushed by the caller or by cmd).
func (cn *conn) send(line string) error {
	if strings.ContainsAny(line, "\r\n") {
		// Checked in Deliver already; this guards the protocol itself.
		return fmt.Errorf("command %q contains a line break", line)
	}
	cn.bw.WriteString(line)
	_, err := cn.bw.WriteString("\r\n")
	return err
}

// cmd sends one command and reads its reply; timeout bounds both.
func (cn *conn) cmd(timeout time.Duration, line string) (reply, error) {
	cn.wt = timeout
	if err := cn.send(line); err != nil {
		return reply{}, err
	}
	if err := cn.bw.Flush(); err != nil {
		return reply{}, err
	}
	return cn.read(timeout)
}

// read reads one reply, within timeout.
func (cn *conn) read(timeout time.Duration) (reply, error) {
	cn.c.SetReadDeadline(time.Now().Add(timeout))
	defer cn.c.SetReadDeadline(time.Time{})
	var r reply
	for n := 0; ; n++ {
		b, err := cn.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return reply{}, fmt.Errorf("%w: a reply line longer than %d octets", errProtocol, readBufSize)
		}
		if err != nil {
			return reply{}, err
		}
		if n >= maxReplyLines {
			return reply{}, fmt.Errorf("%w: more than %d reply lines", errProtocol, maxReplyLines)
		}
		line := strings.TrimRight(string(b), "\r\n")
		code, more, text, ok := parseReplyLine(line)
		if !ok {
			return reply{}, fmt.Errorf("%w: %q", errProtocol, truncate(line, 80))
		}
		if n == 0 {
			r.code = code
			if st, rest, ok := cutStatus(text); ok {
				r.status, text = st, rest
			}
		} else {
			if code != r.code {
				return reply{}, fmt.Errorf("%w: code %d inside a %d reply", errProtocol, code, r.code)
			}
			// RFC 2034 repeats the enhanced status on every line.
			if st, rest, ok := cutStatus(text); ok && st == r.status {
				text = rest
			}
		}
		r.lines = append(r.lines, text)
		if !more {
			return r, nil
		}
	}
}

// parseReplyLine splits "250-text" / "250 text" / "250".
func parseReplyLine(line string) (code int, more bool, text string, ok bool) {
	if len(line) < 3 || line[0] < '2' || line[0] > '5' || !isDigit(line[1]) || !isDigit(line[2]) {
		return 0, false, "", false
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	if len(line) == 3 {
		return code, false, "", true
	}
	switch line[3] {
	case '-':
		return code, true, line[4:], true
	case ' ':
		return code, false, line[4:], true
	}
	return 0, false, "", false
}

// cutStatus takes an RFC 3463 enhanced status code off the front of text.
func cutStatus(text string) (status, rest string, ok bool) {
	word, rest, _ := strings.Cut(text, " ")
	parts := strings.Split(word, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return "", text, false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return "", text, false
		}
		for i := 0; i < len(p); i++ {
			if !isDigit(p[i]) {
				return "", text, false
			}
		}
	}
	return word, rest, true
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// replyError turns a refusal into a hostError quoting it.
func (cn *conn) replyError(stage string, r reply) *hostError {
	return &hostError{Code: r.code, Status: statusOf(r), Msg: fmt.Sprintf("%s said: %s (in reply to %s)", cn.who(), r, stage)}
}

// ioError is a hostError for a session that broke (no reply, or a reply
// we could not read).
func (cn *conn) ioError(stage string, err error) *hostError {
	return &hostError{Status: "4.4.2", Msg: fmt.Sprintf("%s: %s: %v", cn.who(), stage, unwrapOp(err))}
}

// statusOf is the enhanced status of a reply, synthesised from the reply
// code when the peer gave none or one of another class (RFC 3463 generic codes).
func statusOf(r reply) string {
	if r.status != "" && int(r.status[0]-'0') == r.code/100 {
		return r.status
	}
	return synthStatus(r.code)
}

func synthStatus(code int) string {
	switch code {
	case 421:
		return "4.4.2"
	case 450, 550:
		return fmt.Sprintf("%d.1.1", code/100)
	case 452:
		return "4.5.3"
	case 552:
		return "5.3.4"
	case 553:
		return "5.1.3"
	}
	if code >= 200 && code < 600 {
		return fmt.Sprintf("%d.0.0", code/100)
	}
	return "4.0.0"
}

// hello sends EHLO and records the extensions; a server that refuses EHLO
// with 5xx predates ESMTP and gets HELO (RFC 5321 §3.2).
func (cn *conn) hello(name string) *hostError {
	r, err := cn.cmd(cn.t.Command, "EHLO "+name)
	if err != nil {
		return cn.ioError("EHLO", err)
	}
	if r.positive() {
		cn.ext = map[string]string{}
		for _, l := range r.lines[1:] {
			kw, param, _ := strings.Cut(strings.TrimSpace(l), " ")
			kw = strings.ToUpper(kw)
			if a, rest, ok := strings.Cut(kw, "="); ok && a == "AUTH" {
				// "AUTH=LOGIN PLAIN", as old Postfix and Exim write it
				// for broken Outlook clients.
				kw, param = "AUTH", strings.TrimSpace(rest+" "+param)
				if p, ok := cn.ext["AUTH"]; ok {
					param = p + " " + param
				}
			}
			if kw != "" {
				cn.ext[kw] = param
			}
		}
		return nil
	}
	if r.code/100 != 5 {
		return cn.replyError("EHLO", r)
	}
	r, err = cn.cmd(cn.t.Command, "HELO "+name)
	if err != nil {
		return cn.ioError("HELO", err)
	}
	if !r.positive() {
		return cn.replyError("HELO", r)
	}
	cn.ext = map[string]string{}
	return nil
}

// supportsAuth: the peer offers the SASL mechanism.
func (cn *conn) supportsAuth(mech string) bool {
	for _, m := range strings.Fields(cn.ext["AUTH"]) {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// auth runs an RFC 4954 exchange with the SASL client a.
func (cn *conn) auth(a sasl.Client) *hostError {
	enc := base64.StdEncoding
	mech, resp, err := a.Start()
	if err != nil {
		return &hostError{Status: "4.7.8", Msg: fmt.Sprintf("AUTH %s with %s: %v", mech, cn.who(), err)}
	}
	line := "AUTH " + mech
	switch {
	case len(resp) > 0:
		line += " " + enc.EncodeToString(resp)
	case resp != nil:
		line += " =" // an empty initial response
	}
	for {
		r, err := cn.cmd(cn.t.Command, line)
		if err != nil {
			return cn.ioError("AUTH", err)
		}
		switch {
		case r.code == 235:
			return nil
		case r.code != 334:
			return cn.replyError("AUTH", r)
		}
		challenge, err := enc.DecodeString(strings.Join(r.lines, ""))
		if err == nil {
			resp, err = a.Next(challenge)
		}
		if err != nil {
			// Cancel the exchange (RFC 4954 §4); its reply does not
			// matter, since a failed AUTH ends the session.
			cn.cmd(cn.t.Command, "*")
			return &hostError{Status: "4.7.8", Msg: fmt.Sprintf("AUTH %s with %s: %v", mech, cn.who(), err)}
		}
		line = enc.EncodeToString(resp)
	}
}

// dial opens a session with one address of one host: greeting, EHLO,
// STARTTLS per policy, EHLO again, AUTH when creds are given. plain forces
// no STARTTLS (the retry after a failed opportunistic handshake).
func (cl *Client) dial(ctx context.Context, host string, ip netip.Addr, port int, policy string, creds *Credentials, plain bool) (*conn, error) {
	addr := netip.AddrPortFrom(ip, uint16(port)).String()
	d := net.Dialer{Timeout: cl.cfg.Timeouts.Connect}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &hostError{Status: "4.4.1", Msg: fmt.Sprintf("connect to %s:%d: %v", who(host, ip), port, unwrapOp(err))}
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	fail := func(e *hostError) (*conn, error) {
		nc.Close()
		return nil, e
	}

	cn := newConn(nc, host, ip, cl.cfg.Timeouts)
	r, err := cn.read(cl.cfg.Timeouts.Greeting)
	if err != nil {
		return fail(cn.ioError("initial greeting", err))
	}
	if r.code != 220 {
		return fail(cn.replyError("initial greeting", r))
	}
	if e := cn.hello(cl.cfg.Helo); e != nil {
		return fail(e)
	}

	switch {
	case cn.has("STARTTLS") && !plain:
		r, err := cn.cmd(cl.cfg.Timeouts.Command, "STARTTLS")
		if err != nil {
			return fail(cn.ioError("STARTTLS", err))
		}
		if r.code != 220 {
			e := cn.replyError("STARTTLS", r)
			if policy != TLSMay {
				return fail(e)
			}
			break // the session goes on in plaintext
		}
		if cn.br.Buffered() > 0 {
			// Bytes sent before the handshake must not be read as if
			// they came through TLS (the CVE-2011-0411 class).
			return fail(&hostError{Status: "4.7.0", Msg: fmt.Sprintf("%s: data after STARTTLS reply before the TLS handshake", cn.who())})
		}
		cfg := &tls.Config{ServerName: strings.TrimSuffix(host, "."), MinVersion: tls.VersionTLS12}
		if policy == TLSVerify {
			cfg.RootCAs = cl.cfg.RootCAs
		} else {
			cfg.InsecureSkipVerify = true // opportunistic: any certificate beats plaintext
		}
		tc := tls.Client(nc, cfg)
		nc.SetDeadline(time.Now().Add(cl.cfg.Timeouts.Command))
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(&hostError{Status: "4.7.5", Msg: fmt.Sprintf("TLS handshake with %s failed: %v", cn.who(), err), tlsFailed: true})
		}
		nc.SetDeadline(time.Time{})
		cn.setTransport(tc)
		cn.tls = true
		// RFC 3207 §4.2: forget what the plaintext EHLO said.
		if e := cn.hello(cl.cfg.Helo); e != nil {
			return fail(e)
		}
	case policy != TLSMay:
		return fail(&hostError{Status: "4.7.4", Msg: fmt.Sprintf("%s offers no STARTTLS and the TLS policy is %s", cn.who(), policy)})
	}

	if creds != nil {
		if !authAllowed(cn.tls, ip) {
			return fail(&hostError{Status: "4.7.10", Msg: fmt.Sprintf("not sending credentials to %s without TLS", cn.who())})
		}
		var a sasl.Client
		switch {
		case cn.supportsAuth(sasl.Plain):
			a = sasl.NewPlainClient("", creds.Username, creds.Password)
		case cn.supportsAuth(sasl.Login):
			a = sasl.NewLoginClient(creds.Username, creds.Password)
		default:
			return fail(&hostError{Status: "4.7.12", Msg: fmt.Sprintf("%s offers no AUTH PLAIN or LOGIN", cn.who())})
		}
		if e := cn.auth(a); e != nil {
			// A refused login is our configuration's fault, not the
			// message's: keep the mail queued (Postfix's soft bounce).
			e.Status = "4.7.8"
			return fail(e)
		}
	}
	return cn, nil
}

// unwrapOp drops net.OpError's "dial tcp a->b:" prefix, since we name the host.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// authAllowed: credentials go only over TLS, or to loopback where nobody
// can listen in (DESIGN.md: plaintext AUTH only over TLS or from loopback).
func authAllowed(isTLS bool, ip netip.Addr) bool { return isTLS || ip.IsLoopback() }
