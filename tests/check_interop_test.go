//go:build interop

package tests

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The checks on mail in with the tools admins plug into MTAs: rspamd,
// ClamAV, SpamAssassin (through their milters) and OpenDKIM.

const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// daemon is a third-party daemon started by a test, stopped by its pid.
type daemon struct {
	cmd *exec.Cmd
	out *syncBuffer
}

// startDaemon runs name with args in the foreground, in its own process
// group, killed (the group) when the test ends.
func startDaemon(t *testing.T, name string, args ...string) *daemon {
	t.Helper()
	needPeer(t, name)
	c := exec.Command(name, args...)
	d := &daemon{cmd: c, out: &syncBuffer{}}
	c.Stdout, c.Stderr = d.out, d.out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, c.Start())
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, d.out.String())
		}
	})
	return d
}

func (d *daemon) stop() {
	if d.cmd.Process != nil {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		d.cmd.Wait()
	}
}

// openDir makes a directory that daemons running as other users can read
// and that no other user can write to, nor any of its parents (opendkim
// refuses files under /tmp).
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/lib", "letterbox-check-interop-")
	must(t, err)
	must(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(content), 0o644))
}

// milterEnv is an smtpd whose clients are all strangers, with one milter
// and the built-in checks off (they are tested elsewhere).
func milterEnv(t *testing.T, milterSpec string, extra ...string) (*env, *server) {
	t.Helper()
	e := smtpdEnv(t, append([]string{`relay-networks = ["192.0.2.0/24"]`, fmt.Sprintf("milter = [%q]", milterSpec),
		`spf = "off"`, `dkim-verify = "off"`, `dmarc = "off"`}, extra...)...)
	return e, e.start("smtpd", "")
}

// swaks runs swaks against addr and returns its transcript.
func swaks(t *testing.T, addr string, args ...string) string {
	t.Helper()
	needPeer(t, "swaks")
	out, _ := exec.Command("swaks", append([]string{"--server", addr, "--from", "a@remote.test", "--to", "joe@example.test"}, args...)...).CombinedOutput()
	return string(out)
}

// startRspamd runs rspamd with the Debian configuration and the settings
// smtpd(8) tells an admin to make: the proxy worker as a milter on
// 127.0.0.1:PORT, headers added to every message. Its DNS goes to dnsAddr.
// The hyperscan cache is kept between runs (compiling it takes minutes).
func startRspamd(t *testing.T, dnsAddr string) (milterAddr string, d *daemon) {
	t.Helper()
	dir := openDir(t)
	ports := []string{freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")}
	local := filepath.Join(dir, "local")
	writeFile(t, filepath.Join(local, "override.d", "worker-proxy.inc"), fmt.Sprintf("bind_socket = %q;\nmilter = yes;\ntimeout = 120s;\nupstream \"local\" { default = yes; self_scan = yes; }\ncount = 1;\n", ports[0]))
	writeFile(t, filepath.Join(local, "override.d", "worker-normal.inc"), fmt.Sprintf("bind_socket = %q;\ncount = 1;\n", ports[1]))
	writeFile(t, filepath.Join(local, "override.d", "worker-controller.inc"), fmt.Sprintf("bind_socket = %q;\ncount = 1;\n", ports[2]))
	writeFile(t, filepath.Join(local, "override.d", "logging.inc"), "type = \"console\";\nlevel = \"warning\";\n")
	cache := "/var/tmp/letterbox-interop-rspamd-hs"
	must(t, os.MkdirAll(cache, 0o755))
	exec.Command("chown", "_rspamd:_rspamd", cache).Run()
	writeFile(t, filepath.Join(local, "local.d", "options.inc"), fmt.Sprintf("dns { nameserver = [%q]; timeout = 1s; retransmits = 1; }\nhs_cache_dir = %q;\n", dnsAddr, cache+"/"))
	writeFile(t, filepath.Join(local, "local.d", "milter_headers.conf"), "extended_spam_headers = true;\nskip_local = false;\nskip_authenticated = false;\n")
	for _, sub := range []string{"db", "run", "log"} {
		must(t, os.MkdirAll(filepath.Join(dir, sub), 0o755))
		exec.Command("chown", "_rspamd:_rspamd", filepath.Join(dir, sub)).Run()
	}
	d = startDaemon(t, "rspamd", "-f", "-c", "/etc/rspamd/rspamd.conf", "-u", "_rspamd", "-g", "_rspamd",
		"--var=LOCAL_CONFDIR="+local, "--var=DBDIR="+filepath.Join(dir, "db"), "--var=RUNDIR="+filepath.Join(dir, "run"), "--var=LOGDIR="+filepath.Join(dir, "log"))
	// The first start compiles the hyperscan cache: minutes on a busy machine.
	waitForPort(t, 8*time.Minute, ports[0])
	return ports[0], d
}

// waitForPort waits until something accepts connections on addr.
func waitForPort(t *testing.T, timeout time.Duration, addr string) {
	t.Helper()
	waitFor(t, timeout, "a listener on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// TestInteropRspamd: rspamd's milter proxy, configured as smtpd(8) says,
// refuses GTUBE and adds its headers, with our queue id, to clean mail.
func TestInteropRspamd(t *testing.T) {
	z := newRemoteDNS(t)
	maddr, _ := startRspamd(t, z.Addr)
	e, s := milterEnv(t, "inet:"+maddr, `milter-timeout = "60s"`)
	out := swaks(t, s.Addr, "--body", gtube)
	if !regexp.MustCompile(`<\*\* 554 5\.7\.1 Gtube pattern`).MatchString(out) {
		t.Fatalf("GTUBE through rspamd:\n%s", out)
	}
	out = swaks(t, s.Addr, "--body", "hello joe, nothing to see here")
	m := regexp.MustCompile(`<-  250 2\.0\.0 OK: queued as (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("clean mail through rspamd:\n%s", out)
	}
	msgs := smtpdWaitSpool(t, e, 1)
	for _, h := range []string{"\r\nX-Rspamd-Queue-Id: " + m[1] + "\r\n", "\r\nX-Spamd-Result: default: False", "\r\nX-Rspamd-Server: "} {
		if !strings.Contains(msgs[0].Data, h) {
			t.Errorf("no %q in:\n%s", strings.TrimSpace(h), msgs[0].Data)
		}
	}
}

// startClamav runs clamd with a signature database built by sigtool from
// the EICAR test file (no network for freshclam), and clamav-milter on a
// free port, rejecting infected mail.
func startClamav(t *testing.T) (milterAddr string, milter *daemon) {
	t.Helper()
	needPeer(t, "sigtool", "clamd", "clamav-milter")
	dir := openDir(t)
	writeFile(t, filepath.Join(dir, "eicar.com"), eicar)
	sig, err := exec.Command("sigtool", "--md5", filepath.Join(dir, "eicar.com")).Output()
	must(t, err)
	writeFile(t, filepath.Join(dir, "db", "eicar.hdb"), string(sig))
	sock := filepath.Join(dir, "clamd.sock")
	writeFile(t, filepath.Join(dir, "clamd.conf"), fmt.Sprintf("LocalSocket %s\nDatabaseDirectory %s\nForeground yes\nUser root\n", sock, filepath.Join(dir, "db")))
	startDaemon(t, "clamd", "-c", filepath.Join(dir, "clamd.conf"))
	waitFor(t, 2*time.Minute, "clamd's socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	milterAddr = freeAddr(t, "127.0.0.1")
	host, port, _ := net.SplitHostPort(milterAddr)
	writeFile(t, filepath.Join(dir, "milter.conf"), fmt.Sprintf("MilterSocket inet:%s@%s\nClamdSocket unix:%s\nForeground yes\nOnInfected Reject\nAddHeader Replace\nUser root\n", port, host, sock))
	milter = startDaemon(t, "clamav-milter", "-c", filepath.Join(dir, "milter.conf"))
	waitForPort(t, time.Minute, milterAddr)
	return milterAddr, milter
}

// TestInteropClamav: clamav-milter with clamd refuses a message carrying
// the EICAR test file and marks clean mail as scanned.
func TestInteropClamav(t *testing.T) {
	maddr, _ := startClamav(t)
	e, s := milterEnv(t, "inet:"+maddr)
	f := filepath.Join(t.TempDir(), "eicar.com")
	must(t, os.WriteFile(f, []byte(eicar), 0o644))
	if out := swaks(t, s.Addr, "--attach", f); !strings.Contains(out, "<** 550 5.7.1") {
		t.Fatalf("EICAR through clamav-milter:\n%s", out)
	}
	if out := swaks(t, s.Addr, "--body", "clean"); !strings.Contains(out, "<-  250 2.0.0 OK: queued as") {
		t.Fatalf("clean mail:\n%s", out)
	}
	msgs := smtpdWaitSpool(t, e, 1)
	if !strings.Contains(msgs[0].Data, "\r\nX-Virus-Scanned: clamav-milter ") || !strings.Contains(msgs[0].Data, "\r\nX-Virus-Status: Clean\r\n") {
		t.Fatalf("clean mail:\n%s", msgs[0].Data)
	}
}

// TestInteropMilterStopped: clamav-milter killed while a client is
// connected: with milter-default-action tempfail the client gets 451 and
// nothing is committed; with accept the message goes through unscanned;
// the client's retry once the milter is back is scanned. Nothing is lost.
func TestInteropMilterStopped(t *testing.T) {
	for _, action := range []string{"tempfail", "accept"} {
		t.Run(action, func(t *testing.T) {
			maddr, m := startClamav(t)
			e, s := milterEnv(t, "inet:"+maddr, fmt.Sprintf("milter-default-action = %q", action), `milter-timeout = "5s"`)
			d := dialFrom(t, "127.0.0.2", s.Addr)
			d.expect("220 ")
			d.send("EHLO client.test")
			d.expect("250 ")
			m.stop()
			d.send("MAIL FROM:<a@remote.test>")
			if action == "tempfail" {
				d.expect("451 4.7.1")
				if n := len(smtpdSpool(t, e)); n != 0 {
					t.Fatalf("%d messages committed", n)
				}
				return
			}
			d.expect("250 ")
			d.send("RCPT TO:<joe@example.test>")
			d.expect("250 ")
			d.send("DATA")
			d.expect("354 ")
			d.raw("Subject: unscanned\r\n\r\nbody\r\n.\r\n")
			d.expect("250 ")
			msgs := smtpdWaitSpool(t, e, 1)
			if strings.Contains(msgs[0].Data, "X-Virus-Scanned") {
				t.Fatalf("scanned by a stopped milter:\n%s", msgs[0].Data)
			}
		})
	}
}

// TestInteropSpamassassin: spamass-milter with spamd (local tests only)
// tags GTUBE as spam: its headers are added and its report replaces the
// body (SpamAssassin's report_safe), the original attached.
func TestInteropSpamassassin(t *testing.T) {
	needPeer(t, "spamd", "spamass-milter", "spamc")
	spamd := freeAddr(t, "127.0.0.1")
	dir := openDir(t)
	startDaemon(t, "spamd", "-i", spamd, "-L", "-x", "-u", "nobody", "--syslog=stderr", "--pidfile="+filepath.Join(dir, "spamd.pid"))
	waitForPort(t, 2*time.Minute, spamd)
	maddr := freeAddr(t, "127.0.0.1")
	host, port, _ := net.SplitHostPort(maddr)
	shost, sport, _ := net.SplitHostPort(spamd)
	startDaemon(t, "spamass-milter", "-p", "inet:"+port+"@"+host, "--", "-d", shost, "-p", sport)
	waitForPort(t, time.Minute, maddr)
	e, s := milterEnv(t, "inet:"+maddr, `milter-timeout = "60s"`)
	if out := swaks(t, s.Addr, "--header", "Subject: cheap", "--body", gtube); !strings.Contains(out, "<-  250 2.0.0 OK: queued as") {
		t.Fatalf("GTUBE:\n%s", out)
	}
	msgs := smtpdWaitSpool(t, e, 1)
	data := msgs[0].Data
	for _, want := range []string{"\r\nX-Spam-Flag: YES\r\n", "\r\nX-Spam-Status: Yes, score=", "GTUBE", "Content-Type: multipart/mixed", "Content-Type: message/rfc822", gtube} {
		if !strings.Contains(data, want) {
			t.Errorf("no %q in:\n%s", want, data)
		}
	}
	head, body, _ := strings.Cut(data, "\r\n\r\n")
	if strings.Contains(body, "\n") && strings.Contains(strings.ReplaceAll(body, "\r\n", ""), "\n") {
		t.Errorf("bare LF in the replaced body")
	}
	if !strings.HasPrefix(head, "Received: from ") {
		t.Errorf("header:\n%s", head)
	}
}

// dns53 serves z on ip:53 (UDP and TCP), for programs that only read
// /etc/resolv.conf; run them in a mount namespace where that file names ip.
func dns53(t *testing.T, z *remoteDNS, ip string) (resolvConf string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", ip+":53")
	must(t, err)
	l, err := net.Listen("tcp", ip+":53")
	must(t, err)
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: z}, {Listener: l, Handler: z}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	f := filepath.Join(t.TempDir(), "resolv.conf")
	must(t, os.WriteFile(f, []byte("nameserver "+ip+"\noptions attempts:1 timeout:2\n"), 0o644))
	return f
}

// withResolvConf runs name with args and stdin where /etc/resolv.conf is
// resolvConf (a private mount namespace), returning its exit error and
// output.
func withResolvConf(resolvConf, stdin, name string, args ...string) (string, error) {
	c := exec.Command("unshare", append([]string{"-m", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolvConf, name}, args...)...)
	c.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	return out.String(), err
}

// TestInteropOpendkim: opendkim-testmsg verifies what our queue-runner
// signs (rsa and ed25519 keys from mailuser dkim-keygen, and a key made by
// opendkim-genkey, which dkim-keys reads as it is); our smtpd verifies
// what opendkim signs (as a milter; opendkim-testmsg signs with rsa-sha1,
// which RFC 8301 forbids); opendkim as a verifying milter on our smtpd
// passes our signatures.
func TestInteropOpendkim(t *testing.T) {
	needPeer(t, "opendkim-testmsg", "opendkim-genkey", "opendkim", "unshare")
	z := newRemoteDNS(t)
	resolv := dns53(t, z, "127.0.0.77")

	// Our signatures: sender → sink (go-smtp) through queue-runner.
	send := newEnv(t, "[queue-runner]", `domains = ["sender.test"]`, "[sendmail]", `domains = ["sender.test"]`)
	keys := filepath.Join(send.Dir, "dkim")
	var zoneLines []string
	for _, alg := range []string{"rsa", "ed25519"} {
		out, errs, code := send.run("", "mailuser", "dkim-keygen", "sender.test", "--algorithm", alg, "--dkim-keys", keys)
		if code != 0 {
			t.Fatalf("dkim-keygen: %d %s", code, errs)
		}
		z.addZone(t, strings.TrimSpace(out))
		zoneLines = append(zoneLines, strings.TrimSpace(out))
	}
	gen := t.TempDir()
	if out, err := exec.Command("opendkim-genkey", "-D", gen, "-d", "other.test", "-s", "odk").CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v %s", err, out)
	}
	must(t, os.MkdirAll(filepath.Join(keys, "other.test"), 0o700))
	odkKey, err := os.ReadFile(filepath.Join(gen, "odk.private"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(keys, "other.test", "odk.key"), odkKey, 0o600))
	txt, err := os.ReadFile(filepath.Join(gen, "odk.txt"))
	must(t, err)
	p := regexp.MustCompile(`p=([A-Za-z0-9+/=]+)"\s*"([A-Za-z0-9+/=]*)`).FindSubmatch(txt)
	if p == nil {
		t.Fatalf("odk.txt: %s", txt)
	}
	odkLine := fmt.Sprintf(`odk._domainkey.other.test. IN TXT "v=DKIM1; k=rsa; p=%s%s"`, p[1], p[2])
	z.addZone(t, odkLine)
	zoneLines = append(zoneLines, odkLine)

	sinkAddr := freeAddr(t, "127.0.0.1")
	sink := newRemoteSink(t, sinkAddr)
	for _, from := range []string{"alice@sender.test", "bob@other.test"} {
		msg := "From: " + from + "\nTo: x@dest.test\nSubject: signed by letterbox\nDate: Mon, 1 Dec 2025 10:00:00 +0000\nMessage-ID: <" + from + ">\n\nhello\n"
		if _, errs, code := send.run(msg, "sendmail", "-f", from, "x@dest.test"); code != 0 {
			t.Fatalf("sendmail: %s", errs)
		}
	}
	if out, errs, code := send.run("", "queue-runner", "--dkim-keys", keys, "--route", "dest.test="+sinkAddr); code != 0 {
		t.Fatalf("queue-runner: %s%s", out, errs)
	}
	got := sink.messages()
	if len(got) != 2 {
		t.Fatalf("%d messages at the sink", len(got))
	}
	for _, m := range got {
		if n := strings.Count(m.Data, "DKIM-Signature:"); n == 0 {
			t.Fatalf("unsigned:\n%s", m.Data)
		}
		if out, err := withResolvConf(resolv, m.Data, "opendkim-testmsg"); err != nil {
			t.Errorf("opendkim-testmsg refused our signature (%v): %s\n%s", err, out, m.Data)
		}
		if out, err := withResolvConf(resolv, strings.Replace(m.Data, "hello", "HELLO", 1), "opendkim-testmsg"); err == nil {
			t.Errorf("opendkim-testmsg accepted a changed message: %s", out)
		}
	}

	// opendkim's signatures (opendkim as a signing milter on one smtpd:
	// the client, 127.0.0.2, is one of its internal hosts), verified by
	// another smtpd with its checks on.
	odk := openDir(t)
	must(t, os.WriteFile(filepath.Join(odk, "odk.key"), odkKey, 0o600))
	signAddr := freeAddr(t, "127.0.0.1")
	shost, sport, _ := net.SplitHostPort(signAddr)
	writeFile(t, filepath.Join(odk, "sign.conf"), fmt.Sprintf("Mode s\nDomain other.test\nSelector odk\nKeyFile %s\nInternalHosts 127.0.0.0/8\nSocket inet:%s@%s\nBackground no\nUserID root\nPidFile %s\n",
		filepath.Join(odk, "odk.key"), sport, shost, filepath.Join(odk, "sign.pid")))
	startDaemon(t, "opendkim", "-f", "-x", filepath.Join(odk, "sign.conf"))
	waitForPort(t, time.Minute, signAddr)
	se, ss := milterEnv(t, "inet:"+signAddr)
	if _, end := checkSend(t, "127.0.0.2", ss.Addr, "bob@other.test", "joe@example.test", "From: bob@other.test\nTo: joe@example.test\nSubject: signed by opendkim\nDate: Mon, 1 Dec 2025 10:00:00 +0000\n\nhi joe\n"); !strings.HasPrefix(end, "250 ") {
		t.Fatalf("through opendkim (signing): %q", end)
	}
	signed := smtpdWaitSpool(t, se, 1)[0].Data
	if !strings.Contains(signed, "DKIM-Signature: v=1; a=rsa-sha256;") || !strings.Contains(signed, "d=other.test; s=odk;") {
		t.Fatalf("opendkim did not sign:\n%s", signed)
	}
	recv := smtpdEnv(t, fmt.Sprintf("dns = %q", z.Addr), `relay-networks = ["192.0.2.0/24"]`)
	rs := recv.start("smtpd", "")
	if _, end := checkSend(t, "127.0.0.2", rs.Addr, "bob@other.test", "joe@example.test", signed); !strings.HasPrefix(end, "250 ") {
		t.Fatalf("opendkim-signed message: %q", end)
	}
	msgs := smtpdWaitSpool(t, recv, 1)
	if ar := authResults(msgs[0].Data); !strings.Contains(ar, "dkim=pass header.a=rsa-sha256") || !strings.Contains(ar, "header.d=other.test header.s=odk") {
		t.Fatalf("Authentication-Results: %s", ar)
	}

	// opendkim as a milter, verifying our signatures.
	dir := openDir(t)
	maddr := freeAddr(t, "127.0.0.1")
	host, port, _ := net.SplitHostPort(maddr)
	// opendkim resolves with libunbound, which will not ask a server on
	// loopback; its TestPublicKeys stands in for DNS.
	var pub strings.Builder
	for _, l := range zoneLines {
		rr, err := dns.NewRR(l)
		must(t, err)
		fmt.Fprintf(&pub, "%s %s\n", strings.TrimSuffix(rr.Header().Name, "."), strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	writeFile(t, filepath.Join(dir, "keys"), pub.String())
	writeFile(t, filepath.Join(dir, "opendkim.conf"), fmt.Sprintf("Mode v\nSocket inet:%s@%s\nAuthservID opendkim.example.test\nTestPublicKeys %s\nBackground no\nUserID root\nPidFile %s\n",
		port, host, filepath.Join(dir, "keys"), filepath.Join(dir, "pid")))
	startDaemon(t, "opendkim", "-f", "-x", filepath.Join(dir, "opendkim.conf"))
	waitForPort(t, time.Minute, maddr)
	me, ms := milterEnv(t, "inet:"+maddr)
	for _, m := range got {
		if _, end := checkSend(t, "127.0.0.2", ms.Addr, m.From, "joe@example.test", m.Data); !strings.HasPrefix(end, "250 ") {
			t.Fatalf("through opendkim: %q", end)
		}
	}
	for _, m := range smtpdWaitSpool(t, me, 2) {
		head, _, _ := strings.Cut(m.Data, "\r\n\r\n")
		n := strings.Count(m.Data, "DKIM-Signature:")
		if !strings.HasPrefix(head, "Authentication-Results: opendkim.example.test;") || strings.Count(head, "dkim=pass") != n || strings.Contains(head, "dkim=fail") {
			t.Errorf("opendkim's verdict on our %d signatures:\n%s", n, head)
		}
	}
}
