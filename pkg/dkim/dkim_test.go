package dkim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// verify checks msg's signatures with the records of keys (no DNS).
func verify(t *testing.T, msg string, keys ...*Key) []*msgdkim.Verification {
	t.Helper()
	lookup := func(name string) ([]string, error) {
		for _, k := range keys {
			if name == k.Selector+"._domainkey."+k.Domain {
				r, err := k.Record()
				return []string{r}, err
			}
		}
		return nil, &os.PathError{Op: "lookup", Path: name, Err: os.ErrNotExist}
	}
	vs, err := msgdkim.VerifyWithOptions(strings.NewReader(msg), &msgdkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func opener(s string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }
}

// TestGenerateAndSign: keys made by Generate sign messages whose
// signatures verify with the records Generate's key publishes, for both
// algorithms at once; From is oversigned; a message with LF line ends is
// signed as it goes on the wire (CRLF).
func TestGenerateAndSign(t *testing.T) {
	dir := t.TempDir()
	rk, err := Generate(dir, "Example.ORG.", "rsa", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	ek, err := Generate(dir, "example.org", "ed", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{Path(dir, "example.org", "rsa"), Path(dir, "example.org", "ed")} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", p, fi, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "example.org")); fi.Mode().Perm() != 0o700 {
		t.Errorf("domain directory mode %v", fi.Mode())
	}
	if _, err := Generate(dir, "example.org", "rsa", "ed25519"); err == nil {
		t.Error("an existing key was overwritten")
	}
	for _, bad := range [][3]string{{"../x.org", "s", "rsa"}, {"example.org", "../s", "rsa"}, {"nodot", "s", "rsa"}, {"example.org", "s", "dsa"}} {
		if _, err := Generate(dir, bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("Generate%v accepted", bad)
		}
	}
	ks := &Keys{Dir: dir}
	msg := "From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: hi\nDate: Mon, 1 Dec 2025 10:00:00 +0000\nMessage-ID: <1@example.org>\n\nbody line\n"
	sig, domain, err := ks.Sign(opener(msg))
	if err != nil || domain != "example.org" {
		t.Fatal(err, domain)
	}
	if n := strings.Count(sig, "DKIM-Signature:"); n != 2 {
		t.Fatalf("%d signatures:\n%s", n, sig)
	}
	wire := sig + strings.ReplaceAll(msg, "\n", "\r\n")
	vs := verify(t, wire, rk, ek)
	for _, v := range vs {
		if v.Err != nil || v.Domain != "example.org" {
			t.Errorf("signature of %s: %v", v.Domain, v.Err)
		}
		if strings.Join(v.HeaderKeys, ":") != "from:from:subject:date:to:message-id" {
			t.Errorf("h= %v", v.HeaderKeys)
		}
	}
	if !strings.Contains(sig, "a=rsa-sha256") || !strings.Contains(sig, "a=ed25519-sha256") || !strings.Contains(sig, "c=relaxed/relaxed") {
		t.Errorf("signature fields:\n%s", sig)
	}
	// A second From added on the way breaks the signatures (oversigning).
	forged := sig + "From: mallory@evil.test\r\n" + strings.ReplaceAll(msg, "\n", "\r\n")
	for _, v := range verify(t, forged, rk, ek) {
		if v.Err == nil {
			t.Error("a signature survived an added From")
		}
	}
	// A subdomain without keys is signed with its organizational domain's.
	sig, _, err = ks.Sign(opener(strings.Replace(msg, "alice@example.org", "alice@lists.example.org", 1)))
	if err != nil || !strings.Contains(sig, "d=example.org") {
		t.Errorf("subdomain: %v\n%s", err, sig)
	}
	// No key: no signature.
	sig, _, err = ks.Sign(opener(strings.Replace(msg, "alice@example.org", "alice@example.net", 1)))
	if sig != "" || err != nil {
		t.Errorf("unknown domain signed: %q %v", sig, err)
	}
	// Keys added later are found.
	if _, err := Generate(dir, "example.net", "new", "ed25519"); err != nil {
		t.Fatal(err)
	}
	if sig, _, _ = ks.Sign(opener(strings.Replace(msg, "alice@example.org", "alice@example.net", 1))); !strings.Contains(sig, "d=example.net") {
		t.Errorf("new key not used: %q", sig)
	}
}

// TestZoneLine: the record as a zone-file line, split in strings of at
// most 255 octets.
func TestZoneLine(t *testing.T) {
	dir := t.TempDir()
	k, err := Generate(dir, "example.org", "sel", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	line, err := k.ZoneLine()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^sel\._domainkey\.example\.org\. IN TXT ((?:"[^"]{1,255}" ?)+)$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("zone line %q", line)
	}
	joined := strings.NewReplacer(`" "`, "", `"`, "").Replace(strings.TrimSpace(m[1]))
	rec, _ := k.Record()
	if joined != rec || !strings.HasPrefix(rec, "v=DKIM1; k=rsa; p=MII") {
		t.Errorf("record %q", joined)
	}
	e, _ := Generate(dir, "example.org", "ed", "ed25519")
	line, _ = e.ZoneLine()
	if !regexp.MustCompile(`^ed\._domainkey\.example\.org\. IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}="$`).MatchString(line) {
		t.Errorf("ed25519 zone line %q", line)
	}
}

// TestReadKey: opendkim-genkey's PKCS#1 RSA keys are read; garbage is
// refused.
func TestReadKey(t *testing.T) {
	dir := t.TempDir()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "k.key")
	os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
	if got, err := ReadKey(p, "d.test", "k"); err != nil || got.Algorithm() != "rsa" {
		t.Errorf("PKCS#1 key: %v", err)
	}
	p = filepath.Join(dir, "bad.key")
	os.WriteFile(p, []byte("not a key"), 0o600)
	if _, err := ReadKey(p, "d.test", "bad"); err == nil {
		t.Error("garbage read as a key")
	}
}

func TestCRLFWriter(t *testing.T) {
	var b strings.Builder
	w := &crlfWriter{w: &b}
	for _, p := range []string{"a\nb\r", "\nc\r\n", "\n", "d"} {
		w.Write([]byte(p))
	}
	if b.String() != "a\r\nb\r\nc\r\n\r\nd" {
		t.Errorf("%q", b.String())
	}
}
