package tests

// A failed login is answered no sooner than the configured delay, and an
// unknown user takes the same path as a wrong password (smtpd(8), pop3d(8):
// auth-failure-delay; DESIGN: max-auth-failures, "each failure delayed").
// The delay is a lower bound on the time to the reply, which is
// deterministic; the comparison of unknown user and wrong password
// compares the fastest answer of each kind, which noise can only slow,
// with the fastest of the password checks timed beside them.

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/users"
	_ "letterbox/pkg/users/passwd"
)

// authDelay is long enough to dominate a loaded machine's noise.
const authDelay = 300 * time.Millisecond

// authEnv is an installation with two users whose passwords are hashed in
// the default scheme (mailuser add), failures delayed by authDelay and
// enough failures (and errors) allowed per connection for the whole
// measurement.
func authEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, fmt.Sprintf(`auth-failure-delay = "%s"`, authDelay), "max-auth-failures = 1000", "max-errors = 1000")
	e.addUser("alice@example.test", "alice secret")
	e.addUser("bob@example.test", "bob secret")
	return e
}

// loginKind is what a measured login attempt tries.
type loginKind int

const (
	unknownUser loginKind = iota
	wrongPassword
)

func (k loginKind) String() string {
	return [...]string{"unknown user", "wrong password"}[k]
}

// checkAuthDelay measures failed logins made by try, which returns the
// time from the last octet of the attempt to the failure reply. Every
// failure must take at least authDelay. An unknown user must cost what a
// wrong password costs: without the decoy check it is answered a whole
// password check sooner. A password check is timed here, on alice's
// stored hash, once per round, beside the attempts. Attempts come in
// pairs (which kind goes first alternates), so load hits both kinds
// alike, and the two kinds agree when either
//   - their fastest answers (noise only slows: the fastest converges on
//     the true cost) are within half the fastest check, or
//   - the median of the pairs' differences (noise on both sides of a pair
//     cancels) is within half the median check;
//
// without the decoy both measures are a whole check apart, loaded or not.
// Rounds go on, up to a limit, while noise hides the answer.
func checkAuthDelay(t *testing.T, e *env, what string, try func(loginKind) time.Duration) {
	t.Helper()
	db, err := users.Load(e.Users)
	must(t, err)
	alice := db.Lookup("alice@example.test")
	if alice == nil {
		t.Fatal("alice is not in the users file")
	}
	var unknown, wrong, diff, check []time.Duration
	const least, most = 4, 16
	for i := 0; i < most; i++ {
		var u, w time.Duration
		if i%2 == 0 {
			u, w = try(unknownUser), try(wrongPassword)
		} else {
			w, u = try(wrongPassword), try(unknownUser)
		}
		for k, d := range map[loginKind]time.Duration{unknownUser: u, wrongPassword: w} {
			if d < authDelay {
				t.Fatalf("%s: a failed login (%v) answered after %v, before the %v delay", what, k, d, authDelay)
			}
		}
		start := time.Now()
		users.Verify(alice.Password, "not it")
		check = append(check, time.Since(start))
		unknown, wrong, diff = append(unknown, u), append(wrong, w), append(diff, w-u)
		fu, fw := minDur(unknown), minDur(wrong)
		if i+1 >= least && (absDur(fu-fw) < minDur(check)/2 || absDur(median(diff)) < median(check)/2) {
			t.Logf("%s: fastest unknown user %v, wrong password %v; median difference %v; a password check %v (median %v); %d pairs",
				what, fu, fw, median(diff), minDur(check), median(check), i+1)
			return
		}
	}
	t.Fatalf("%s: unknown user and wrong password take different paths: fastest %v vs %v, median difference %v, "+
		"a password check %v (median %v), after %d pairs",
		what, minDur(unknown), minDur(wrong), median(diff), minDur(check), median(check), most)
}

func minDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// timed sends line on d and returns the reply line and how long it took.
func timed(d *dialog, line string) (string, time.Duration) {
	d.t.Helper()
	start := time.Now()
	d.send(line)
	l := d.reply()
	return l, time.Since(start)
}

func plainResp(user, pw string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pw))
}

// userFor returns the user a login of kind k names.
func userFor(k loginKind) string {
	if k == unknownUser {
		return "nobody@example.test"
	}
	return "alice@example.test"
}

// TestAuthDelaySmtpd: smtpd answers a failed AUTH PLAIN or AUTH LOGIN
// after the delay, and alike for an unknown user and a wrong password.
func TestAuthDelaySmtpd(t *testing.T) {
	e := authEnv(t)
	d := dial(t, e.start("smtpd", "submission").Addr)
	d.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	d.expect("220")
	d.send("EHLO client.test")
	d.expect("250")
	checkAuthDelay(t, e, "smtpd AUTH PLAIN", func(k loginKind) time.Duration {
		l, took := timed(d, "AUTH PLAIN "+plainResp(userFor(k), "wrong"))
		if !strings.HasPrefix(l, "535 ") {
			t.Fatalf("AUTH PLAIN, %v: %q", k, l)
		}
		return took
	})
	checkAuthDelay(t, e, "smtpd AUTH LOGIN", func(k loginKind) time.Duration {
		d.send("AUTH LOGIN")
		d.expect("334 ")
		d.send(base64.StdEncoding.EncodeToString([]byte(userFor(k))))
		d.expect("334 ")
		l, took := timed(d, base64.StdEncoding.EncodeToString([]byte("wrong")))
		if !strings.HasPrefix(l, "535 ") {
			t.Fatalf("AUTH LOGIN, %v: %q", k, l)
		}
		return took
	})
}

// TestAuthDelayPOP3: pop3d answers a failed PASS or AUTH PLAIN after the
// delay, and alike for an unknown user and a wrong password.
func TestAuthDelayPOP3(t *testing.T) {
	e := authEnv(t)
	d := dial(t, e.start("pop3d", "").Addr)
	d.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	pop3Expect(d, "+OK")
	checkAuthDelay(t, e, "pop3d USER/PASS", func(k loginKind) time.Duration {
		d.send("USER " + userFor(k))
		pop3Expect(d, "+OK")
		l, took := timed(d, "PASS wrong")
		if !strings.HasPrefix(l, "-ERR [AUTH]") {
			t.Fatalf("PASS, %v: %q", k, l)
		}
		return took
	})
	checkAuthDelay(t, e, "pop3d AUTH PLAIN", func(k loginKind) time.Duration {
		l, took := timed(d, "AUTH PLAIN "+plainResp(userFor(k), "wrong"))
		if !strings.HasPrefix(l, "-ERR [AUTH]") {
			t.Fatalf("AUTH PLAIN, %v: %q", k, l)
		}
		return took
	})
}

// imapTagged reads IMAP responses up to the tagged one and returns it.
func imapTagged(d *dialog, tag string) string {
	d.t.Helper()
	for {
		l := d.line()
		if strings.HasPrefix(l, tag+" ") {
			return l
		}
	}
}

// TestAuthDelayIMAP: imapd answers a failed LOGIN or AUTHENTICATE PLAIN
// after the delay, and alike for an unknown user and a wrong password.
func TestAuthDelayIMAP(t *testing.T) {
	e := authEnv(t)
	d := dial(t, e.start("imapd", "").Addr)
	d.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if l := d.line(); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("imapd greeting: %q", l)
	}
	n := 0
	try := func(k loginKind, cmd string) time.Duration {
		n++
		tag := fmt.Sprintf("a%d", n)
		start := time.Now()
		d.send(tag + " " + cmd)
		l := imapTagged(d, tag)
		took := time.Since(start)
		if !strings.HasPrefix(l, tag+" NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("%s, %v: %q", cmd, k, l)
		}
		return took
	}
	checkAuthDelay(t, e, "imapd LOGIN", func(k loginKind) time.Duration {
		return try(k, fmt.Sprintf("LOGIN %q wrong", userFor(k)))
	})
	checkAuthDelay(t, e, "imapd AUTHENTICATE PLAIN", func(k loginKind) time.Duration {
		return try(k, "AUTHENTICATE PLAIN "+plainResp(userFor(k), "wrong"))
	})
}
