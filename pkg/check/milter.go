package check

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	milter "github.com/d--j/go-milter"
)

// MilterSpec is one milter: `inet:HOST:PORT` or `unix:PATH` (Postfix's
// notation), optionally followed by ` default-action=tempfail|accept` and
// ` timeout=DURATION`, which override milter-default-action and
// milter-timeout for it.
type MilterSpec struct {
	Network, Address string
	DefaultAction    string
	Timeout          time.Duration
}

func (m MilterSpec) String() string {
	if m.Network == "unix" {
		return "unix:" + m.Address
	}
	return "inet:" + m.Address
}

// ParseMilter reads a milter's specification.
func ParseMilter(s string) (MilterSpec, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return MilterSpec{}, errors.New("check: empty milter")
	}
	var m MilterSpec
	kind, addr, _ := strings.Cut(f[0], ":")
	switch kind {
	case "inet", "inet6":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return m, fmt.Errorf("check: milter %q: want inet:HOST:PORT", s)
		}
		m.Network, m.Address = "tcp", addr
	case "unix", "local":
		if addr == "" {
			return m, fmt.Errorf("check: milter %q: want unix:PATH", s)
		}
		m.Network, m.Address = "unix", addr
	default:
		return m, fmt.Errorf("check: milter %q: want inet:HOST:PORT or unix:PATH", s)
	}
	for _, o := range f[1:] {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "default-action":
			if v != "tempfail" && v != "accept" {
				return m, fmt.Errorf("check: milter %q: default-action=%s: want tempfail or accept", s, v)
			}
			m.DefaultAction = v
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return m, fmt.Errorf("check: milter %q: timeout=%s: want a duration", s, v)
			}
			m.Timeout = d
		default:
			return m, fmt.Errorf("check: milter %q: unknown option %q", s, o)
		}
	}
	return m, nil
}

// Postfix's default macros per stage (postconf -d milter_*_macros), sent
// unless the milter asks for others during negotiation.
var postfixMacros = [][]milter.MacroName{
	milter.StageConnect: {milter.MacroMTAFQDN, milter.MacroDaemonName, milter.MacroDaemonAddr, milter.MacroMTAVersion, milter.MacroRFC1413AuthInfo},
	milter.StageHelo:    {milter.MacroTlsVersion, milter.MacroCipher, milter.MacroCipherBits, milter.MacroCertSubject, milter.MacroCertIssuer},
	milter.StageMail:    {milter.MacroQueueId, milter.MacroAuthType, milter.MacroAuthAuthen, milter.MacroAuthAuthor, milter.MacroMailAddr, milter.MacroMailHost, milter.MacroMailMailer},
	milter.StageRcpt:    {milter.MacroQueueId, milter.MacroRcptAddr, milter.MacroRcptHost, milter.MacroRcptMailer},
	milter.StageData:    {milter.MacroQueueId},
	milter.StageEOM:     {milter.MacroQueueId},
	milter.StageEOH:     {milter.MacroQueueId},
}

// milterActions are the modifications we carry out, all of them.
const milterActions = milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt | milter.OptRemoveRcpt |
	milter.OptChangeHeader | milter.OptQuarantine | milter.OptChangeFrom | milter.OptAddRcptWithArgs | milter.OptSetMacros

type milterClient struct {
	spec     MilterSpec
	maxTotal int64
}

func newMilterClient(spec MilterSpec, maxMessage int64) *milterClient {
	return &milterClient{spec: spec, maxTotal: 2*maxMessage + 1<<20}
}

// session connects to the milter and negotiates (one milter session per
// SMTP connection, as Postfix does).
func (mc *milterClient) session(macros milter.Macros) (*milterSession, error) {
	d := &framedDialer{timeout: mc.spec.Timeout, maxTotal: mc.maxTotal}
	opts := []milter.Option{
		milter.WithDialer(d),
		milter.WithReadTimeout(mc.spec.Timeout),
		milter.WithWriteTimeout(mc.spec.Timeout),
		milter.WithActions(milterActions),
		milter.WithoutDefaultMacros(),
	}
	for stage, names := range postfixMacros {
		opts = append(opts, milter.WithMacroRequest(milter.MacroStage(stage), names))
	}
	s, err := milter.NewClient(mc.spec.Network, mc.spec.Address, opts...).Session(macros)
	if err != nil {
		if d.conn != nil {
			d.conn.Close()
		}
		return nil, err
	}
	return &milterSession{m: mc, s: s, conn: d.conn}, nil
}

// framedDialer gives go-milter connections that check the milter
// protocol's framing before the library sees it: a packet may not be empty
// (go-milter indexes its first byte) nor larger than maxPacket, and the
// packets read between two resets may not exceed maxTotal in all (a body
// replacement is held in memory until the end of the message). So a
// milter answering nonsense gets an error, never our memory.
type framedDialer struct {
	timeout  time.Duration
	maxTotal int64
	conn     *framedConn // the one connection it made
}

// maxPacket: the largest body chunk a milter may send is 1 MiB (SMFIC_BODY
// with the 1M option), plus its code.
const maxPacket = 1<<20 + 64

func (d *framedDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, d.timeout)
	if err != nil {
		return nil, err
	}
	d.conn = &framedConn{Conn: c, maxTotal: d.maxTotal}
	return d.conn, nil
}

type framedConn struct {
	net.Conn
	maxTotal int64

	mu     sync.Mutex
	hdr    [4]byte
	hdrN   int
	remain uint32 // octets of the current packet still to come
	total  int64
}

var errMilterFraming = errors.New("milter: malformed packet (empty or too large)")

func (c *framedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.remain == 0 {
		// Reading a length: hand out at most the rest of it, and check it.
		if len(p) > 4-c.hdrN {
			p = p[:4-c.hdrN]
		}
		n, err := c.Conn.Read(p)
		copy(c.hdr[c.hdrN:], p[:n])
		c.hdrN += n
		if c.hdrN == 4 {
			c.hdrN = 0
			l := binary.BigEndian.Uint32(c.hdr[:])
			if l == 0 || l > maxPacket {
				c.Conn.Close()
				return 0, errMilterFraming
			}
			c.remain = l
			c.total += int64(l)
			if c.total > c.maxTotal {
				c.Conn.Close()
				return 0, fmt.Errorf("milter: more than %d octets of replies for one message", c.maxTotal)
			}
		}
		return n, err
	}
	if uint32(len(p)) > c.remain {
		p = p[:c.remain]
	}
	n, err := c.Conn.Read(p)
	c.remain -= uint32(n)
	return n, err
}

// resetTotal starts the count of a new message's replies.
func (c *framedConn) resetTotal() {
	c.mu.Lock()
	c.total = 0
	c.mu.Unlock()
}

// milterSession is one milter's session for one SMTP connection.
type milterSession struct {
	m        *milterClient
	s        *milter.ClientSession
	conn     *framedConn
	dead     bool // failed: its default action was applied; nothing more is sent
	accepted bool // it accepted the connection: nothing more is sent
	msgDone  bool // it accepted (or discarded) this message: nothing more about it
	inTx     bool // between MAIL and the end of the message
}

func (ms *milterSession) name() string { return ms.m.spec.String() }

// active reports whether the milter still gets events of the current
// message.
func (ms *milterSession) active() bool { return !ms.dead && !ms.accepted && !ms.msgDone }

// replyVerdict turns a milter's reject or tempfail into the reply: its own
// code and text (SMFIR_REPLYCODE, possibly multi-line: joined), else
// Sendmail's and Postfix's wording.
func replyVerdict(act *milter.Action) *Verdict {
	switch act.Type {
	case milter.ActionReject:
		return verdict(550, "5.7.1", "Command rejected")
	case milter.ActionTempFail:
		return tempfail()
	}
	code := int(act.SMTPCode)
	if code < 400 || code > 599 {
		code = 550
	}
	var texts []string
	enh := ""
	for _, line := range strings.Split(act.SMTPReply, "\n") {
		line = strings.TrimRight(line, "\r")
		if len(line) >= 4 && strconv.Itoa(code) == line[:3] {
			line = line[4:]
		}
		if f := strings.Fields(line); len(f) > 0 && isEnhanced(f[0], code) {
			if enh == "" {
				enh = f[0]
			}
			line = strings.TrimSpace(line[len(f[0]):])
		}
		if line != "" {
			texts = append(texts, line)
		}
	}
	if enh == "" {
		enh = fmt.Sprintf("%d.7.1", code/100)
	}
	text := printable(strings.Join(texts, " "), 400)
	if text == "" {
		text = "Message rejected"
	}
	return verdict(code, enh, "%s", text)
}

// isEnhanced reports whether s is an enhanced status code (RFC 3463) of
// the class of code.
func isEnhanced(s string, code int) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || p[0] != strconv.Itoa(code/100) {
		return false
	}
	for _, x := range p[1:] {
		if _, err := strconv.Atoi(x); err != nil || len(x) > 3 {
			return false
		}
	}
	return true
}
