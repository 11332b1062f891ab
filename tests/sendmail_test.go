package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSendmailHeaderRecipients(t *testing.T) {
	e := smtpdEnv(t)
	in := "To: Joe <joe@example.test>, friend@remote.test\nCc: cc@remote.test\nBcc: hidden@remote.test,\n  hidden2@remote.test\nSubject: cron\n\nhello\n"
	out, errs, code := e.run(in, "sendmail", "-t", "-oem", "-odi", "-B", "8BITMIME", "-N", "never", "-x")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	msgs := smtpdSpool(t, e)
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	got := append([]string(nil), m.Rcpts...)
	sort.Strings(got)
	want := []string{"cc@remote.test", "friend@remote.test", "hidden2@remote.test", "hidden@remote.test", "joe@example.test"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("recipients %v", got)
	}
	if strings.Contains(m.Data, "hidden") || strings.Contains(m.Data, "Bcc") {
		t.Fatalf("Bcc left in %q", m.Data)
	}
	for _, h := range []string{"\r\nDate: ", "\r\nMessage-ID: <", "@mx.example.test>\r\n", "\r\nFrom: ", "@mx.example.test>\r\n", "\r\nSubject: cron\r\n", "\r\n\r\nhello\r\n"} {
		if !strings.Contains(m.Data, h) {
			t.Errorf("missing %q in %q", h, m.Data)
		}
	}
	if strings.Contains(strings.ReplaceAll(m.Data, "\r\n", ""), "\n") {
		t.Errorf("bare LF in spool data %q", m.Data)
	}
	if !strings.HasSuffix(m.From, "@mx.example.test") {
		t.Errorf("sender %q", m.From)
	}
}

func TestSendmailFlags(t *testing.T) {
	e := smtpdEnv(t)
	// -f, -F, -i: the dot line stays.
	_, errs, code := e.run("Subject: a\n\none\n.\ntwo\n", "sendmail", "-i", "-f", "robot@example.test", "-F", "The Robot", "joe@example.test")
	if code != 0 {
		t.Fatal(errs)
	}
	// Without -i a lone dot ends the message; -oi and -r are the same as -i and -f.
	_, errs, code = e.run("Subject: b\n\none\n.\ntwo\n", "sendmail", "-rother@example.test", "joe@example.test")
	if code != 0 {
		t.Fatal(errs)
	}
	_, errs, code = e.run("From: Me <me@example.test>\nSubject: c\n\none\n.\ntwo\n", "sendmail", "-oi", "-f", "<>", "joe")
	if code != 0 {
		t.Fatal(errs)
	}
	byS := map[string]smtpdMsg{}
	for _, m := range smtpdSpool(t, e) {
		for _, s := range []string{"a", "b", "c"} {
			if strings.Contains(m.Data, "Subject: "+s+"\r\n") {
				byS[s] = m
			}
		}
	}
	if m := byS["a"]; m.From != "robot@example.test" || !strings.Contains(m.Data, `From: "The Robot" <`) || !strings.HasSuffix(m.Data, "one\r\n.\r\ntwo\r\n") {
		t.Errorf("a: %+v", m)
	}
	if m := byS["b"]; m.From != "other@example.test" || !strings.HasSuffix(m.Data, "\r\n\r\none\r\n") {
		t.Errorf("b: %+v", m)
	}
	if m := byS["c"]; m.From != "" || !strings.Contains(m.Data, "From: Me <me@example.test>\r\n") || strings.Count(m.Data, "From:") != 1 ||
		!strings.HasSuffix(m.Data, "one\r\n.\r\ntwo\r\n") || len(m.Rcpts) != 1 || m.Rcpts[0] != "joe@example.test" {
		t.Errorf("c: %+v", m)
	}
}

func TestSendmailBadAddresses(t *testing.T) {
	e := smtpdEnv(t)
	for _, c := range []struct {
		in   string
		args []string
		code int
	}{
		{"Subject: x\n\nx\n", []string{"joe@@example.test"}, 65},
		{"Subject: x\n\nx\n", []string{"joe@example.test", "bad address@x"}, 65},
		{"To: a@@b\nSubject: x\n\nx\n", []string{"-t"}, 65},
		{"Subject: x\n\nx\n", []string{"-t"}, 65},
		{"Subject: x\n\nx\n", []string{"-f", "a@@b", "joe@example.test"}, 65},
		{"Subject: x\n\nx\n", []string{"joe@example.test", "nobody@example.test"}, 67},
		{"Subject: x\n\nx\n", nil, 64},
	} {
		_, errs, code := e.run(c.in, "sendmail", c.args...)
		if code != c.code || !strings.Contains(errs, "sendmail") {
			t.Errorf("%v: exit %d (want %d): %s", c.args, code, c.code, errs)
		}
	}
	// One good message, so that the spool is there to look in: only it
	// may be queued.
	if _, errs, code := e.run("Subject: good\n\nx\n", "sendmail", "joe@example.test"); code != 0 {
		t.Fatalf("a good message: exit %d: %s", code, errs)
	}
	if msgs := smtpdSpool(t, e); len(msgs) != 1 {
		t.Fatalf("%d messages queued, want only the good one", len(msgs))
	}
}

func TestSendmailBs(t *testing.T) {
	e := smtpdEnv(t)
	out, errs, code := e.run("EHLO local\r\nMAIL FROM:<joe@example.test>\r\nRCPT TO:<friend@remote.test>\r\nDATA\r\nSubject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n", "sendmail", "-bs")
	if code != 0 || !strings.Contains(out, "250 2.0.0 OK: queued as ") || strings.Contains(out, "554") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	msgs := smtpdSpool(t, e)
	if len(msgs) != 1 || msgs[0].Rcpts[0] != "friend@remote.test" || !strings.Contains(msgs[0].Data, "from local (local)") {
		t.Fatalf("%+v", msgs)
	}
}

func TestSendmailHelpVersion(t *testing.T) {
	e := smtpdEnv(t)
	out, _, code := e.run("", "sendmail", "--help")
	if code != 0 || !strings.Contains(out, "sendmail [-t]") {
		t.Fatalf("%d %s", code, out)
	}
	out, _, code = e.run("", "sendmail", "--version")
	if code != 0 || !strings.Contains(out, "version") {
		t.Fatalf("%d %s", code, out)
	}
	out, _, code = e.run("", "smtpd", "--version")
	if code != 0 || !strings.Contains(out, "version") {
		t.Fatalf("%d %s", code, out)
	}
}

// mailq and sendmail -bp are queue-runner list; sendmail -q is flush.
func TestSendmailMailq(t *testing.T) {
	e := smtpdEnv(t)
	if _, errs, code := e.run("Subject: q\n\nq\n", "sendmail", "friend@remote.test"); code != 0 {
		t.Fatal(errs)
	}
	want, errs, code := e.run("", "queue-runner", "list")
	if code != 0 {
		t.Fatalf("queue-runner list: %d %s", code, errs)
	}
	for _, args := range [][]string{{"mailq"}, {"sendmail", "-bp"}} {
		c := exec.Command(filepath.Join(filepath.Dir(bin(t, "sendmail")), args[0]), args[1:]...)
		c.Env = e.cmd("sendmail").Env
		out, err := bounded(t, c).Output()
		if err != nil || string(out) != want || !strings.Contains(want, "friend@remote.test") {
			t.Errorf("%v: %v\n%s\nwant\n%s", args, err, out, want)
		}
	}
}

// With no server running, sendmail's message is delivered by the next
// queue-runner pass; a user who may not write the spool goes through the
// drop directory, and the pass takes it in.
func TestSendmailDeliveredByQueueRunner(t *testing.T) {
	e := smtpdEnv(t)
	if _, errs, code := e.run("Subject: by root\n\nx\n", "sendmail", "joe@example.test"); code != 0 {
		t.Fatal(errs)
	}
	want := 1
	if os.Geteuid() == 0 {
		uid, gid := openToNobody(t, e)
		// The spool exists (root made it above); nobody may only drop.
		must(t, os.Chmod(filepath.Dir(bin(t, "sendmail")), 0o755))
		c := e.cmd("sendmail", "joe@example.test")
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		c.Stdin = strings.NewReader("Subject: by nobody\n\nfrom the drop directory\n")
		if out, err := bounded(t, c).CombinedOutput(); err != nil {
			t.Fatalf("sendmail as nobody: %v\n%s", err, out)
		}
		drops, _ := os.ReadDir(filepath.Join(e.Spool, "drop"))
		if len(drops) != 1 {
			t.Fatalf("%d files in drop/", len(drops))
		}
		want = 2
	}
	if out, errs, code := e.run("", "queue-runner"); code != 0 {
		t.Fatalf("queue-runner: %d %s%s", code, out, errs)
	}
	md := filepath.Join(e.MailRoot, "example.test", "joe")
	var files []string
	waitFor(t, 10*time.Second, "delivery", func() bool {
		files = append(maildirFilesSoFar(t, md, "new"), maildirFilesSoFar(t, md, "cur")...)
		return len(files) == want
	})
	all := ""
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(t, err)
		all += string(b)
	}
	if !strings.Contains(all, "Subject: by root") || want == 2 && !strings.Contains(all, "from the drop directory") {
		t.Fatalf("%s", all)
	}
}
