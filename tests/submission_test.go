package tests

import (
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
)

// submissionScript logs in as argv[3] and tries each MAIL FROM given after
// it on one connection, printing "SENDER CODE REPLY" per attempt; an
// accepted sender sends a message without Date and Message-ID.
const submissionScript = `
import smtplib, sys
host, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = smtplib.SMTP(host, port)
c.ehlo("client.test")
c.login(user, "secret")
for sender in sys.argv[4:]:
    try:
        c.sendmail(sender, ["friend@remote.test"], "Subject: as <%s>\r\n\r\nhello\r\n" % sender)
        print("%s 250 sent" % sender)
    except smtplib.SMTPSenderRefused as err:
        print("%s %d %s" % (sender, err.smtp_code, err.smtp_error.decode()))
c.quit()
`

// Submission: an authenticated user may send as itself (+detail too), as
// an alias that reaches it, and with the null sender; another user's
// address or a domain that is not ours is refused with 553 5.7.1, and the
// session goes on.
func TestSubmissionSenderOwnership(t *testing.T) {
	e := smtpdEnv(t)
	must(t, os.WriteFile(e.Aliases, []byte("postmaster: demo\nsales: joe, demo\nabuse: demo\n"), 0o600))
	s := e.start("smtpd", "submission")
	host, port, _ := net.SplitHostPort(s.Addr)
	out := python(t, submissionScript, host, port, "joe@example.test",
		"demo@example.test", "joe@example.test", "joe+lists@example.test", "sales@example.test",
		"abuse@example.test", "joe@remote.test", "JOE@example.test", "joe@EXAMPLE.TEST", "")
	want := map[string]string{
		"demo@example.test":      "553 5.7.1 Sender address rejected: <demo@example.test> not owned by user joe@example.test",
		"joe@example.test":       "250 sent",
		"joe+lists@example.test": "250 sent",
		"sales@example.test":     "250 sent",
		"abuse@example.test":     "553 5.7.1 Sender address rejected: <abuse@example.test> not owned by user joe@example.test",
		"joe@remote.test":        "553 5.7.1 Sender address rejected: <joe@remote.test> not owned by user joe@example.test",
		"JOE@example.test":       "553 5.7.1 ",
		"joe@EXAMPLE.TEST":       "250 sent",
		"":                       "250 sent",
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d results, want %d:\n%s", len(lines), len(want), out)
	}
	for _, l := range lines {
		sender, res, _ := strings.Cut(l, " ")
		if w, ok := want[sender]; !ok || !strings.HasPrefix(res, w) {
			t.Errorf("sender <%s>: got %q, want %q", sender, res, w)
		}
	}
	msgs := smtpdWaitSpool(t, e, 5)
	from := map[string]bool{}
	for _, m := range msgs {
		from[m.From] = true
	}
	for _, f := range []string{"joe@example.test", "joe+lists@example.test", "sales@example.test", ""} {
		if !from[f] {
			t.Errorf("no message from <%s> in the spool: %v", f, from)
		}
	}
	if !strings.Contains(s.Log(), "sender rejected") || !strings.Contains(s.Log(), "from=demo@example.test") {
		t.Errorf("refusal not logged:\n%s", s.Log())
	}
}

// A trusted client (relay-networks, loopback by default) that does not
// authenticate is not checked: it is a relay, not a user.
func TestSubmissionTrustedRelayUnchecked(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	d := dial(t, s.Addr)
	d.expect("220 ")
	d.send("EHLO relay.test")
	d.expect("250 ")
	id := smtpdQueueID(t, smtpdSend(d, "someone@elsewhere.test", "friend@remote.test", "Subject: relayed\r\n\r\nx\r\n"))
	msgs := smtpdWaitSpool(t, e, 1)
	if msgs[0].ID != id || strings.Contains(msgs[0].Data, "Message-ID:") || strings.Contains(msgs[0].Data, "\r\nDate:") {
		t.Fatalf("relayed message changed: %q", msgs[0].Data)
	}
}

// Date and Message-ID: added when the header lacks them, kept as sent when
// present, and nothing else of the header changes (folding included).
func TestSubmissionAddsDateMessageID(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "submission")
	host, port, _ := net.SplitHostPort(s.Addr)
	python(t, `
import smtplib, sys
c = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
c.ehlo("client.test")
c.login("joe@example.test", "secret")
c.sendmail("joe@example.test", ["friend@remote.test"], b"Subject: bare\r\n  folded subject\r\nTo: friend@remote.test\r\n\r\nDate: in the body\r\n")
c.sendmail("joe@example.test", ["friend@remote.test"], b"Subject: kept\r\ndate: Tue, 01 Jan 2030 00:00:00 +0000\r\nMESSAGE-ID: <mine@client.test>\r\n\r\nbody\r\n")
c.sendmail("joe@example.test", ["friend@remote.test"], b"no header, no separator\r\n")
c.quit()
`, host, port)
	msgs := smtpdWaitSpool(t, e, 3)
	byKind := map[string]string{}
	for _, m := range msgs {
		// Drop our Received header: its first line and the folded rest.
		d := m.Data
		i := strings.Index(d, "\r\n")
		for strings.HasPrefix(d[i+2:], "\t") {
			i += 2 + strings.Index(d[i+2:], "\r\n")
		}
		d = d[i+2:]
		switch {
		case strings.HasPrefix(d, "Subject: bare"):
			byKind["bare"] = d
		case strings.HasPrefix(d, "Subject: kept"):
			byKind["kept"] = d
		default:
			byKind["none"] = d
		}
	}
	date := `Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [-+]\d{4}\r\n`
	id := `Message-ID: <\d{14}\.[0-9a-f]{16}@mx\.example\.test>\r\n`
	for kind, re := range map[string]string{
		"bare": `^Subject: bare\r\n  folded subject\r\nTo: friend@remote\.test\r\n` + date + id + `\r\nDate: in the body\r\n$`,
		"kept": `^Subject: kept\r\ndate: Tue, 01 Jan 2030 00:00:00 \+0000\r\nMESSAGE-ID: <mine@client\.test>\r\n\r\nbody\r\n$`,
		"none": `^` + date + id + `\r\nno header, no separator\r\n$`,
	} {
		if !regexp.MustCompile(re).MatchString(byKind[kind]) {
			t.Errorf("%s: %q does not match %s", kind, byKind[kind], re)
		}
	}
}
