package check

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	milter "github.com/d--j/go-milter"
	"github.com/emersion/go-msgauth/authres"

	"letterbox/pkg/config"
)

// ConnInfo describes an SMTP client to the checks.
type ConnInfo struct {
	IP        net.IP // nil: unknown (then nothing needing it is checked)
	Port      int
	LocalIP   net.IP
	LocalPort int
	// PTR returns the client's reverse DNS name, "" for none; it may wait
	// for a lookup in flight. Only milters ask for it.
	PTR func() string
	Log *slog.Logger // the session's logger
}

// Conn is the checks of one SMTP connection. Its methods are called from
// the session's goroutine, one at a time, in the order of the dialog.
type Conn struct {
	c       *Checker
	info    ConnInfo
	log     *slog.Logger
	macros  *milter.MacroBag
	milters []*milterSession

	allowed    bool // in a DNSWL: no DNS lists, SPF, DKIM or DMARC
	lists      []listResult
	refused    *Verdict // the connection is refused (554, then only QUIT)
	tempfailed bool     // a milter with default action tempfail is down
	helo       string
	spfCache   []spfCached // the senders of the connection's transactions, at most 16

	// the transaction
	id      string
	from    string
	rcpts   []string
	spf     *spfOutcome
	discard string // why a milter discarded the message ("" = it did not)
}

// spfCached is the SPF outcome of a sender on this connection. A list,
// not a map: most connections carry one sender, and a map's first
// insertion costs a kilobyte.
type spfCached struct {
	sender string
	out    spfOutcome
}

// Connect starts the checks of a connection: the DNS lists, then each
// milter's connect event. A non-nil Verdict refuses the connection: smtpd
// greets with it and then only accepts QUIT (RFC 5321 § 3.1).
func (c *Checker) Connect(info ConnInfo) (*Conn, *Verdict) {
	if c.cfg.DKIMVerify != ModeOff {
		growStack(0)
	}
	cn := &Conn{c: c, info: info, log: info.Log}
	if len(c.milters) > 0 {
		cn.macros = milter.NewMacroBag() // only milters read it
	}
	if cn.log == nil {
		cn.log = c.cfg.Log
	}
	if info.IP != nil && len(c.cfg.DNSBL)+len(c.cfg.DNSWL) > 0 {
		cn.checkLists()
		if cn.refused != nil {
			return cn, cn.refused
		}
	}
	if len(c.milters) > 0 {
		cn.connectMilters()
	}
	return cn, cn.refused
}

func (cn *Conn) checkLists() {
	ctx, cancel := context.WithTimeout(context.Background(), cn.c.cfg.DNSTimeout)
	defer cancel()
	cn.lists = cn.c.queryLists(ctx, cn.info.IP)
	for _, r := range cn.lists {
		switch {
		case r.err != nil:
			cn.log.Warn("check: DNS list lookup failed, taken as not listed", "zone", r.list.Zone, "err", r.err)
		case r.allow && r.listed:
			cn.allowed = true
			cn.log.Info("check: dnswl listed, skipping DNS lists, SPF, DKIM and DMARC", "zone", r.list.Zone, "answer", r.answer)
		}
	}
	if cn.allowed {
		return
	}
	for _, r := range cn.lists {
		if !r.allow && r.listed {
			text := fmt.Sprintf("Service unavailable; client [%s] blocked using %s", cn.info.IP, r.list.Zone)
			if r.text != "" {
				text += "; " + r.text
			}
			cn.refused = verdict(554, "5.7.1", "%s", text)
			cn.log.Info("check: dnsbl listed, connection refused", "zone", r.list.Zone, "answer", r.answer, "text", r.text, "action", "reject")
			return
		}
	}
}

// connectMilters opens a session with each milter and sends it the
// connect event, with the macros Postfix defines.
func (cn *Conn) connectMilters() {
	cfg := &cn.c.cfg
	m := cn.macros
	m.Set(milter.MacroMTAFQDN, cfg.Hostname)
	m.Set(milter.MacroDaemonName, cfg.Hostname)
	m.Set(milter.MacroMTAVersion, "letterbox "+config.Version)
	name, ptr := "unknown", "unknown"
	if cn.info.PTR != nil {
		if p := cn.info.PTR(); p != "" {
			name, ptr = p, p
		}
	}
	family, addr := milter.FamilyUnknown, ""
	if ip := cn.info.IP; ip != nil {
		addr = ip.String()
		family = milter.FamilyInet
		if ip.To4() == nil {
			family = milter.FamilyInet6
		}
		m.Set(milter.MacroClientAddr, addr)
		m.Set(milter.MacroClientPort, strconv.Itoa(cn.info.Port))
		m.Set(milter.MacroRFC1413AuthInfo, name+" ["+addr+"]")
	}
	m.Set(milter.MacroClientName, name)
	m.Set(milter.MacroClientPTR, ptr)
	if cn.info.LocalIP != nil {
		m.Set(milter.MacroDaemonAddr, cn.info.LocalIP.String())
		m.Set(milter.MacroDaemonPort, strconv.Itoa(cn.info.LocalPort))
		m.Set(milter.MacroIfAddr, cn.info.LocalIP.String())
	}
	for _, mc := range cn.c.milters {
		ms, err := mc.session(m)
		if err != nil {
			ms = &milterSession{m: mc}
			cn.milters = append(cn.milters, ms)
			cn.milterFailed(ms, "connect", err)
			continue
		}
		cn.milters = append(cn.milters, ms)
	}
	v := cn.milterEvent("connect", func(ms *milterSession) (*milter.Action, error) {
		return ms.s.Conn(name, family, uint16(cn.info.Port), addr)
	})
	if v != nil && v.Code >= 500 {
		cn.refused = v
	} else if v != nil {
		cn.tempfailed = true
	}
}

// milterFailed applies a milter's default action after an error: accept
// goes on without it; tempfail answers 451 to the command and to every
// later MAIL of the connection (Postfix's milter_default_action).
func (cn *Conn) milterFailed(ms *milterSession, stage string, err error) *Verdict {
	ms.dead = true
	if ms.s != nil {
		ms.s.Close()
	}
	cn.log.Warn("check: milter failed", "id", cn.id, "milter", ms.name(), "stage", stage, "err", err, "action", ms.m.spec.DefaultAction)
	if ms.m.spec.DefaultAction == "accept" {
		return nil
	}
	cn.tempfailed = true
	return tempfail()
}

// milterEvent sends one event to each milter still listening, in order;
// the first refusal is the verdict.
func (cn *Conn) milterEvent(stage string, send func(*milterSession) (*milter.Action, error)) *Verdict {
	for _, ms := range cn.milters {
		if !ms.active() {
			continue
		}
		act, err := callMilter(ms, send)
		if err != nil {
			if v := cn.milterFailed(ms, stage, err); v != nil {
				return v
			}
			continue
		}
		if v := cn.milterAction(ms, stage, act); v != nil {
			return v
		}
	}
	return nil
}

// callMilter runs send, turning a panic in the milter library (on input
// it did not expect) into an error: a milter's nonsense costs that milter,
// not the server.
func callMilter(ms *milterSession, send func(*milterSession) (*milter.Action, error)) (act *milter.Action, err error) {
	defer func() {
		if p := recover(); p != nil {
			act, err = nil, fmt.Errorf("milter library failed: %v", p)
		}
	}()
	act, err = send(ms)
	if err == nil && act == nil {
		err = fmt.Errorf("milter: no action")
	}
	return act, err
}

// milterAction carries out a milter's answer to an event of stage.
func (cn *Conn) milterAction(ms *milterSession, stage string, act *milter.Action) *Verdict {
	connLevel := stage == "connect" || stage == "helo"
	switch act.Type {
	case milter.ActionContinue, milter.ActionSkip:
		return nil
	case milter.ActionAccept:
		if connLevel {
			ms.accepted = true
		} else {
			ms.msgDone = true
		}
		cn.log.Debug("check: milter accepted", "id", cn.id, "milter", ms.name(), "stage", stage)
		return nil
	case milter.ActionDiscard:
		if !connLevel {
			ms.msgDone = true
			cn.discard = ms.name() + " at " + stage
		}
		return nil
	}
	v := replyVerdict(act)
	cn.log.Info("check: milter refused", "id", cn.id, "milter", ms.name(), "stage", stage, "reply", v.Error())
	return v
}

// Helo tells the milters the client's HELO/EHLO name.
func (cn *Conn) Helo(name string) *Verdict {
	cn.helo = name
	return cn.milterEvent("helo", func(ms *milterSession) (*milter.Action, error) { return ms.s.Helo(name) })
}

// TLS records the connection's TLS parameters for the milters' macros
// (sent with the next HELO).
func (cn *Conn) TLS(version, cipher string, bits int) {
	if cn.macros == nil {
		return
	}
	cn.macros.Set(milter.MacroTlsVersion, version)
	cn.macros.Set(milter.MacroCipher, cipher)
	cn.macros.Set(milter.MacroCipherBits, strconv.Itoa(bits))
}

// Mail checks the sender of the transaction id (SPF), then tells the
// milters. from is "" for the null sender; args are the MAIL parameters.
func (cn *Conn) Mail(id, from, args string) *Verdict {
	cn.Reset()
	if cn.refused != nil {
		return cn.refused
	}
	if cn.tempfailed {
		cn.log.Info("check: transaction refused: a milter is unavailable", "id", id, "from", from)
		return tempfail()
	}
	cn.id, cn.from = id, from
	if cn.c.cfg.SPF != ModeOff && !cn.allowed && cn.info.IP != nil && (from != "" || cn.helo != "") {
		key := strings.ToLower(from)
		var out spfOutcome
		ok := false
		for _, c := range cn.spfCache {
			if c.sender == key {
				out, ok = c.out, true
				break
			}
		}
		if !ok {
			out = cn.c.checkSPF(cn.info.IP, cn.helo, from)
			if len(cn.spfCache) < 16 {
				cn.spfCache = append(cn.spfCache, spfCached{key, out})
			}
		}
		cn.spf = &out
		v := out.verdict(cn.c.cfg.SPF, cn.info.IP)
		action := "tag"
		if v != nil {
			action = "reject"
		}
		// Not even gathered when it is not logged.
		if cn.log.Enabled(context.Background(), slog.LevelInfo) {
			cn.log.Info("check: spf", "id", id, "from", from, "helo", cn.helo, "result", string(out.result), "err", errString(out.err), "action", action)
		}
		if v != nil {
			return v
		}
	}
	if len(cn.milters) == 0 {
		return nil
	}
	m := cn.macros
	m.Set(milter.MacroQueueId, id)
	m.Set(milter.MacroMailAddr, from)
	m.Set(milter.MacroMailHost, domainOf(from))
	m.Set(milter.MacroMailMailer, "smtp")
	for _, ms := range cn.milters {
		if !ms.dead && !ms.accepted {
			ms.inTx, ms.msgDone = true, false
			if ms.conn != nil {
				ms.conn.resetTotal()
			}
		}
	}
	v := cn.milterEvent("mail", func(ms *milterSession) (*milter.Action, error) { return ms.s.Mail(from, args) })
	if v != nil {
		cn.Reset()
	}
	return v
}

// Rcpt tells the milters a recipient that smtpd accepted.
func (cn *Conn) Rcpt(to, args string) *Verdict {
	if cn.tempfailed {
		return tempfail()
	}
	if len(cn.milters) == 0 || cn.discard != "" {
		cn.rcpts = append(cn.rcpts, to)
		return nil
	}
	m := cn.macros
	m.Set(milter.MacroRcptAddr, to)
	m.Set(milter.MacroRcptHost, domainOf(to))
	m.Set(milter.MacroRcptMailer, "local")
	v := cn.milterEvent("rcpt", func(ms *milterSession) (*milter.Action, error) { return ms.s.Rcpt(to, args) })
	for _, k := range []string{milter.MacroRcptAddr, milter.MacroRcptHost, milter.MacroRcptMailer} {
		m.Set(k, "")
	}
	if v == nil {
		cn.rcpts = append(cn.rcpts, to)
	}
	return v
}

// Data tells the milters that the message comes next.
func (cn *Conn) Data() *Verdict {
	if cn.tempfailed {
		return tempfail()
	}
	if cn.discard != "" {
		return nil
	}
	return cn.milterEvent("data", func(ms *milterSession) (*milter.Action, error) { return ms.s.DataStart() })
}

// Reset ends the transaction (RSET, a new MAIL, EHLO, the end of a
// message): milters in the middle of one are told to abort it.
func (cn *Conn) Reset() {
	for _, ms := range cn.milters {
		if ms.inTx && !ms.dead {
			if err := ms.s.Abort(nil); err != nil {
				cn.milterFailed(ms, "abort", err)
			}
		}
		ms.inTx, ms.msgDone = false, false
	}
	cn.id, cn.from, cn.rcpts, cn.spf, cn.discard = "", "", nil, nil, ""
}

// Close ends the milter sessions.
func (cn *Conn) Close() {
	for _, ms := range cn.milters {
		if ms.s != nil && !ms.dead {
			ms.s.Close()
		}
	}
	cn.milters = nil
}

// listResults are the DNS lists' entries of Authentication-Results.
func (cn *Conn) listResults() []authres.Result {
	var out []authres.Result
	for _, r := range cn.lists {
		out = append(out, r.authres())
	}
	return out
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// growStack grows the calling goroutine's stack, near its start (a
// session's goroutine, at connect), to what a DKIM verification needs:
// go-msgauth parses the signer's key with encoding/asn1, whose recursion
// otherwise grows the new session's small stack deep inside the message's
// checks, where the runtime copies every frame of the session down to it.
// Here there are few to copy.
//
// The frame is indexed through the argument, which the compiler cannot
// know, so it is kept; nothing is shared between sessions (a global sink
// written by every session's goroutine would be a data race).
//
//go:noinline
func growStack(i int) byte {
	var frame [stackFrame]byte
	frame[i%stackFrame] = 1
	return frame[(i+stackFrame/2)%stackFrame]
}

const stackFrame = 16 << 10
