package mailstore

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// putNew writes n messages into new/ named as deliver names them (,S= and
// ,W=: their sizes known from the name), each with its own modification
// time (the internal date), and returns those dates by UID order (the
// names' delivery stamps give that order).
func putNew(t *testing.T, root string, n int) []time.Time {
	t.Helper()
	dates := make([]time.Time, n)
	for i := range n {
		body := fmt.Sprintf("Subject: m%d\n\nbody %d\n", i, i)
		name := fmt.Sprintf("17000%05d.M%dP1.host,S=%d,W=%d", i, i, len(body), len(body)+3)
		p := filepath.Join(root, "new", name)
		must(t, os.WriteFile(p, []byte(body), 0o600))
		dates[i] = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC).Add(time.Duration(i) * 26 * time.Hour)
		must(t, os.Chtimes(p, dates[i], dates[i]))
	}
	return dates
}

// checkDates compares v.InternalDates of every message with want (by UID
// order); gone lists UIDs that must come back without a date.
func checkDates(t *testing.T, v *View, uids []uint32, want []time.Time, gone map[uint32]bool) {
	t.Helper()
	got, err := v.InternalDates(uids)
	must(t, err)
	for i, u := range uids {
		switch {
		case gone[u] && !got[i].IsZero():
			t.Errorf("UID %d: expunged, got date %v", u, got[i])
		case !gone[u] && !got[i].Equal(want[u-1]):
			t.Errorf("UID %d: date %v, want %v (the file's mtime)", u, got[i], want[u-1])
		}
	}
}

// TestInternalDatesLazy: a first SELECT of mail in new/ whose sizes are in
// the names reads no file's status (snapshot dates zero); InternalDates
// then gives each message its file's mtime: read straight after, after
// another process took the files into cur/ under the names this state
// knew, and nothing (no error) for a message another process expunged
// meanwhile; and so for the next process.
func TestInternalDatesLazy(t *testing.T) {
	s, root := testStore(t)
	want := putNew(t, root, 5)
	// EXAMINE: the files stay in new/, the state knows them there.
	v, err := s.Select("INBOX", true)
	must(t, err)
	snap := mustSync(t, v)
	uids := uidsOf(snap)
	if len(uids) != 5 {
		t.Fatalf("UIDs %v", uids)
	}
	for _, m := range snap.Msgs {
		if !m.InternalDate.IsZero() {
			t.Errorf("UID %d: date %v read at SELECT; a first open leaves it to InternalDates", m.UID, m.InternalDate)
		}
	}
	// Another process takes new/ into cur/ and expunges UID 4 (as Dovecot
	// or a second imapd would); this state still has the new/ names.
	o := openAlone(t, root, nil)
	ov, err := o.Select("INBOX", false)
	must(t, err)
	mustSync(t, ov)
	ov.Close()
	ents, err := os.ReadDir(filepath.Join(root, "new"))
	must(t, err)
	if len(ents) != 0 {
		t.Fatalf("new/ not emptied by the other process: %d files", len(ents))
	}
	cur, err := filepath.Glob(filepath.Join(root, "cur", "1700000003.*"))
	must(t, err)
	if len(cur) != 1 {
		t.Fatalf("cur/ file of UID 4: %v", cur)
	}
	must(t, os.Remove(cur[0]))
	checkDates(t, v, uids, want, map[uint32]bool{4: true})
	// Asked again (from the state now), the same.
	checkDates(t, v, uids, want, map[uint32]bool{4: true})
	v.Close()
	must(t, s.Close())

	// A new process, from the cache file.
	s2 := reopen(t, root)
	v2, err := s2.Select("INBOX", true)
	must(t, err)
	snap2 := mustSync(t, v2)
	if got := uidsOf(snap2); len(got) != 4 {
		t.Fatalf("after the expunge: UIDs %v", got)
	}
	checkDates(t, v2, uidsOf(snap2), want, nil)
	v2.Close()
}

// TestInternalDatesDuringMove: a first writable SELECT of more than
// bulkNew files answers before taking them into cur/ (the mover renames
// them chunk by chunk afterwards); dates asked for between two chunks,
// with some files moved and some not, and after the move, are the files'
// mtimes, and the next process finds them in the cache.
func TestInternalDatesDuringMove(t *testing.T) {
	s, root := testStore(t)
	n := bulkNew + 2*moveChunkSize
	want := putNew(t, root, n)
	var v *View
	var mid []time.Time
	var midErr error
	var once sync.Once
	ready, done := make(chan struct{}), make(chan struct{})
	all := make([]uint32, n)
	for i := range all {
		all[i] = uint32(i + 1)
	}
	testHookMoved = func() {
		once.Do(func() {
			defer close(done)
			<-ready // v is set
			mid, midErr = v.InternalDates(all)
		})
	}
	defer func() { testHookMoved = nil }()
	v, err := s.Select("INBOX", false)
	must(t, err)
	close(ready)
	<-done // between the first two chunks
	must(t, midErr)
	for i, d := range mid {
		if !d.Equal(want[i]) {
			t.Fatalf("UID %d mid-move: date %v, want %v", i+1, d, want[i])
		}
	}
	snap := mustSync(t, v)
	if len(snap.Msgs) != n {
		t.Fatalf("%d messages, want %d", len(snap.Msgs), n)
	}
	checkDates(t, v, all, want, nil)
	v.Close()
	must(t, s.Close()) // waits for the mover
	testHookMoved = nil
	if ents, _ := os.ReadDir(filepath.Join(root, "new")); len(ents) != 0 {
		t.Fatalf("%d files left in new/", len(ents))
	}
	s2 := reopen(t, root)
	v2, err := s2.Select("INBOX", true)
	must(t, err)
	for _, m := range mustSync(t, v2).Msgs {
		if !m.InternalDate.Equal(want[m.UID-1]) {
			t.Fatalf("UID %d from the cache: date %v, want %v", m.UID, m.InternalDate, want[m.UID-1])
		}
	}
	v2.Close()
}
