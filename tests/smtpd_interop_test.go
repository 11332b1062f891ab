//go:build interop

package tests

import (
	"net"
	"os/exec"
	"strings"
	"testing"
)

// swaks (a client nobody here wrote) against our smtpd: plain SMTP,
// STARTTLS, and AUTH on the submission port, each with PLAIN and LOGIN.
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
		swaks(sub.Addr, "--to", "friend@remote.test", "--auth", mech, "--auth-user", "joe@example.test",
			"--auth-password", "secret", "--header", "Subject: auth "+mech)
		swaks(sub.Addr, "--to", "friend@remote.test", "--tls", "--auth", mech, "--auth-user", "joe@example.test",
			"--auth-password", "secret", "--header", "Subject: tls auth "+mech)
	}
	// Wrong password: swaks fails with the server's 535.
	host, port, _ := net.SplitHostPort(sub.Addr)
	bad, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "joe@example.test", "--to", "friend@remote.test",
		"--auth", "PLAIN", "--auth-user", "joe@example.test", "--auth-password", "nope").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), "535 5.7.8") {
		t.Fatalf("bad password accepted? %v\n%s", err, bad)
	}
	// Submission without AUTH: refused.
	noauth, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "joe@example.test", "--to", "friend@remote.test").CombinedOutput()
	if err == nil || !strings.Contains(string(noauth), "530 5.7.0") {
		t.Fatalf("unauthenticated submission accepted? %v\n%s", err, noauth)
	}
	msgs := smtpdSpool(t, e)
	if len(msgs) != 6 {
		t.Fatalf("%d messages in the spool, want 6", len(msgs))
	}
	protos := map[string]int{}
	for _, m := range msgs {
		for _, p := range []string{"with ESMTP id", "with ESMTPS id", "with ESMTPA id", "with ESMTPSA id"} {
			if strings.Contains(m.Data, p) {
				protos[p]++
			}
		}
	}
	if protos["with ESMTP id"] != 1 || protos["with ESMTPS id"] != 1 || protos["with ESMTPA id"] != 2 || protos["with ESMTPSA id"] != 2 {
		t.Fatalf("Received protocols %v", protos)
	}
}
