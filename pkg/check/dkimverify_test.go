package check

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

const plainMsg = "From: Alice <alice@signed.test>\nTo: u@example.test\nSubject: hello\nDate: Mon, 1 Dec 2025 10:00:00 +0000\n\nHello,\nthis is signed.\n"

func dkimZone(t *testing.T) *zone {
	z := startDNS(t)
	rk, ek := testKeys(t)
	publishKey(t, z, "rsa", "signed.test", rk)
	publishKey(t, z, "ed", "signed.test", ek)
	z.mark(z.servfail, "temp._domainkey.signed.test.")
	return z
}

// TestDKIMVerify: pass (rsa-sha256, ed25519-sha256), fail (changed body,
// changed header), none, permerror (no key, malformed tags), temperror,
// each with its Authentication-Results entry (header.d, header.s, and the
// first 8 characters of b= to tell signatures apart, RFC 6008).
func TestDKIMVerify(t *testing.T) {
	z := dkimZone(t)
	rk, ek := testKeys(t)
	c := newChecker(t, z, Config{SPF: ModeOff, DMARC: ModeOff})
	signedRSA := sign(t, plainMsg, "signed.test", "rsa", rk)
	signedEd := sign(t, plainMsg, "signed.test", "ed", ek)
	bOf := func(m string) string {
		i := strings.Index(m, " b=")
		return strings.NewReplacer("\r\n", "", " ", "").Replace(m[i+3:])[:8]
	}
	noKey := sign(t, plainMsg, "signed.test", "gone", rk)
	tempKey := sign(t, plainMsg, "signed.test", "temp", rk)
	for _, tc := range []struct {
		name, msg, want string
	}{
		{"rsa", signedRSA, "dkim=pass header.a=rsa-sha256 header.b=" + bOf(signedRSA) + " header.d=signed.test header.s=rsa"},
		{"ed25519", signedEd, "dkim=pass header.a=ed25519-sha256 header.b=" + bOf(signedEd) + " header.d=signed.test header.s=ed"},
		{"body changed", strings.Replace(signedRSA, "this is signed", "this is forged", 1), "dkim=fail reason=\"body hash did not verify\""},
		{"header changed", strings.Replace(signedRSA, "Subject: hello", "Subject: HELLO there", 1), "dkim=fail reason=\"signature did not verify"},
		{"unsigned", plainMsg, "dkim=none"},
		{"no key", noKey, "dkim=permerror reason=\"no key for signature"},
		{"key lookup fails", tempKey, "dkim=temperror reason="},
		{"malformed tags", "DKIM-Signature: v=1; a=rsa-sha256; d=signed.test; d=x; s=;;= b\n" + plainMsg, "dkim=permerror reason=\"malformed signature tags"},
		{"no version", "DKIM-Signature: a=rsa-sha256; d=signed.test; s=rsa; h=from; bh=AAAA; b=AAAA\n" + plainMsg, "dkim=permerror reason=\"incompatible signature version\""},
		{"garbage", "DKIM-Signature: \x01\x02;;;;===;;\n" + plainMsg, "dkim=permerror"},
		// RFC 8301: rsa-sha1 is not valid, whatever the signature.
		{"rsa-sha1", strings.Replace(signedRSA, "a=rsa-sha256", "a=rsa-sha1", 1), "dkim=permerror reason=\"hash algorithm too weak: sha1\""},
	} {
		o := run(t, c, transaction{from: "alice@signed.test", rcpts: []string{"u@example.test"}, msg: tc.msg})
		if o.err != nil {
			t.Fatalf("%s: %v", tc.name, o.err)
		}
		if ar := authResults(o.stored); !strings.Contains(ar, tc.want) {
			t.Errorf("%s: Authentication-Results %q, want %q", tc.name, ar, tc.want)
		}
	}
}

// TestDKIMStreams: the verifier follows the staging file while the data
// arrives in small pieces, and a message larger than any buffer verifies.
func TestDKIMStreams(t *testing.T) {
	z := dkimZone(t)
	rk, _ := testKeys(t)
	c := newChecker(t, z, Config{SPF: ModeOff, DMARC: ModeOff})
	body := strings.Repeat("a line of the body that goes on and on, number whatever\n", 40000) // ~2.3 MB
	msg := sign(t, strings.Replace(plainMsg, "this is signed.\n", body, 1), "signed.test", "rsa", rk)
	cn, _ := c.Connect(ConnInfo{IP: []byte{192, 0, 2, 1}})
	defer cn.Close()
	cn.Helo("client.test")
	cn.Mail("TESTID0002", "alice@signed.test", "")
	cn.Rcpt("u@example.test", "")
	var stored string
	_, err := cn.Message(iotest.HalfReader(iotest.OneByteReader(strings.NewReader(msg[:5000]))), func(r *Result) (string, error) {
		b, err := io.ReadAll(r.Data)
		stored = string(b)
		return "x", err
	})
	// The message cut short has a body hash that does not match.
	if err != nil || !strings.Contains(authResults(stored), "dkim=fail") {
		t.Fatalf("cut message: %v, %q", err, authResults(stored))
	}
	cn.Mail("TESTID0003", "alice@signed.test", "")
	cn.Rcpt("u@example.test", "")
	_, err = cn.Message(iotest.HalfReader(strings.NewReader(msg)), func(r *Result) (string, error) {
		b, err := io.ReadAll(r.Data)
		stored = string(b)
		return "x", err
	})
	if err != nil || !strings.Contains(authResults(stored), "dkim=pass") {
		t.Fatalf("large message: %v, %q", err, authResults(stored))
	}
	if !strings.HasSuffix(stored, msg) {
		t.Fatalf("stored message does not end with the message: %d octets for %d", len(stored), len(msg))
	}
}

// TestDKIMManySignatures: only the first eight signatures are verified;
// the others are reported, not checked.
func TestDKIMManySignatures(t *testing.T) {
	z := dkimZone(t)
	_, ek := testKeys(t)
	c := newChecker(t, z, Config{SPF: ModeOff, DMARC: ModeOff})
	msg := plainMsg
	for i := 0; i < 10; i++ {
		msg = sign(t, msg, "signed.test", "ed", ek)
	}
	o := run(t, c, transaction{from: "alice@signed.test", rcpts: []string{"u@example.test"}, msg: msg})
	ar := authResults(o.stored)
	if n := strings.Count(ar, "dkim=pass"); n != 8 {
		t.Errorf("%d signatures passed, want 8: %s", n, ar)
	}
	if n := strings.Count(ar, "dkim=neutral"); n != 2 {
		t.Errorf("%d signatures not verified, want 2: %s", n, ar)
	}
}

// TestHeaderLimits: a header with too many fields, or too large, is
// refused with 552 5.3.4 after the data is read to its end; nothing is
// committed.
func TestHeaderLimits(t *testing.T) {
	c := newChecker(t, nil, Config{SPF: ModeOff, DKIMVerify: ModeOff, DMARC: ModeOff, Filter: "cat >/dev/null",
		Header: HeaderLimits{MaxFields: 50, MaxBytes: 4000}})
	for _, msg := range []string{
		strings.Repeat("X-Field: a\n", 51) + "\nbody\n",
		"Subject: " + strings.Repeat("long ", 900) + "\n\nbody\n",
		"Subject: x\n" + strings.Repeat(" continued\n", 500) + "\nbody\n",
	} {
		r := &countingReader{r: strings.NewReader(strings.ReplaceAll(msg, "\n", "\r\n"))}
		cn, _ := c.Connect(ConnInfo{IP: []byte{192, 0, 2, 1}})
		cn.Helo("client.test")
		cn.Mail("TESTID0004", "a@b.test", "")
		cn.Rcpt("u@example.test", "")
		committed := false
		_, err := cn.Message(r, func(*Result) (string, error) { committed = true; return "", nil })
		cn.Close()
		v, ok := err.(*Verdict)
		if !ok || v.Code != 552 || v.Enh != "5.3.4" || committed {
			t.Errorf("header over the limits: %v, committed %v", err, committed)
		}
		if !r.eof {
			t.Errorf("the data was not read to its end")
		}
	}
	// Within the limits it passes.
	o := run(t, c, transaction{from: "a@b.test", rcpts: []string{"u@example.test"}, msg: strings.Repeat("X-Field: a\n", 50) + "\nbody\n"})
	if o.err != nil || o.result == nil {
		t.Fatalf("50 fields: %v", o.err)
	}
}

type countingReader struct {
	r   io.Reader
	eof bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		c.eof = true
	}
	return n, err
}

func ExampleParseTagList() {
	tags, ok := ParseTagList(" v=1; a=rsa-sha256;\r\n\td=example.org; b=abc\r\n def ;")
	fmt.Printf("%v %q\n", ok, tags)
	_, ok = ParseTagList("v=1; v=2")
	fmt.Println(ok)
	// Output:
	// true [{"v" "1"} {"a" "rsa-sha256"} {"d" "example.org"} {"b" "abc\r\n def"}]
	// false
}

// TestDKIMKeyAskedAtEndOfHeader: a signer's key that is not cached is
// looked up as soon as the header has arrived, while the body is still
// coming (a message staged in memory is verified once complete: the
// lookup's round trip is hidden behind the body).
func TestDKIMKeyAskedAtEndOfHeader(t *testing.T) {
	z := dkimZone(t)
	rk, _ := testKeys(t)
	c := newChecker(t, z, Config{SPF: ModeOff, DMARC: ModeOff})
	msg := strings.ReplaceAll(sign(t, plainMsg, "signed.test", "rsa", rk), "\n", "\r\n")
	msg = strings.ReplaceAll(msg, "\r\r\n", "\r\n")
	end := strings.Index(msg, "\r\n\r\n") + 4
	asked := false
	body := readerFunc(func(p []byte) (int, error) {
		// The rest of the message once the key was asked for (or
		// after 5 seconds: the test then fails).
		for deadline := time.Now().Add(5 * time.Second); !asked && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			asked = z.asked("rsa._domainkey.signed.test") > 0
		}
		return 0, io.EOF
	})
	cn, _ := c.Connect(ConnInfo{IP: []byte{192, 0, 2, 1}})
	defer cn.Close()
	cn.Helo("client.test")
	cn.Mail("TESTID0004", "alice@signed.test", "")
	cn.Rcpt("u@example.test", "")
	var stored string
	_, err := cn.Message(io.MultiReader(strings.NewReader(msg[:end]), body, strings.NewReader(msg[end:])), func(r *Result) (string, error) {
		b, err := io.ReadAll(r.Data)
		stored = string(b)
		return "x", err
	})
	if !asked {
		t.Error("the key was not asked for before the body ended")
	}
	if err != nil || !strings.Contains(authResults(stored), "dkim=pass") {
		t.Fatalf("%v, %q", err, authResults(stored))
	}
	if n := z.asked("rsa._domainkey.signed.test"); n != 1 {
		t.Errorf("key asked %d times, want 1", n)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
