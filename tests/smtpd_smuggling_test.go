package tests

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// falseEnds are the end-of-data look-alikes of the SMTP smuggling research
// (SEC Consult, December 2023): a dot line with a bare LF or bare CR on
// either side, in every combination. Only CRLF . CRLF ends DATA.
func falseEnds() []string {
	var out []string
	for _, pre := range []string{"\r\n", "\n", "\r", ""} {
		for _, post := range []string{"\r\n", "\n", "\r", "\r\r\n", "\n\r"} {
			if post == "\r\n" && (pre == "\r\n" || pre == "") {
				continue // the real end, and a plain line ending in a dot
			}
			out = append(out, pre+"."+post)
		}
	}
	return out
}

// smuggle is what a smuggling sender puts after the false end: a second
// transaction with an envelope of its choosing, ended properly.
const smuggle = "MAIL FROM:<evil@remote.test>\r\nRCPT TO:<joe@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"

// readReplies reads SMTP replies until the server closes the connection
// and returns the last line of each.
func readReplies(t *testing.T, r *bufio.Reader) []string {
	t.Helper()
	var out []string
	for {
		l, err := r.ReadString('\n')
		if err == io.EOF && l == "" {
			return out
		}
		if err != nil {
			t.Fatalf("read: %v (after %q)", err, out)
		}
		l = strings.TrimRight(l, "\r\n")
		if len(l) >= 4 && l[3] == '-' {
			continue
		}
		out = append(out, l)
	}
}

// TestSmtpdSmuggling: every false end is data, so the message ends at the
// real CRLF . CRLF after the smuggled commands: one transaction, refused for
// its bare CR or LF, and nothing the smuggler sent is acted on.
func TestSmtpdSmuggling(t *testing.T) {
	e := smtpdEnv(t)
	s := e.start("smtpd", "")
	for _, fe := range falseEnds() {
		d := dial(t, s.Addr)
		d.expect("220 ")
		d.send("EHLO relay.test")
		d.expect("250 ")
		d.send("MAIL FROM:<a@remote.test>")
		d.expect("250 ")
		d.send("RCPT TO:<joe@example.test>")
		d.expect("250 ")
		d.send("DATA")
		d.expect("354 ")
		d.raw("Subject: first\r\n\r\nfirst" + fe + smuggle + "QUIT\r\n")
		got := readReplies(t, d.r)
		if len(got) != 2 || !strings.HasPrefix(got[0], "550 5.6.11 ") || !strings.HasPrefix(got[1], "221 ") {
			t.Errorf("false end %q: replies %q, want one 550 5.6.11 and the 221", fe, got)
		}
	}
	if msgs := smtpdSpool(t, e); len(msgs) != 0 {
		t.Fatalf("%d messages queued, want none: %+v", len(msgs), msgs)
	}
}

// TestSendmailBsSmuggling: sendmail -bs reads its dialog with smtpd's
// session code, and a false end is data there too.
func TestSendmailBsSmuggling(t *testing.T) {
	e := smtpdEnv(t)
	for _, fe := range falseEnds() {
		c := e.cmd("sendmail", "-bs")
		c.Stdin = strings.NewReader("EHLO local\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<joe@example.test>\r\nDATA\r\nSubject: first\r\n\r\nfirst" + fe + smuggle + "QUIT\r\n")
		out, err := c.Output()
		if err != nil {
			t.Fatalf("sendmail -bs: %v", err)
		}
		if n := strings.Count(string(out), "\r\n354 "); n != 1 || strings.Contains(string(out), "250 2.0.0") || !strings.Contains(string(out), "550 5.6.11") {
			t.Errorf("false end %q: %d DATA replies, output %q", fe, n, out)
		}
	}
	if msgs := smtpdSpool(t, e); len(msgs) != 0 {
		t.Fatalf("%d messages queued, want none: %+v", len(msgs), msgs)
	}
}
