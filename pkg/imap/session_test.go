package imap

import (
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// commandCases are one valid form of every command, for the state table.
var commandCases = []struct {
	cmd string
	// status in: not authenticated, authenticated, selected, examined
	want [4]string
}{
	{"CAPABILITY", [4]string{"OK", "OK", "OK", "OK"}},
	{"NOOP", [4]string{"OK", "OK", "OK", "OK"}},
	{"ID NIL", [4]string{"OK", "OK", "OK", "OK"}},
	{"STARTTLS", [4]string{"BAD", "BAD", "BAD", "BAD"}}, // no TLS configured; see TestStartTLS
	{`LOGIN alice@example.test "alice pw"`, [4]string{"OK", "BAD", "BAD", "BAD"}},
	{"AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice pw")), [4]string{"OK", "BAD", "BAD", "BAD"}},
	{"ENABLE CONDSTORE", [4]string{"BAD", "OK", "OK", "OK"}},
	{"SELECT INBOX", [4]string{"BAD", "OK", "OK", "OK"}},
	{"EXAMINE INBOX", [4]string{"BAD", "OK", "OK", "OK"}},
	{"CREATE New", [4]string{"BAD", "OK", "OK", "OK"}},
	{"DELETE Junk", [4]string{"BAD", "OK", "OK", "OK"}},
	{"RENAME Junk Spam", [4]string{"BAD", "OK", "OK", "OK"}},
	{"SUBSCRIBE INBOX", [4]string{"BAD", "OK", "OK", "OK"}},
	{"UNSUBSCRIBE Sent", [4]string{"BAD", "OK", "OK", "OK"}},
	{`LIST "" *`, [4]string{"BAD", "OK", "OK", "OK"}},
	{`LSUB "" *`, [4]string{"BAD", "OK", "OK", "OK"}},
	{"NAMESPACE", [4]string{"BAD", "OK", "OK", "OK"}},
	{"STATUS INBOX (MESSAGES UNSEEN)", [4]string{"BAD", "OK", "OK", "OK"}},
	{"APPEND INBOX {2+}\r\nhi", [4]string{"BAD", "OK", "OK", "OK"}},
	{"IDLE", [4]string{"BAD", "OK", "OK", "OK"}},
	{"CHECK", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"FETCH 1 (FLAGS)", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"UID FETCH 1 (FLAGS)", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"STORE 1 +FLAGS (\\Flagged)", [4]string{"BAD", "BAD", "OK", "NO"}},
	{"UID STORE 1 +FLAGS (\\Flagged)", [4]string{"BAD", "BAD", "OK", "NO"}},
	{"SEARCH ALL", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"UID SEARCH ALL", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"COPY 1 Trash", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"UID COPY 1 Trash", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"MOVE 1 Trash", [4]string{"BAD", "BAD", "OK", "NO"}},
	{"UID MOVE 1 Trash", [4]string{"BAD", "BAD", "OK", "NO"}},
	{"EXPUNGE", [4]string{"BAD", "BAD", "OK", "NO"}},
	{"UID EXPUNGE 1", [4]string{"BAD", "BAD", "OK", "NO"}},
	{"SORT (DATE) UTF-8 ALL", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"UID SORT (DATE) UTF-8 ALL", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"THREAD REFERENCES UTF-8 ALL", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"UID THREAD ORDEREDSUBJECT UTF-8 ALL", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"UNSELECT", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"CLOSE", [4]string{"BAD", "BAD", "OK", "OK"}},
	{"LOGOUT", [4]string{"OK", "OK", "OK", "OK"}},
}

// TestEveryCommandInEveryState: each command in each state gets the
// answer RFC 9051 § 6 gives it; a wrong state is BAD and changes nothing.
func TestEveryCommandInEveryState(t *testing.T) {
	states := []string{"not authenticated", "authenticated", "selected", "examined"}
	for _, tc := range commandCases {
		for st, want := range tc.want {
			t.Run(fmt.Sprintf("%s/%s", strings.Fields(tc.cmd)[0], states[st]), func(t *testing.T) {
				ts := startServer(t, nil)
				ts.put(t, "INBOX", testMsg("one", "hello\n"))
				c := ts.dial(t)
				switch st {
				case 1:
					c.ok(`LOGIN alice@example.test "alice pw"`)
				case 2:
					c.ok(`LOGIN alice@example.test "alice pw"`)
					c.ok("SELECT INBOX")
				case 3:
					c.ok(`LOGIN alice@example.test "alice pw"`)
					c.ok("EXAMINE INBOX")
				}
				var tagged string
				var un []string
				if tc.cmd == "IDLE" && want == "OK" {
					c.raw("i1 IDLE\r\n")
					if l := c.line(); !strings.HasPrefix(l, "+ ") {
						t.Fatalf("IDLE: %q", l)
					}
					c.raw("DONE\r\n")
					un, tagged = c.until("i1")
				} else {
					un, tagged = c.do(tc.cmd)
				}
				if !strings.HasPrefix(tagged, want+" ") {
					t.Fatalf("%s: got %q, want %s (untagged %q)", tc.cmd, tagged, want, un)
				}
				if tc.cmd == "LOGOUT" {
					has(t, un, "* BYE")
					return
				}
				// The session goes on, in the state it should be in.
				_, tagged = c.do("NOOP")
				if !strings.HasPrefix(tagged, "OK") {
					t.Fatalf("NOOP after %s: %q", tc.cmd, tagged)
				}
			})
		}
	}
}

func TestErrorPaths(t *testing.T) {
	ts := startServer(t, nil)
	ts.put(t, "INBOX", testMsg("one", "hello\n"))
	ts.put(t, "INBOX", testMsg("two", "hello\n"))
	c := ts.login(t)
	c.ok("SELECT INBOX")
	for _, tc := range []struct{ cmd, want string }{
		{"FETCH 3 FLAGS", "BAD"},     // beyond the mailbox
		{"FETCH 0 FLAGS", "BAD"},     // no message 0
		{"FETCH 1:3 FLAGS", "BAD"},   //
		{"FETCH 1:x FLAGS", "BAD"},   // bad set
		{"FETCH 1 (FLAGS", "BAD"},    // unbalanced
		{"FETCH 1 BODY[9.9]", "OK"},  // a part that is not there: empty, as Dovecot
		{"UID FETCH 99 FLAGS", "OK"}, // UIDs that are not there: nothing
		{"STORE 5 +FLAGS \\Seen", "BAD"},
		{"STORE 1 +FLAGS \\Bogus", "BAD"},
		{"COPY 1 NoSuchFolder", "NO [TRYCREATE]"},
		{"MOVE 1 NoSuchFolder", "NO [TRYCREATE]"},
		{"STATUS NoSuchFolder (MESSAGES)", "NO [NONEXISTENT]"},
		{"DELETE NoSuchFolder", "NO [NONEXISTENT]"},
		{"RENAME NoSuchFolder X", "NO [NONEXISTENT]"},
		{"APPEND NoSuchFolder {1}", "NO [TRYCREATE]"}, // refused before "+": no literal follows
		{"CREATE INBOX", "NO [ALREADYEXISTS]"},
		{"CREATE Sent", "NO [ALREADYEXISTS]"},
		{"CREATE a..b", "NO [CANNOT]"},
		{"CREATE \"a/b\"", "NO [CANNOT]"},
		{"CREATE \"../x\"", "NO [CANNOT]"},
		{"CREATE #news", "NO [CANNOT]"},
		{"CREATE \"a\\\"b\"", "OK"},
		{"CREATE x (USE (\\Important))", "NO [USEATTR]"},
		{"DELETE INBOX", "NO [CANNOT]"},
		{"RENAME Sent INBOX", "NO [ALREADYEXISTS]"},
		{"SEARCH CHARSET KOI8-R TEXT x", "NO [BADCHARSET"},
		{"SEARCH BOGUS", "BAD"},
		{"SEARCH 9", "OK"}, // SEARCH is lenient about numbers, as Dovecot
		{"THREAD FOO UTF-8 ALL", "BAD"},
		{"SELECT INBOX (QRESYNC (1 1))", "BAD"}, // QRESYNC not enabled
		{"AUTHENTICATE PLAIN", "BAD"},           // wrong state
		{"garbage", "BAD"},
		{"UID BOGUS", "BAD"},
		{"\x01\x02 NOOP", "BAD"},
		{"SELECT NoSuchFolder", "NO [NONEXISTENT]"}, // and no folder is selected now
		{"FETCH 1 FLAGS", "BAD"},
		{"SELECT INBOX", "OK"},
	} {
		un, tagged := c.do(tc.cmd)
		if !strings.HasPrefix(tagged, tc.want) {
			t.Errorf("%q: got %q, want %s… (untagged %q)", tc.cmd, tagged, tc.want, un)
		}
		c.ok("NOOP") // BADs in a row would end the session
	}
	// Untagged garbage: answered "* BAD"? No: the tag is what the client
	// sent, or "*" when there is none.
	c.raw("\r\n")
	if l := c.line(); !strings.HasPrefix(l, "* BAD") {
		t.Fatalf("empty line: %q", l)
	}
	c.raw("\x00\xff\xfe garbage\r\n")
	if l := c.line(); !strings.Contains(l, "BAD") {
		t.Fatalf("binary garbage: %q", l)
	}
	c.ok("NOOP")
	// Nothing was lost or changed by all that.
	un := c.ok("FETCH 1:* (FLAGS)")
	if len(un) != 2 {
		t.Fatalf("messages after errors: %q", un)
	}
}

// TestTooManyErrors: BADs in a row end the session.
func TestTooManyErrors(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxErrors = 3 })
	c := ts.login(t)
	for i := 0; i < 2; i++ {
		c.expect("BOGUS", "BAD")
	}
	c.raw("x BOGUS\r\n")
	if l := c.line(); !strings.HasPrefix(l, "x BAD") {
		t.Fatal(l)
	}
	if l := c.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("after 3 BADs: %q", l)
	}
}

// TestLiteralLimits: 4 KiB before login; the command size after; APPEND
// by max-message-size, refused before "+" when synchronizing.
func TestLiteralLimits(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxMessageSize = 100; c.MaxLine = 1000 })
	c := ts.dial(t)
	// A synchronizing literal over 4 KiB before login: refused, not asked
	// for, and the session goes on.
	c.raw("a LOGIN {5000}\r\n")
	if l := c.line(); !strings.HasPrefix(l, "a BAD [TOOBIG]") {
		t.Fatalf("preauth literal: %q", l)
	}
	c.ok("NOOP")
	// One that fits goes through.
	c.raw("b LOGIN {18}\r\n")
	if l := c.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("continuation: %q", l)
	}
	c.raw("alice@example.test {8+}\r\nalice pw\r\n")
	if _, tagged := c.until("b"); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("literal login: %q", tagged)
	}
	// APPEND over the limit: NO [TOOBIG] without "+".
	c.raw("c APPEND INBOX {101}\r\n")
	if l := c.line(); !strings.HasPrefix(l, "c NO [TOOBIG]") {
		t.Fatalf("big APPEND: %q", l)
	}
	// The same non-synchronizing: read, dropped, refused.
	c.raw("d APPEND INBOX {101+}\r\n" + strings.Repeat("x", 101) + "\r\n")
	if l := c.line(); !strings.HasPrefix(l, "d NO [TOOBIG]") {
		t.Fatalf("big APPEND+: %q", l)
	}
	c.ok("NOOP")
	// A command over max-line-length ends the session.
	c.raw("e NOOP " + strings.Repeat("x", 2000) + "\r\n")
	if l := c.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("long line: %q", l)
	}
	// Before login, a non-synchronizing literal over 4 KiB ends it too.
	c2 := ts.dial(t)
	c2.raw("a LOGIN {5000+}\r\n")
	if l := c2.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("preauth literal+: %q", l)
	}
}

// TestAppendLiteralIsCounted: APPEND takes exactly its octet count,
// CRLFs, dots and things that look like commands included; nothing of
// it runs as a command.
func TestAppendLiteralIsCounted(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.login(t)
	msg := "Subject: smuggle\r\n\r\nline\r\nz1 DELETE Sent\r\n.\r\n\r\nz2 LOGOUT\r\n"
	for _, plus := range []string{"", "+"} {
		c.raw(fmt.Sprintf("a APPEND INBOX {%d%s}\r\n", len(msg), plus))
		if plus == "" {
			if l := c.line(); !strings.HasPrefix(l, "+") {
				t.Fatalf("continuation: %q", l)
			}
		}
		c.raw(msg + "\r\n")
		if _, tagged := c.until("a"); !strings.HasPrefix(tagged, "OK [APPENDUID") {
			t.Fatalf("APPEND: %q", tagged)
		}
	}
	c.ok("SELECT INBOX")
	un := c.ok("FETCH 1:* BODY.PEEK[]")
	if len(un) != 2 || !strings.HasSuffix(un[0], msg+")") {
		t.Fatalf("stored: %q", un)
	}
	un = c.ok(`LIST "" Sent`)
	has(t, un, "Sent")
	// A malformed end after the literal: BAD, and nothing is kept.
	c.raw("b APPEND INBOX {5+}\r\nhello garbage\r\n")
	if _, tagged := c.until("b"); !strings.HasPrefix(tagged, "BAD") {
		t.Fatalf("malformed APPEND: %q", tagged)
	}
	if un := c.ok("STATUS INBOX (MESSAGES)"); !strings.Contains(un[0], "MESSAGES 2") {
		t.Fatalf("after a BAD APPEND: %q", un)
	}
}

func TestAuthFailures(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.AuthFailureDelay = 50 * time.Millisecond })
	c := ts.dial(t)
	start := time.Now()
	c.expect(`LOGIN alice@example.test wrong`, "NO [AUTHENTICATIONFAILED]")
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("no delay after a failed login")
	}
	c.expect(`LOGIN nobody@example.test "alice pw"`, "NO [AUTHENTICATIONFAILED]")
	c.raw("x AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00nope")) + "\r\n")
	if l := c.line(); !strings.HasPrefix(l, "x NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("third failure: %q", l)
	}
	if l := c.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("after 3 failures: %q", l)
	}
	// SASL with a continuation, and a cancelled one.
	c = ts.dial(t)
	c.raw("a AUTHENTICATE PLAIN\r\n")
	if l := c.line(); l != "+ " {
		t.Fatalf("challenge %q", l)
	}
	c.raw("*\r\n")
	if l := c.line(); !strings.HasPrefix(l, "a BAD") {
		t.Fatalf("cancel: %q", l)
	}
	c.raw("b AUTHENTICATE PLAIN\r\n")
	c.line()
	c.raw(base64.StdEncoding.EncodeToString([]byte("alice@example.test\x00alice@example.test\x00alice pw")) + "\r\n")
	if l := c.line(); !strings.HasPrefix(l, "b OK [CAPABILITY") {
		t.Fatalf("AUTHENTICATE: %q", l)
	}
	// One user may not act as another.
	c = ts.dial(t)
	c.expect("AUTHENTICATE PLAIN "+base64.StdEncoding.EncodeToString([]byte("bob@example.test\x00alice@example.test\x00alice pw")), "NO [AUTHENTICATIONFAILED]")
}

// TestPlaintextOnlyLocal: LOGIN and PLAIN only over TLS or from loopback,
// unless allowed; the capability says LOGINDISABLED.
func TestPlaintextOnlyLocal(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t)
	un := c.ok("CAPABILITY")
	has(t, un, "AUTH=PLAIN")
	// The same server seen from a non-loopback peer: use a session
	// whose remote address is not loopback.
	s := &session{cfg: &Config{}, remote: fakeAddr("192.0.2.1:1000")}
	if s.plaintextAllowed() {
		t.Fatal("plaintext allowed from 192.0.2.1")
	}
	if caps := s.capabilities(); !strings.Contains(caps, "LOGINDISABLED") || strings.Contains(caps, "AUTH=PLAIN") {
		t.Fatalf("capabilities from afar: %s", caps)
	}
	res := s.cmdLogin(loginArgs{"alice@example.test", "alice pw"})
	if res.status != "NO" || res.code != "PRIVACYREQUIRED" {
		t.Fatalf("LOGIN from afar: %+v", res)
	}
	s.cfg.AllowInsecureAuth = true
	if !s.plaintextAllowed() {
		t.Fatal("--allow-insecure-auth ignored")
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// TestTimeouts: an idle session ends with BYE Autologout, IDLE included;
// an idling client hears "* OK Still here"; 50 commands without a login
// end the session.
func TestTimeouts(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	c := ts.login(t)
	if l := c.line(); !strings.HasPrefix(l, "* BYE Autologout") {
		t.Fatalf("idle session: %q", l)
	}
	c = ts.login(t)
	c.raw("i IDLE\r\n")
	c.line()
	if l := c.line(); !strings.HasPrefix(l, "* BYE Autologout") {
		t.Fatalf("idle IDLE: %q", l)
	}
	old := idleKeepalive
	idleKeepalive = 50 * time.Millisecond
	defer func() { idleKeepalive = old }()
	ts2 := startServer(t, nil)
	c = ts2.login(t)
	c.raw("i IDLE\r\n")
	c.line()
	if l := c.line(); l != "* OK Still here" {
		t.Fatalf("keepalive: %q", l)
	}
	c = ts2.dial(t)
	for i := 0; i < 50; i++ {
		c.ok("NOOP")
	}
	c.raw("x NOOP\r\n")
	if l := c.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("51st command without login: %q", l)
	}
}

// TestUIDValidityChange: a folder replaced under a session ends it.
func TestUIDValidityChange(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.login(t)
	c.ok("CREATE Box")
	c.ok("SELECT Box")
	st := ts.be.store("alice@example.test")
	st.mu.Lock()
	st.folders["Box"].uidValidity++
	st.mu.Unlock()
	c.raw("n NOOP\r\n")
	if l := c.line(); !strings.HasPrefix(l, "* BYE [UIDVALIDITY]") {
		t.Fatalf("replaced folder: %q", l)
	}
}

// TestConnectionClosedBeforeStore: a session's end closes the client's
// connection before the store, whose Close may take a while (mailstore
// finishes taking a large new/ into cur/ then: imapd(8)).
func TestConnectionClosedBeforeStore(t *testing.T) {
	ts := startServer(t, nil)
	eof := make(chan struct{})
	storeClosed := make(chan bool, 1)
	ts.be.store("alice@example.test").onClose = func() {
		select {
		case <-eof:
			storeClosed <- true
		case <-time.After(10 * time.Second):
			storeClosed <- false
		}
	}
	c := ts.login(t)
	c.do("LOGOUT")
	go func() {
		io.Copy(io.Discard, c.conn)
		close(eof)
	}()
	if !<-storeClosed {
		t.Fatal("the store was closed while the client's connection was still open")
	}
}
