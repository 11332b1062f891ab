package check

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/emersion/go-msgauth/dkim"
)

// streamVerify verifies msg as Message does, in pieces of step octets: the
// header through headerParser, then the body streamed. ok is false when
// the header does not end with an empty line (go-msgauth's case).
func streamVerify(t testing.TB, c *Checker, msg string, step int) (verifs []verification, ok bool) {
	t.Helper()
	hp := &headerParser{lim: DefaultHeaderLimits}
	var s *dkimStream
	data := []byte(msg)
	for off := 0; off < len(data); off += step {
		p := data[off:min(off+step, len(data))]
		if !hp.done {
			hp.feed(p, int64(off))
			if hp.done && hp.blank {
				var sigFields []int
				for i, f := range hp.fields {
					if f.Is("DKIM-Signature") {
						sigFields = append(sigFields, i)
					}
				}
				s = c.startStream(context.Background(), msgauthHeader(hp.fields), sigFields)
				s.write(p[hp.bodyOff-int64(off):])
			}
		} else if s != nil {
			s.write(p)
		}
	}
	if s == nil {
		return nil, false
	}
	return s.finish(), true
}

// sameAsGoMsgauth fails the test when the streamed verification of msg,
// cut in pieces of each size, differs from go-msgauth's: the same domain,
// the same error text and kind, signature by signature.
func sameAsGoMsgauth(t testing.TB, c *Checker, name, msg string) {
	t.Helper()
	want, werr := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: c.cfg.Resolver.txtFunc(context.Background()), MaxVerifications: maxDKIMSignatures})
	if werr != nil && werr != dkim.ErrTooManySignatures {
		t.Fatalf("%s: go-msgauth: %v", name, werr)
	}
	for _, step := range []int{1, 3, 64, 1 << 20} {
		got, ok := streamVerify(t, c, msg, step)
		if !ok {
			t.Fatalf("%s: header not streamed", name)
		}
		if len(got) != len(want) {
			t.Fatalf("%s, pieces of %d: %d verifications, go-msgauth %d", name, step, len(got), len(want))
		}
		for i, w := range want {
			g := got[i]
			kind := func(err error, perm, temp bool) string {
				switch {
				case err == nil:
					return "pass"
				case perm:
					return "perm"
				case temp:
					return "temp"
				}
				return "fail"
			}
			gk := kind(g.err, isDKIMError(g.err, dkimPermFail), isDKIMError(g.err, dkimTempFail))
			wk := kind(w.Err, dkim.IsPermFail(w.Err), dkim.IsTempFail(w.Err))
			ge, we := "", ""
			if g.err != nil {
				ge = g.err.Error()
			}
			if w.Err != nil {
				we = w.Err.Error()
			}
			if g.domain != w.Domain || gk != wk || ge != we {
				t.Errorf("%s, pieces of %d, signature %d: %q %s %q; go-msgauth %q %s %q", name, step, i, g.domain, gk, ge, w.Domain, wk, we)
			}
		}
	}
}

// signWith signs msg (taken as it is) with go-msgauth's signer.
func signWith(t testing.TB, msg, selector string, key crypto.Signer, headerCan, bodyCan dkim.Canonicalization) string {
	t.Helper()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: "signed.test", Selector: selector, Signer: key,
		HeaderCanonicalization: headerCan, BodyCanonicalization: bodyCan, HeaderKeys: []string{"From", "To", "Subject", "Date", "X-Absent"}})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestDKIMStreamMatchesGoMsgauth: the streaming verifier comes to what
// go-msgauth's dkim.Verify comes to — domain, result and reason — for
// signatures that pass under each canonicalization with bodies that test
// its corners, for changed messages, and for each way a signature or a key
// record can be wrong; cut in pieces of any size.
func TestDKIMStreamMatchesGoMsgauth(t *testing.T) {
	z := dkimZone(t)
	rk, ek := testKeys(t)
	// A 512-bit modulus (Go no longer makes such keys): only its size matters.
	short := &rsa.PublicKey{N: new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), 511), big.NewInt(1)), E: 65537}
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	rsaP := base64.StdEncoding.EncodeToString(der)
	pkcs1 := base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(&rk.PublicKey))
	shortDER, _ := x509.MarshalPKIXPublicKey(short)
	edP := base64.StdEncoding.EncodeToString(ek.Public().(ed25519.PublicKey))
	for sel, rec := range map[string]string{
		"pkcs1":    "v=DKIM1; p=" + pkcs1,
		"sha1only": "v=DKIM1; k=rsa; h=sha1; p=" + rsaP,
		"sha256":   "v=DKIM1; k=rsa; h=sha1:sha256; p=" + rsaP,
		"other":    "v=DKIM1; k=rsa; s=other; p=" + rsaP,
		"star":     "v=DKIM1; k=rsa; s=*; p=" + rsaP,
		"email":    "v=DKIM1; s=email; t=y:s; p=" + rsaP,
		"edasrsa":  "v=DKIM1; k=ed25519; p=" + rsaP,
		"rsaased":  "v=DKIM1; k=rsa; p=" + edP,
		"revoked":  "v=DKIM1; k=rsa; p=",
		"nop":      "v=DKIM1; k=rsa",
		"badb64":   "v=DKIM1; k=rsa; p=!!!",
		"v2":       "v=DKIM2; k=rsa; p=" + rsaP,
		"dsa":      "v=DKIM1; k=dsa; p=" + rsaP,
		"dup":      "v=DKIM1; k=rsa; k=rsa; p=" + rsaP,
		"junk":     "garbage",
		"short":    "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(shortDER),
		"spaced":   "v=DKIM1; k=rsa; p=" + rsaP[:40] + " " + rsaP[40:],
	} {
		z.txt(t, sel+"._domainkey.signed.test", rec)
	}
	z.txt(t, "twice._domainkey.signed.test", "v=DKIM1; k=rsa; p="+rsaP)
	z.txt(t, "twice._domainkey.signed.test", "v=DKIM1; k=rsa; p="+rsaP)
	z.txt(t, "empty._domainkey.signed.test", "")
	c := newChecker(t, z, Config{SPF: ModeOff, DMARC: ModeOff})

	head := "From: Alice <alice@signed.test>\r\nTo: u@example.test\r\nSubject:  hello \r\n\tworld\r\nSubject: Re: Fwd:  x: y \r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\n\r\n"
	bodies := map[string]string{
		"empty":              "",
		"one empty line":     "\r\n",
		"trailing lines":     "text\r\n\r\n\r\n",
		"white space":        "a  b \t\r\n \t c\t\r\n  \r\n",
		"no last line end":   "abc",
		"white space at end": "abc \t ",
		"bare LF":            "a\nb\n\n",
		"bare CR":            "a\rb\r\n\r\r\n",
		"CR at the end":      "a\r\n\r\n\r",
		"CR LF split by WSP": "a\r \nb \r\n",
		"many empty lines":   "a" + strings.Repeat("\r\n", 5000) + "b\r\n" + strings.Repeat("\r\n", 3000),
		"dots and long":      strings.Repeat(".leading dot and some text ", 300) + "\r\n",
	}
	cans := []dkim.Canonicalization{dkim.CanonicalizationSimple, dkim.CanonicalizationRelaxed}
	for bname, body := range bodies {
		for _, hc := range cans {
			for _, bc := range cans {
				name := bname + " " + string(hc) + "/" + string(bc)
				for _, k := range []struct {
					sel string
					key crypto.Signer
				}{{"rsa", rk}, {"ed", ek}} {
					msg := signWith(t, head+body, k.sel, k.key, hc, bc)
					sameAsGoMsgauth(t, c, name+" "+k.sel, msg)
					if v, _ := streamVerify(t, c, msg, 5); len(v) != 1 || v[0].err != nil {
						t.Errorf("%s %s: does not pass: %v", name, k.sel, v)
					}
					// The body as it would be with bare LFs, more white
					// space, a line more; a header changed.
					sameAsGoMsgauth(t, c, name+" LF", strings.ReplaceAll(msg, "\r\n", "\n"))
					sameAsGoMsgauth(t, c, name+" more space", strings.Replace(msg, "\r\n\r\n", "\r\n\r\n ", 1)+" \r\n")
					sameAsGoMsgauth(t, c, name+" line added", msg+"more\r\n")
					sameAsGoMsgauth(t, c, name+" header", strings.Replace(msg, "Subject:  hello", "Subject:   hello", 1))
					sameAsGoMsgauth(t, c, name+" header case", strings.Replace(msg, "To: u@", "TO: u@", 1))
				}
			}
		}
	}

	signed := signWith(t, head+"body\r\n", "rsa", rk, dkim.CanonicalizationRelaxed, dkim.CanonicalizationRelaxed)
	for sel := range map[string]bool{"pkcs1": true, "sha1only": true, "sha256": true, "other": true, "star": true, "email": true,
		"edasrsa": true, "rsaased": true, "revoked": true, "nop": true, "badb64": true, "v2": true, "dsa": true, "dup": true,
		"junk": true, "short": true, "spaced": true, "twice": true, "empty": true, "gone": true, "temp": true} {
		sameAsGoMsgauth(t, c, "key "+sel, strings.Replace(signed, "s=rsa;", "s="+sel+";", 1))
	}
	tag := func(old, new string) string {
		if !strings.Contains(signed, old) {
			t.Fatalf("%q not in %q", old, signed)
		}
		return strings.Replace(signed, old, new, 1)
	}
	for name, msg := range map[string]string{
		"no version":         tag("v=1;", ""),
		"version 2":          tag("v=1;", "v=2;"),
		"no d":               tag("d=signed.test;", ""),
		"i matches":          tag("d=signed.test;", "d=signed.test; i=a@signed.test;"),
		"i subdomain":        tag("d=signed.test;", "d=signed.test; i=@sub.signed.test;"),
		"i elsewhere":        tag("d=signed.test;", "d=signed.test; i=a@other.test;"),
		"From not signed":    tag("h=From:", "h=X-From:"),
		"t bad":              tag("d=signed.test;", "d=signed.test; t=yesterday;"),
		"x bad":              tag("d=signed.test;", "d=signed.test; x=tomorrow;"),
		"expired":            tag("d=signed.test;", "d=signed.test; x=1000;"),
		"x future":           tag("d=signed.test;", "d=signed.test; x=99999999999;"),
		"q other":            tag("d=signed.test;", "d=signed.test; q=http/well-known;"),
		"q both":             tag("d=signed.test;", "d=signed.test; q=foo:dns/txt;"),
		"a no dash":          tag("a=rsa-sha256", "a=rsasha256"),
		"a sha512":           tag("a=rsa-sha256", "a=rsa-sha512"),
		"a ed":               tag("a=rsa-sha256", "a=ed25519-sha256"),
		"c header unknown":   tag("c=relaxed/relaxed", "c=loose/relaxed"),
		"c body unknown":     tag("c=relaxed/relaxed", "c=relaxed/loose"),
		"c header only":      tag("c=relaxed/relaxed", "c=relaxed"),
		"c absent":           tag("c=relaxed/relaxed;", ""),
		"l":                  tag("d=signed.test;", "d=signed.test; l=3;"),
		"bh bad":             tag("bh=", "bh=!!"),
		"b bad":              tag(" b=", " b=!!"),
		"b emptied":          signed[:strings.Index(signed, " b=")+3] + ";" + signed[strings.Index(signed, "\r\n\r\n"):],
		"duplicate tag":      tag("d=signed.test;", "d=signed.test; d=signed.test;"),
		"no equals":          tag("d=signed.test;", "d=signed.test; junk;"),
		"folded d":           tag("d=signed.test;", "d=signed\r\n .test;"),
		"two signatures":     signWith(t, signed, "ed", ek, dkim.CanonicalizationSimple, dkim.CanonicalizationSimple),
		"Subject missing":    strings.Replace(signed, "Subject:  hello \r\n\tworld\r\n", "", 1),
		"Subject twice":      strings.Replace(signed, "Subject:", "Subject: again\r\nSubject:", 1),
		"Subject added last": strings.Replace(signed, "\r\n\r\n", "\r\nSubject: added\r\n\r\n", 1),
	} {
		sameAsGoMsgauth(t, c, name, msg)
	}
}

// FuzzDKIMStream: any message whose header ends with an empty line, signed
// by go-msgauth, then perhaps changed, is judged by the streaming verifier
// as go-msgauth judges it.
func FuzzDKIMStream(f *testing.F) {
	for _, s := range []struct{ head, body, extra string }{
		{"From: a@signed.test\r\nSubject: x\r\n\r\n", "hello\r\n", ""},
		{"From: a@signed.test\r\n", "a  b\t \r\n\r\n", " "},
		{"From: a@signed.test\nTo:  b\n folded\n\n", "a\nb\r\n\r", "\r\n"},
		{"from:a@signed.test\r\n\r\n", "", "x"},
		{"From: a@signed.test\r\n\r\n", "\r\r\n \r\n\t\r", "\n\r"},
	} {
		f.Add(s.head, s.body, s.extra, uint8(7), false)
	}
	c := newChecker(f, dkimZone(f), Config{SPF: ModeOff, DMARC: ModeOff})
	f.Fuzz(func(t *testing.T, head, body, extra string, cut uint8, relaxedHeader bool) {
		_, ek := testKeys(t)
		if !strings.HasSuffix(head, "\n\n") && !strings.HasSuffix(head, "\r\n\r\n") {
			return
		}
		hc := dkim.CanonicalizationSimple
		if relaxedHeader {
			hc = dkim.CanonicalizationRelaxed
		}
		for _, bc := range []dkim.Canonicalization{dkim.CanonicalizationSimple, dkim.CanonicalizationRelaxed} {
			var b bytes.Buffer
			if err := dkim.Sign(&b, strings.NewReader(head+body), &dkim.SignOptions{Domain: "signed.test", Selector: "ed", Signer: ek,
				HeaderCanonicalization: hc, BodyCanonicalization: bc, HeaderKeys: []string{"From", "To", "Subject"}}); err != nil {
				return
			}
			msg := b.String()
			hp := &headerParser{lim: DefaultHeaderLimits}
			hp.feed([]byte(msg), 0)
			if !hp.done || !hp.blank {
				return // go-msgauth's own reading, not streamed
			}
			step := int(cut) + 1
			for _, m := range []string{msg, msg + extra} {
				want, werr := dkim.VerifyWithOptions(strings.NewReader(m), &dkim.VerifyOptions{LookupTXT: c.cfg.Resolver.txtFunc(context.Background())})
				got, _ := streamVerify(t, c, m, step)
				if werr != nil || len(got) != len(want) {
					t.Fatalf("%q: %d verifications, go-msgauth %d (%v)", m, len(got), len(want), werr)
				}
				for i := range want {
					ge, we := "", ""
					if got[i].err != nil {
						ge = got[i].err.Error()
					}
					if want[i].Err != nil {
						we = want[i].Err.Error()
					}
					if ge != we {
						t.Fatalf("%q in pieces of %d: %q, go-msgauth %q", m, step, ge, we)
					}
				}
			}
		}
	})
}

// TestDKIMHeaderWithoutEmptyLine: a header that does not end with an
// empty line is left to go-msgauth, which reads on for one and, finding
// none, verifies nothing (as before the verifier streamed); a header that
// does is streamed.
func TestDKIMHeaderWithoutEmptyLine(t *testing.T) {
	z := dkimZone(t)
	rk, _ := testKeys(t)
	c := newChecker(t, z, Config{SPF: ModeOff, DMARC: ModeOff})
	signed := sign(t, plainMsg, "signed.test", "rsa", rk)
	for _, tc := range []struct{ name, msg, want string }{
		{"no empty line", strings.Replace(signed, "\r\n\r\n", "\r\n", 1), `dkim=permerror reason="message not verifiable: failed to read header: EOF"`},
		{"empty line", signed, "dkim=pass"},
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

// FuzzDKIMHeaderFunctions: the hand-written relaxedHeader, removeSignature
// and stripWhitespace give what go-msgauth's (strings.FieldsFunc, a
// regexp, strings.Map) give.
func FuzzDKIMHeaderFunctions(f *testing.F) {
	for _, s := range []string{
		"Subject:  Re: hello \r\n\tworld\r\n",
		"DKIM-Signature: v=1; a=rsa-sha256; bh=abc=; b=AbC\r\n dEf=;\r\n",
		"DKIM-Signature: b =x; b=; bb=y; b\v=z; b\f=w",
		"no colon \r\n",
		"X: \xc2\xa0 \xc2\x85 a\x0bb\u2028",
		":",
		"b=",
	} {
		f.Add(s)
	}
	sigRegex := regexp.MustCompile(`(b\s*=)[^;]+`)
	f.Fuzz(func(t *testing.T, s string) {
		want := func() string {
			k, v, ok := strings.Cut(s, ":")
			if !ok {
				return strings.TrimSpace(strings.ToLower(s)) + ":\r\n"
			}
			k = strings.TrimSpace(strings.ToLower(k))
			v = strings.Join(strings.FieldsFunc(v, func(r rune) bool {
				return r == ' ' || r == '\t' || r == '\n' || r == '\r'
			}), " ")
			return k + ":" + v + "\r\n"
		}()
		if got := relaxedHeader(s); got != want {
			t.Errorf("relaxedHeader(%q) = %q, want %q", s, got, want)
		}
		if got, want := removeSignature(s), sigRegex.ReplaceAllString(s, "$1"); got != want {
			t.Errorf("removeSignature(%q) = %q, want %q", s, got, want)
		}
		want = strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) {
				return -1
			}
			return r
		}, s)
		if got := stripWhitespace(s); got != want {
			t.Errorf("stripWhitespace(%q) = %q, want %q", s, got, want)
		}
	})
}
