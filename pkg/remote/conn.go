package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
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

// deadlineConn puts a deadline on every write while block > 0, because
// go-smtp sets none while the message data is written (RFC 5321 §4.5.3.2.5:
// 3 minutes per data block).
type deadlineConn struct {
	net.Conn
	block atomic.Int64
}

func (d *deadlineConn) Write(b []byte) (int, error) {
	if t := time.Duration(d.block.Load()); t > 0 {
		d.Conn.SetWriteDeadline(time.Now().Add(t))
	}
	return d.Conn.Write(b)
}

// greetedConn replays a synthetic greeting to go-smtp's Client: we read the
// real greeting (and did EHLO and STARTTLS) ourselves, since go-smtp's
// STARTTLS entry point would greet as "localhost" and hides the handshake.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (g *greetedConn) Read(b []byte) (int, error) { return g.r.Read(b) }

// conn is one SMTP session, ready for MAIL.
type conn struct {
	c        *smtp.Client
	dc       *deadlineConn
	host     string // name as we looked it up, for messages
	ip       netip.Addr
	tls      bool
	key      string
	lastUsed time.Time
	msgs     int
}

// who names the peer in messages: "mx.example.com[192.0.2.1]".
func (cn *conn) who() string { return who(cn.host, cn.ip) }

func who(host string, ip netip.Addr) string {
	if host == ip.String() {
		return "[" + host + "]"
	}
	return host + "[" + ip.String() + "]"
}

func (cn *conn) close() { cn.c.Close() }

// quit ends the session politely, without waiting long.
func (cn *conn) quit() {
	cn.dc.Conn.SetDeadline(time.Now().Add(2 * time.Second))
	if cn.c.Quit() != nil {
		cn.c.Close()
	}
}

// replyError turns a reply into a hostError quoting it.
func replyError(host string, ip netip.Addr, stage string, err error) *hostError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return &hostError{Code: se.Code, Status: statusOf(se), Msg: fmt.Sprintf("%s said: %s (in reply to %s)", who(host, ip), replyText(se), stage)}
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return &hostError{Code: te.Code, Status: synthStatus(te.Code), Msg: fmt.Sprintf("%s said: %d %s (in reply to %s)", who(host, ip), te.Code, oneLine(te.Msg), stage)}
	}
	return &hostError{Status: "4.4.2", Msg: fmt.Sprintf("%s: %s: %v", who(host, ip), stage, err)}
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ") }

// replyText is the reply as the peer wrote it: "550 5.1.1 user unknown".
func replyText(se *smtp.SMTPError) string {
	if hasEnhanced(se) {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], oneLine(se.Message))
	}
	return fmt.Sprintf("%d %s", se.Code, oneLine(se.Message))
}

func hasEnhanced(se *smtp.SMTPError) bool {
	e := se.EnhancedCode
	return e[0] >= 2 && e[0] <= 5 && e[1] >= 0 && e[2] >= 0
}

// statusOf is the enhanced status of a reply, synthesised from the reply
// code when the peer gave none (RFC 3463 generic codes).
func statusOf(se *smtp.SMTPError) string {
	if hasEnhanced(se) && se.EnhancedCode[0] == se.Code/100 {
		return fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return synthStatus(se.Code)
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

	br := bufio.NewReader(nc)
	tp := textproto.NewConn(struct {
		io.Reader
		io.WriteCloser
	}{br, nc})
	nc.SetDeadline(time.Now().Add(cl.cfg.Timeouts.Greeting))
	if _, _, err := tp.ReadResponse(220); err != nil {
		return fail(replyError(host, ip, "initial greeting", err))
	}
	nc.SetDeadline(time.Now().Add(cl.cfg.Timeouts.Command))
	startTLS := false
	if err := tp.PrintfLine("EHLO %s", cl.cfg.Helo); err != nil {
		return fail(replyError(host, ip, "EHLO", err))
	}
	_, msg, err := tp.ReadResponse(250)
	if err != nil {
		var te *textproto.Error
		if !errors.As(err, &te) || te.Code/100 == 4 || te.Code == 421 {
			return fail(replyError(host, ip, "EHLO", err))
		}
		// 5xx: an old server; go-smtp falls back to HELO below.
	} else {
		for _, l := range strings.Split(msg, "\n")[1:] {
			if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "STARTTLS") {
				startTLS = true
			}
		}
	}

	var nextConn net.Conn = nc
	var rest io.Reader = br
	isTLS := false
	switch {
	case startTLS && !plain:
		if err := tp.PrintfLine("STARTTLS"); err != nil {
			return fail(replyError(host, ip, "STARTTLS", err))
		}
		if _, _, err := tp.ReadResponse(220); err != nil {
			e := replyError(host, ip, "STARTTLS", err)
			if policy != TLSMay {
				return fail(e)
			}
			break // the session goes on in plaintext
		}
		if br.Buffered() > 0 {
			// Bytes sent before the handshake must not be read as if
			// they came through TLS (the CVE-2011-0411 class).
			return fail(&hostError{Status: "4.7.0", Msg: fmt.Sprintf("%s: data after STARTTLS reply before the TLS handshake", who(host, ip))})
		}
		cfg := &tls.Config{ServerName: strings.TrimSuffix(host, "."), MinVersion: tls.VersionTLS12}
		if policy == TLSVerify {
			cfg.RootCAs = cl.cfg.RootCAs
		} else {
			cfg.InsecureSkipVerify = true // opportunistic: any certificate beats plaintext
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(&hostError{Status: "4.7.5", Msg: fmt.Sprintf("TLS handshake with %s failed: %v", who(host, ip), err), tlsFailed: true})
		}
		nextConn, rest, isTLS = tc, tc, true
	case policy != TLSMay:
		return fail(&hostError{Status: "4.7.4", Msg: fmt.Sprintf("%s offers no STARTTLS and the TLS policy is %s", who(host, ip), policy)})
	}
	nc.SetDeadline(time.Time{})

	dc := &deadlineConn{Conn: nextConn}
	// go-smtp reads its greeting from here, then everything else from the
	// connection (through the buffer in plaintext, so no byte is lost).
	rd := io.MultiReader(strings.NewReader("220 resumed\r\n"), rest)
	sc := smtp.NewClient(&greetedConn{Conn: dc, r: rd})
	sc.CommandTimeout = cl.cfg.Timeouts.Command
	sc.SubmissionTimeout = cl.cfg.Timeouts.DataEnd
	cn := &conn{c: sc, dc: dc, host: host, ip: ip, tls: isTLS}
	if err := sc.Hello(cl.cfg.Helo); err != nil {
		return fail(replyError(host, ip, "EHLO", err))
	}
	if creds != nil {
		if !authAllowed(isTLS, ip) {
			return fail(&hostError{Status: "4.7.10", Msg: fmt.Sprintf("not sending credentials to %s without TLS", who(host, ip))})
		}
		var a sasl.Client
		switch {
		case sc.SupportsAuth(sasl.Plain):
			a = sasl.NewPlainClient("", creds.Username, creds.Password)
		case sc.SupportsAuth(sasl.Login):
			a = sasl.NewLoginClient(creds.Username, creds.Password)
		default:
			return fail(&hostError{Status: "4.7.12", Msg: fmt.Sprintf("%s offers no AUTH PLAIN or LOGIN", who(host, ip))})
		}
		if err := sc.Auth(a); err != nil {
			// A refused login is our configuration's fault, not the
			// message's: keep the mail queued (Postfix's soft bounce).
			e := replyError(host, ip, "AUTH", err)
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
