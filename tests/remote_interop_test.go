//go:build interop

package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// remotePostfix is a private Postfix instance: smtpd on 127.0.0.2:port
// with STARTTLS, final destination for remote.test, delivering
// friend@remote.test into the Maildir Vmail/remote.test/friend/ through
// virtual(8); other remote.test users are unknown (550).
type remotePostfix struct {
	Dir, Vmail string
}

func startRemotePostfix(t *testing.T, port int) *remotePostfix {
	t.Helper()
	p := newPostfix(t, "letterbox-remote-postfix-")
	nobody, err := user.Lookup("nobody")
	must(t, err)
	pf := &remotePostfix{Dir: p.Dir, Vmail: filepath.Join(p.Dir, "vmail")}
	must(t, os.MkdirAll(filepath.Join(pf.Vmail, "remote.test"), 0o755))
	postfixRun(t, "chown", "-R", nobody.Uid+":"+nobody.Gid, pf.Vmail)
	cert, key := remotePEM(t, "mx.remote.test")
	must(t, os.WriteFile(filepath.Join(p.Etc(), "cert.pem"), cert, 0o644))
	must(t, os.WriteFile(filepath.Join(p.Etc(), "key.pem"), key, 0o600))
	p.start(t, fmt.Sprintf(`myhostname = mx.remote.test
mydestination =
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8
smtpd_tls_security_level = may
smtpd_tls_cert_file = %[1]s/etc/cert.pem
smtpd_tls_key_file = %[1]s/etc/key.pem
smtpd_tls_received_header = yes
virtual_mailbox_domains = remote.test
virtual_mailbox_base = %[1]s/vmail
virtual_mailbox_maps = inline:{ friend@remote.test=remote.test/friend/ }
virtual_uid_maps = static:%[2]s
virtual_gid_maps = static:%[3]s
virtual_minimum_uid = 1
`, p.Dir, nobody.Uid, nobody.Gid), fmt.Sprintf("127.0.0.2:%d inet n - n - - smtpd", port))
	return pf
}

func remotePEM(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// Our smtpd → spool → queue-runner (pkg/remote: MX from the test DNS,
// STARTTLS) → Postfix's smtpd → virtual(8) → Maildir; and an unknown user
// at Postfix comes back to the sender as a DSN quoting Postfix's reply.
func TestInteropRemoteToPostfix(t *testing.T) {
	port := remotePort(t)
	pf := startRemotePostfix(t, port)
	r := newRemoteSetupOnPort(t, port)
	s := r.e.start("smtpd", "")
	r.submit(t, s.Addr, "friend@remote.test", "to postfix")
	r.submit(t, s.Addr, "nobody@remote.test", "to nobody at postfix")
	box := filepath.Join(pf.Vmail, "remote.test", "friend")
	var got []string
	waitFor(t, 30*time.Second, "Postfix's virtual(8) to deliver", func() bool {
		r.run(t)
		got = maildirFilesSoFar(t, box, "new")
		return len(got) == 1
	})
	b, err := os.ReadFile(got[0])
	must(t, err)
	msg := string(b)
	if !strings.Contains(msg, "Subject: to postfix") || !strings.Contains(msg, "Delivered-To: friend@remote.test") ||
		!strings.Contains(msg, "Return-Path: <demo@example.test>") {
		t.Fatalf("Postfix delivered:\n%s", msg)
	}
	// Postfix notes the TLS session in its Received header (ESMTPS).
	if !strings.Contains(msg, "with ESMTPS id") || !strings.Contains(msg, "(using TLS") {
		t.Fatalf("not received over STARTTLS:\n%s", msg)
	}
	waitFor(t, 30*time.Second, "the bounce for nobody@remote.test", func() bool {
		r.run(t)
		return len(r.demoMail(t)) == 1
	})
	dsn := r.demoMail(t)[0]
	if !strings.Contains(dsn, "nobody@remote.test") || !strings.Contains(dsn, "5.1.1") || !strings.Contains(dsn, "User unknown in virtual mailbox table") ||
		!strings.Contains(dsn, "mx.remote.test[127.0.0.2]") {
		t.Fatalf("DSN:\n%s", dsn)
	}
	if len(r.list(t)) != 0 {
		t.Fatalf("still queued: %v", r.list(t))
	}
}
