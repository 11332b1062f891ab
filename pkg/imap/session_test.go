package imap

import (
	"strings"
	"testing"
)

func TestBasicSession(t *testing.T) {
	ts := startServer(t, nil)
	ts.put(t, "INBOX", testMsg("one", "hello\n"))
	ts.put(t, "INBOX", testMsg("two", "world\n"), `\Seen`)
	c := ts.login(t)
	un := c.ok("SELECT INBOX")
	t.Logf("%q", un)
	has(t, un, "* 2 EXISTS")
	un = c.ok("FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
	t.Logf("%q", un)
	un = c.ok("FETCH 1 BODY[]")
	t.Logf("%q", un)
	un = c.ok("UID SEARCH UNSEEN")
	t.Logf("%q", un)
	un = c.ok("STORE 1 +FLAGS (\\Flagged foo)")
	t.Logf("%q", un)
	un = c.ok(`LIST "" "*"`)
	t.Logf("%q", un)
	c.ok("LOGOUT")
	_ = strings.Contains
}
