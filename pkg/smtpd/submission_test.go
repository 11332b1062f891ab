package smtpd

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

type fakeSenders struct{ err error }

func (f fakeSenders) Owns(user, addr string) (bool, error) {
	if f.err != nil {
		return false, f.err
	}
	return addr == "joe@example.test" || addr == "sales@example.test", nil
}

func TestSessionSenderOwnership(t *testing.T) {
	for _, mode := range []Mode{ModeSubmission, ModeSMTP} {
		t.Run(string(mode), func(t *testing.T) {
			ts := newTestServer(t, mode, func(s *Server) { s.Senders = fakeSenders{} })
			c := ts.dial(t)
			c.cmd("EHLO x", "250 ")
			c.cmd("AUTH PLAIN AGpvZUBleGFtcGxlLnRlc3QAc2VjcmV0", "235 ")
			l := c.cmd("MAIL FROM:<bob@example.test>", "553 5.7.1 ")
			if want := "553 5.7.1 Sender address rejected: <bob@example.test> not owned by user joe@example.test"; l != want {
				t.Fatalf("got %q, want %q", l, want)
			}
			c.cmd("RCPT TO:<joe@example.test>", "503 ") // no transaction
			c.cmd("MAIL FROM:<sales@example.test>", "250 ")
			c.cmd("RSET", "250 ")
			c.cmd("MAIL FROM:<>", "250 ") // bounces and auto-replies
			c.cmd("RSET", "250 ")
			c.cmd("MAIL FROM:<joe@example.test>", "250 ")
			c.cmd("RCPT TO:<friend@remote.test>", "250 ")
		})
	}
}

func TestSessionSenderNoSendersAndTrusted(t *testing.T) {
	// Without a Senders policy an authenticated user may still only use
	// its own address.
	ts := newTestServer(t, ModeSubmission, nil)
	c := ts.dial(t)
	c.cmd("EHLO x", "250 ")
	c.cmd("AUTH PLAIN AGpvZUBleGFtcGxlLnRlc3QAc2VjcmV0", "235 ")
	c.cmd("MAIL FROM:<sales@example.test>", "553 5.7.1 ")
	c.cmd("MAIL FROM:<joe+x@Example.Test>", "250 ")

	// A trusted client that did not authenticate is not checked; a
	// Senders error is a 451, not a refusal.
	ts = newTestServer(t, ModeSMTP, func(s *Server) {
		s.Senders = fakeSenders{err: fmt.Errorf("aliases unreadable")}
		s.RelayClient = true
	})
	c = ts.dial(t)
	c.cmd("EHLO x", "250 ")
	c.cmd("MAIL FROM:<anyone@remote.test>", "250 ")
	c.cmd("RCPT TO:<friend@remote.test>", "250 ")
	c.cmd("RSET", "250 ")
	c.cmd("AUTH PLAIN AGpvZUBleGFtcGxlLnRlc3QAc2VjcmV0", "235 ")
	c.cmd("MAIL FROM:<joe@example.test>", "451 4.3.0")
}

// Date and Message-ID are added to what an authenticated user sends, by
// DATA and by BDAT, and not to what arrives from elsewhere.
func TestSessionAddsHeadersForAuthenticated(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, nil)
	c := ts.dial(t)
	c.cmd("EHLO x", "250 ")
	c.cmd("MAIL FROM:<a@remote.test>", "250 ")
	c.cmd("RCPT TO:<joe@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.cmd("Subject: from outside\r\n\r\nb\r\n.", "250 2.0.0")

	c.cmd("AUTH PLAIN AGpvZUBleGFtcGxlLnRlc3QAc2VjcmV0", "235 ")
	c.cmd("MAIL FROM:<joe@example.test>", "250 ")
	c.cmd("RCPT TO:<friend@remote.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.cmd("Subject: data\r\n  folded\r\n\r\nDate: body\r\n.", "250 2.0.0")

	c.cmd("MAIL FROM:<joe@example.test>", "250 ")
	c.cmd("RCPT TO:<friend@remote.test>", "250 ")
	for _, chunk := range []string{"Subject: bdat\r\nDa", "te: Tue, 1 Jan 2030 00:00:00 GMT\r\n\r\nbody\r\n"} {
		last := ""
		if strings.HasPrefix(chunk, "te:") {
			last = " LAST"
		}
		c.send(fmt.Sprintf("BDAT %d%s\r\n%s", len(chunk), last, chunk))
		c.expect("250 2.0.0")
	}

	c.cmd("MAIL FROM:<joe@example.test>", "250 ")
	c.cmd("RCPT TO:<friend@remote.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.cmd("no header at all\r\n.", "250 2.0.0")
	if ts.q.count() != 4 {
		t.Fatalf("%d messages", ts.q.count())
	}
	body := func(i int) string {
		d := ts.q.msgs[i].data
		// Drop our Received header (its first line and the indented ones).
		j := strings.Index(d, "\r\n")
		for strings.HasPrefix(d[j+2:], "\t") {
			j += 2 + strings.Index(d[j+2:], "\r\n")
		}
		return d[j+2:]
	}
	if got := body(0); got != "Subject: from outside\r\n\r\nb\r\n" {
		t.Errorf("unauthenticated message changed: %q", got)
	}
	id := `Message-ID: <\d{14}\.[0-9a-f]{16}@mx\.example\.test>\r\n`
	date := `Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [-+]\d{4}\r\n`
	for i, re := range []string{
		`^Subject: data\r\n  folded\r\n` + date + id + `\r\nDate: body\r\n$`,
		`^Subject: bdat\r\nDate: Tue, 1 Jan 2030 00:00:00 GMT\r\n` + id + `\r\nbody\r\n$`,
		`^` + date + id + `\r\nno header at all\r\n$`,
	} {
		if got := body(i + 1); !regexp.MustCompile(re).MatchString(got) {
			t.Errorf("message %d: %q does not match %s", i+1, got, re)
		}
	}
}
