//go:build interop

package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Real HAProxy (the Debian package) in front of two letterbox hosts, in
// network namespaces (tests/netns_test.go): contrib/haproxy/haproxy.cfg as
// shipped (its own global section aside), clients on an inside and an
// outside host speaking through it with Python's smtplib, imaplib and
// poplib.

const (
	proxyAddr   = "198.51.100.10"
	insideAddr  = "198.51.100.31"
	outsideAddr = "198.51.100.99"
)

var mxAddrs = []string{"198.51.100.21", "198.51.100.22"}

// labHost is one letterbox host of the lab: smtpd, imapd and pop3d on
// +proxy listeners of its address.
type labHost struct {
	env              *env
	smtpd, imapd, pd *labProc
}

// labProc is a process in a lab namespace, its stderr kept.
type labProc struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
}

func (p *labProc) Log() string { return p.log.String() }

// startLab runs name (a path) with args in ns until the test ends.
func startLab(t *testing.T, lab *netLab, ns string, env []string, name string, args ...string) *labProc {
	t.Helper()
	c := lab.command(ns, name, args...)
	c.Env = append(os.Environ(), env...)
	p := &labProc{name: filepath.Base(name) + "@" + ns, cmd: c, log: &syncBuffer{}}
	c.Stdout, c.Stderr = p.log, p.log
	c.WaitDelay = 5 * time.Second
	must(t, c.Start())
	t.Cleanup(func() {
		c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s:\n%s", p.name, p.Log())
		}
	})
	return p
}

func startLabHost(t *testing.T, lab *netLab, ns, addr string) *labHost {
	t.Helper()
	e := newEnv(t, `auth-failure-delay = "10ms"`)
	e = newEnv(t, append(smtpdTLS(t, e.Dir), `auth-failure-delay = "10ms"`,
		fmt.Sprintf(`proxy-networks = [%q]`, proxyAddr),
		fmt.Sprintf(`relay-networks = ["%s/32"]`, insideAddr))...)
	must(t, os.WriteFile(e.Users, []byte("alice@example.test:{PLAIN}alice pw::::::\n"), 0o600))
	if out, errs, code := e.run("From: a@example.org\nSubject: on "+ns+"\n\nhello\n", "deliver", "alice@example.test"); code != 0 {
		t.Fatalf("deliver: %d %s %s", code, out, errs)
	}
	cfg := []string{"LETTERBOX_CONFIG=" + e.Config}
	h := &labHost{env: e,
		smtpd: startLab(t, lab, ns, cfg, bin(t, "smtpd"), "--listen", "smtp+proxy="+addr+":25", "--listen", "submission+proxy="+addr+":587"),
		imapd: startLab(t, lab, ns, cfg, bin(t, "imapd"), "--listen", "imap+proxy="+addr+":143", "--listen", "imaps+proxy="+addr+":993"),
		pd:    startLab(t, lab, ns, cfg, bin(t, "pop3d"), "--listen", "pop3+proxy="+addr+":110", "--listen", "pop3s+proxy="+addr+":995"),
	}
	for _, p := range []*labProc{h.smtpd, h.imapd, h.pd} {
		waitFor(t, 20*time.Second, p.name+" listening on both ports", func() bool { return strings.Count(p.Log(), "msg=listening") == 2 })
	}
	return h
}

// haproxyConfig is contrib/haproxy/haproxy.cfg with a global section for
// the test (foreground, logs on stdout, a stats socket) and a frontend on
// port 2525 whose backend speaks PROXY v1 (send-proxy).
func haproxyConfig(t *testing.T, dir string) (cfg, sock string) {
	t.Helper()
	b, err := os.ReadFile("../contrib/haproxy/haproxy.cfg")
	must(t, err)
	shipped := string(b)
	i := strings.Index(shipped, "\ndefaults\n")
	if i < 0 {
		t.Fatal("contrib/haproxy/haproxy.cfg has no defaults section")
	}
	sock = filepath.Join(dir, "haproxy.sock")
	conf := fmt.Sprintf("global\n    log stdout format raw local0\n    stats socket %s mode 600 level admin\n", sock) + shipped[i:] + `
frontend smtp-v1
    bind :2525
    default_backend smtp-v1

backend smtp-v1
    balance roundrobin
    option smtpchk EHLO haproxy.example
    server mx1 198.51.100.21:25 send-proxy check
    server mx2 198.51.100.22:25 send-proxy check
`
	cfg = filepath.Join(dir, "haproxy.cfg")
	must(t, os.WriteFile(cfg, []byte(conf), 0o600))
	return cfg, sock
}

// haproxyStat asks HAProxy's stats socket for "show stat": one map per
// server (pxname, svname, status, check_status, …).
func haproxyStat(t *testing.T, sock string) []map[string]string {
	t.Helper()
	out, err := exec.Command("python3", "-c", `
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
b = b""
while True:
    d = s.recv(65536)
    if not d: break
    b += d
sys.stdout.write(b.decode())`, sock).Output()
	if err != nil {
		return nil
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "# ") {
		return nil
	}
	head := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	var rows []map[string]string
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		row := map[string]string{}
		for i, h := range head {
			if i < len(f) {
				row[h] = f[i]
			}
		}
		if row["svname"] != "FRONTEND" && row["svname"] != "BACKEND" {
			rows = append(rows, row)
		}
	}
	return rows
}

const pyClients = `
import imaplib, poplib, smtplib, socket, ssl, sys
role, proxy = sys.argv[1], sys.argv[2]
ctx = ssl._create_unverified_context()
def smtp(port, n, tag):
    for i in range(n):
        with smtplib.SMTP(proxy, port, timeout=30) as c:
            c.ehlo(role + ".example")
            try:
                c.sendmail("a@example.org", ["friend@remote.test"], "Subject: relay %s %d\r\n\r\nx\r\n" % (role, i))
                print("relay accepted")
            except smtplib.SMTPRecipientsRefused as e:
                print("relay refused", list(e.recipients.values())[0][0])
            c.sendmail("a@example.org", ["alice@example.test"], "Subject: %s %s %d\r\n\r\nx\r\n" % (tag, role, i))
            print("local accepted")
smtp(25, 4, "v2")
smtp(2525, 2, "v1")
if role == "outside":
    for i in range(2):
        c = imaplib.IMAP4_SSL(proxy, 993, ssl_context=ctx, timeout=30)
        c.login("alice@example.test", "alice pw")
        print("imap select", c.select("INBOX")[1][0].decode())
        c.logout()
        p = poplib.POP3_SSL(proxy, 995, context=ctx, timeout=30)
        p.user("alice@example.test"); p.pass_("alice pw")
        print("pop3 stat", p.stat()[0])
        p.quit()
    # Straight to a host, with a header of its own: not from proxy-networks.
    s = socket.create_connection((sys.argv[3], 25), timeout=30)
    s.sendall(b"PROXY TCP4 192.0.2.1 198.51.100.21 1111 25\r\n")
    try:
        got = s.recv(100)
    except ConnectionResetError:
        got = b""  # closed with our header unread
    print("direct with header:", repr(got))
`

func TestInteropProxyHAProxy(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatalf("haproxy (Debian package haproxy, in tests/interop/packages.txt) is needed: %v", err)
	}
	lab := newNetLab(t, "px")
	nsProxy := lab.host("haproxy", proxyAddr)
	var hosts []*labHost
	for i, addr := range mxAddrs {
		hosts = append(hosts, startLabHost(t, lab, lab.host(fmt.Sprintf("mx%d", i+1), addr), addr))
	}
	nsIn := lab.host("inside", insideAddr)
	nsOut := lab.host("outside", outsideAddr)

	cfg, sock := haproxyConfig(t, t.TempDir())
	hp := startLab(t, lab, nsProxy, nil, haproxy, "-db", "-f", cfg)
	// Every server up by its health check (SMTP EHLO, IMAP and POP3
	// greetings over TLS or not, behind PROXY v2 LOCAL and v1 UNKNOWN
	// headers): our servers answer HAProxy's checks.
	waitFor(t, 60*time.Second, "HAProxy's health checks to pass on every server", func() bool {
		rows := haproxyStat(t, sock)
		if len(rows) != 14 {
			return false
		}
		for _, r := range rows {
			if r["status"] != "UP" || !strings.HasPrefix(r["check_status"], "L7OK") && !strings.HasPrefix(r["check_status"], "L6OK") && !strings.HasPrefix(r["check_status"], "L4OK") {
				return false
			}
		}
		return true
	})
	_ = hp

	run := func(ns, role string) string {
		c := bounded(t, lab.command(ns, "python3", "-c", pyClients, role, proxyAddr, mxAddrs[0]))
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s client: %v\n%s", role, err, out)
		}
		return string(out)
	}
	out := run(nsOut, "outside")
	if strings.Count(out, "relay refused 554") != 6 || strings.Count(out, "local accepted") != 6 || strings.Contains(out, "relay accepted") {
		t.Errorf("outside client through HAProxy:\n%s", out)
	}
	if strings.Count(out, "imap select 1") != 2 || strings.Count(out, "pop3 stat 1") != 2 {
		t.Errorf("IMAP and POP3 through HAProxy:\n%s", out)
	}
	if !strings.Contains(out, "direct with header: b''") {
		t.Errorf("a PROXY header from outside proxy-networks was answered:\n%s", out)
	}
	in := run(nsIn, "inside")
	if strings.Count(in, "relay accepted") != 6 || strings.Contains(in, "relay refused") {
		t.Errorf("inside client through HAProxy:\n%s", in)
	}

	// Each host served some of it, and saw the real clients: in the
	// Received headers (v2 and v1), in the logs, in the relay decisions.
	var imapSessions, pop3Sessions int
	for i, h := range hosts {
		msgs := smtpdSpool(t, h.env)
		var fromOut, fromIn, v1 int
		for _, m := range msgs {
			switch {
			case strings.Contains(m.Data, "[198.51.100.10]"):
				t.Errorf("mx%d: a message received from the proxy's address:\n%s", i+1, m.Data)
			case strings.Contains(m.Data, "(unknown ["+outsideAddr+"])\r\n\tby mx.example.test"):
				fromOut++
				if strings.Contains(m.Data, "Subject: v1 ") {
					v1++
				}
			case strings.Contains(m.Data, "(unknown ["+insideAddr+"])\r\n\tby mx.example.test"):
				fromIn++
			}
		}
		if fromOut == 0 || fromIn == 0 || v1 == 0 || fromOut+fromIn != len(msgs) {
			t.Errorf("mx%d: %d messages, %d from the outside client (%d over v1), %d from the inside one", i+1, len(msgs), fromOut, v1, fromIn)
		}
		slog := h.smtpd.Log()
		if !strings.Contains(slog, `msg="relay denied" cmd=smtpd ip=`+outsideAddr) {
			t.Errorf("mx%d: no relay refusal logged for %s", i+1, outsideAddr)
		}
		// The health checks are sessions from the proxy's own address,
		// never refused.
		if !strings.Contains(slog, "msg=connect cmd=smtpd ip="+proxyAddr) {
			t.Errorf("mx%d: no health check session from %s", i+1, proxyAddr)
		}
		for _, p := range []*labProc{h.smtpd, h.imapd, h.pd} {
			for _, l := range strings.Split(p.Log(), "\n") {
				if strings.Contains(l, `msg="connection refused"`) && strings.Contains(l, "peer="+proxyAddr) {
					t.Errorf("%s refused HAProxy: %s", p.name, l)
				}
			}
		}
		imapSessions += strings.Count(h.imapd.Log(), `msg=login cmd=imapd remote=`+outsideAddr+":")
		pop3Sessions += strings.Count(h.pd.Log(), `remote=`+outsideAddr+":")
	}
	if imapSessions != 2 || pop3Sessions == 0 {
		t.Errorf("%d IMAP logins logged with the outside client's address, want 2; POP3 lines: %d", imapSessions, pop3Sessions)
	}
	if !strings.Contains(hosts[0].smtpd.Log(), `msg="connection refused" cmd=smtpd mode=smtp+proxy peer=`+outsideAddr) {
		t.Errorf("mx1 did not log the refused header from %s:\n%s", outsideAddr, hosts[0].smtpd.Log())
	}
}
