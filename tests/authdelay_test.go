package tests

// A failed login is answered no sooner than the configured delay, and an
// unknown user takes the same path as a wrong password (smtpd(8), pop3d(8):
// auth-failure-delay; DESIGN: max-auth-failures, "each failure delayed").
// The delay is a lower bound on the time to the reply, which is
// deterministic; the comparison of unknown user and wrong password
// compares the fastest answer of each kind, which noise can only slow, to
// the fastest good login: one password check, measured by the server
// under the same load.

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
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
	goodPassword
)

func (k loginKind) String() string {
	return [...]string{"unknown user", "wrong password", "good password"}[k]
}

// checkAuthDelay measures logins made by try, which returns the time
// from the last octet of the attempt to the reply. Every failure must take
// at least authDelay. A good password costs one password check and no
// delay: the fastest failure for an unknown user must be within half of
// the fastest good login of the fastest wrong-password failure (without
// the decoy check an unknown user is answered a whole check sooner).
// Attempts rotate through the kinds, so load hits them alike, and go on,
// up to a limit, while noise hides the answer: noise only slows an
// attempt, so the fastest of each kind converges on its true cost.
func checkAuthDelay(t *testing.T, what string, try func(loginKind) time.Duration) {
	t.Helper()
	var took [3][]time.Duration
	const least, most = 4, 12
	for i := 0; i < most; i++ {
		for j := 0; j < 3; j++ {
			k := loginKind((i + j) % 3)
			d := try(k)
			if k != goodPassword && d < authDelay {
				t.Fatalf("%s: a failed login (%v) answered after %v, before the %v delay", what, k, d, authDelay)
			}
			took[k] = append(took[k], d)
		}
		u, w, g := minDur(took[unknownUser]), minDur(took[wrongPassword]), minDur(took[goodPassword])
		if i+1 >= least && g < authDelay && absDur(u-w) < g/2 {
			t.Logf("%s: fastest unknown user %v, wrong password %v, good password %v (%d attempts each)", what, u, w, g, i+1)
			return
		}
	}
	u, w, g := minDur(took[unknownUser]), minDur(took[wrongPassword]), minDur(took[goodPassword])
	if g >= authDelay {
		t.Fatalf("%s: a good login is delayed too: fastest %v after %d attempts", what, g, most)
	}
	t.Fatalf("%s: unknown user and wrong password take different paths: fastest %v vs %v (medians %v vs %v), "+
		"more than half a good login (%v, one password check) apart after %d attempts each",
		what, u, w, median(took[unknownUser]), median(took[wrongPassword]), g, most)
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

func passwordFor(k loginKind) string {
	if k == goodPassword {
		return "alice secret"
	}
	return "wrong"
}

// TestAuthDelaySmtpd: smtpd answers a failed AUTH PLAIN or AUTH LOGIN
// after the delay, and alike for an unknown user and a wrong password.
func TestAuthDelaySmtpd(t *testing.T) {
	e := authEnv(t)
	s := e.start("smtpd", "submission")
	connect := func() *dialog {
		d := dial(t, s.Addr)
		d.conn.SetDeadline(time.Now().Add(time.Minute))
		d.expect("220")
		d.send("EHLO client.test")
		d.expect("250")
		return d
	}
	// Failures share a connection (max-auth-failures is raised); a
	// success ends its connection's AUTH.
	d := connect()
	session := func(k loginKind) *dialog {
		if k == goodPassword {
			return connect()
		}
		return d
	}
	reply := func(k loginKind) string { return map[bool]string{true: "235 ", false: "535 "}[k == goodPassword] }
	checkAuthDelay(t, "smtpd AUTH PLAIN", func(k loginKind) time.Duration {
		d := session(k)
		l, took := timed(d, "AUTH PLAIN "+plainResp(userFor(k), passwordFor(k)))
		if !strings.HasPrefix(l, reply(k)) {
			t.Fatalf("AUTH PLAIN, %v: %q", k, l)
		}
		return took
	})
	checkAuthDelay(t, "smtpd AUTH LOGIN", func(k loginKind) time.Duration {
		d := session(k)
		d.send("AUTH LOGIN")
		d.expect("334 ")
		d.send(base64.StdEncoding.EncodeToString([]byte(userFor(k))))
		d.expect("334 ")
		l, took := timed(d, base64.StdEncoding.EncodeToString([]byte(passwordFor(k))))
		if !strings.HasPrefix(l, reply(k)) {
			t.Fatalf("AUTH LOGIN, %v: %q", k, l)
		}
		return took
	})
}

// TestAuthDelayPOP3: pop3d answers a failed PASS or AUTH PLAIN after the
// delay, and alike for an unknown user and a wrong password.
func TestAuthDelayPOP3(t *testing.T) {
	e := authEnv(t)
	s := e.start("pop3d", "")
	connect := func() *dialog {
		d := dial(t, s.Addr)
		d.conn.SetDeadline(time.Now().Add(time.Minute))
		pop3Expect(d, "+OK")
		return d
	}
	d := connect()
	session := func(k loginKind) *dialog {
		if k == goodPassword {
			return connect()
		}
		return d
	}
	reply := func(k loginKind) string { return map[bool]string{true: "+OK", false: "-ERR [AUTH]"}[k == goodPassword] }
	// A session that logged in holds the maildrop until it quits.
	done := func(d *dialog, k loginKind) {
		if k == goodPassword {
			d.send("QUIT")
			pop3Expect(d, "+OK")
		}
	}
	checkAuthDelay(t, "pop3d USER/PASS", func(k loginKind) time.Duration {
		d := session(k)
		d.send("USER " + userFor(k))
		pop3Expect(d, "+OK")
		l, took := timed(d, "PASS "+passwordFor(k))
		if !strings.HasPrefix(l, reply(k)) {
			t.Fatalf("PASS, %v: %q", k, l)
		}
		done(d, k)
		return took
	})
	checkAuthDelay(t, "pop3d AUTH PLAIN", func(k loginKind) time.Duration {
		d := session(k)
		l, took := timed(d, "AUTH PLAIN "+plainResp(userFor(k), passwordFor(k)))
		if !strings.HasPrefix(l, reply(k)) {
			t.Fatalf("AUTH PLAIN, %v: %q", k, l)
		}
		done(d, k)
		return took
	})
}
