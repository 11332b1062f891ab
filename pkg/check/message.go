package check

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/mail"
	"sort"
	"strings"
	"sync"

	milter "github.com/d--j/go-milter"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"
)

// Result is a checked message as smtpd commits it.
type Result struct {
	From  string   // the envelope sender (a milter may change it)
	Rcpts []string // the recipients (milters may add and remove some)
	// Junk says why the message goes to the recipients' Junk folder
	// (DMARC p=quarantine, a milter's quarantine); "" when it does not.
	Junk string
	Data io.Reader // the message with its new header
}

// message is a staged message and what the checks did to it.
type message struct {
	st      *staged
	fields  []Field
	sepOff  int64 // where the header's end (the empty line) is
	bodyOff int64 // where the body starts
	body    []byte
	newBody bool // body replaced by a milter
	from    string
	rcpts   []string
	junk    string
}

// reader returns the whole message, from its start, as it now is: the
// fields as they are (not joined into a copy of the header), then the
// rest.
func (m *message) reader() io.Reader {
	if m.newBody {
		return io.MultiReader(&fieldsReader{fields: m.fields}, strings.NewReader("\r\n"), bytes.NewReader(m.body))
	}
	return io.MultiReader(&fieldsReader{fields: m.fields}, m.st.section(m.sepOff))
}

// fieldsReader reads the header fields one after the other.
type fieldsReader struct {
	fields []Field
	off    int // in fields[0]
}

func (r *fieldsReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.fields) > 0 {
		c := copy(p[n:], r.fields[0].Raw[r.off:])
		n += c
		r.off += c
		if r.off == len(r.fields[0].Raw) {
			r.fields, r.off = r.fields[1:], 0
		}
	}
	if n == 0 && len(r.fields) == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// bodyReader returns the body alone (what milters get as body chunks).
func (m *message) bodyReader() io.Reader {
	if m.newBody {
		return bytes.NewReader(m.body)
	}
	return m.st.section(m.bodyOff)
}

var readBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Message reads the message (the data of DATA or BDAT, with smtpd's
// Received field on top) from r into a staging file while the DKIM
// verifier follows it, then checks it and, if it may be accepted, calls
// commit with what to put in the spool, returning commit's results. A
// refusal is returned as a *Verdict error (Discard: reply 250, commit
// nothing); an error reading r is returned as it is, and nothing is
// committed.
func (cn *Conn) Message(r io.Reader, commit func(*Result) (string, error)) (string, error) {
	cfg := &cn.c.cfg
	st := newStaged(cfg.TempDir)
	defer st.close()
	hp := &headerParser{lim: cfg.Header}
	verify := cfg.DKIMVerify != ModeOff && !cn.allowed
	var run *dkimRun
	var bp *[]byte // a read buffer, once the message is on disk
	defer func() {
		if bp != nil {
			readBuffers.Put(bp)
		}
	}()
	var off int64
	var rerr error
	for {
		// Read into the staging buffer while the message fits in
		// memory, else into a read buffer and written to the file.
		buf := st.spare()
		inMemory := buf != nil
		if !inMemory {
			if bp == nil {
				bp = readBuffers.Get().(*[]byte)
			}
			buf = *bp
		}
		n, err := r.Read(buf)
		if n > 0 {
			if !hp.done && hp.err == nil {
				hp.feed(buf[:n], off)
				if hp.done && hp.err == nil && verify {
					run = cn.c.prepareDKIM(hp.fields)
				}
			}
			if hp.err == nil {
				// A header over the limits is read to its end and
				// refused: nothing of it is kept.
				if inMemory {
					st.wrote(n)
				} else if _, werr := st.Write(buf[:n]); werr != nil {
					rerr = werr
					break
				}
				if run != nil && run.done == nil && st.onDisk() {
					// Too large for memory: verified as it arrives.
					run.start(st)
				}
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	if rerr != nil {
		st.finish(rerr)
		if run != nil {
			run.abort()
		}
		return "", rerr
	}
	hp.finish(off)
	st.finish(nil)
	if hp.err != nil {
		cn.log.Info("check: message refused", "id", cn.id, "reason", hp.err.Error(), "action", "reject")
		return "", verdict(552, "5.3.4", "%s", capitalize(hp.err.Error()))
	}
	if run == nil && verify {
		// The header never ended: go-msgauth reads it as it is.
		run = cn.c.prepareDKIM(hp.fields)
	}
	if cn.tempfailed {
		if run != nil {
			run.abort()
		}
		cn.log.Info("check: message refused: a milter is unavailable", "id", cn.id, "action", "tempfail")
		return "", tempfail()
	}
	if cn.discard != "" {
		if run != nil {
			run.abort()
		}
		cn.log.Info("check: message discarded", "id", cn.id, "by", cn.discard, "action", "discard")
		return "", &Verdict{Code: 250, Enh: "2.0.0", Text: "OK", Discard: true}
	}
	m := &message{st: st, fields: hp.fields, sepOff: hp.sepOff, bodyOff: hp.bodyOff,
		from: cn.from, rcpts: append([]string(nil), cn.rcpts...)}
	return cn.check(m, run, commit)
}

// check runs the checks on a staged message and commits it.
func (cn *Conn) check(m *message, run *dkimRun, commit func(*Result) (string, error)) (string, error) {
	cfg := &cn.c.cfg
	// The attributes of the message's log line are only gathered when
	// it is logged (smtpd's log-level may be above info).
	logging := cn.log.Enabled(context.Background(), slog.LevelInfo)
	var logArgs []any
	if logging {
		logArgs = make([]any, 0, 16)
		logArgs = append(logArgs, "id", cn.id)
	}
	forged := 0
	kept := m.fields[:0]
	for _, f := range m.fields {
		if forgedAuthResults(f, cfg.Hostname) {
			forged++
			continue
		}
		kept = append(kept, f)
	}
	m.fields = kept
	if forged > 0 && logging {
		logArgs = append(logArgs, "forged_auth_results_removed", forged)
	}

	results := cn.listResults()
	if cn.spf != nil {
		results = append(results, cn.spf.authres())
		if logging {
			logArgs = append(logArgs, "spf", string(cn.spf.result))
		}
	}
	var dkimPass []string
	if cfg.DKIMVerify != ModeOff && !cn.allowed {
		var outs []dkimOutcome
		if run != nil {
			outs = run.wait(m.st)
		}
		if len(outs) == 0 {
			results = append(results, &authres.GenericResult{Method: "dkim", Value: authres.ResultNone})
			if logging {
				logArgs = append(logArgs, "dkim", "none")
			}
		}
		var summary []string
		for _, o := range outs {
			results = append(results, o.authres())
			if logging {
				summary = append(summary, string(o.result)+":"+o.domain)
			}
			if o.result == authres.ResultPass {
				dkimPass = append(dkimPass, o.domain)
			}
		}
		if len(summary) > 0 {
			logArgs = append(logArgs, "dkim", strings.Join(summary, ","))
		}
	}
	var refuse *Verdict
	if cfg.DMARC != ModeOff && !cn.allowed {
		spfOut := spfOutcome{}
		if cn.spf != nil {
			spfOut = *cn.spf
		}
		limit := newLookupLimit(cfg.DNSTimeout)
		for _, d := range fromDomains(m.fields) {
			o := cn.c.checkDMARC(limit, d, spfOut, dkimPass)
			results = append(results, o.authres())
			if logging {
				logArgs = append(logArgs, "dmarc", string(o.result)+":"+d)
				if o.policy != "" {
					logArgs = append(logArgs, "dmarc_policy", string(o.policy))
				}
			}
			if cfg.DMARC != ModeEnforce || o.result != authres.ResultFail {
				continue
			}
			switch o.policy {
			case dmarc.PolicyReject:
				if refuse == nil {
					refuse = verdict(550, "5.7.1", "Message rejected: it fails the DMARC policy of %s (p=reject)", d)
				}
			case dmarc.PolicyQuarantine:
				m.junk = "dmarc: " + d + " p=quarantine"
			}
		}
		limit.stop()
	}
	if len(results) > 0 {
		m.fields = append([]Field{authResultsField(cfg.Hostname, results)}, m.fields...)
	}
	if refuse != nil {
		cn.log.Info("check: message refused", append(logArgs, "reply", refuse.Error(), "action", "reject")...)
		return "", refuse
	}

	for _, ms := range cn.milters {
		v := cn.milterMessage(ms, m)
		if v != nil {
			cn.log.Info("check: message refused", append(logArgs, "milter", ms.name(), "reply", v.Error(), "action", actionOf(v))...)
			return "", v
		}
		if cn.discard != "" {
			cn.log.Info("check: message discarded", append(logArgs, "by", cn.discard, "action", "discard")...)
			return "", &Verdict{Code: 250, Enh: "2.0.0", Text: "OK", Discard: true}
		}
	}
	if cfg.Filter != "" {
		v, status := cn.runFilter(m)
		logArgs = append(logArgs, "filter", status)
		if v != nil {
			cn.log.Info("check: message refused", append(logArgs, "reply", v.Error(), "action", actionOf(v))...)
			return "", v
		}
	}
	if len(m.rcpts) == 0 {
		cn.log.Info("check: message discarded", append(logArgs, "by", "milters (no recipient left)", "action", "discard")...)
		return "", &Verdict{Code: 250, Enh: "2.0.0", Text: "OK", Discard: true}
	}
	if logging {
		action := "accept"
		if m.junk != "" {
			action = "junk"
			logArgs = append(logArgs, "junk", m.junk)
		}
		cn.log.Info("check: message accepted", append(logArgs, "action", action)...)
	}
	return commit(&Result{From: m.from, Rcpts: m.rcpts, Junk: m.junk, Data: m.reader()})
}

func actionOf(v *Verdict) string {
	if v.Code < 500 {
		return "tempfail"
	}
	return "reject"
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// fromDomains returns the domains of the addresses of the From fields
// (RFC 7489 § 6.6.1: each one is checked). A field that does not parse
// still has its domains taken from every "@" in it, so that a malformed
// From cannot slip past DMARC.
func fromDomains(fields []Field) []string {
	seen := map[string]bool{}
	for _, f := range fields {
		if !f.Is("From") {
			continue
		}
		v := strings.ReplaceAll(f.Value(), "\n", "")
		if list, err := mail.ParseAddressList(v); err == nil {
			for _, a := range list {
				if d := strings.ToLower(domainOf(a.Address)); d != "" {
					seen[strings.TrimSuffix(d, ".")] = true
				}
			}
			continue
		}
		for i := strings.IndexByte(v, '@'); i >= 0; {
			rest := v[i+1:]
			end := strings.IndexFunc(rest, func(r rune) bool {
				return !(r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= 0x80)
			})
			if end < 0 {
				end = len(rest)
			}
			if d := strings.Trim(strings.ToLower(rest[:end]), "."); d != "" {
				seen[d] = true
			}
			j := strings.IndexByte(rest, '@')
			if j < 0 {
				break
			}
			i = i + 1 + j
		}
	}
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// milterMessage sends the message (header, body, end) to one milter and
// applies its modifications, so the next milter sees them.
func (cn *Conn) milterMessage(ms *milterSession, m *message) *Verdict {
	if !ms.active() {
		return nil
	}
	event := func(stage string, send func(*milterSession) (*milter.Action, error)) (*Verdict, bool) {
		act, err := callMilter(ms, send)
		if err != nil {
			return cn.milterFailed(ms, stage, err), false
		}
		if v := cn.milterAction(ms, stage, act); v != nil {
			return v, false
		}
		return nil, ms.active()
	}
	lead := ms.s.ProtocolOption(milter.OptHeaderLeadingSpace)
	for _, f := range m.fields {
		v := f.Value()
		if !lead {
			v = strings.TrimLeft(v, " \t")
		}
		verdict, goOn := event("header", func(ms *milterSession) (*milter.Action, error) { return ms.s.HeaderField(f.Name, v, nil) })
		if !goOn {
			return verdict
		}
		if ms.s.Skip() {
			break
		}
	}
	if verdict, goOn := event("end of header", func(ms *milterSession) (*milter.Action, error) { return ms.s.HeaderEnd() }); !goOn {
		return verdict
	}
	body := m.bodyReader()
	chunk := make([]byte, milter.DataSize64K)
	for !ms.s.Skip() {
		n, err := io.ReadFull(body, chunk)
		if n > 0 {
			verdict, goOn := event("body", func(ms *milterSession) (*milter.Action, error) { return ms.s.BodyChunk(chunk[:n]) })
			if !goOn {
				return verdict
			}
		}
		if err != nil {
			if err != io.EOF && err != io.ErrUnexpectedEOF {
				return cn.milterFailed(ms, "body", err)
			}
			break
		}
	}
	var mods []milter.ModifyAction
	verdict, _ := event("end of message", func(ms *milterSession) (*milter.Action, error) {
		var act *milter.Action
		var err error
		mods, act, err = ms.s.End()
		return act, err
	})
	ms.inTx = false
	if verdict != nil || ms.dead || cn.discard != "" {
		return verdict
	}
	if err := cn.applyMods(ms, m, mods); err != nil {
		return cn.milterFailed(ms, "end of message", err)
	}
	return nil
}

// applyMods carries out a milter's modifications, in order, as Postfix's
// cleanup does.
func (cn *Conn) applyMods(ms *milterSession, m *message, mods []milter.ModifyAction) error {
	replaced := false
	var changes []string
	for _, a := range mods {
		switch a.Type {
		case milter.ActionAddHeader:
			m.fields = append(m.fields, newField(a.HeaderName, a.HeaderValue))
		case milter.ActionInsertHeader:
			i := int(min(a.HeaderIndex, uint32(len(m.fields))))
			m.fields = append(m.fields[:i], append([]Field{newField(a.HeaderName, a.HeaderValue)}, m.fields[i:]...)...)
		case milter.ActionChangeHeader:
			n, at := 0, -1
			for i, f := range m.fields {
				if f.Is(a.HeaderName) {
					n++
					if n == int(a.HeaderIndex) {
						at = i
						break
					}
				}
			}
			switch {
			case at >= 0 && a.HeaderValue == "":
				m.fields = append(m.fields[:at], m.fields[at+1:]...)
			case at >= 0:
				m.fields[at] = newField(a.HeaderName, a.HeaderValue)
			case a.HeaderValue != "":
				m.fields = append(m.fields, newField(a.HeaderName, a.HeaderValue))
			}
		case milter.ActionReplaceBody:
			if !replaced {
				m.body, m.newBody, replaced = nil, true, true
			}
			if int64(len(m.body)+len(a.Body)) > cn.c.cfg.MaxMessageSize {
				return errors.New("replacement body larger than the message size limit")
			}
			m.body = append(m.body, a.Body...)
		case milter.ActionAddRcpt:
			r := strings.Trim(a.Rcpt, "<> ")
			if r == "" || strings.ContainsAny(r, "\x00\r\n\t ") {
				return errors.New("milter added a malformed recipient")
			}
			if !containsFold(m.rcpts, r) {
				m.rcpts = append(m.rcpts, r)
			}
		case milter.ActionDelRcpt:
			r := strings.Trim(a.Rcpt, "<> ")
			kept := m.rcpts[:0]
			for _, x := range m.rcpts {
				if !strings.EqualFold(x, r) {
					kept = append(kept, x)
				}
			}
			m.rcpts = kept
		case milter.ActionChangeFrom:
			f := strings.Trim(a.From, "<> ")
			if strings.ContainsAny(f, "\x00\r\n\t ") {
				return errors.New("milter set a malformed sender")
			}
			m.from = f
		case milter.ActionQuarantine:
			m.junk = "milter " + ms.name() + ": " + printable(a.Reason, 200)
		default:
			continue
		}
		changes = append(changes, a.String())
	}
	if replaced {
		m.body = crlf(m.body)
	}
	if len(changes) > 0 {
		cn.log.Info("check: milter changed the message", "id", cn.id, "milter", ms.name(), "changes", strings.Join(changes, "; "))
	}
	return nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// crlf makes every line end of b a CRLF (milters may send LF), and the
// last line complete.
func crlf(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	b = bytes.ReplaceAll(b, []byte("\r"), nil)
	b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	if len(b) > 0 && !bytes.HasSuffix(b, []byte("\r\n")) {
		b = append(b, "\r\n"...)
	}
	return b
}
