//go:build interop

package tests

import (
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// swaks (a client nobody here wrote) against our smtpd: plain SMTP,
// STARTTLS, and AUTH on the submission port, each with PLAIN and LOGIN;
// a wrong password (535), no AUTH (530), a sender the user does not own
// (553), and Date and Message-ID added only where missing.
func TestInteropSwaksSmtpd(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Fatal("swaks not installed (tests/interop/packages.txt)")
	}
	e := smtpdEnv(t)
	e = smtpdEnv(t, smtpdTLS(t, e.Dir)...)
	smtp := e.start("smtpd", "")
	sub := e.start("smtpd", "submission")
	swaks := func(addr string, args ...string) string {
		t.Helper()
		host, port, _ := net.SplitHostPort(addr)
		out, err := exec.Command("swaks", append([]string{"--server", host, "--port", port, "--helo", "swaks.test",
			"--from", "joe@example.test", "--timeout", "20"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	swaks(smtp.Addr, "--to", "joe@example.test", "--header", "Subject: plain")
	out := swaks(smtp.Addr, "--to", "joe@example.test", "--tls", "--header", "Subject: starttls")
	if !strings.Contains(out, "TLS started") {
		t.Fatalf("no TLS:\n%s", out)
	}
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		out := swaks(sub.Addr, "--to", "friend@remote.test", "--auth", mech, "--auth-user", "joe@example.test",
			"--auth-password", "secret", "--header", "Subject: auth "+mech)
		if !strings.Contains(out, "AUTH "+mech) || !strings.Contains(out, "235 2.7.0") || strings.Contains(out, "TLS started") {
			t.Fatalf("AUTH %s:\n%s", mech, out)
		}
		out = swaks(sub.Addr, "--to", "friend@remote.test", "--tls", "--auth", mech, "--auth-user", "joe@example.test",
			"--auth-password", "secret", "--header", "Subject: tls auth "+mech)
		if !strings.Contains(out, "TLS started") || !strings.Contains(out, "AUTH "+mech) || !strings.Contains(out, "235 2.7.0") {
			t.Fatalf("STARTTLS, AUTH %s:\n%s", mech, out)
		}
	}
	// Our own DATA without Date and Message-ID (swaks adds both to its
	// default message): the submission server adds them.
	out = swaks(sub.Addr, "--to", "friend@remote.test", "--tls", "--auth", "PLAIN", "--auth-user", "joe@example.test",
		"--auth-password", "secret", "--data", "Subject: no date\nX-Test: bare\n\nbody\n")
	// Wrong password: swaks fails with the server's 535.
	host, port, _ := net.SplitHostPort(sub.Addr)
	bad, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "joe@example.test", "--to", "friend@remote.test",
		"--auth", "PLAIN", "--auth-user", "joe@example.test", "--auth-password", "nope").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), "535 5.7.8") {
		t.Fatalf("bad password accepted? %v\n%s", err, bad)
	}
	// Someone else's address as the sender, over STARTTLS with AUTH: 553.
	notOwned, err := exec.Command("swaks", "--server", host, "--port", port, "--tls", "--from", "demo@example.test", "--to", "friend@remote.test",
		"--auth", "LOGIN", "--auth-user", "joe@example.test", "--auth-password", "secret").CombinedOutput()
	if err == nil || !strings.Contains(string(notOwned), "553 5.7.1 Sender address rejected: <demo@example.test> not owned by user joe@example.test") {
		t.Fatalf("someone else's sender accepted? %v\n%s", err, notOwned)
	}
	// Submission without AUTH: refused.
	noauth, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "joe@example.test", "--to", "friend@remote.test").CombinedOutput()
	if err == nil || !strings.Contains(string(noauth), "530 5.7.0") {
		t.Fatalf("unauthenticated submission accepted? %v\n%s", err, noauth)
	}
	msgs := smtpdSpool(t, e)
	if len(msgs) != 7 {
		t.Fatalf("%d messages in the spool, want 7", len(msgs))
	}
	protos := map[string]int{}
	for _, m := range msgs {
		for _, p := range []string{"with ESMTP id", "with ESMTPS id", "with ESMTPA id", "with ESMTPSA id"} {
			if strings.Contains(m.Data, p) {
				protos[p]++
			}
		}
	}
	if protos["with ESMTP id"] != 1 || protos["with ESMTPS id"] != 1 || protos["with ESMTPA id"] != 2 || protos["with ESMTPSA id"] != 3 {
		t.Fatalf("Received protocols %v", protos)
	}
	ours := regexp.MustCompile(`\r\nMessage-ID: <\d{14}\.[0-9a-f]{16}@mx\.example\.test>\r\n`)
	for _, m := range msgs {
		hdr, _, _ := strings.Cut(m.Data, "\r\n\r\n")
		hdr += "\r\n"
		dates := regexp.MustCompile(`(?i)\r\nDate: `).FindAllString(hdr, -1)
		ids := regexp.MustCompile(`(?i)\r\nMessage-Id: `).FindAllString(hdr, -1)
		if len(dates) != 1 || len(ids) != 1 {
			t.Errorf("want one Date and one Message-ID:\n%s", hdr)
		}
		// swaks's own Message-Id is kept; ours only where it had none.
		if strings.Contains(hdr, "X-Test: bare") != ours.MatchString(hdr) {
			t.Errorf("Message-ID:\n%s", hdr)
		}
	}
}
