package tests

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/spool"
)

// smtpdEnv is an env with the user joe@example.test (password "secret") and
// short limits for the tests.
func smtpdEnv(t *testing.T, extra ...string) *env {
	t.Helper()
	e := newEnv(t, append([]string{`auth-failure-delay = "10ms"`}, extra...)...)
	must(t, os.WriteFile(e.Users, []byte("joe@example.test:{PLAIN}secret::::::\ndemo@example.test:{PLAIN}demo::::::\n"), 0o600))
	return e
}

// smtpdTLS writes a self-signed certificate for mx.example.test made here
// with crypto/x509 and returns the config lines naming it.
func smtpdTLS(t *testing.T, dir string) []string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.example.test"},
		DNSNames:     []string{"mx.example.test", "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	cert, keyf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	must(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(t, os.WriteFile(keyf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return []string{fmt.Sprintf("tls-cert = %q", cert), fmt.Sprintf("tls-key = %q", keyf)}
}

// smtpdSend runs a complete transaction on d and returns the final reply.
func smtpdSend(d *dialog, from, to, data string) string {
	d.send("MAIL FROM:<" + from + ">")
	d.expect("250 ")
	d.send("RCPT TO:<" + to + ">")
	d.expect("250 ")
	d.send("DATA")
	d.expect("354 ")
	d.raw(data)
	d.send(".")
	return d.reply()
}

func smtpdQueueID(t *testing.T, reply string) string {
	t.Helper()
	i := strings.LastIndex(reply, "queued as ")
	if !strings.HasPrefix(reply, "250 2.0.0") || i < 0 {
		t.Fatalf("not accepted: %q", reply)
	}
	return strings.TrimSpace(reply[i+len("queued as "):])
}

func TestSmtpdPythonSmtplib(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	out := python(t, `
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "alice@remote.test"; m["To"] = "joe@example.test"; m["Subject"] = "hello"
m.set_content("hello joe\n.leading dot\n")
with smtplib.SMTP(sys.argv[1], int(sys.argv[2])) as c:
    code, msg = c.ehlo("client.test")
    assert b"PIPELINING" in msg and b"8BITMIME" in msg and b"SMTPUTF8" in msg and b"CHUNKING" in msg, msg
    assert b"SIZE 36700160" in msg, msg
    c.send_message(m)
    code, resp = c.noop()
    print("sent", code)
`, host, port)
	if !strings.Contains(out, "sent 250") {
		t.Fatal(out)
	}
	msgs := smtpdWaitSpool(t, e, 1)
	m := msgs[0]
	if m.From != "alice@remote.test" || len(m.Rcpts) != 1 || m.Rcpts[0] != "joe@example.test" {
		t.Fatalf("envelope %+v", m)
	}
	if !strings.HasPrefix(m.Data, "Received: from client.test (") || !strings.Contains(m.Data, "[127.0.0.1])\r\n\tby mx.example.test (letterbox) with ESMTP id "+m.ID) ||
		!strings.Contains(m.Data, "for <joe@example.test>;") {
		t.Fatalf("Received header: %q", m.Data)
	}
	if !strings.Contains(m.Data, "\r\nhello joe\r\n.leading dot\r\n") {
		t.Fatalf("body: %q", m.Data)
	}
	if !strings.Contains(s.Log(), "id="+m.ID) {
		t.Fatalf("no log line with id=%s:\n%s", m.ID, s.Log())
	}
}

func TestSmtpdCurl(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	f := filepath.Join(e.Dir, "msg.txt")
	must(t, os.WriteFile(f, []byte("From: bob@remote.test\r\nSubject: curl\r\n\r\nfrom curl\r\n"), 0o600))
	out, err := bounded(t, exec.Command("curl", "-sS", "smtp://"+s.Addr+"/client.test", "--mail-from", "bob@remote.test",
		"--mail-rcpt", "joe@example.test", "--mail-rcpt", "postmaster@example.test", "-T", f)).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	msgs := smtpdWaitSpool(t, e, 1)
	if len(msgs[0].Rcpts) != 2 || !strings.Contains(msgs[0].Data, "\r\nfrom curl\r\n") || strings.Contains(msgs[0].Data, "\tfor <") {
		t.Fatalf("%+v", msgs[0])
	}
	// curl to an unknown user fails with the server's reply.
	out, err = bounded(t, exec.Command("curl", "-sS", "smtp://"+s.Addr, "--mail-from", "bob@remote.test",
		"--mail-rcpt", "nobody@example.test", "-T", f)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "550") {
		t.Fatalf("curl to unknown user: %v %s", err, out)
	}
}

// TestSmtpdRejections: every refusal with its code and enhanced code, and the
// dialog stays usable after each.
func TestSmtpdRejections(t *testing.T) {
	// The checks on mail from strangers are off: this test is about the
	// protocol, and they would ask DNS (tests/check_test.go has them).
	e := smtpdEnv(t, `relay-networks = ["192.0.2.0/24"]`, "max-errors = 1000", "max-recipients = 3",
		"max-message-size = 5000", "max-received = 5", `spf = "off"`, `dkim-verify = "off"`, `dmarc = "off"`)
	s := e.start("smtpd", "")
	d := dial(t, s.Addr)
	d.expect("220 ")
	d.send("MAIL FROM:<a@remote.test>")
	d.expect("503 5.5.1")
	d.send("EHLO client.test")
	d.expect("250 ")
	type step struct{ send, want string }
	tx := func(steps ...step) {
		t.Helper()
		for _, st := range steps {
			d.send(st.send)
			d.expect(st.want)
		}
		d.send("RSET")
		d.expect("250 2.0.0")
	}
	mail := step{"MAIL FROM:<a@remote.test>", "250 2.1.0"}
	// Recipients.
	tx(mail, step{"RCPT TO:<nobody@example.test>", "550 5.1.1"})
	tx(mail, step{"RCPT TO:<x@remote.test>", "554 5.7.1"})
	for _, r := range []string{"<@example.test:x@remote.test>", "<@a.test,@example.test:x@remote.test>", "<x@remote.test.>",
		"<X@REMOTE.TEST>", "<x@[192.0.2.1]>", `<"x@remote.test">`} {
		tx(mail, step{"RCPT TO:" + r, "5"})
	}
	for _, r := range []string{"<x%remote.test@example.test>", `<"x@remote.test"@example.test>`, "<remote.test!x@example.test>", "<x%remote.test@EXAMPLE.TEST.>"} {
		tx(mail, step{"RCPT TO:" + r, "550 5.1.1"})
	}
	tx(mail, step{"RCPT TO:<JOE@EXAMPLE.TEST.>", "250 2.1.5"}, step{"RCPT TO:<@x.test:joe@example.test>", "250 2.1.5"}, step{"RCPT TO:<Postmaster>", "250 2.1.5"})
	// Malformed addresses.
	for _, a := range []string{"<joe@>", "<joe@exa mple.test>", "<a..b@example.test>", "<.a@example.test>", "<joe", "joe@example.test>", "<joe@-x.test>", "<@x.test>", "<joe@x.test> FOO"} {
		tx(mail, step{"RCPT TO:" + a, "5"})
	}
	tx(step{"MAIL FROM:<a@@remote.test>", "501 5.1.7"})
	tx(step{"MAIL TO:<a@remote.test>", "501 5.5.4"})
	tx(step{"MAIL FROM:<ü@remote.test>", "553 5.6.7"})
	tx(step{"MAIL FROM:<a@remote.test> SIZE=6000", "552 5.3.4"})
	tx(step{"MAIL FROM:<a@remote.test> XYZ=1", "555 5.5.4"})
	tx(step{"RCPT TO:<joe@example.test>", "503 5.5.1"})
	tx(step{"DATA", "503 5.5.1"})
	tx(mail, step{"DATA", "554 5.5.1"})
	tx(mail, step{"MAIL FROM:<b@remote.test>", "503 5.5.1"})
	// Limits.
	tx(mail, step{"RCPT TO:<joe@example.test>", "250 "}, step{"RCPT TO:<postmaster@example.test>", "250 "},
		step{"RCPT TO:<abuse@example.test>", "550 5.1.1"}, step{"RCPT TO:<joe+x@example.test>", "250 "}, step{"RCPT TO:<joe+y@example.test>", "452 4.5.3"})
	d.send(strings.Repeat("X", 600))
	d.expect("500 5.5.2")
	d.send("NOOP " + strings.Repeat("x", 490))
	d.expect("250 ")
	// Other commands.
	d.send("VRFY joe")
	d.expect("252 2.5.0")
	d.send("VRFY nobody")
	d.expect("252 2.5.0")
	d.send("EXPN staff")
	d.expect("502 5.5.1")
	d.send("HELP")
	if l := d.expect("214 "); !strings.Contains(l, "2.0.0") {
		t.Fatal(l)
	}
	d.send("STARTTLS")
	d.expect("502 5.5.1")
	d.send("AUTH CRAM-MD5")
	d.expect("504 5.5.4")
	d.send("FOO")
	d.expect("500 5.5.1")

	// Data rejections, each read to the final dot.
	big := strings.Repeat(strings.Repeat("y", 76)+"\r\n", 70)
	for _, c := range []struct{ name, data, want string }{
		{"bare LF", "Subject: x\r\n\r\nbare\nLF\r\n", "550 5.6.11"},
		{"bare CR", "Subject: x\r\n\r\nbare\rCR\r\n", "550 5.6.11"},
		{"smuggling", "Subject: x\r\n\r\nx\r\n.\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nevil\r\n", "550 5.6.11"},
		{"NUL", "Subject: x\r\n\r\nnul\x00byte\r\n", "554 5.6.0"},
		{"long line", "Subject: x\r\n\r\n" + strings.Repeat("z", 1001) + "\r\n", "500 5.5.2"},
		{"too big", "Subject: x\r\n\r\n" + big, "552 5.3.4"},
		{"loop", strings.Repeat("Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n", 6) + "\r\nloop\r\n", "554 5.4.6"},
	} {
		r := smtpdSend(d, "a@remote.test", "joe@example.test", c.data)
		if !strings.HasPrefix(r, c.want) {
			t.Errorf("%s: got %q, want %s", c.name, r, c.want)
		}
		d.send("NOOP")
		d.expect("250 ")
	}
	if n := len(smtpdSpool(t, e)); n != 0 {
		t.Fatalf("%d messages queued from refused data", n)
	}
	d.send("QUIT")
	d.expect("221 2.0.0")
}

func TestSmtpdMaxErrors(t *testing.T) {
	e := smtpdEnv(t, "max-errors = 3")
	s := e.start("smtpd", "")
	d := dial(t, s.Addr)
	d.expect("220 ")
	for i := 0; i < 3; i++ {
		d.send("BOGUS")
		d.expect("500 5.5.1")
	}
	d.expect("421 4.7.0")
	if l, err := d.r.ReadString('\n'); err == nil {
		t.Fatalf("still open: %q", l)
	}
}

// A client that drops the connection in the middle of DATA leaves nothing.
func TestSmtpdDropMidData(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	d := dial(t, s.Addr)
	d.expect("220 ")
	d.send("EHLO x")
	d.expect("250 ")
	d.send("MAIL FROM:<a@remote.test>")
	d.expect("250 ")
	d.send("RCPT TO:<joe@example.test>")
	d.expect("250 ")
	d.send("DATA")
	d.expect("354 ")
	d.raw("Subject: half\r\n\r\nhalf a message\r\n")
	d.conn.Close()
	waitFor(t, 5*time.Second, "disconnect logged", func() bool { return strings.Contains(s.Log(), "connection lost during data") })
	if n := len(smtpdSpool(t, e)); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
	smtpdNoPartial(t, e)
}

// BDAT: a chunked message, and a refused chunk under pipelining whose
// followers are read and refused so the dialog stays in step (go-smtp #315).
func TestSmtpdBDAT(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	d := dial(t, s.Addr)
	d.expect("220 ")
	d.send("EHLO x")
	d.expect("250 ")
	msg := "Subject: chunks\r\n\r\nchunked body\r\n"
	d.raw("MAIL FROM:<a@remote.test>\r\nRCPT TO:<joe@example.test>\r\n" +
		fmt.Sprintf("BDAT 10\r\n%sBDAT %d LAST\r\n%s", msg[:10], len(msg)-10, msg[10:]))
	d.expect("250 2.1.0")
	d.expect("250 2.1.5")
	d.expect("250 2.0.0")
	id := smtpdQueueID(t, d.expect("250 2.0.0"))
	bad := "Subject: x\r\n\r\nbare\nLF\r\n"
	tail := "MAIL FROM:<evil@remote.test>\r\n" // data that looks like a command
	d.raw("MAIL FROM:<a@remote.test>\r\nRCPT TO:<joe@example.test>\r\n" +
		fmt.Sprintf("BDAT %d\r\n%sBDAT %d LAST\r\n%sNOOP\r\n", len(bad), bad, len(tail), tail))
	d.expect("250 2.1.0")
	d.expect("250 2.1.5")
	d.expect("550 5.6.11")
	d.expect("503 5.5.1")
	d.expect("250 2.0.0") // the NOOP, not the "command" inside the chunk
	// BDAT without a transaction: the chunk is still skipped.
	d.raw("BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
	d.expect("503 5.5.1")
	d.expect("250 2.0.0")
	// RSET in the middle of a chunked message drops it.
	d.raw("MAIL FROM:<a@remote.test>\r\nRCPT TO:<joe@example.test>\r\nBDAT 5\r\nhalf!RSET\r\n")
	d.expect("250 ")
	d.expect("250 ")
	d.expect("250 2.0.0")
	d.expect("250 2.0.0")
	d.send("QUIT")
	d.expect("221 ")
	msgs := smtpdSpool(t, e)
	if len(msgs) != 1 || msgs[0].ID != id || !strings.HasSuffix(msgs[0].Data, "\r\n"+msg) {
		t.Fatalf("spool: %+v", msgs)
	}
}

func TestSmtpdAuth(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "submission")
	host, port, _ := net.SplitHostPort(s.Addr)
	out := python(t, `
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
for mech in ("PLAIN", "LOGIN"):
    c = smtplib.SMTP(host, port)
    c.ehlo("client.test")
    assert "auth" in c.esmtp_features and "PLAIN" in c.esmtp_features["auth"] and "LOGIN" in c.esmtp_features["auth"]
    code, resp = c.docmd("MAIL FROM:<joe@example.test>")
    print("noauth", code, resp.decode())
    c.user, c.password = "joe@example.test", "secret"
    code, resp = c.auth(mech, getattr(c, "auth_" + mech.lower()))
    print(mech, code)
    c.sendmail("joe@example.test", ["friend@remote.test"], "Subject: sub " + mech + "\r\n\r\nhi\r\n")
    c.quit()
c = smtplib.SMTP(host, port)
c.ehlo("client.test")
c.user, c.password = "joe@example.test", "wrong"
for i in range(3):
    try:
        c.auth("PLAIN", c.auth_plain)
    except smtplib.SMTPAuthenticationError as err:
        print("fail", err.smtp_code, err.smtp_error.decode())
    except smtplib.SMTPServerDisconnected:
        print("disconnected")
        break
    except smtplib.SMTPResponseException as err:
        print("fail", err.smtp_code, err.smtp_error.decode())
`, host, port)
	for _, want := range []string{"noauth 530 5.7.0", "PLAIN 235", "LOGIN 235", "fail 535 5.7.8", "fail 421 4.7.0"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
	msgs := smtpdWaitSpool(t, e, 2)
	for _, m := range msgs {
		if !strings.Contains(m.Data, "with ESMTPA id") || m.Rcpts[0] != "friend@remote.test" {
			t.Fatalf("%+v", m)
		}
	}
}

func TestSmtpdStartTLS(t *testing.T) {
	e := smtpdEnv(t)
	e = smtpdEnv(t, smtpdTLS(t, e.Dir)...)
	s := e.start("smtpd", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	out := python(t, `
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
c = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
c.ehlo("client.test")
assert c.has_extn("starttls")
c.starttls(context=ctx)
c.ehlo("client.test")
assert not c.has_extn("starttls")
c.login("joe@example.test", "secret")
c.sendmail("joe@example.test", ["friend@remote.test"], "Subject: tls\r\n\r\nover tls\r\n")
c.quit()
print("ok", c.sock is None)
`, host, port)
	if !strings.Contains(out, "ok") {
		t.Fatal(out)
	}
	msgs := smtpdWaitSpool(t, e, 1)
	if !strings.Contains(msgs[0].Data, "with ESMTPSA id") {
		t.Fatalf("%q", msgs[0].Data)
	}
}

// Commands sent in plaintext behind STARTTLS must not run inside the TLS
// session (CVE-2011-0411).
func TestSmtpdStartTLSInjection(t *testing.T) {
	e := smtpdEnv(t)
	e = smtpdEnv(t, smtpdTLS(t, e.Dir)...)
	s := e.start("smtpd", "")
	d := dial(t, s.Addr)
	d.expect("220 ")
	d.raw("EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<joe@example.test>\r\n")
	d.expect("250 ")
	d.expect("220 2.0.0")
	tc := tls.Client(d.conn, &tls.Config{InsecureSkipVerify: true})
	must(t, tc.Handshake())
	td := &dialog{t: t, conn: tc, r: bufio.NewReader(tc)}
	td.send("EHLO x")
	td.expect("250 ")
	td.send("DATA")
	td.expect("503 5.5.1") // the injected MAIL/RCPT were dropped
	td.send("RCPT TO:<joe@example.test>")
	td.expect("503 5.5.1")
}

func TestSmtpdImplicitTLS(t *testing.T) {
	e := smtpdEnv(t)
	e = smtpdEnv(t, smtpdTLS(t, e.Dir)...)
	s := e.start("smtpd", "submissions")
	c, err := tls.Dial("tcp", s.Addr, &tls.Config{InsecureSkipVerify: true})
	must(t, err)
	defer c.Close()
	d := &dialog{t: t, conn: c, r: bufio.NewReader(c)}
	d.expect("220 ")
	d.send("EHLO x")
	if l := d.expect("250 "); false {
		t.Log(l)
	}
	d.send("MAIL FROM:<joe@example.test>")
	d.expect("530 5.7.0")
	d.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00joe@example.test\x00secret")))
	d.expect("235 2.7.0")
	id := smtpdQueueID(t, smtpdSend(d, "joe@example.test", "friend@remote.test", "Subject: 465\r\n\r\nimplicit\r\n"))
	msgs := smtpdWaitSpool(t, e, 1)
	if msgs[0].ID != id || !strings.Contains(msgs[0].Data, "with ESMTPSA id") {
		t.Fatalf("%+v", msgs[0])
	}
}

// Plaintext AUTH to a non-loopback client needs TLS; loopback (all the
// other tests) may. We can't get a non-loopback peer on loopback, so this
// goes through the stdio mode with TCPREMOTEIP.
func TestSmtpdInsecureAuthRefused(t *testing.T) {
	e := smtpdEnv(t)
	out := smtpdStdio(t, e, []string{"TCPREMOTEIP=192.0.2.7", "TCPREMOTEPORT=4000"},
		"EHLO x\r\nAUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00joe@example.test\x00secret"))+"\r\nQUIT\r\n")
	if strings.Contains(out, "AUTH PLAIN") || !strings.Contains(out, "538 5.7.11") {
		t.Fatalf("%s", out)
	}
	out = smtpdStdio(t, e, []string{"TCPREMOTEIP=192.0.2.7", "TCPREMOTEPORT=4000"},
		"EHLO x\r\nAUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00joe@example.test\x00secret"))+"\r\nQUIT\r\n", "--allow-insecure-auth")
	if !strings.Contains(out, "AUTH PLAIN LOGIN") || !strings.Contains(out, "235 2.7.0") {
		t.Fatalf("--allow-insecure-auth: %s", out)
	}
}

// smtpdStdio runs smtpd with the dialog on pipes and returns its output.
func smtpdStdio(t *testing.T, e *env, envv []string, input string, args ...string) string {
	t.Helper()
	c := e.cmd("smtpd", args...)
	c.Env = append(c.Env, envv...)
	c.Stdin = strings.NewReader(input)
	var errb strings.Builder
	c.Stderr = &errb
	out, err := bounded(t, c).Output()
	if err != nil {
		t.Fatalf("smtpd: %v\n%s", err, errb.String())
	}
	return string(out)
}

func TestSmtpdStdioPipes(t *testing.T) {
	e := smtpdEnv(t)
	dialogIn := "EHLO pipe.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<joe@example.test>\r\nDATA\r\nSubject: pipe\r\n\r\nvia pipes\r\n.\r\nQUIT\r\n"
	out := smtpdStdio(t, e, nil, dialogIn)
	// An unknown peer is not trusted: no relaying.
	if !strings.HasPrefix(out, "220 ") || !strings.Contains(out, "554 5.7.1") || !strings.Contains(out, "250 2.0.0 OK: queued as ") || !strings.Contains(out, "221 ") {
		t.Fatalf("%s", out)
	}
	// RELAYCLIENT makes it trusted.
	out = smtpdStdio(t, e, []string{"RELAYCLIENT="}, dialogIn)
	if strings.Contains(out, "554 5.7.1") || strings.Count(out, "250 2.1.5") != 2 {
		t.Fatalf("%s", out)
	}
	msgs := smtpdSpool(t, e)
	if len(msgs) != 2 || !strings.Contains(msgs[0].Data, "from pipe.test (local)") {
		t.Fatalf("%+v", msgs)
	}
}

// fd 0 a connected socket (inetd, systemd Accept=yes): the peer address is
// known, so loopback may relay.
func TestSmtpdStdioSocket(t *testing.T) {
	e := smtpdEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	must(t, err)
	defer client.Close()
	srvConn, err := l.Accept()
	must(t, err)
	f, err := srvConn.(*net.TCPConn).File()
	must(t, err)
	srvConn.Close()
	c := e.cmd("smtpd")
	c.Stdin, c.Stdout = f, f
	var errb syncBuffer
	c.Stderr = &errb
	must(t, c.Start())
	f.Close()
	defer func() { c.Process.Kill(); c.Wait() }()
	client.SetDeadline(time.Now().Add(20 * time.Second))
	d := &dialog{t: t, conn: client, r: bufio.NewReader(client)}
	d.expect("220 ")
	d.send("EHLO sock.test")
	d.expect("250 ")
	id := smtpdQueueID(t, smtpdSend(d, "a@example.test", "friend@remote.test", "Subject: s\r\n\r\nsocket\r\n"))
	d.send("QUIT")
	d.expect("221 ")
	done := make(chan error)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("smtpd did not exit after QUIT")
	}
	msgs := smtpdSpool(t, e)
	if len(msgs) != 1 || msgs[0].ID != id || !strings.Contains(msgs[0].Data, "[127.0.0.1])") {
		t.Fatalf("%+v", msgs)
	}
}

// LISTEN_FDS (systemd Accept=no): a passed listener named submission.
func TestSmtpdListenFDs(t *testing.T) {
	e := smtpdEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	f, err := l.(*net.TCPListener).File()
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	c := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=submission exec "$0"`, bin(t, "smtpd"))
	c.Env = append(os.Environ(), "LETTERBOX_CONFIG="+e.Config)
	c.ExtraFiles = []*os.File{f}
	var errb syncBuffer
	c.Stderr = &errb
	must(t, c.Start())
	f.Close()
	defer func() { c.Process.Kill(); c.Wait() }()
	d := dial(t, addr)
	d.expect("220 ")
	d.send("EHLO x")
	d.expect("250 ")
	d.send("MAIL FROM:<a@example.test>")
	d.expect("530 5.7.0") // it is a submission socket
	d.send("QUIT")
	d.expect("221 ")
	// SIGTERM with no session: exits at once.
	start := time.Now()
	c.Process.Signal(syscall.SIGTERM)
	if err := c.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, errb.String())
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %v to stop", time.Since(start))
	}
}

// SIGTERM: idle sessions get 421, a message in transfer still gets its 250,
// and the process is gone within 5 s.
func TestSmtpdSIGTERM(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	idle := dial(t, s.Addr)
	idle.expect("220 ")
	idle.send("EHLO idle")
	idle.expect("250 ")
	busy := dial(t, s.Addr)
	busy.expect("220 ")
	busy.send("EHLO busy")
	busy.expect("250 ")
	busy.send("MAIL FROM:<a@remote.test>")
	busy.expect("250 ")
	busy.send("RCPT TO:<joe@example.test>")
	busy.expect("250 ")
	busy.send("DATA")
	busy.expect("354 ")
	busy.raw("Subject: in flight\r\n\r\n")
	start := time.Now()
	must(t, s.Cmd.Process.Signal(syscall.SIGTERM))
	idle.expect("421 4.3.2")
	busy.raw("rest of it\r\n.\r\n")
	busy.expect("250 2.0.0")
	busy.expect("421 4.3.2")
	done := make(chan error, 1)
	go func() { done <- s.Cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5*time.Second - time.Since(start)):
		t.Fatal("smtpd still running 5 s after SIGTERM")
	}
	if n := len(smtpdSpool(t, e)); n != 1 {
		t.Fatalf("%d messages in the spool", n)
	}
}

// A client that never finishes its DATA is cut off on SIGTERM, told 421,
// and nothing of it is queued; still within 5 s.
func TestSmtpdSIGTERMStalledData(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	d := dial(t, s.Addr)
	d.expect("220 ")
	d.send("EHLO x")
	d.expect("250 ")
	d.send("MAIL FROM:<a@remote.test>")
	d.expect("250 ")
	d.send("RCPT TO:<joe@example.test>")
	d.expect("250 ")
	d.send("DATA")
	d.expect("354 ")
	d.raw("Subject: stalled\r\n\r\nnever ends")
	start := time.Now()
	must(t, s.Cmd.Process.Signal(syscall.SIGTERM))
	d.expect("421 4.3.2")
	done := make(chan error, 1)
	go func() { done <- s.Cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(6 * time.Second):
		t.Fatal("smtpd still running after SIGTERM")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("stopped after %v", el)
	}
	if n := len(smtpdSpool(t, e)); n != 0 {
		t.Fatalf("%d messages in the spool", n)
	}
	smtpdNoPartial(t, e)
}

// Durability: smtpd is SIGKILLed while clients are mid-DATA, again and
// again. Every message that got its 250 is in the spool; nothing partial is
// visible.
func TestSmtpdSIGKILLDurability(t *testing.T) {
	e := smtpdEnv(t)
	accepted := map[string]bool{}
	// Kills that landed mid-message: a client between DATA and its reply,
	// or a partial file left (a message being written); of those, how
	// many left a partial file.
	midMessage, midWrite := 0, 0
	body := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n", 100)
	for round := 0; round < 8; round++ {
		s := e.start("smtpd", "")
		results := make(chan string, 10000)
		var inData atomic.Int32
		var wg sync.WaitGroup
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				c, err := net.Dial("tcp", s.Addr)
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				r := bufio.NewReader(c)
				read := func() string {
					for {
						l, err := r.ReadString('\n')
						if err != nil {
							return ""
						}
						if len(l) < 4 || l[3] != '-' {
							return l
						}
					}
				}
				if read() == "" {
					return
				}
				fmt.Fprintf(c, "EHLO w%d\r\n", w)
				read()
				for i := 0; ; i++ {
					fmt.Fprintf(c, "MAIL FROM:<a@remote.test>\r\nRCPT TO:<joe@example.test>\r\nDATA\r\n")
					if !strings.HasPrefix(read(), "250") || !strings.HasPrefix(read(), "250") || !strings.HasPrefix(read(), "354") {
						return
					}
					inData.Add(1)
					// Write the message in pieces so the kill lands mid-DATA.
					fmt.Fprintf(c, "Subject: r%d w%d m%d\r\n\r\n", round, w, i)
					c.Write([]byte(body[:len(body)/2]))
					c.Write([]byte(body[len(body)/2:] + ".\r\n"))
					l := read()
					inData.Add(-1)
					if !strings.HasPrefix(l, "250 ") {
						return
					}
					results <- strings.TrimSpace(l[strings.LastIndex(l, " ")+1:])
				}
			}(w)
		}
		// Let some messages through, then kill while others are in flight.
		waitFor(t, 10*time.Second, "some accepted messages", func() bool { return len(results) >= 2+round })
		before := spoolPartials(t, e)
		receiving := inData.Load() > 0
		s.Cmd.Process.Kill()
		s.Cmd.Wait()
		// A kill that left a new temporary file or a data file without its
		// envelope landed while a message was being written.
		partial := spoolPartials(t, e) > before
		if receiving || partial {
			midMessage++
		}
		if partial {
			midWrite++
		}
		wg.Wait() // the workers see their connections die
		close(results)
		for id := range results {
			accepted[id] = true
		}
	}
	msgs := smtpdSpool(t, e)
	have := map[string]bool{}
	for _, m := range msgs {
		have[m.ID] = true
		if !strings.HasSuffix(m.Data, body) {
			t.Errorf("message %s is incomplete (%d octets)", m.ID, len(m.Data))
		}
	}
	for id := range accepted {
		if !have[id] {
			t.Errorf("message %s got 250 but is not in the spool", id)
		}
	}
	if len(accepted) < 8 {
		t.Fatalf("only %d messages accepted", len(accepted))
	}
	smtpdNoPartial(t, e)
	t.Logf("of 8 kills, %d landed mid-message, %d left a partial file", midMessage, midWrite)
	if midMessage < 4 {
		t.Fatalf("only %d of 8 kills landed while a message was in flight: the test proved little", midMessage)
	}
}

// spoolPartials counts the files a writer killed mid-message leaves: in
// tmp/, and data files without an envelope.
func spoolPartials(t testing.TB, e *env) int {
	t.Helper()
	tmp, err := os.ReadDir(filepath.Join(e.Spool, "tmp"))
	must(t, err)
	data, err := os.ReadDir(filepath.Join(e.Spool, "data"))
	must(t, err)
	n := len(tmp)
	for _, d := range data {
		if _, err := os.Stat(filepath.Join(e.Spool, "env", d.Name())); os.IsNotExist(err) {
			n++
		}
	}
	return n
}

// smtpdMsg is a message found in the spool.
type smtpdMsg struct {
	ID, From string
	Rcpts    []string
	Data     string
}

// smtpdSpool reads every committed message (envelope in env/) with its
// data, through the spool package's own reader.
//
// The spool must exist (smtpd makes it when it starts): an empty answer
// for a spool that is not there would let "nothing was queued" pass for
// the wrong reason.
func smtpdSpool(t testing.TB, e *env) []smtpdMsg {
	t.Helper()
	if _, err := os.Stat(filepath.Join(e.Spool, "env")); err != nil {
		t.Fatalf("no spool to look in: %v", err)
	}
	sp, err := spool.Open(e.Spool)
	must(t, err)
	envs, err := sp.List()
	must(t, err)
	var out []smtpdMsg
	for _, env := range envs {
		f, err := sp.OpenData(env.ID)
		must(t, err)
		b, err := io.ReadAll(f)
		f.Close()
		must(t, err)
		m := smtpdMsg{ID: env.ID, From: env.From, Data: string(b)}
		for _, r := range env.Recipients {
			m.Rcpts = append(m.Rcpts, r.Address)
		}
		out = append(out, m)
	}
	return out
}

// smtpdWaitSpool waits until the spool holds n messages and returns them.
func smtpdWaitSpool(t testing.TB, e *env, n int) []smtpdMsg {
	t.Helper()
	var msgs []smtpdMsg
	waitFor(t, 10*time.Second, fmt.Sprintf("%d messages in the spool", n), func() bool {
		msgs = smtpdSpool(t, e)
		return len(msgs) >= n
	})
	if len(msgs) != n {
		t.Fatalf("%d messages in the spool, want %d", len(msgs), n)
	}
	return msgs
}

// smtpdNoPartial checks that every visible message (an envelope in env/)
// has its complete data: the envelope's size is the data file's.
func smtpdNoPartial(t testing.TB, e *env) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.Spool, "env"))
	if err != nil {
		t.Fatalf("no spool to look in: %v", err)
	}
	sp, err := spool.Open(e.Spool)
	must(t, err)
	for _, ent := range ents {
		env, err := sp.Load(ent.Name())
		if err != nil {
			t.Errorf("envelope %s unreadable: %v", ent.Name(), err)
			continue
		}
		fi, err := os.Stat(filepath.Join(e.Spool, "data", ent.Name()))
		if err != nil || fi.Size() != env.Size {
			t.Errorf("message %s: data %v, size in envelope %d", ent.Name(), err, env.Size)
		}
	}
}

// End to end: smtplib → smtpd → spool → queue-runner (one pass, as cron
// runs it) → Maildir, with the trace headers a mailbox expects.
func TestSmtpdEndToEndMaildir(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	python(t, `
import smtplib, sys
with smtplib.SMTP(sys.argv[1], int(sys.argv[2])) as c:
    c.ehlo("client.test")
    c.sendmail("alice@remote.test", ["joe@example.test"], "From: alice@remote.test\r\nSubject: e2e\r\n\r\nall the way\r\n")
`, host, port)
	smtpdWaitSpool(t, e, 1)
	if out, errs, code := e.run("", "queue-runner"); code != 0 {
		t.Fatalf("queue-runner: %d\n%s%s", code, out, errs)
	}
	md := filepath.Join(e.MailRoot, "example.test", "joe")
	var files []string
	waitFor(t, 10*time.Second, "delivery into the Maildir", func() bool {
		files = append(maildirFilesSoFar(t, md, "new"), maildirFilesSoFar(t, md, "cur")...)
		return len(files) == 1
	})
	b, err := os.ReadFile(files[0])
	must(t, err)
	msg := strings.ReplaceAll(string(b), "\r\n", "\n")
	for _, h := range []string{"Return-Path: <alice@remote.test>\n", "Delivered-To: joe@example.test\n", "Received: from client.test (", "by mx.example.test (letterbox) with ESMTP id ", "\nSubject: e2e\n\nall the way\n"} {
		if !strings.Contains(msg, h) {
			t.Errorf("missing %q in:\n%s", h, msg)
		}
	}
	if n := len(smtpdSpool(t, e)); n != 0 {
		t.Errorf("%d messages left in the spool after delivery", n)
	}
}

func TestSmtpdTimeouts(t *testing.T) {
	// Each server has only one short timeout, so a slow machine can't make
	// the other one fire first.
	e := smtpdEnv(t, `command-timeout = "300ms"`)
	s := e.start("smtpd", "")
	d := dial(t, s.Addr)
	d.expect("220 ")
	d.expect("421 4.4.2") // no command in time

	e = smtpdEnv(t, `data-timeout = "300ms"`)
	s = e.start("smtpd", "")
	d = dial(t, s.Addr)
	d.expect("220 ")
	d.send("EHLO x")
	d.expect("250 ")
	d.send("MAIL FROM:<a@remote.test>")
	d.expect("250 ")
	d.send("RCPT TO:<joe@example.test>")
	d.expect("250 ")
	d.send("DATA")
	d.expect("354 ")
	d.raw("Subject: slow\r\n\r\n")
	d.expect("421 4.4.2") // no data in time
	if n := len(smtpdSpool(t, e)); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}

// openToNobody makes e's directories reachable by an unprivileged user.
func openToNobody(t *testing.T, e *env) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup("nobody")
	must(t, err)
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	for _, d := range []string{filepath.Dir(e.Dir), e.Dir} {
		must(t, os.Chmod(d, 0o755))
	}
	for _, f := range []string{e.Config, e.Users, e.Aliases} {
		must(t, os.Chmod(f, 0o644))
	}
	return uid, gid
}

// --user: bind as root, then serve as that user. Not root: --user is an
// error unless it names ourselves.
func TestSmtpdUserDrop(t *testing.T) {
	e := smtpdEnv(t)
	if os.Geteuid() != 0 {
		_, errs, code := e.run("", "smtpd", "--listen", freeAddr(t, "127.0.0.1"), "--user", "nobody")
		if code == 0 || !strings.Contains(errs, "not running as root") {
			t.Fatalf("exit %d: %s", code, errs)
		}
		return
	}
	uid, gid := openToNobody(t, e)
	must(t, os.MkdirAll(e.Spool, 0o700))
	must(t, os.Chown(e.Spool, uid, gid))
	s := e.start("smtpd", "", "--user", "nobody")
	d := dial(t, s.Addr)
	d.expect("220 ")
	d.send("EHLO x")
	d.expect("250 ")
	smtpdQueueID(t, smtpdSend(d, "a@remote.test", "joe@example.test", "Subject: nobody\r\n\r\nx\r\n"))
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.Cmd.Process.Pid))
	must(t, err)
	if !strings.Contains(string(st), fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid)) {
		t.Fatalf("still privileged:\n%s", st)
	}
	ents, err := os.ReadDir(filepath.Join(e.Spool, "env"))
	must(t, err)
	fi, err := ents[0].Info()
	must(t, err)
	if fi.Sys().(*syscall.Stat_t).Uid != uint32(uid) {
		t.Fatalf("envelope owned by uid %d", fi.Sys().(*syscall.Stat_t).Uid)
	}
}
