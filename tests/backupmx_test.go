package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// Backup MX (relay-domains): three letterbox hosts on loopback addresses
// of their own, one SMTP port, and a DNS server in the test:
//
//	relay.test   MX 10 primary.relay.test (127.0.0.2; relay.test is local there)
//	relay.test   MX 20 backup.test        (127.0.0.3; relay-domains = relay.test)
//	sender.test  MX 10 sender.test        (127.0.0.4; the sending host)

// portFreeOn returns a TCP port free right now on every one of ips.
func portFreeOn(t *testing.T, ips ...string) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		_, p, _ := net.SplitHostPort(freeAddr(t, ips[0]))
		free := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, p))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			var n int
			fmt.Sscan(p, &n)
			return n
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0
}

// hostEnv is newEnv for a host named hostname, serving domains.
func hostEnv(t *testing.T, hostname string, domains []string, extra ...string) *env {
	t.Helper()
	e := newEnv(t, extra...)
	b, err := os.ReadFile(e.Config)
	must(t, err)
	q := make([]string, len(domains))
	for i, d := range domains {
		q[i] = fmt.Sprintf("%q", d)
	}
	conf := strings.Replace(string(b), `hostname = "mx.example.test"`, fmt.Sprintf("hostname = %q", hostname), 1)
	conf = strings.Replace(conf, `domains = ["example.test"]`, "domains = ["+strings.Join(q, ", ")+"]", 1)
	must(t, os.WriteFile(e.Config, []byte(conf), 0o600))
	return e
}

// mailFiles returns the contents of the messages in the Maildir dir (new
// and cur), which may not exist yet.
func mailFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"new", "cur"} {
		for _, f := range maildirFilesSoFar(t, dir, sub) {
			b, err := os.ReadFile(f)
			must(t, err)
			out = append(out, string(b))
		}
	}
	return out
}

var messageIDRe = regexp.MustCompile(`(?mi)^Message-ID:\s*(<[^>]*>)`)

// messageIDs counts the Message-IDs of the messages in dir.
func messageIDs(t *testing.T, dir string) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, m := range mailFiles(t, dir) {
		id := messageIDRe.FindStringSubmatch(m)
		if id == nil {
			t.Fatalf("a message in %s has no Message-ID:\n%s", dir, m)
		}
		n[id[1]]++
	}
	return n
}

// qList is queue-runner list --json of e.
func qList(t *testing.T, e *env) []map[string]any { return (&remoteSetup{e: e}).list(t) }

// qPass runs one queue-runner pass of e with args and returns its log.
func qPass(t *testing.T, e *env, args ...string) string {
	return (&remoteSetup{e: e, args: args}).run(t)
}

func sendmailTo(t *testing.T, e *env, from, msg string, rcpts ...string) {
	t.Helper()
	out, errs, code := e.run(msg, "sendmail", append([]string{"-f", from}, rcpts...)...)
	if code != 0 {
		t.Fatalf("sendmail: exit %d\n%s%s", code, out, errs)
	}
}

// TestBackupMXFailover: with the primary down, the sender hands its mail
// to the backup (not a relay client there: relay-domains is why it is
// accepted); the backup keeps it queued, never sends it to itself, warns
// the sender on schedule, and when the primary comes up its daemon hands
// every message over: each recipient gets each message exactly once, and
// each message passed the backup once.
func TestBackupMXFailover(t *testing.T) {
	port := portFreeOn(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	z := newRemoteDNS(t,
		"relay.test. MX 10 primary.relay.test.", "relay.test. MX 20 backup.test.",
		"primary.relay.test. A 127.0.0.2", "backup.test. A 127.0.0.3",
		"sender.test. MX 10 sender.test.", "sender.test. A 127.0.0.4")
	remote := []string{"--dns", z.Addr, "--smtp-port", fmt.Sprint(port), "--connect-timeout", "2s"}

	sender := hostEnv(t, "sender.test", []string{"sender.test"})
	sender.addUser("alice@sender.test", "pw")
	backup := hostEnv(t, "backup.test", []string{"backup.test"},
		`relay-domains = ["relay.test"]`, "[smtpd]", `relay-networks = ["198.51.100.0/24"]`)
	primary := hostEnv(t, "primary.relay.test", []string{"relay.test"})
	primary.addUser("a@relay.test", "pw")
	primary.addUser("b@relay.test", "pw")

	sender.startAt(fmt.Sprintf("127.0.0.4:%d", port), "smtpd", "")
	bsmtpd := backup.startAt(fmt.Sprintf("127.0.0.3:%d", port), "smtpd", "")

	// Ten messages: to a, to b, to both.
	const n = 10
	want := map[string]map[string]bool{"a": {}, "b": {}}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("<backupmx-%d@sender.test>", i)
		var rcpts []string
		for _, u := range []string{"a", "b"} {
			if i%3 == 0 || (i%3 == 1) == (u == "a") {
				rcpts = append(rcpts, u+"@relay.test")
				want[u][id] = true
			}
		}
		sendmailTo(t, sender, "alice@sender.test", fmt.Sprintf("From: alice@sender.test\nTo: %s\nSubject: failover %d\nMessage-ID: %s\n\nbody %d\n", strings.Join(rcpts, ", "), i, id, i), rcpts...)
	}
	log := qPass(t, sender, remote...)
	if l := qList(t, sender); len(l) != 0 {
		t.Fatalf("the sender still holds %d messages (primary down, backup up):\n%v\n%s", len(l), l, log)
	}
	waitFor(t, 10*time.Second, "the backup's smtpd to log 10 messages queued", func() bool {
		return strings.Count(bsmtpd.Log(), "msg=accepted") >= n
	})

	// The primary is down: one pass leaves everything queued, tried at
	// the primary only (never at the backup itself).
	schedule := append([]string{"--retry-after", "1s", "--max-retry-interval", "1s", "--warn-after", "2s", "--bounce-after", "10m"}, remote...)
	qPass(t, backup, schedule...)
	l := qList(t, backup)
	if len(l) != n {
		t.Fatalf("backup queue holds %d messages, want %d: %v", len(l), n, l)
	}
	for _, m := range l {
		for _, r := range m["recipients"].([]any) {
			rc := r.(map[string]any)
			if rc["state"] != "pending" || !strings.Contains(fmt.Sprint(rc["last_error"]), "primary.relay.test[127.0.0.2]") {
				t.Fatalf("recipient after a pass with the primary down: %v", rc)
			}
		}
	}
	if c := strings.Count(bsmtpd.Log(), "msg=accepted"); c != n {
		t.Fatalf("the backup's smtpd queued %d messages, want %d (did the backup send to itself?)\n%s", c, n, bsmtpd.Log())
	}

	// The usual schedule: a delay warning reaches the sender.
	waitFor(t, 30*time.Second, "the backup's delay warnings at the sender", func() bool {
		qPass(t, backup, schedule...)
		qPass(t, sender, remote...)
		return len(mailFiles(t, sender.MailRoot+"/sender.test/alice")) >= n
	})
	for _, m := range mailFiles(t, sender.MailRoot+"/sender.test/alice") {
		if !strings.Contains(m, "Action: delayed") || !strings.Contains(m, "backup.test") {
			t.Fatalf("a notice at the sender that is not the backup's delay warning:\n%s", m)
		}
	}

	// The primary comes up; the backup's daemon hands everything over.
	psmtpd := primary.startAt(fmt.Sprintf("127.0.0.2:%d", port), "smtpd", "")
	_, dlog := qDaemon(t, backup, schedule...)
	waitFor(t, 60*time.Second, "the backup's queue to empty into the primary", func() bool {
		return len(qList(t, backup)) == 0
	})
	qRun(t, primary)
	for u, ids := range want {
		got := messageIDs(t, primary.MailRoot+"/relay.test/"+u)
		for id := range ids {
			if got[id] != 1 {
				t.Errorf("%s@relay.test has %s %d times, want once", u, id, got[id])
			}
		}
		for id := range got {
			if !ids[id] {
				t.Errorf("%s@relay.test has %s, not sent to it", u, id)
			}
		}
	}
	for _, u := range []string{"a", "b"} {
		for _, m := range mailFiles(t, primary.MailRoot+"/relay.test/"+u) {
			hdr, _, _ := strings.Cut(m, "\n\n")
			if c := strings.Count(hdr, "by backup.test (letterbox)"); c != 1 {
				t.Errorf("a message passed the backup %d times:\n%s", c, hdr)
			}
			if c := strings.Count(hdr, "by primary.relay.test (letterbox)"); c != 1 {
				t.Errorf("a message reached the primary %d times:\n%s", c, hdr)
			}
		}
	}
	if c := strings.Count(psmtpd.Log(), "msg=accepted"); c != n {
		t.Errorf("the primary's smtpd queued %d messages, want %d", c, n)
	}
	for _, m := range mailFiles(t, sender.MailRoot+"/sender.test/alice") {
		if strings.Contains(m, "Action: failed") {
			t.Errorf("a bounce reached the sender:\n%s", m)
		}
	}
	if t.Failed() {
		t.Logf("backup daemon:\n%s", dlog.String())
	}
}

// TestBackupMXLoop: a relay domain whose MX list names only the backup
// itself (by its hostname, or by an address of proxy-interfaces) is
// bounced with 5.4.6 "loops back to myself", never relayed; a domain the
// backup does not relay for is refused as before; a message that has
// already passed max-received hosts is refused.
func TestBackupMXLoop(t *testing.T) {
	port := portFreeOn(t, "127.0.0.3")
	z := newRemoteDNS(t,
		"loop.test. MX 10 backup.test.", "backup.test. A 127.0.0.3",
		"natloop.test. MX 10 mx.natloop.test.", "natloop.test. MX 20 mx2.natloop.test.",
		"mx.natloop.test. A 192.0.2.99", "mx2.natloop.test. A 127.0.0.5")
	backup := hostEnv(t, "backup.test", []string{"backup.test"},
		`relay-domains = ["loop.test", "natloop.test"]`, `proxy-interfaces = ["192.0.2.99"]`,
		"[smtpd]", `relay-networks = ["198.51.100.0/24"]`, "max-received = 5")
	backup.addUser("demo@backup.test", "pw")
	s := backup.startAt(fmt.Sprintf("127.0.0.3:%d", port), "smtpd", "")

	d := dial(t, s.Addr)
	d.expect("220 ")
	d.send("EHLO client.test")
	d.expect("250 ")
	d.send("MAIL FROM:<demo@backup.test>")
	d.expect("250 ")
	d.send("RCPT TO:<elsewhere@other.test>")
	d.expect("554 5.7.1")
	d.send("RCPT TO:<someone@loop.test>")
	d.expect("250 ")
	d.send("RCPT TO:<someone@natloop.test>")
	d.expect("250 ")
	d.send("DATA")
	d.expect("354 ")
	d.raw("Subject: round and round\r\nMessage-ID: <loop@backup.test>\r\n\r\nbody\r\n.\r\n")
	d.expect("250 ")
	d.send("MAIL FROM:<demo@backup.test>")
	d.expect("250 ")
	d.send("RCPT TO:<someone@loop.test>")
	d.expect("250 ")
	d.send("DATA")
	d.expect("354 ")
	d.raw(strings.Repeat("Received: from a.test by b.test; Fri, 4 Dec 2026 20:00:00 +0000\r\n", 6) + "Subject: many hops\r\n\r\nbody\r\n.\r\n")
	d.expect("554 5.4.6")
	d.send("QUIT")
	d.expect("221 ")

	sched := []string{"--dns", z.Addr, "--smtp-port", fmt.Sprint(port), "--connect-timeout", "2s", "--bounce-after", "10m"}
	log := qPass(t, backup, sched...)
	if l := qList(t, backup); len(l) != 0 {
		t.Fatalf("the looping message is still queued: %v\n%s", l, log)
	}
	var bounce string
	for _, m := range mailFiles(t, backup.MailRoot+"/backup.test/demo") {
		if strings.Contains(m, "Action: failed") {
			bounce = m
		}
	}
	if bounce == "" {
		t.Fatalf("no bounce at the sender: %v\n%s", mailFiles(t, backup.MailRoot+"/backup.test/demo"), log)
	}
	for _, r := range []string{"someone@loop.test", "someone@natloop.test"} {
		if !regexp.MustCompile(`(?s)Final-Recipient: rfc822; ?` + regexp.QuoteMeta(r) + `\r?\nAction: failed\r?\nStatus: 5\.4\.6`).MatchString(bounce) {
			t.Errorf("the bounce does not fail %s with 5.4.6:\n%s", r, bounce)
		}
	}
	if !strings.Contains(bounce, "loops back to myself") {
		t.Errorf("the bounce does not say the mail loops back:\n%s", bounce)
	}
	if c := strings.Count(s.Log(), "msg=accepted"); c != 1 {
		t.Errorf("the backup's smtpd queued %d messages, want 1 (did it relay to itself?)\n%s", c, s.Log())
	}
	if files := mustReadDir(t, filepath.Join(backup.MailRoot, "backup.test")); len(files) != 1 {
		names := []string{}
		for _, f := range files {
			names = append(names, f.Name())
		}
		sort.Strings(names)
		t.Errorf("mailboxes at the backup: %v, want only demo's", names)
	}
}
