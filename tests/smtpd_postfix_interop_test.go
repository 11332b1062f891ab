//go:build interop

package tests

import (
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// clientPostfix starts a private Postfix with no listener that sends
// everything to relayhost [127.0.0.1]:port (our smtpd); setup, if not nil,
// may add files to the instance's Etc and returns more main.cf settings.
func clientPostfix(t *testing.T, port string, setup func(p *postfixInstance) string) *postfixInstance {
	t.Helper()
	p := newPostfix(t, "letterbox-client-postfix-")
	extra := ""
	if setup != nil {
		extra = setup(p)
	}
	p.start(t, fmt.Sprintf(`myhostname = client.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
relayhost = [127.0.0.1]:%s
`, port)+extra)
	return p
}

// postfixSendmail submits msg with Postfix's own sendmail(1) into the
// instance p (postdrop → pickup → cleanup → qmgr → smtp).
func postfixSendmail(t *testing.T, p *postfixInstance, from, to, msg string) {
	t.Helper()
	c := exec.Command("/usr/sbin/sendmail", "-C", p.Etc(), "-f", from, to)
	c.Stdin = strings.NewReader(msg)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("postfix sendmail: %v\n%s", err, out)
	}
}

// deliverAll runs queue-runner passes until n messages are in the Maildir
// of local@example.test and returns them, parsed.
func deliverAll(t *testing.T, e *env, local string, n int) []*mail.Message {
	t.Helper()
	md := filepath.Join(e.MailRoot, "example.test", local)
	var files []string
	waitFor(t, 30*time.Second, fmt.Sprintf("%d messages in %s's Maildir", n, local), func() bool {
		if out, errs, code := e.run("", "queue-runner"); code != 0 {
			t.Fatalf("queue-runner: exit %d\n%s%s", code, out, errs)
		}
		files = append(maildirFilesSoFar(t, md, "new"), maildirFilesSoFar(t, md, "cur")...)
		return len(files) >= n
	})
	if len(files) != n {
		t.Fatalf("%d messages in %s, want %d", len(files), md, n)
	}
	var msgs []*mail.Message
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(t, err)
		m, err := mail.ReadMessage(strings.NewReader(string(b)))
		must(t, err)
		msgs = append(msgs, m)
	}
	return msgs
}

// acceptedIDs returns the queue ids of smtpd's "accepted" log lines.
func acceptedIDs(log string) []string {
	var ids []string
	for _, m := range regexp.MustCompile(`msg=accepted .*?\bid=(\S+)`).FindAllStringSubmatch(log, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// Postfix as a client relaying into our smtpd (port 25 mode, a loopback
// relay client): mail given to Postfix's sendmail reaches demo's Maildir
// through our smtpd, spool and queue-runner, with our Received header (our
// queue id) on top of Postfix's, and Postfix's Date and Message-ID as they
// were (a relayed message is not ours to change).
func TestInteropSmtpdPostfixRelay(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	_, port, _ := net.SplitHostPort(s.Addr)
	p := clientPostfix(t, port, nil)
	postfixSendmail(t, p, "alice@postfix.test", "demo@example.test",
		"From: Alice <alice@postfix.test>\nTo: demo@example.test\nSubject: via postfix\n\nrelayed by Postfix\n.leading dot\n")
	msgs := deliverAll(t, e, "demo", 1)
	ids := acceptedIDs(s.Log())
	if len(ids) != 1 {
		t.Fatalf("smtpd accepted %d messages:\n%s", len(ids), s.Log())
	}
	m := msgs[0]
	rcv := m.Header["Received"]
	if len(rcv) != 2 {
		t.Fatalf("Received headers %q", rcv)
	}
	if !strings.HasPrefix(rcv[0], "from client.postfix.test (") || !strings.Contains(rcv[0], "[127.0.0.1])") ||
		!strings.Contains(rcv[0], "by mx.example.test (letterbox) with ESMTP id "+ids[0]) ||
		!strings.Contains(rcv[0], "for <demo@example.test>") {
		t.Errorf("our Received header: %q", rcv[0])
	}
	if !strings.Contains(rcv[1], "by client.postfix.test (Postfix") {
		t.Errorf("Postfix's Received header (below ours): %q", rcv[1])
	}
	if got := m.Header.Get("Return-Path"); got != "<alice@postfix.test>" {
		t.Errorf("Return-Path %q", got)
	}
	if ids := m.Header["Message-Id"]; len(ids) != 1 || !strings.HasSuffix(ids[0], "@client.postfix.test>") {
		t.Errorf("Message-ID %q: want Postfix's, once", ids)
	}
	if dates := m.Header["Date"]; len(dates) != 1 {
		t.Errorf("Date %q: want Postfix's, once", dates)
	}
	b, err := io.ReadAll(m.Body)
	must(t, err)
	body := string(b)
	if body != "relayed by Postfix\n.leading dot\n" && body != "relayed by Postfix\r\n.leading dot\r\n" {
		t.Errorf("body %q", body)
	}
	// Postfix's side of the handoff names our queue id.
	waitFor(t, 30*time.Second, "Postfix to log the delivery", func() bool {
		return strings.Contains(p.Log(), "status=sent (250 2.0.0 OK: queued as "+ids[0]+")")
	})
}

// Postfix relaying through our submission port as a user would configure
// a smarthost: STARTTLS required (smtp_tls_security_level = encrypt), SASL
// PLAIN with the password from a texthash map. A sender demo owns gets
// through; a sender it does not own gets our 553, which Postfix turns into
// a bounce to that sender, sent with the null sender through the same
// authenticated relay (the null sender is allowed) and delivered.
func TestInteropSmtpdPostfixSubmission(t *testing.T) {
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/sasl2/libplain.so"); err != nil {
		if m, _ := filepath.Glob("/usr/lib/*/sasl2/libplain.so"); len(m) == 0 {
			t.Fatal("Cyrus SASL PLAIN client module missing: libsasl2-modules (tests/interop/packages.txt)")
		}
	}
	e := smtpdEnv(t)
	e = smtpdEnv(t, smtpdTLS(t, e.Dir)...)
	sub := e.start("smtpd", "submission")
	_, port, _ := net.SplitHostPort(sub.Addr)
	p := clientPostfix(t, port, func(p *postfixInstance) string {
		pw := filepath.Join(p.Etc(), "sasl_passwd")
		must(t, os.WriteFile(pw, []byte(fmt.Sprintf("[127.0.0.1]:%s demo@example.test:demo\n", port)), 0o600))
		return `smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:` + pw + `
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
`
	})
	if !strings.Contains(postfixRun(t, "postconf", "-c", p.Etc(), "-A"), "cyrus") {
		t.Fatal("this Postfix has no Cyrus SASL client")
	}
	postfixSendmail(t, p, "demo@example.test", "joe@example.test",
		"From: demo@example.test\nTo: joe@example.test\nSubject: submitted by postfix\n\nover TLS with AUTH\n")
	postfixSendmail(t, p, "joe@example.test", "friend@remote.test",
		"From: joe@example.test\nTo: friend@remote.test\nSubject: not demo's address\n\nrefused\n")
	msgs := deliverAll(t, e, "joe", 2)
	var ok, bounce *mail.Message
	for _, m := range msgs {
		if m.Header.Get("Subject") == "submitted by postfix" {
			ok = m
		} else {
			bounce = m
		}
	}
	if ok == nil || bounce == nil {
		t.Fatalf("joe's mail: %v", msgs)
	}
	for _, m := range msgs {
		if rcv := m.Header["Received"]; len(rcv) < 2 || !strings.Contains(rcv[0], "by mx.example.test (letterbox) with ESMTPSA id ") {
			t.Errorf("not received over TLS with AUTH: %q", rcv)
		}
	}
	if got := ok.Header.Get("Return-Path"); got != "<demo@example.test>" {
		t.Errorf("Return-Path %q", got)
	}
	if got := bounce.Header.Get("Return-Path"); got != "<>" {
		t.Errorf("bounce Return-Path %q", got)
	}
	b, err := io.ReadAll(bounce.Body)
	must(t, err)
	body := string(b)
	want := "553 5.7.1 Sender address rejected: <joe@example.test> not owned by user demo@example.test"
	// The DSN folds the Diagnostic-Code line.
	if !strings.Contains(strings.Join(strings.Fields(body), " "), want) {
		t.Errorf("bounce does not quote %q:\n%s", want, body)
	}
	log := p.Log()
	for _, w := range []string{"TLS connection established to 127.0.0.1", "status=bounced", want} {
		if !strings.Contains(log, w) {
			t.Errorf("Postfix log lacks %q", w)
		}
	}
	if !strings.Contains(sub.Log(), "auth ok") || !strings.Contains(sub.Log(), "user=demo@example.test") {
		t.Errorf("no AUTH in smtpd's log:\n%s", sub.Log())
	}
}
