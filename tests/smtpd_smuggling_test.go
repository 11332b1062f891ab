package tests

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
		out, err := bounded(t, c).Output()
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

// TestSmtpdSmugglingNormalize: with bare-newline = normalize a bare LF is a
// line end, but still never part of the end of DATA: each false end gives
// exactly one transaction, accepted with the smuggled commands as its text
// (or refused for a bare CR), and no message has the smuggler's envelope.
func TestSmtpdSmugglingNormalize(t *testing.T) {
	e := smtpdEnv(t, `bare-newline = "normalize"`)
	s := e.start("smtpd", "")
	accepted := 0
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
		want := "250 2.0.0 "
		if strings.Contains(strings.ReplaceAll(fe, "\r\n", ""), "\r") {
			want = "550 5.6.11 "
		} else {
			accepted++
		}
		if len(got) != 2 || !strings.HasPrefix(got[0], want) || !strings.HasPrefix(got[1], "221 ") {
			t.Errorf("false end %q: replies %q, want one %s… and the 221", fe, got, want)
		}
	}
	msgs := smtpdSpool(t, e)
	if len(msgs) != accepted {
		t.Fatalf("%d messages queued, want %d", len(msgs), accepted)
	}
	for _, m := range msgs {
		if m.From != "a@remote.test" || !strings.Contains(m.Data, "\r\nMAIL FROM:<evil@remote.test>\r\n") || !strings.HasSuffix(m.Data, "\r\nevil\r\n") {
			t.Errorf("message %+v: want the smuggled commands as text of a@remote.test's message", m)
		}
		if strings.Count(m.Data, "\n") != strings.Count(m.Data, "\r\n") {
			t.Errorf("message %s: bare LF stored: %q", m.ID, m.Data)
		}
	}
}

// TestSmtpdBareNewline: curl sends the file it uploads as it is, LF line
// ends included. The default refuses it (550 5.6.11); normalize stores it
// with CRLF, unstuffing a dot after a bare LF as Postfix does (a client
// must stuff such lines like any other); BDAT is normalized too.
func TestSmtpdBareNewline(t *testing.T) {
	for _, mode := range []string{"reject", "normalize"} {
		e := smtpdEnv(t, fmt.Sprintf("bare-newline = %q", mode))
		s := e.start("smtpd", "")
		f := filepath.Join(e.Dir, "msg.txt")
		must(t, os.WriteFile(f, []byte("From: bob@remote.test\nSubject: lf\n\nline one\n..dot line\n"), 0o600))
		out, err := bounded(t, exec.Command("curl", "-sS", "smtp://"+s.Addr+"/client.test", "--mail-from", "bob@remote.test",
			"--mail-rcpt", "joe@example.test", "-T", f)).CombinedOutput()
		if mode == "reject" {
			// curl reports a refusal after the data as (8) "Weird server
			// reply"; the server's log says which rule refused it.
			if err == nil || !strings.Contains(s.Log(), "Bare LF in message data") {
				t.Fatalf("reject: curl %v %s", err, out)
			}
			if n := len(smtpdSpool(t, e)); n != 0 {
				t.Fatalf("reject: %d messages queued", n)
			}
			continue
		}
		if err != nil {
			t.Fatalf("normalize: curl: %v\n%s", err, out)
		}
		msgs := smtpdWaitSpool(t, e, 1)
		// curl ends data that does not end with CRLF with CRLF . CRLF,
		// which adds an empty line after the last bare LF.
		if !strings.HasSuffix(msgs[0].Data, "\r\nFrom: bob@remote.test\r\nSubject: lf\r\n\r\nline one\r\n.dot line\r\n\r\n") {
			t.Fatalf("normalize: stored %q", msgs[0].Data)
		}
		d := dial(t, s.Addr)
		d.expect("220 ")
		d.send("EHLO x")
		d.expect("250 ")
		d.send("MAIL FROM:<bob@remote.test>")
		d.expect("250 ")
		d.send("RCPT TO:<joe@example.test>")
		d.expect("250 ")
		chunk1, chunk2 := "Subject: bdat\r", "\nbody\nend\r\n"
		d.raw(fmt.Sprintf("BDAT %d\r\n%s", len(chunk1), chunk1))
		d.expect("250 ")
		d.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk2), chunk2))
		d.expect("250 2.0.0")
		msgs = smtpdWaitSpool(t, e, 2)
		found := false
		for _, m := range msgs {
			found = found || strings.HasSuffix(m.Data, "\r\nSubject: bdat\r\nbody\r\nend\r\n")
		}
		if !found {
			t.Fatalf("normalize: BDAT message not stored with CRLF: %+v", msgs)
		}
	}
}
