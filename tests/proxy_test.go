package tests

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/privsep/privseptest"
)

// The servers behind HAProxy (listen modes with the suffix +proxy, issue
// 12): the PROXY header's client address is the one used for relaying,
// Received, logs and logins; anything but a valid header from
// proxy-networks is refused. The headers here are written by hand from
// HAProxy's proxy-protocol.txt; tests/interop has the real HAProxy.

// proxyV1 is a v1 header for a TCP client at src (host:port) talking to
// 198.51.100.1:port.
func proxyV1(src string, port int) []byte {
	host, sport, _ := net.SplitHostPort(src)
	fam := "TCP4"
	dst := "198.51.100.1"
	if strings.Contains(host, ":") {
		fam, dst = "TCP6", "2001:db8::1"
	}
	return []byte(fmt.Sprintf("PROXY %s %s %s %s %d\r\n", fam, host, dst, sport, port))
}

var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// proxyV2 is a v2 PROXY header for an IPv4 client at src, with a TLV that
// must be skipped.
func proxyV2(src string, port int) []byte {
	host, sport, _ := net.SplitHostPort(src)
	var sp int
	fmt.Sscan(sport, &sp)
	b := append([]byte{}, proxyV2Sig...)
	b = append(b, 0x21, 0x11, 0, 12+7)
	b = append(b, net.ParseIP(host).To4()...)
	b = append(b, 198, 51, 100, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(sp))
	b = binary.BigEndian.AppendUint16(b, uint16(port))
	return append(b, 0x01, 0, 4, 's', 'm', 't', 'p') // PP2_TYPE_ALPN
}

// proxyV2Local is HAProxy's health check header.
func proxyV2Local() []byte { return append(append([]byte{}, proxyV2Sig...), 0x20, 0, 0, 0) }

// proxyDial connects to addr from the local address from ("" for any)
// and sends header first.
func proxyDial(t *testing.T, from, addr string, header []byte) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if header != nil {
		_, err = c.Write(header)
		must(t, err)
	}
	return c
}

func dialogOn(t *testing.T, c net.Conn) *dialog { return &dialog{t: t, conn: c, r: bufio.NewReader(c)} }

// refusedSilently fails unless the server closes c without a byte.
func refusedSilently(t *testing.T, c net.Conn, what string) {
	t.Helper()
	b, err := io.ReadAll(c)
	if len(b) > 0 || err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("%s: want the connection closed unanswered, got %q, %v", what, b, err)
	}
}

// smtpdProxyEnv: the proxy is 127.0.0.1; relay-networks hold loopback
// (the proxy's own address: a server that used it would relay for
// everyone) and 192.0.2.0/24, the inside clients. The client's name is
// asked of a DNS server of the test (no answers), not of the machine's.
func smtpdProxyEnv(t *testing.T, extra ...string) *env {
	z := newRemoteDNS(t)
	return smtpdEnv(t, append([]string{`proxy-networks = ["127.0.0.1"]`, `relay-networks = ["127.0.0.0/8", "192.0.2.0/24"]`,
		fmt.Sprintf("dns = %q", z.Addr)}, extra...)...)
}

func TestProxySMTP(t *testing.T) {
	e := smtpdProxyEnv(t)
	s := e.start("smtpd", "smtp+proxy")
	for _, v := range []struct {
		name   string
		header func(string, int) []byte
	}{{"v1", proxyV1}, {"v2", proxyV2}} {
		t.Run(v.name, func(t *testing.T) {
			// Outside: no relaying, local mail accepted, the Received
			// header and the log name the client, not the proxy.
			d := dialogOn(t, proxyDial(t, "", s.Addr, v.header("203.0.113.9:40001", 25)))
			d.expect("220 ")
			d.send("EHLO outside.example")
			d.expect("250 ")
			d.send("MAIL FROM:<a@remote.test>")
			d.expect("250 ")
			d.send("RCPT TO:<friend@remote.test>")
			d.expect("554 5.7.1")
			d.send("RSET")
			d.expect("250 ")
			id := smtpdQueueID(t, smtpdSend(d, "a@remote.test", "joe@example.test", "Subject: from outside "+v.name+"\r\n\r\nhi\r\n"))
			d.send("QUIT")
			d.expect("221 ")
			var data string
			for _, m := range smtpdSpool(t, e) {
				if m.ID == id {
					data = m.Data
				}
			}
			if !strings.Contains(data, "Received: from outside.example (unknown [203.0.113.9])\r\n\tby mx.example.test") || strings.Contains(data, "127.0.0.1") {
				t.Errorf("Received does not name the client 203.0.113.9 alone:\n%s", data)
			}
			// Inside (192.0.2.0/24, through the same proxy): relays.
			d = dialogOn(t, proxyDial(t, "", s.Addr, v.header("192.0.2.7:40002", 25)))
			d.expect("220 ")
			d.send("EHLO inside.example")
			d.expect("250 ")
			d.send("MAIL FROM:<a@example.test>")
			d.expect("250 ")
			d.send("RCPT TO:<friend@remote.test>")
			d.expect("250 ")
			d.send("QUIT")
			d.expect("221 ")
		})
	}
	waitFor(t, 10*time.Second, "the relay refusal logged with the client's address", func() bool {
		return strings.Contains(s.Log(), `ip=203.0.113.9`) && strings.Contains(s.Log(), `msg="relay denied"`)
	})
	for _, l := range strings.Split(s.Log(), "\n") {
		if strings.Contains(l, "relay denied") && !strings.Contains(l, "ip=203.0.113.9") {
			t.Errorf("relay refusal logged without the client's address: %s", l)
		}
	}
}

// HAProxy's health checks: a v2 LOCAL header gets an ordinary session
// with the proxy's own address (Postfix does the same); v1's UNKNOWN too.
func TestProxyLocalCommand(t *testing.T) {
	e := smtpdProxyEnv(t)
	s := e.start("smtpd", "smtp+proxy")
	for _, h := range [][]byte{proxyV2Local(), []byte("PROXY UNKNOWN\r\n")} {
		c := proxyDial(t, "", s.Addr, h)
		d := dialogOn(t, c)
		d.expect("220 ")
		d.send("QUIT")
		d.expect("221 ")
	}
	waitFor(t, 10*time.Second, "the check sessions logged with the proxy's address", func() bool {
		return strings.Count(s.Log(), "ip=127.0.0.1") >= 2
	})
}

// A marked listener takes nothing but a valid header from proxy-networks,
// and says why in the log.
func TestProxyRefused(t *testing.T) {
	e := smtpdEnv(t, `proxy-networks = ["127.0.0.2"]`, `proxy-timeout = "1s"`)
	s := e.start("smtpd", "smtp+proxy")
	cases := []struct {
		name, from string
		header     []byte
		log        string
	}{
		{"outside proxy-networks", "127.0.0.1", proxyV1("192.0.2.7:1000", 25), "the peer 127.0.0.1"},
		{"missing", "127.0.0.2", []byte("EHLO client.example\r\n"), "PROXY header: missing"},
		{"malformed", "127.0.0.2", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 1000\r\n"), "PROXY header: proxyproto"},
		{"slow", "127.0.0.2", nil, "PROXY header: none within 1s"},
		{"v1 too long", "127.0.0.2", []byte("PROXY TCP4 " + strings.Repeat("9", 200)), "longer than 107"},
		{"unix client", "127.0.0.2", append(append(append([]byte{}, proxyV2Sig...), 0x21, 0x31, 0, 216), make([]byte, 216)...), "only TCP"},
	}
	for _, c := range cases {
		refusedSilently(t, proxyDial(t, c.from, s.Addr, c.header), c.name)
		waitFor(t, 10*time.Second, "the refusal logged: "+c.name, func() bool {
			for _, l := range strings.Split(s.Log(), "\n") {
				if strings.Contains(l, `msg="connection refused"`) && strings.Contains(l, "mode=smtp+proxy") && strings.Contains(l, c.log) {
					return true
				}
			}
			return false
		})
	}
	// From the proxy, with a header: served.
	d := dialogOn(t, proxyDial(t, "127.0.0.2", s.Addr, proxyV1("192.0.2.7:1000", 25)))
	d.expect("220 ")

	// Without proxy-networks a marked listener would refuse everyone:
	// smtpd does not start.
	_, errs, code := smtpdEnv(t).run("", "smtpd", "--listen", "smtp+proxy="+freeAddr(t, "127.0.0.1"))
	if code == 0 || !strings.Contains(errs, "needs proxy-networks") {
		t.Fatalf("started without proxy-networks: exit %d\n%s", code, errs)
	}
}

// Implicit TLS and STARTTLS behind the proxy: the header comes first, the
// TLS handshake after it.
func TestProxyTLS(t *testing.T) {
	e := smtpdProxyEnv(t)
	e = smtpdProxyEnv(t, smtpdTLS(t, e.Dir)...)
	tlsConf := &tls.Config{InsecureSkipVerify: true}

	s := e.start("smtpd", "submissions+proxy")
	tc := tls.Client(proxyDial(t, "", s.Addr, proxyV2("203.0.113.9:40010", 465)), tlsConf)
	d := dialogOn(t, tc)
	d.expect("220 ")
	d.send("EHLO tls.example")
	d.expect("250 ")
	d.send("QUIT")
	d.expect("221 ")

	s2 := e.start("smtpd", "smtp+proxy")
	d = dialogOn(t, proxyDial(t, "", s2.Addr, proxyV1("203.0.113.9:40011", 25)))
	d.expect("220 ")
	d.send("EHLO starttls.example")
	d.expect("250 ")
	d.send("STARTTLS")
	d.expect("220 ")
	tc = tls.Client(d.conn, tlsConf)
	d = dialogOn(t, tc)
	d.send("EHLO starttls.example")
	d.expect("250 ")
	d.send("MAIL FROM:<a@remote.test>")
	d.expect("250 ")
	d.send("RCPT TO:<friend@remote.test>")
	d.expect("554 5.7.1")
	d.send("QUIT")
	d.expect("221 ")
	for _, srv := range []*server{s, s2} {
		waitFor(t, 10*time.Second, "the TLS session logged with the client's address", func() bool {
			return strings.Contains(srv.Log(), "ip=203.0.113.9")
		})
	}
}

// pop3d and imapd: the session's log lines, login failures included, name
// the client; imaps and pop3s work behind the proxy.
func TestProxyIMAPPOP3(t *testing.T) {
	// Plaintext logins are for loopback clients: the proxy is on
	// loopback, its client is not; its own health check is.
	ie := newIMAPEnv(t, `proxy-networks = ["127.0.0.1"]`)
	strict := ie.start("imapd", "imap+proxy")
	imapConnOn(t, proxyDial(t, "", strict.Addr, proxyV2("203.0.113.9:40019", 143))).expect(`LOGIN alice@example.test "alice pw"`, "NO [PRIVACYREQUIRED]")
	imapConnOn(t, proxyDial(t, "", strict.Addr, proxyV2Local())).ok(`LOGIN alice@example.test "alice pw"`)
	strictPOP := ie.start("pop3d", "pop3+proxy")
	d := dialogOn(t, proxyDial(t, "", strictPOP.Addr, proxyV1("203.0.113.9:40029", 110)))
	d.expect("+OK")
	d.send("USER alice@example.test")
	d.expect("-ERR")

	ie = newIMAPEnv(t, append(pop3TLS(t, ie.Dir), `proxy-networks = ["127.0.0.1"]`, `allow-insecure-auth = true`)...)
	ie.deliver("hello", "body\n")
	tlsConf := &tls.Config{InsecureSkipVerify: true}

	imapd := ie.start("imapd", "imap+proxy")
	imaps := ie.start("imapd", "imaps+proxy")
	for i, c := range []net.Conn{
		proxyDial(t, "", imapd.Addr, proxyV2("203.0.113.9:40020", 143)),
		tls.Client(proxyDial(t, "", imaps.Addr, proxyV1("203.0.113.9:40021", 993)), tlsConf),
	} {
		ic := &imapConn{t: t, conn: c, r: bufio.NewReader(c)}
		if g := ic.line(); !strings.HasPrefix(g, "* OK") {
			t.Fatalf("greeting %q", g)
		}
		ic.expect(`LOGIN alice@example.test wrong`, "NO")
		ic.ok(`LOGIN alice@example.test "alice pw"`)
		hasLine(t, ic.ok("SELECT INBOX"), "* 1 EXISTS")
		ic.ok("LOGOUT")
		srv := []*server{imapd, imaps}[i]
		port := 40020 + i
		waitFor(t, 10*time.Second, "imapd's lines with the client's address", func() bool {
			l := srv.Log()
			return strings.Contains(l, fmt.Sprintf(`msg="login failed" cmd=imapd remote=203.0.113.9:%d`, port)) &&
				strings.Contains(l, fmt.Sprintf(`msg="session end" cmd=imapd remote=203.0.113.9:%d`, port))
		})
	}

	pop3d := ie.start("pop3d", "pop3+proxy")
	pop3s := ie.start("pop3d", "pop3s+proxy")
	for i, c := range []net.Conn{
		proxyDial(t, "", pop3d.Addr, proxyV1("203.0.113.9:40030", 110)),
		tls.Client(proxyDial(t, "", pop3s.Addr, proxyV2("203.0.113.9:40031", 995)), tlsConf),
	} {
		d := dialogOn(t, c)
		d.expect("+OK")
		d.send("USER alice@example.test")
		d.expect("+OK")
		d.send("PASS wrong")
		d.expect("-ERR")
		d.send("USER alice@example.test")
		d.expect("+OK")
		d.send("PASS alice pw")
		d.expect("+OK")
		d.send("STAT")
		d.expect("+OK 1 ")
		d.send("QUIT")
		d.expect("+OK")
		srv := []*server{pop3d, pop3s}[i]
		port := 40030 + i
		waitFor(t, 10*time.Second, "pop3d's lines with the client's address", func() bool {
			return strings.Contains(srv.Log(), fmt.Sprintf(`msg="login failed" cmd=pop3d remote=203.0.113.9:%d`, port))
		})
	}
}

// The session child (privsep) of imapd and pop3d gets the client's
// address from its parent, not the proxy's.
func TestProxySessionAsOwner(t *testing.T) {
	alice := privseptest.NewUser(t)
	o := newOwnerEnv(t, `proxy-networks = ["127.0.0.1"]`, `allow-insecure-auth = true`)
	o.add("alice@example.test", alice, "")
	userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": pop3Msg("mine", "hello\n")})

	s := o.start("imapd", "imap+proxy")
	c := imapConnOn(t, proxyDial(t, "", s.Addr, proxyV2("203.0.113.9:40040", 143)))
	c.ok("LOGIN alice@example.test pw")
	checkProcCred(t, oneSessionProcess(t, s), alice)
	c.ok("SELECT INBOX")
	c.ok("LOGOUT")
	waitFor(t, 10*time.Second, "the session process to exit", func() bool { return len(sessionChildren(t, s.Cmd.Process.Pid)) == 0 })
	s.stop()
	if !strings.Contains(s.Log(), `msg="session end" cmd=imapd remote=203.0.113.9:40040`) {
		t.Errorf("the session child does not log the client's address:\n%s", s.Log())
	}

	p := o.start("pop3d", "pop3+proxy")
	d := dialogOn(t, proxyDial(t, "", p.Addr, proxyV1("203.0.113.9:40041", 110)))
	d.expect("+OK")
	d.send("USER alice@example.test")
	d.expect("+OK")
	d.send("PASS pw")
	d.expect("+OK")
	checkProcCred(t, oneSessionProcess(t, p), alice)
	d.send("QUIT")
	d.expect("+OK")
	waitFor(t, 10*time.Second, "the session process to exit", func() bool { return len(sessionChildren(t, p.Cmd.Process.Pid)) == 0 })
	p.stop()
	if !strings.Contains(p.Log(), `remote=203.0.113.9:40041`) || strings.Contains(p.Log(), `msg="session end" cmd=pop3d remote=127.0.0.1`) {
		t.Errorf("the session child does not log the client's address:\n%s", p.Log())
	}
}

func imapConnOn(t *testing.T, c net.Conn) *imapConn {
	t.Helper()
	ic := &imapConn{t: t, conn: c, r: bufio.NewReader(c)}
	if g := ic.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	return ic
}

// inetd/tcpserver mode: --mode smtp+proxy reads the header off stdin. The
// peer (TCPREMOTEIP, or the socket's) must be in proxy-networks, and
// tcpserver's RELAYCLIENT, which judged the proxy, is not the client's.
func TestProxyStdio(t *testing.T) {
	e := smtpdProxyEnv(t)
	in := string(proxyV1("203.0.113.9:40050", 25)) + "EHLO x\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<friend@remote.test>\r\nQUIT\r\n"
	c := e.cmd("smtpd", "--mode", "smtp+proxy")
	c.Env = append(c.Env, "TCPREMOTEIP=127.0.0.1", "TCPREMOTEPORT=9", "RELAYCLIENT=")
	c.Stdin = strings.NewReader(in)
	var errb strings.Builder
	c.Stderr = &errb
	out, err := bounded(t, c).Output()
	if err != nil || !strings.Contains(string(out), "554 5.7.1") || !strings.Contains(errb.String(), "ip=203.0.113.9") {
		t.Fatalf("%v\n%s\n%s", err, out, errb.String())
	}
	// Pipes from nowhere known: refused.
	c = e.cmd("smtpd", "--mode", "smtp+proxy")
	c.Stdin = strings.NewReader(in)
	c.Stderr = &errb
	out, err = bounded(t, c).Output()
	if err == nil || len(out) > 0 || !strings.Contains(errb.String(), "the peer unknown is not in proxy-networks") {
		t.Fatalf("pipes without TCPREMOTEIP: %v\n%s\n%s", err, out, errb.String())
	}
}

// systemd: LISTEN_FDNAMES=smtp+proxy marks a passed socket.
func TestProxyListenFDs(t *testing.T) {
	e := smtpdProxyEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	f, err := l.(*net.TCPListener).File()
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	c := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=smtp+proxy exec "$0"`, bin(t, "smtpd"))
	c.Env = append(os.Environ(), "LETTERBOX_CONFIG="+e.Config)
	c.ExtraFiles = []*os.File{f}
	var errb syncBuffer
	c.Stderr = &errb
	must(t, c.Start())
	f.Close()
	defer func() { c.Process.Signal(syscall.SIGTERM); c.Wait() }()
	d := dialogOn(t, proxyDial(t, "", addr, proxyV2("203.0.113.9:40060", 25)))
	d.expect("220 ")
	d.send("QUIT")
	d.expect("221 ")
	refusedSilently(t, proxyDial(t, "", addr, []byte("EHLO x\r\n")), "no header")
	waitFor(t, 10*time.Second, "the session and the refusal logged", func() bool {
		return strings.Contains(errb.String(), "ip=203.0.113.9") && strings.Contains(errb.String(), "PROXY header: missing")
	})
}

// The checks on mail from strangers judge the client named in the header:
// a DNS block list refuses it, SPF judges its address, its PTR name goes
// into Received; the proxy's own address (127.0.0.1, listed here too)
// plays no part.
func TestProxyChecks(t *testing.T) {
	z := newRemoteDNS(t,
		`9.113.0.203.bl.test. IN A 127.0.0.2`,
		`9.113.0.203.bl.test. IN TXT "listed"`,
		`1.0.0.127.bl.test. IN A 127.0.0.2`,
		`spf.test. IN TXT "v=spf1 ip4:203.0.113.10 -all"`,
		`10.113.0.203.in-addr.arpa. IN PTR client.spf.test.`,
		`client.spf.test. IN A 203.0.113.10`)
	e := checkEnv(t, z, `dnsbl = ["bl.test"]`, `spf = "reject"`, `proxy-networks = ["127.0.0.1"]`, `relay-networks = ["192.0.2.0/24"]`)
	s := e.start("smtpd", "smtp+proxy")
	d := dialogOn(t, proxyDial(t, "", s.Addr, proxyV2("203.0.113.9:40070", 25)))
	d.expect("554 5.7.1 Service unavailable; client [203.0.113.9] blocked using bl.test")
	d = dialogOn(t, proxyDial(t, "", s.Addr, proxyV1("203.0.113.10:40071", 25)))
	d.expect("220 ")
	d.send("EHLO client.spf.test")
	d.expect("250 ")
	id := smtpdQueueID(t, smtpdSend(d, "a@spf.test", "joe@example.test", "From: a@spf.test\r\nSubject: spf\r\n\r\nhi\r\n"))
	msgs := smtpdWaitSpool(t, e, 1)
	if msgs[0].ID != id || !strings.Contains(authResults(msgs[0].Data), "spf=pass smtp.mailfrom=a@spf.test") ||
		!strings.Contains(msgs[0].Data, " (client.spf.test [203.0.113.10])\r\n\tby mx.example.test") {
		t.Fatalf("message:\n%s", msgs[0].Data)
	}
}
