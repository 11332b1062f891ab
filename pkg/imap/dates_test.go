package imap

import (
	"strings"
	"testing"
	"time"
)

// TestLazyInternalDates: with a store whose snapshots carry no internal
// dates (mailstore's first open of new mail leaves them to be read when
// asked), FETCH INTERNALDATE, SEARCH BEFORE/ON/SINCE and SORT (ARRIVAL)
// answer with each message's own date; a message whose file another
// program removed before its date was read is answered by NO
// [EXPUNGEISSUED] in FETCH (the others still fetched) and matches no date
// key in SEARCH, and the session goes on.
func TestLazyInternalDates(t *testing.T) {
	ts := startServer(t, nil)
	st := ts.be.store("alice@example.test")
	dates := []time.Time{
		time.Date(2024, 3, 10, 8, 0, 0, 0, time.UTC),
		time.Date(2024, 1, 10, 8, 0, 0, 0, time.UTC),
		time.Date(2024, 2, 10, 8, 0, 0, 0, time.UTC),
	}
	for i, d := range dates {
		if _, err := st.add("INBOX", nil, d, []byte(testMsg("m"+string(rune('1'+i)), "body\n"))); err != nil {
			t.Fatal(err)
		}
	}
	st.mu.Lock()
	st.lazyDates = true
	st.mu.Unlock()
	c := ts.login(t)
	c.ok("SELECT INBOX")
	lines := c.ok("FETCH 1:3 (INTERNALDATE)")
	has(t, lines, `* 1 FETCH (INTERNALDATE "10-Mar-2024 08:00:00 +0000")`)
	has(t, lines, `* 2 FETCH (INTERNALDATE "10-Jan-2024 08:00:00 +0000")`)
	has(t, lines, `* 3 FETCH (INTERNALDATE "10-Feb-2024 08:00:00 +0000")`)
	has(t, c.ok("UID FETCH 2 (INTERNALDATE)"), `* 2 FETCH (UID 2 INTERNALDATE "10-Jan-2024 08:00:00 +0000")`)
	for _, q := range []struct{ cmd, want string }{
		{"SEARCH SINCE 1-Feb-2024", "* SEARCH 1 3"},
		{"SEARCH BEFORE 1-Feb-2024", "* SEARCH 2"},
		{"SEARCH ON 10-Feb-2024", "* SEARCH 3"},
		{"SEARCH NOT BEFORE 1-Mar-2024", "* SEARCH 1"},
		{"SORT (ARRIVAL) UTF-8 ALL", "* SORT 2 3 1"},
		{"SORT (REVERSE ARRIVAL) UTF-8 SINCE 1-Feb-2024", "* SORT 1 3"},
	} {
		has(t, c.ok(q.cmd), q.want)
	}

	// Message 3's file goes before its date is read (by a new session).
	st.mu.Lock()
	st.folders["INBOX"].msgs[2].fileGone = true
	st.mu.Unlock()
	c2 := ts.login(t)
	c2.ok("SELECT INBOX")
	lines, tagged := c2.do("FETCH 1:3 (INTERNALDATE)")
	if !strings.Contains(tagged, "NO [EXPUNGEISSUED]") {
		t.Errorf("FETCH of a message whose file is gone: %q, want NO [EXPUNGEISSUED]", tagged)
	}
	has(t, lines, `* 1 FETCH (INTERNALDATE "10-Mar-2024 08:00:00 +0000")`)
	has(t, lines, `* 2 FETCH (INTERNALDATE "10-Jan-2024 08:00:00 +0000")`)
	hasNot(t, lines, `* 3 FETCH`)
	has(t, c2.ok("SEARCH SINCE 1-Jan-2024"), "* SEARCH 1 2")
	has(t, c2.ok("FETCH 3 (FLAGS)"), `* 3 FETCH (FLAGS ())`)
}
