package check

import (
	"strings"
	"testing"
)

// dmarcZone: domains with each policy and alignment mode. SPF passes for
// 192.0.2.1 at every domain here; keys are published for signed.test and
// its subdomain mail.signed.test.
func dmarcZone(t *testing.T) *zone {
	z := dkimZone(t)
	_, ek := testKeys(t)
	publishKey(t, z, "ed", "mail.signed.test", ek)
	for _, d := range []string{"reject.test", "quarantine.test", "none.test", "strict.test", "bounce.reject.test",
		"signed.test", "mail.signed.test", "relaxed.test", "sub.org.test", "org.test", "pct.test", "other.test"} {
		z.txt(t, d, "v=spf1 ip4:192.0.2.1 -all")
	}
	z.txt(t, "_dmarc.reject.test", "v=DMARC1; p=reject")
	z.txt(t, "_dmarc.quarantine.test", "v=DMARC1; p=quarantine")
	z.txt(t, "_dmarc.none.test", "v=DMARC1; p=none")
	z.txt(t, "_dmarc.strict.test", "v=DMARC1; p=reject; aspf=s; adkim=s")
	z.txt(t, "_dmarc.relaxed.test", "v=DMARC1; p=reject; aspf=r")
	z.txt(t, "_dmarc.signed.test", "v=DMARC1; p=reject; adkim=s")
	z.txt(t, "_dmarc.org.test", "v=DMARC1; p=none; sp=reject")
	z.txt(t, "_dmarc.pct.test", "v=DMARC1; p=reject; pct=0")
	z.mark(z.servfail, "_dmarc.temp.test.")
	z.txt(t, "temp.test", "v=spf1 -all")
	return z
}

// TestDMARC: pass and fail with each policy and alignment mode, the
// organizational domain's sp=, pct sampling, and what enforce does with
// each (reject: 550 5.7.1; quarantine: accepted for the Junk folder).
func TestDMARC(t *testing.T) {
	z := dmarcZone(t)
	_, ek := testKeys(t)
	c := newChecker(t, z, Config{SPF: ModeTag, DMARC: ModeEnforce})
	msgFrom := func(from string) string {
		return "From: " + from + "\nTo: u@example.test\nSubject: hello\nDate: Mon, 1 Dec 2025 10:00:00 +0000\n\nHello\n"
	}
	for _, tc := range []struct {
		name, ip, mailFrom, msg string
		wantAR                  string
		wantErr                 string // reply prefix
		wantJunk                bool
	}{
		{"aligned SPF", "192.0.2.1", "a@reject.test", msgFrom("a@reject.test"), "dmarc=pass header.from=reject.test", "", false},
		{"SPF fails, p=reject", "192.0.2.9", "a@reject.test", msgFrom("a@reject.test"), "dmarc=fail reason=\"p=reject\" header.from=reject.test", "550 5.7.1", false},
		{"SPF passes for another domain", "192.0.2.1", "a@other.test", msgFrom("a@reject.test"), "dmarc=fail", "550 5.7.1", false},
		{"p=quarantine", "192.0.2.9", "a@quarantine.test", msgFrom("a@quarantine.test"), "dmarc=fail reason=\"p=quarantine\"", "", true},
		{"p=none", "192.0.2.9", "a@none.test", msgFrom("a@none.test"), "dmarc=fail reason=\"p=none\"", "", false},
		{"no record", "192.0.2.9", "a@nodmarc.test", msgFrom("a@nodmarc.test"), "dmarc=none header.from=nodmarc.test", "", false},
		{"record lookup fails", "192.0.2.9", "a@temp.test", msgFrom("a@temp.test"), "dmarc=temperror", "", false},
		// Relaxed SPF alignment: bounce.reject.test aligns with reject.test.
		{"relaxed SPF alignment", "192.0.2.1", "b@bounce.reject.test", msgFrom("a@reject.test"), "dmarc=pass", "", false},
		// Strict: it does not.
		{"strict SPF alignment", "192.0.2.1", "b@bounce.reject.test", msgFrom("a@strict.test"), "dmarc=fail", "550 5.7.1", false},
		// DKIM alignment: d=signed.test, From signed.test, SPF for another domain.
		{"aligned DKIM", "192.0.2.9", "a@other.test", sign(t, msgFrom("a@signed.test"), "signed.test", "ed", ek), "dmarc=pass header.from=signed.test", "", false},
		// adkim=s: d=mail.signed.test does not align with signed.test …
		{"strict DKIM alignment", "192.0.2.9", "a@other.test", sign(t, msgFrom("a@signed.test"), "mail.signed.test", "ed", ek), "dmarc=fail", "550 5.7.1", false},
		// … but relaxed would (relaxed.test has adkim=r by default, and
		// mail.signed.test is not relaxed.test's).
		{"relaxed DKIM, other organization", "192.0.2.9", "a@other.test", sign(t, msgFrom("a@relaxed.test"), "mail.signed.test", "ed", ek), "dmarc=fail", "550 5.7.1", false},
		// The organizational domain's record: sp=reject for subdomains.
		{"subdomain policy", "192.0.2.9", "a@sub.org.test", msgFrom("a@sub.org.test"), "dmarc=fail reason=\"p=reject\" header.from=sub.org.test", "550 5.7.1", false},
		{"organizational domain itself", "192.0.2.9", "a@org.test", msgFrom("a@org.test"), "dmarc=fail reason=\"p=none\"", "", false},
		// pct=0: the message is not sampled, reject becomes quarantine.
		{"pct=0", "192.0.2.9", "a@pct.test", msgFrom("a@pct.test"), "dmarc=fail reason=\"p=reject pct sampled out\"", "", true},
		// Two From addresses: each domain is checked.
		{"two From domains", "192.0.2.1", "a@none.test", msgFrom("a@none.test, b@reject.test"), "dmarc=fail", "550 5.7.1", false},
		// A From that does not parse still has its domain checked.
		{"unparsable From", "192.0.2.9", "a@none.test", msgFrom("<a@reject.test> (x"), "header.from=reject.test", "550 5.7.1", false},
	} {
		var logb testLog
		logb.t = t
		o := run(t, c, transaction{ip: tc.ip, from: tc.mailFrom, rcpts: []string{"u@example.test"}, msg: tc.msg})
		switch {
		case tc.wantErr != "":
			if o.err == nil || !strings.HasPrefix(o.err.Error(), tc.wantErr) || o.result != nil {
				t.Errorf("%s: got %v, want %s", tc.name, o.err, tc.wantErr)
			}
			continue
		case o.err != nil:
			t.Errorf("%s: refused: %v", tc.name, o.err)
			continue
		}
		if ar := authResults(o.stored); !strings.Contains(ar, tc.wantAR) {
			t.Errorf("%s: Authentication-Results %q, want %q", tc.name, ar, tc.wantAR)
		}
		if (o.result.Junk != "") != tc.wantJunk {
			t.Errorf("%s: junk %q, want %v", tc.name, o.result.Junk, tc.wantJunk)
		}
	}
}

// TestDMARCTag: dmarc = tag reports and never refuses.
func TestDMARCTag(t *testing.T) {
	z := dmarcZone(t)
	c := newChecker(t, z, Config{DMARC: ModeTag})
	o := run(t, c, transaction{ip: "192.0.2.9", from: "a@reject.test", rcpts: []string{"u@example.test"},
		msg: "From: a@reject.test\nSubject: s\n\nb\n"})
	if o.err != nil || o.result.Junk != "" || !strings.Contains(authResults(o.stored), "dmarc=fail") {
		t.Fatalf("tag: %v %+v %q", o.err, o.result, authResults(o.stored))
	}
}

// TestAuthResultsForged: Authentication-Results fields that claim our
// authserv-id are removed (in any case, with a version or comments);
// others' stay, and ours is on top.
func TestAuthResultsForged(t *testing.T) {
	z := dmarcZone(t)
	c := newChecker(t, z, Config{})
	msg := "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=a@reject.test\n" +
		"Authentication-Results: MX.Example.Test. 1; dkim=pass header.d=reject.test\n" +
		"Authentication-Results: (forged) mx.example.test (yes);\n\tdmarc=pass\n" +
		"Authentication-Results: other.example.net; spf=pass\n" +
		"From: a@reject.test\nSubject: s\n\nbody\n"
	o := run(t, c, transaction{ip: "192.0.2.9", from: "a@none.test", rcpts: []string{"u@example.test"}, msg: msg})
	// From reject.test, not aligned with anything that passed: refused,
	// whatever the forged fields claimed.
	if o.err == nil || !strings.HasPrefix(o.err.Error(), "550 5.7.1") {
		t.Fatalf("forged pass results were believed: %v", o.err)
	}
	o = run(t, c, transaction{ip: "192.0.2.1", from: "a@none.test", rcpts: []string{"u@example.test"}, msg: strings.Replace(msg, "a@reject.test\nSubject", "a@none.test\nSubject", 1)})
	if o.err != nil || o.mail != nil {
		t.Fatal(o.err, o.mail)
	}
	fields := headerFields(o.stored)
	var ars []string
	for _, f := range fields {
		if strings.HasPrefix(f, "Authentication-Results:") {
			ars = append(ars, f)
		}
	}
	want := []string{
		"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=a@none.test; dkim=none; dmarc=pass header.from=none.test",
		"Authentication-Results: other.example.net; spf=pass",
	}
	if strings.Join(ars, "\n") != strings.Join(want, "\n") || !strings.HasPrefix(fields[0], "Authentication-Results: mx.example.test;") {
		t.Fatalf("Authentication-Results fields:\n%s\nwant:\n%s", strings.Join(ars, "\n"), strings.Join(want, "\n"))
	}
}
