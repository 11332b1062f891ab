package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	milter "github.com/d--j/go-milter"
	"github.com/miekg/dns"

	"letterbox/pkg/spool"
)

// The checks on mail from strangers, black-box: smtpd with a DNS server of
// the test (the dns key), clients on 127.0.0.2 and up (strangers: only
// 127.0.0.1 is in relay-networks here).

// checkEnv returns an env whose smtpd asks the DNS server z and trusts
// only 127.0.0.1.
func checkEnv(t *testing.T, z *remoteDNS, extra ...string) *env {
	t.Helper()
	return smtpdEnv(t, append([]string{fmt.Sprintf("dns = %q", z.Addr), `relay-networks = ["127.0.0.1/32"]`}, extra...)...)
}

// dialFrom is dial from the local address ip.
func dialFrom(t testing.TB, ip, addr string) *dialog {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &dialog{t: t, conn: c, r: bufio.NewReader(c)}
}

// checkSend runs one transaction from ip and returns the replies to MAIL
// and to the end of the data ("" when it did not get that far).
func checkSend(t *testing.T, ip, addr, from, to, msg string) (mail, end string) {
	t.Helper()
	d := dialFrom(t, ip, addr)
	d.expect("220 ")
	d.send("EHLO client.test")
	d.expect("250 ")
	d.send("MAIL FROM:<" + from + ">")
	if mail = d.reply(); !strings.HasPrefix(mail, "250") {
		return mail, ""
	}
	d.send("RCPT TO:<" + to + ">")
	d.expect("250 ")
	d.send("DATA")
	d.expect("354 ")
	d.raw(strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n") + ".\r\n")
	end = d.reply()
	d.send("QUIT")
	d.expect("221 ")
	return mail, end
}

// authResults returns our Authentication-Results field of a spooled
// message, unfolded.
func authResults(data string) string {
	head, _, _ := strings.Cut(data, "\r\n\r\n")
	var fields []string
	for _, l := range strings.Split(head, "\r\n") {
		if (strings.HasPrefix(l, "\t") || strings.HasPrefix(l, " ")) && len(fields) > 0 {
			fields[len(fields)-1] += " " + strings.TrimSpace(l)
		} else {
			fields = append(fields, l)
		}
	}
	for _, f := range fields {
		if strings.HasPrefix(f, "Authentication-Results: mx.example.test;") {
			return f
		}
	}
	return ""
}

// TestCheckSPF: spf = reject refuses a fail at MAIL FROM with 550 5.7.23,
// logged with the queue id; a pass is accepted and reported in the
// Authentication-Results field on top of the message (Python's smtplib
// as the client).
func TestCheckSPF(t *testing.T) {
	z := newRemoteDNS(t,
		`pass.test. IN TXT "v=spf1 ip4:127.0.0.2 -all"`,
		`fail.test. IN TXT "v=spf1 ip4:192.0.2.1 -all"`,
		`2.0.0.127.in-addr.arpa. IN PTR client.pass.test.`)
	e := checkEnv(t, z, `spf = "reject"`)
	s := e.start("smtpd", "")
	mail, _ := checkSend(t, "127.0.0.2", s.Addr, "a@fail.test", "joe@example.test", "Subject: x\n\nx\n")
	if !strings.HasPrefix(mail, "550 5.7.23 SPF: fail.test does not designate 127.0.0.2 as a permitted sender") {
		t.Fatalf("MAIL from a failing domain: %q", mail)
	}
	waitFor(t, 10*time.Second, "the SPF decision in the log, with the queue id", func() bool {
		return strings.Contains(s.Log(), `msg="check: spf"`) && strings.Contains(s.Log(), "from=a@fail.test helo=client.test result=fail") &&
			strings.Contains(s.Log(), "action=reject") && strings.Contains(s.Log(), " id=")
	})
	host, port, _ := net.SplitHostPort(s.Addr)
	python(t, `
import smtplib, sys
with smtplib.SMTP(sys.argv[1], int(sys.argv[2]), source_address=("127.0.0.2", 0)) as c:
    c.sendmail("a@pass.test", ["joe@example.test"], "Authentication-Results: mx.example.test; spf=pass; dkim=pass header.d=forged.test\r\nFrom: a@pass.test\r\nSubject: spf\r\n\r\nhello\r\n")
`, host, port)
	msgs := smtpdWaitSpool(t, e, 1)
	ar := authResults(msgs[0].Data)
	if !strings.HasPrefix(msgs[0].Data, "Authentication-Results: mx.example.test;") ||
		!strings.Contains(ar, "spf=pass smtp.mailfrom=a@pass.test") || !strings.Contains(ar, "dkim=none") || !strings.Contains(ar, "dmarc=none header.from=pass.test") {
		t.Fatalf("message:\n%s", msgs[0].Data)
	}
	// The client's claim of our results is gone; the name in Received
	// came from the same DNS server (the dns key).
	if strings.Count(msgs[0].Data, "Authentication-Results:") != 1 || strings.Contains(msgs[0].Data, "forged.test") {
		t.Errorf("a forged Authentication-Results survived:\n%s", msgs[0].Data)
	}
	if !strings.Contains(msgs[0].Data, " (client.pass.test [127.0.0.2])\r\n\tby mx.example.test") {
		t.Errorf("Received:\n%s", msgs[0].Data)
	}
}

// TestCheckDNSBL: a listed client is greeted with 554 5.7.1 and the list's
// text, gets 503 for everything but QUIT; a client not listed is served.
func TestCheckDNSBL(t *testing.T) {
	z := newRemoteDNS(t,
		`3.0.0.127.bl.test. IN A 127.0.0.2`,
		`3.0.0.127.bl.test. IN TXT "spam source, see https://bl.test/"`)
	e := checkEnv(t, z, `dnsbl = ["bl.test"]`)
	s := e.start("smtpd", "")
	d := dialFrom(t, "127.0.0.3", s.Addr)
	d.expect("554 5.7.1 Service unavailable; client [127.0.0.3] blocked using bl.test; spam source, see https://bl.test/")
	d.send("EHLO client.test")
	d.expect("503 5.7.1")
	d.send("MAIL FROM:<a@b.test>")
	d.expect("503 5.7.1")
	d.send("QUIT")
	d.expect("221 ")
	d = dialFrom(t, "127.0.0.2", s.Addr)
	d.expect("220 ")
}

// TestCheckSkipped: a client in relay-networks, one that authenticated,
// one on the submission port and a session on pipes are not checked (no
// DNS list, no SPF, no Authentication-Results), and the relay's envelope
// is marked for DKIM signing.
func TestCheckSkipped(t *testing.T) {
	z := newRemoteDNS(t, `pass.test. IN TXT "v=spf1 -all"`, `4.0.0.127.bl.test. IN A 127.0.0.2`)
	e := checkEnv(t, z, `spf = "reject"`, "allow-insecure-auth = true", `dnsbl = ["bl.test"]`)
	// A session on pipes (the peer's address unknown) is local: unchecked.
	if out := smtpdStdio(t, e, nil, "EHLO local\r\nMAIL FROM:<a@pass.test>\r\nQUIT\r\n"); !strings.Contains(out, "250 2.1.0") {
		t.Fatalf("stdio:\n%s", out)
	}
	s := e.start("smtpd", "")
	if _, end := checkSend(t, "127.0.0.1", s.Addr, "a@pass.test", "joe@example.test", "Subject: relay\n\nx\n"); !strings.HasPrefix(end, "250") {
		t.Fatalf("relay: %q", end)
	}
	d := dialFrom(t, "127.0.0.2", s.Addr)
	d.expect("220 ")
	d.send("EHLO client.test")
	d.expect("250 ")
	d.send("AUTH PLAIN AGpvZUBleGFtcGxlLnRlc3QAc2VjcmV0") // joe@example.test / secret
	d.expect("235 ")
	if r := smtpdSend(d, "joe@example.test", "demo@example.test", "Subject: auth\r\n\r\nx\r\n"); !strings.HasPrefix(r, "250") {
		t.Fatalf("authenticated: %q", r)
	}
	// A listed client is not refused on the submission port (its users
	// authenticate there).
	sub := e.start("smtpd", "submission")
	d = dialFrom(t, "127.0.0.4", sub.Addr)
	d.expect("220 ")
	s4 := dialFrom(t, "127.0.0.4", s.Addr)
	s4.expect("554 5.7.1") // the same client on the smtp port
	msgs := smtpdWaitSpool(t, e, 2)
	sp, err := spool.Open(e.Spool)
	must(t, err)
	for _, m := range msgs {
		if strings.Contains(m.Data, "Authentication-Results") {
			t.Errorf("checked:\n%s", m.Data)
		}
		env, err := sp.Load(m.ID)
		must(t, err)
		if relay := strings.Contains(m.Data, "Subject: relay"); env.Relay != relay {
			t.Errorf("%s: relay mark %v", m.ID, env.Relay)
		}
	}
}

// TestCheckHeaderLimits: a message whose header is over the limits is
// refused with 552 5.3.4 after its data, and the session goes on.
func TestCheckHeaderLimits(t *testing.T) {
	z := newRemoteDNS(t)
	e := checkEnv(t, z)
	s := e.start("smtpd", "")
	_, end := checkSend(t, "127.0.0.2", s.Addr, "a@b.test", "joe@example.test", strings.Repeat("X-Many: field\n", 1001)+"\nbody\n")
	if !strings.HasPrefix(end, "552 5.3.4 Message header too large") {
		t.Fatalf("1001 fields: %q", end)
	}
	// One field folded over more than 1 MiB.
	big := "X-Big: start\n" + strings.Repeat(" "+strings.Repeat("x", 900)+"\n", 1200) + "\nbody\n"
	if _, end := checkSend(t, "127.0.0.2", s.Addr, "a@b.test", "joe@example.test", big); !strings.HasPrefix(end, "552 5.3.4 Message header too large") {
		t.Fatalf("header over 1 MiB: %q", end)
	}
	smtpdNoPartial(t, e)
	if n := len(smtpdSpool(t, e)); n != 0 {
		t.Fatalf("%d messages committed", n)
	}
}

// TestCheckFilter: the filter command decides with its exit code; its
// refusal text is the reply.
func TestCheckFilter(t *testing.T) {
	z := newRemoteDNS(t)
	script := filepath.Join(t.TempDir(), "filter")
	must(t, os.WriteFile(script, []byte("#!/bin/sh\nif grep -q 'buy now'; then echo 'Looks like spam to me' >&2; exit 100; fi\nexit 0\n"), 0o755))
	e := checkEnv(t, z, fmt.Sprintf("filter = %q", script), `spf = "off"`, `dmarc = "off"`, `dkim-verify = "off"`)
	s := e.start("smtpd", "")
	if _, end := checkSend(t, "127.0.0.2", s.Addr, "a@b.test", "joe@example.test", "Subject: offer\n\nbuy now!\n"); end != "554 5.7.1 Looks like spam to me" {
		t.Fatalf("spam: %q", end)
	}
	if _, end := checkSend(t, "127.0.0.2", s.Addr, "a@b.test", "joe@example.test", "Subject: hello\n\nhow are you\n"); !strings.HasPrefix(end, "250 ") {
		t.Fatalf("ham: %q", end)
	}
	msgs := smtpdWaitSpool(t, e, 1)
	if !strings.Contains(msgs[0].Data, "how are you") {
		t.Fatal(msgs[0].Data)
	}
	// Nothing of the refused message is left, not even in tmp/.
	if ents, _ := os.ReadDir(filepath.Join(e.Spool, "tmp")); len(ents) != 0 {
		t.Errorf("left in tmp/: %v", ents)
	}
}

// testMilter is a milter in the test process: it adds a header to every
// message and refuses those whose subject says so.
type testMilter struct {
	milter.NoOpMilter
	subject string
}

func (m *testMilter) Header(name, value string, _ milter.Modifier) (*milter.Response, error) {
	if strings.EqualFold(name, "Subject") {
		m.subject = strings.TrimSpace(value)
	}
	return milter.RespContinue, nil
}

func (m *testMilter) EndOfMessage(mod milter.Modifier) (*milter.Response, error) {
	switch m.subject {
	case "reject me":
		return milter.RejectWithCodeAndReason(550, "5.7.1 the milter says no")
	case "discard me":
		return milter.RespDiscard, nil
	}
	mod.AddHeader("X-Test-Milter", "seen "+mod.Get("i"))
	return milter.RespAccept, nil
}

func (m *testMilter) Abort(milter.Modifier) error { m.subject = ""; return nil }

// startTestMilter serves testMilter on addr until stop is called; stop
// also cuts the connections in progress.
func startTestMilter(t *testing.T, addr string) (stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	must(t, err)
	srv := milter.NewServer(milter.WithMilter(func() milter.Milter { return &testMilter{} }), milter.WithAction(milter.OptAddHeader))
	go srv.Serve(l)
	var once sync.Once
	stop = func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	return stop
}

// TestCheckMilter: a milter's header is in the committed message (DATA
// and BDAT), its refusal is the reply, its discard a 250 for nothing; a
// milter stopped mid-session gets the default action tempfail (451 for
// the rest of the session, nothing committed), and the client's retry in
// a new session goes through once it is back: nothing is lost.
func TestCheckMilter(t *testing.T) {
	z := newRemoteDNS(t)
	maddr := freeAddr(t, "127.0.0.1")
	stop := startTestMilter(t, maddr)
	e := checkEnv(t, z, fmt.Sprintf("milter = [\"inet:%s\"]", maddr), `milter-timeout = "2s"`, `spf = "off"`, `dmarc = "off"`, `dkim-verify = "off"`)
	s := e.start("smtpd", "")
	_, end := checkSend(t, "127.0.0.2", s.Addr, "a@b.test", "joe@example.test", "Subject: hello\n\nfine\n")
	id := smtpdQueueID(t, end)
	if _, end := checkSend(t, "127.0.0.2", s.Addr, "a@b.test", "joe@example.test", "Subject: reject me\n\nbad\n"); end != "550 5.7.1 the milter says no" {
		t.Fatalf("refused by the milter: %q", end)
	}
	if _, end := checkSend(t, "127.0.0.2", s.Addr, "a@b.test", "joe@example.test", "Subject: discard me\n\nbad\n"); !strings.HasPrefix(end, "250 2.0.0") {
		t.Fatalf("discarded by the milter: %q", end)
	}
	// BDAT, in two chunks.
	d := dialFrom(t, "127.0.0.2", s.Addr)
	d.expect("220 ")
	d.send("EHLO client.test")
	d.expect("250 ")
	d.send("MAIL FROM:<a@b.test>")
	d.expect("250 ")
	d.send("RCPT TO:<joe@example.test>")
	d.expect("250 ")
	part1, part2 := "Subject: chunked\r\n\r\nfirst ", "second\r\n"
	d.raw(fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1))
	d.expect("250 ")
	d.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2))
	bdatID := smtpdQueueID(t, d.expect("250 "))

	msgs := smtpdWaitSpool(t, e, 2)
	for _, m := range msgs {
		if !strings.Contains(m.Data, "\r\nX-Test-Milter: seen "+m.ID+"\r\n") {
			t.Errorf("%s:\n%s", m.ID, m.Data)
		}
		if m.ID != id && m.ID != bdatID {
			t.Errorf("unexpected message %s", m.ID)
		}
	}

	// The milter stops while a session is open.
	d = dialFrom(t, "127.0.0.2", s.Addr)
	d.expect("220 ")
	d.send("EHLO client.test")
	d.expect("250 ")
	stop()
	d.send("MAIL FROM:<a@b.test>")
	d.expect("451 4.7.1")
	startTestMilter(t, maddr) // back, but this session stays refused
	d.send("MAIL FROM:<a@b.test>")
	d.expect("451 4.7.1")
	d.send("QUIT")
	d.expect("221 ")
	if n := len(smtpdSpool(t, e)); n != 2 {
		t.Fatalf("%d messages in the spool after the milter stopped", n)
	}
	// The client retries once the milter is back.
	if _, end := checkSend(t, "127.0.0.2", s.Addr, "a@b.test", "joe@example.test", "Subject: retried\n\nagain\n"); !strings.HasPrefix(end, "250 ") {
		t.Fatalf("retry: %q", end)
	}
	smtpdWaitSpool(t, e, 3)
}

// readAll reads a file or fails.
func readAll(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	b, err := io.ReadAll(f)
	must(t, err)
	return string(b)
}

// addZone adds zone lines to a running test DNS server.
func (z *remoteDNS) addZone(t *testing.T, lines ...string) {
	t.Helper()
	for _, l := range lines {
		rr, err := dns.NewRR("$TTL 60\n" + l)
		must(t, err)
		n := strings.ToLower(rr.Header().Name)
		z.mu.Lock()
		z.rrs[n] = append(z.rrs[n], rr)
		z.mu.Unlock()
	}
}

// TestCheckDKIMDMARC, end to end: keys made by `mailuser dkim-keygen`,
// their records published as it prints them; a message sent with
// sendmail leaves through queue-runner signed with both keys, and the
// receiving smtpd (a second letterbox, its checks on) verifies both and
// passes DMARC (p=reject, strict alignment). The same message changed on
// the way fails DKIM and, from a host SPF does not allow, DMARC: refused.
// Unchanged, from that host, DKIM alone passes DMARC. A domain with
// p=quarantine has its failing mail accepted and filed in Junk.
func TestCheckDKIMDMARC(t *testing.T) {
	z := newRemoteDNS(t,
		`sender.test. IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
		`_dmarc.sender.test. IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"`,
		`quarantine.test. IN TXT "v=spf1 -all"`,
		`_dmarc.quarantine.test. IN TXT "v=DMARC1; p=quarantine"`)
	// The receiver: every client is a stranger.
	recv := smtpdEnv(t, fmt.Sprintf("dns = %q", z.Addr), `relay-networks = ["192.0.2.0/24"]`)
	rs := recv.start("smtpd", "")

	// The sender: its own domain, keys, and a route to the receiver.
	send := newEnv(t, "[queue-runner]", `domains = ["sender.test"]`, "[sendmail]", `domains = ["sender.test"]`)
	keys := filepath.Join(send.Dir, "dkim")
	for _, alg := range []string{"rsa", "ed25519"} {
		out, errs, code := send.run("", "mailuser", "dkim-keygen", "sender.test", "--algorithm", alg, "--dkim-keys", keys)
		if code != 0 || !strings.HasPrefix(out, alg+"._domainkey.sender.test. IN TXT \"v=DKIM1; k="+alg+"; p=") {
			t.Fatalf("dkim-keygen %s: exit %d\n%s%s", alg, code, out, errs)
		}
		z.addZone(t, strings.TrimSpace(out))
		fi, err := os.Stat(filepath.Join(keys, "sender.test", alg+".key"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file: %v %v", fi, err)
		}
	}
	msg := "From: Alice <alice@sender.test>\nTo: joe@example.test\nSubject: signed\nDate: Mon, 1 Dec 2025 10:00:00 +0000\nMessage-ID: <1@sender.test>\n\nhello joe\n"
	if _, errs, code := send.run(msg, "sendmail", "-f", "alice@sender.test", "joe@example.test"); code != 0 {
		t.Fatalf("sendmail: %d %s", code, errs)
	}
	out, errs, code := send.run("", "queue-runner", "--dkim-keys", keys, "--route", "example.test="+rs.Addr, "--dns", z.Addr)
	if code != 0 {
		t.Fatalf("queue-runner: %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(errs, `msg="dkim: signed" cmd=queue-runner`) || !strings.Contains(errs, "signatures=2") {
		t.Errorf("queue-runner log:\n%s", errs)
	}
	msgs := smtpdWaitSpool(t, recv, 1)
	got := msgs[0].Data
	ar := authResults(got)
	for _, want := range []string{"spf=pass smtp.mailfrom=alice@sender.test", "dkim=pass header.a=ed25519-sha256", "dkim=pass header.a=rsa-sha256", "header.d=sender.test", "dmarc=pass header.from=sender.test"} {
		if !strings.Contains(ar, want) {
			t.Errorf("Authentication-Results lack %q: %s", want, ar)
		}
	}
	// What the sender sent: the message without the receiver's fields.
	i := strings.Index(got, "DKIM-Signature:")
	if i < 0 {
		t.Fatalf("no signature:\n%s", got)
	}
	signed := got[i:]
	if !strings.HasSuffix(signed, "\r\n\r\nhello joe\r\n") {
		t.Fatalf("signed message:\n%s", signed)
	}
	if _, end := checkSend(t, "127.0.0.3", rs.Addr, "alice@sender.test", "joe@example.test", strings.Replace(signed, "hello joe", "hello joe, send money", 1)); end != "550 5.7.1 Message rejected: it fails the DMARC policy of sender.test (p=reject)" {
		t.Fatalf("changed message: %q", end)
	}
	if _, end := checkSend(t, "127.0.0.3", rs.Addr, "alice@sender.test", "joe@example.test", signed); !strings.HasPrefix(end, "250 ") {
		t.Fatalf("unchanged message from another host: %q", end)
	}
	msgs = smtpdWaitSpool(t, recv, 2)
	for _, m := range msgs {
		if ar := authResults(m.Data); strings.Contains(ar, "spf=fail") && (!strings.Contains(ar, "dmarc=pass") || !strings.Contains(ar, "dkim=pass")) {
			t.Errorf("DKIM alone should pass DMARC: %s", ar)
		}
	}

	// p=quarantine: accepted, then filed in Junk where there is one.
	must(t, os.MkdirAll(filepath.Join(recv.MailRoot, "example.test", "joe", ".Junk", "new"), 0o700))
	for _, rcpt := range []string{"joe@example.test", "demo@example.test"} {
		if _, end := checkSend(t, "127.0.0.3", rs.Addr, "x@quarantine.test", rcpt, "From: x@quarantine.test\nSubject: junk\n\nspam\n"); !strings.HasPrefix(end, "250 ") {
			t.Fatalf("quarantine: %q", end)
		}
	}
	smtpdWaitSpool(t, recv, 4)
	if out, errs, code := recv.run("", "queue-runner"); code != 0 {
		t.Fatalf("queue-runner: %d\n%s%s", code, out, errs)
	}
	joe := filepath.Join(recv.MailRoot, "example.test", "joe")
	if junk := maildirFiles(t, filepath.Join(joe, ".Junk"), "new"); len(junk) != 1 || !strings.Contains(readAll(t, junk[0]), "Subject: junk") {
		t.Errorf("joe's Junk: %v", junk)
	}
	if inbox := maildirFiles(t, joe, "new"); len(inbox) != 2 {
		t.Errorf("joe's INBOX has %d messages, want the 2 signed ones", len(inbox))
	}
	demo := filepath.Join(recv.MailRoot, "example.test", "demo")
	if inbox := maildirFiles(t, demo, "new"); len(inbox) != 1 || !strings.Contains(readAll(t, inbox[0]), "Subject: junk") {
		t.Errorf("demo (no Junk folder): %v", inbox)
	}
	if _, err := os.Stat(filepath.Join(demo, ".Junk")); err == nil {
		t.Error("a Junk folder was created for demo")
	}
}

// TestCheckDkimKeygen: the selector defaults to the algorithm; an existing
// key is never overwritten (exit 73); options go before or after the
// domain; as root, in a dkim-keys directory owned by another user, the
// new files are that user's; bad arguments exit 64.
func TestCheckDkimKeygen(t *testing.T) {
	e := newEnv(t)
	keys := filepath.Join(e.Dir, "dkim")
	must(t, os.MkdirAll(keys, 0o755))
	uid, gid := openToNobody(t, e)
	must(t, os.Chown(keys, uid, gid))
	out, errs, code := e.run("", "mailuser", "dkim-keygen", "--dkim-keys", keys, "example.org")
	if code != 0 || !strings.HasPrefix(out, "rsa._domainkey.example.org. IN TXT \"v=DKIM1; k=rsa; p=") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, p := range []string{filepath.Join(keys, "example.org"), filepath.Join(keys, "example.org", "rsa.key")} {
		fi, err := os.Stat(p)
		must(t, err)
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
			t.Errorf("%s belongs to uid %d, not the directory's owner %d", p, st.Uid, uid)
		}
	}
	if _, errs, code := e.run("", "mailuser", "dkim-keygen", "--algorithm", "ed25519", "--selector", "rsa", "--dkim-keys", keys, "example.org"); code != 73 || !strings.Contains(errs, "exists") {
		t.Errorf("overwrite: exit %d %s", code, errs)
	}
	if out, _, code := e.run("", "mailuser", "dkim-keygen", "example.org", "--algorithm", "ed25519", "--dkim-keys", keys); code != 0 || !strings.HasPrefix(out, "ed25519._domainkey.example.org. IN TXT") {
		t.Errorf("options after the domain: exit %d %s", code, out)
	}
	for _, args := range [][]string{{"dkim-keygen"}, {"dkim-keygen", "a.org", "b.org"}, {"dkim-keygen", "--algorithm", "dsa", "a.org"}, {"dkim-keygen", "../x.org"}} {
		if _, _, code := e.run("", "mailuser", append(args, "--dkim-keys", keys)...); code != 64 {
			t.Errorf("%v: exit %d, want 64", args, code)
		}
	}
}

// TestCheckPTR: with the dns key set, the client's name in Received comes
// from that server, even with every check off.
func TestCheckPTR(t *testing.T) {
	z := newRemoteDNS(t, `5.0.0.127.in-addr.arpa. IN PTR five.example.net.`)
	e := checkEnv(t, z, `spf = "off"`, `dkim-verify = "off"`, `dmarc = "off"`)
	s := e.start("smtpd", "")
	if _, end := checkSend(t, "127.0.0.5", s.Addr, "a@b.test", "joe@example.test", "Subject: ptr\n\nx\n"); !strings.HasPrefix(end, "250 ") {
		t.Fatal(end)
	}
	if m := smtpdWaitSpool(t, e, 1)[0]; !strings.Contains(m.Data, "(five.example.net [127.0.0.5])") {
		t.Fatalf("Received:\n%s", m.Data)
	}
}
