package imap

import (
	"strings"
	"testing"
	"time"
)

// TestTwoSessions: what one session (or a delivery) does, the other sees
// at its next command, and EXPUNGE only where it may be sent.
func TestTwoSessions(t *testing.T) {
	ts := startServer(t, nil)
	for _, s := range []string{"one", "two", "three"} {
		ts.put(t, "INBOX", testMsg(s, "body\n"))
	}
	a, b := ts.login(t), ts.login(t)
	a.ok("SELECT INBOX")
	b.ok("SELECT INBOX")
	// A delivery in between.
	ts.put(t, "INBOX", testMsg("four", "new\n"))
	un := a.ok("NOOP")
	has(t, un, "* 4 EXISTS")
	has(t, un, "* 4 RECENT") // a saw them all first
	un = b.ok("NOOP")
	has(t, un, "* 4 EXISTS")
	has(t, un, "* 0 RECENT")
	// B flags and expunges message 1; A is told flags at once, but the
	// expunge not during FETCH, STORE or SEARCH.
	b.ok(`STORE 2 +FLAGS (\Flagged)`)
	b.ok(`STORE 1 +FLAGS (\Deleted)`)
	b.ok("EXPUNGE")
	un, tagged := a.do("FETCH 1:4 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	hasNot(t, un, "EXPUNGE")
	has(t, un, `* 2 FETCH (FLAGS (\Flagged \Recent))`)
	if !strings.HasPrefix(tagged, "NO [EXPUNGEISSUED]") {
		t.Fatalf("FETCH of an expunged message: %q", tagged)
	}
	if len(un) != 4 || !strings.HasPrefix(un[0], "* 2 FETCH (UID 2 ") { // 2, 3, 4 and the flag update
		t.Fatalf("FETCH during a pending expunge: %q", un)
	}
	un = a.ok("SEARCH ALL")
	hasNot(t, un, "EXPUNGE")
	has(t, un, "* SEARCH 2 3 4") // sequence numbers as the client knows them
	un = a.ok("NOOP")
	has(t, un, "* 1 EXPUNGE")
	un = a.ok("FETCH 1:* (UID)")
	if len(un) != 3 || !strings.HasPrefix(un[0], "* 1 FETCH (UID 2)") {
		t.Fatalf("after the expunge: %q", un)
	}
	// UID commands may carry expunges.
	b.ok(`STORE 1 +FLAGS (\Deleted)`)
	b.ok("EXPUNGE")
	un = a.ok("UID FETCH 1:* (FLAGS)")
	has(t, un, "* 1 EXPUNGE")
	// With QRESYNC: VANISHED, and UIDs in every FETCH.
	a.ok("ENABLE QRESYNC")
	b.ok(`STORE 1 +FLAGS (\Deleted \Seen)`)
	b.ok("EXPUNGE")
	b.ok(`STORE 1 +FLAGS (\Answered)`)
	un = a.ok("NOOP")
	has(t, un, "* VANISHED 3")
	has(t, un, `* 1 FETCH (UID 4 FLAGS (\Answered \Recent) MODSEQ (`)
}

// TestIdle: IDLE tells of deliveries, expunges and flag changes as they
// happen (inotify wakes it; the read deadlines only keep a broken server
// from hanging the test, and are long enough for a loaded machine under
// -race), and DONE ends it.
func TestIdle(t *testing.T) {
	ts := startServer(t, nil)
	ts.put(t, "INBOX", testMsg("one", "body\n"))
	a, b := ts.login(t), ts.login(t)
	a.ok("SELECT INBOX")
	b.ok("SELECT INBOX")
	a.raw("i IDLE\r\n")
	if l := a.line(); !strings.HasPrefix(l, "+ ") {
		t.Fatalf("IDLE: %q", l)
	}
	// What the client does once it has "+" must wake the session: its
	// watch began before.
	if n := ts.watchers(t, "INBOX"); n != 1 {
		t.Fatalf("%d watchers of INBOX when the client got \"+\", want 1", n)
	}
	a.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	ts.put(t, "INBOX", testMsg("two", "body\n"))
	if l := a.line(); l != "* 2 EXISTS" {
		t.Fatalf("delivery during IDLE: %q", l)
	}
	if l := a.line(); l != "* 2 RECENT" {
		t.Fatalf("delivery during IDLE: %q", l)
	}
	a.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b.ok(`STORE 1 +FLAGS (\Deleted)`)
	if l := a.line(); l != `* 1 FETCH (FLAGS (\Deleted \Recent))` {
		t.Fatalf("flag change during IDLE: %q", l)
	}
	a.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b.ok("EXPUNGE")
	if l := a.line(); l != "* 1 EXPUNGE" {
		t.Fatalf("expunge during IDLE: %q", l)
	}
	a.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	a.raw("DONE\r\n")
	if _, tagged := a.until("i"); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("DONE: %q", tagged)
	}
	// Anything but DONE ends IDLE with BAD.
	a.raw("j IDLE\r\n")
	a.line()
	a.raw("STOP\r\n")
	if _, tagged := a.until("j"); !strings.HasPrefix(tagged, "BAD") {
		t.Fatalf("not DONE: %q", tagged)
	}
}

// TestIdleReportsEarlierChanges: a change made after the last command's
// updates and before IDLE's watch began (a delivery between two commands)
// is told as IDLE starts, not at some later change.
func TestIdleReportsEarlierChanges(t *testing.T) {
	ts := startServer(t, nil)
	ts.put(t, "INBOX", testMsg("one", "body\n"))
	a := ts.login(t)
	a.ok("SELECT INBOX")
	ts.put(t, "INBOX", testMsg("two", "body\n"))
	a.raw("i IDLE\r\n")
	a.conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang guard
	if l := a.line(); !strings.HasPrefix(l, "+ ") {
		t.Fatalf("IDLE: %q", l)
	}
	if l := a.line(); l != "* 2 EXISTS" {
		t.Fatalf("delivery before IDLE: %q", l)
	}
	a.raw("DONE\r\n")
	if _, tagged := a.until("i"); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("DONE: %q", tagged)
	}
}

// TestShutdown: SIGTERM's Shutdown ends waiting and idling sessions with
// BYE at once.
func TestShutdown(t *testing.T) {
	ts := startServer(t, nil)
	a, b := ts.login(t), ts.login(t)
	a.ok("SELECT INBOX")
	a.raw("i IDLE\r\n")
	a.line()
	done := make(chan struct{})
	start := time.Now()
	go func() { ts.srv.Shutdown(4 * time.Second); close(done) }()
	if l := a.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("idling session: %q", l)
	}
	if l := b.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("waiting session: %q", l)
	}
	<-done
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

func TestCondStore(t *testing.T) {
	ts := startServer(t, nil)
	for _, s := range []string{"one", "two", "three"} {
		ts.put(t, "INBOX", testMsg(s, "body\n"))
	}
	c := ts.login(t)
	un := c.ok("SELECT INBOX (CONDSTORE)")
	has(t, un, "* OK [HIGHESTMODSEQ 4]")
	un = c.ok("FETCH 1:* (MODSEQ)")
	has(t, un, "* 1 FETCH (MODSEQ (2))")
	un = c.ok(`STORE 1 +FLAGS (\Seen)`)
	has(t, un, `* 1 FETCH (FLAGS (\Seen \Recent) MODSEQ (5))`)
	// UNCHANGEDSINCE: message 1 changed after 4, so it fails.
	un, tagged := c.do(`STORE 1:2 (UNCHANGEDSINCE 4) +FLAGS.SILENT (\Flagged)`)
	if tagged != "OK [MODIFIED 1] Conditional STORE failed" {
		t.Fatalf("conditional STORE: %q", tagged)
	}
	has(t, un, "* 2 FETCH (MODSEQ (6))")
	un = c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 4)")
	if len(un) != 2 {
		t.Fatalf("CHANGEDSINCE 4: %q", un)
	}
	has(t, un, "* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ (6))")
	un = c.ok("SEARCH MODSEQ 6")
	has(t, un, "* SEARCH 2 (MODSEQ 6)")
	un = c.ok("STATUS INBOX (HIGHESTMODSEQ)")
	has(t, un, "HIGHESTMODSEQ 6")
	c.expect(`STORE 3 (UNCHANGEDSINCE 0) +FLAGS (\Seen)`, "OK [MODIFIED 3]")
}

func TestQResync(t *testing.T) {
	ts := startServer(t, nil)
	for _, s := range []string{"one", "two", "three", "four"} {
		ts.put(t, "INBOX", testMsg(s, "body\n"))
	}
	c := ts.login(t)
	c.ok("ENABLE QRESYNC")
	un := c.ok("SELECT INBOX")
	var validity string
	for _, l := range un {
		if strings.HasPrefix(l, "* OK [UIDVALIDITY ") {
			validity = strings.Fields(l)[3]
			validity = strings.TrimSuffix(validity, "]")
		}
	}
	// Changes while the client is away: 2 expunged, 3 flagged.
	o := ts.login(t)
	o.ok("SELECT INBOX")
	o.ok(`STORE 2 +FLAGS (\Deleted)`)
	o.ok("EXPUNGE")
	o.ok(`UID STORE 3 +FLAGS (\Flagged)`)
	c.ok("UNSELECT")
	un = c.ok("SELECT INBOX (QRESYNC (" + validity + " 5 1:4))")
	has(t, un, "* VANISHED (EARLIER) 2")
	has(t, un, `FETCH (UID 3 FLAGS (\Flagged) MODSEQ (`)
	// A wrong UIDVALIDITY: a plain SELECT.
	un = c.ok("SELECT INBOX (QRESYNC (1 5))")
	hasNot(t, un, "VANISHED")
	// UID FETCH … (CHANGEDSINCE … VANISHED).
	un = c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5 VANISHED)")
	has(t, un, "* VANISHED (EARLIER) 2")
	has(t, un, "UID 3 FLAGS")
	// After the SELECT, [CLOSED] came first (RFC 7162 § 3.2.11).
	un = c.ok("EXAMINE INBOX")
	if !strings.HasPrefix(un[0], "* OK [CLOSED]") {
		t.Fatalf("reselect: %q", un)
	}
}
