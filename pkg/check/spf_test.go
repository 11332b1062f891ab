package check

import (
	"net"
	"strings"
	"testing"

	"blitiri.com.ar/go/spf"
)

func spfZone(t *testing.T) *zone {
	z := startDNS(t)
	z.txt(t, "pass.test", "v=spf1 ip4:192.0.2.1 -all")
	z.txt(t, "soft.test", "v=spf1 ~all")
	z.txt(t, "neutral.test", "v=spf1 ?all")
	z.add(t, "none.test. 60 IN A 192.0.2.50")
	z.txt(t, "perm.test", "v=spf1 foo:bar -all")
	z.mark(z.servfail, "temp.test.")
	z.txt(t, "include.test", "v=spf1 include:inc.include.test -all")
	z.txt(t, "inc.include.test", "v=spf1 ip4:192.0.2.2 -all")
	z.txt(t, "redirect.test", "v=spf1 redirect=pass.test")
	// %{i}: the client's address; %{l}: the local part of MAIL FROM.
	z.txt(t, "macro.test", "v=spf1 exists:%{i}._spf.%{d} -all")
	z.add(t, "192.0.2.3._spf.macro.test. 60 IN A 127.0.0.2")
	z.txt(t, "local.test", "v=spf1 exists:%{l}.users.%{d} -all")
	z.add(t, "alice.users.local.test. 60 IN A 127.0.0.2")
	// RFC 7208 § 4.6.4: more than two void lookups is a permerror; two
	// are allowed.
	z.txt(t, "void3.test", "v=spf1 a:nx1.void3.test a:nx2.void3.test a:nx3.void3.test -all")
	z.txt(t, "void2.test", "v=spf1 a:nx1.void2.test a:nx2.void2.test -all")
	// … and more than ten lookups a permerror.
	var chain []string
	for i := 0; i < 11; i++ {
		chain = append(chain, "a:h"+string(rune('a'+i))+".many.test")
		z.add(t, "h"+string(rune('a'+i))+".many.test. 60 IN A 198.51.100.1")
	}
	z.txt(t, "many.test", "v=spf1 "+strings.Join(chain, " ")+" -all")
	z.txt(t, "helo.test", "v=spf1 ip4:192.0.2.7 -all")
	return z
}

// TestSPFResults: every SPF result, through our resolver, as it appears
// in Authentication-Results and in the log.
func TestSPFResults(t *testing.T) {
	z := spfZone(t)
	c := newChecker(t, z, Config{SPF: ModeTag, DKIMVerify: ModeOff, DMARC: ModeOff})
	for _, tc := range []struct {
		ip, helo, from, want string
	}{
		{"192.0.2.1", "", "a@pass.test", "pass"},
		{"192.0.2.9", "", "a@pass.test", "fail"},
		{"192.0.2.9", "", "a@soft.test", "softfail"},
		{"192.0.2.9", "", "a@neutral.test", "neutral"},
		{"192.0.2.9", "", "a@none.test", "none"},
		{"192.0.2.9", "", "a@nonexistent.test", "none"},
		{"192.0.2.9", "", "a@perm.test", "permerror"},
		{"192.0.2.9", "", "a@temp.test", "temperror"},
		{"192.0.2.2", "", "a@include.test", "pass"},
		{"192.0.2.1", "", "a@include.test", "fail"},
		{"192.0.2.1", "", "a@redirect.test", "pass"},
		{"192.0.2.9", "", "a@redirect.test", "fail"},
		{"192.0.2.3", "", "a@macro.test", "pass"},
		{"192.0.2.4", "", "a@macro.test", "fail"},
		{"192.0.2.9", "", "alice@local.test", "pass"},
		{"192.0.2.9", "", "bob@local.test", "fail"},
		{"192.0.2.9", "", "a@void3.test", "permerror"},
		{"192.0.2.9", "", "a@void2.test", "fail"},
		{"192.0.2.9", "", "a@many.test", "permerror"},
		// The null sender: the HELO name is checked.
		{"192.0.2.7", "helo.test", "", "pass"},
		{"192.0.2.9", "helo.test", "", "fail"},
	} {
		o := run(t, c, transaction{ip: tc.ip, helo: tc.helo, from: tc.from, rcpts: []string{"u@example.test"},
			msg: "From: x@y.test\nSubject: s\n\nbody\n"})
		if o.mail != nil || o.err != nil {
			t.Fatalf("%+v: refused in tag mode: %v %v", tc, o.mail, o.err)
		}
		ar := authResults(o.stored)
		want := "spf=" + tc.want
		if tc.from != "" {
			want += " smtp.mailfrom=" + tc.from
		} else {
			want += " smtp.helo=" + tc.helo
		}
		if !strings.HasPrefix(ar, "mx.example.test; "+want) {
			t.Errorf("%s from %s: Authentication-Results %q, want %q", tc.from, tc.ip, ar, want)
		}
	}
	// The void-lookup limit stopped at the third void name.
	if z.asked("nx3.void3.test") != 1 || z.asked("nx3.void2.test") != 0 {
		t.Errorf("void lookups: nx3 asked %d times", z.asked("nx3.void3.test"))
	}
	if z.asked("hk.many.test") != 0 {
		t.Errorf("the eleventh lookup of many.test was made")
	}
}

// TestSPFReject: spf = reject refuses fail (550 5.7.23) and temperror (451
// 4.7.24) at MAIL FROM; softfail, neutral and permerror are only tagged.
func TestSPFReject(t *testing.T) {
	z := spfZone(t)
	c := newChecker(t, z, Config{SPF: ModeReject, DKIMVerify: ModeOff, DMARC: ModeOff})
	for _, tc := range []struct {
		from, want string
	}{
		{"a@pass.test", ""},
		{"a@soft.test", ""},
		{"a@neutral.test", ""},
		{"a@perm.test", ""},
		{"a@include.test", "550 5.7.23"},
		{"a@temp.test", "451 4.7.24"},
	} {
		o := run(t, c, transaction{ip: "192.0.2.1", from: tc.from, rcpts: []string{"u@example.test"}, msg: "Subject: s\n\nb\n"})
		got := ""
		if o.mail != nil {
			got = o.mail.Error()
		}
		if tc.want == "" && got != "" || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: MAIL got %q, want %q", tc.from, got, tc.want)
		}
	}
}

// TestSPFResultsKept: an SPF result is kept across connections for its
// client, HELO name and sender, as long as the DNS answers it came from:
// one from a record with a TTL of 0 is evaluated again, and sees the
// record change; another client or sender is evaluated for itself.
func TestSPFResultsKept(t *testing.T) {
	z := startDNS(t)
	z.add(t, `zero.test. 0 IN TXT "v=spf1 -all"`)
	z.txt(t, "kept.test", "v=spf1 ip4:192.0.2.1 -all")
	z.txt(t, "other.test", "v=spf1 -all")
	c := newChecker(t, z, Config{})
	check := func(ip, from string, want spf.Result) {
		t.Helper()
		if o := c.checkSPF(net.ParseIP(ip), "client.test", from); o.result != want {
			t.Errorf("%s from %s: %s, want %s", from, ip, o.result, want)
		}
	}
	check("192.0.2.1", "a@zero.test", spf.Fail)
	z.mu.Lock()
	delete(z.rrs, "zero.test.|TXT")
	z.mu.Unlock()
	z.add(t, `zero.test. 0 IN TXT "v=spf1 +all"`)
	check("192.0.2.1", "a@zero.test", spf.Pass)
	check("192.0.2.1", "a@kept.test", spf.Pass)
	check("192.0.2.9", "a@kept.test", spf.Fail)
	check("192.0.2.1", "a@kept.test", spf.Pass)
	check("192.0.2.1", "a@other.test", spf.Fail)
	if n := z.asked("zero.test"); n != 2 {
		t.Errorf("zero.test asked %d times, want 2", n)
	}
}
