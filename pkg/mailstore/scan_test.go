package mailstore

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// TestNumberingScansOnce: files numbered for the first time are read from
// the directories once when the uidlist did not change between that scan
// and its lock (a first SELECT of 10,000 delivered messages read new/ and
// cur/ twice).
func TestNumberingScansOnce(t *testing.T) {
	for _, existing := range []bool{false, true} {
		s, root := testStore(t)
		if existing {
			deliver(t, root, 0)
			v, err := s.Select("INBOX", false)
			must(t, err)
			mustSync(t, v)
			v.Close()
		}
		for i := 1; i <= 5; i++ {
			deliver(t, root, i)
		}
		f := s.acc.folder("INBOX")
		f.mu.Lock()
		before := f.scans
		f.mu.Unlock()
		v, err := s.Select("INBOX", false)
		must(t, err)
		f.mu.Lock()
		scans := f.scans - before
		f.mu.Unlock()
		snap := mustSync(t, v)
		v.Close()
		want := 5
		if existing {
			want = 6
		}
		if len(snap.Msgs) != want {
			t.Fatalf("existing %v: %d messages, want %d", existing, len(snap.Msgs), want)
		}
		if scans != 1 {
			t.Errorf("existing uidlist %v: numbering 5 files read the directories %d times, want 1", existing, scans)
		}
	}
}

// TestNumberingRescansAfterOthers: when another program numbers a file
// between our scan and the uidlist's lock, the directories are read again
// under the lock, and SELECT shows that message with the UID the other
// program gave it, beside ours.
func TestNumberingRescansAfterOthers(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 0)
	v, err := s.Select("INBOX", false) // the uidlist exists from here
	must(t, err)
	mustSync(t, v)
	v.Close()
	for i := 1; i <= 3; i++ {
		deliver(t, root, i)
	}
	theirs := "theirs-1796514859.M9P9.host"
	var theirUID uint32
	testHookScanned = func(dir string) {
		if theirUID == 0 {
			theirUID = appendLikeDovecot(t, root, theirs, 0)
		}
	}
	defer func() { testHookScanned = nil }()
	f := s.acc.folder("INBOX")
	f.mu.Lock()
	before := f.scans
	f.mu.Unlock()
	v, err = s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	testHookScanned = nil
	f.mu.Lock()
	scans := f.scans - before
	f.mu.Unlock()
	if theirUID == 0 {
		t.Fatal("the hook did not run")
	}
	if scans < 2 {
		t.Errorf("the directories were read %d times: not again under the lock after the uidlist changed", scans)
	}
	snap, err := v.Sync()
	must(t, err)
	uids := uidsOf(snap)
	if len(uids) != 5 || !slices.Contains(uids, theirUID) {
		t.Fatalf("UIDs %v, want 5 with Dovecot's %d", uids, theirUID)
	}
	if _, err := os.Stat(filepath.Join(root, "cur", theirs+":2,")); err != nil {
		t.Fatal(err)
	}
	for i, u := range uids {
		if i > 0 && u <= uids[i-1] {
			t.Fatalf("UIDs %v not increasing", uids)
		}
	}
}

// TestBulkNewSeenByOthersMidMove: the mover writes the cache file once, at
// its end; another process opening the folder between two of its chunks
// (reading the cache written before the renames) sees every message with
// the UID and MODSEQ this one gave, under its name of the moment.
func TestBulkNewSeenByOthersMidMove(t *testing.T) {
	var midMove func()
	s, root := testStore(t)
	n := bulkNew + 2*moveChunkSize
	for i := 0; i < n; i++ {
		must(t, os.WriteFile(filepath.Join(root, "new", fmt.Sprintf("1700000000.M%dP1.bulk", i)), []byte("Subject: x\n\n"), 0o600))
	}
	var other Snapshot
	var otherErr error
	var once sync.Once
	done := make(chan struct{})
	var cacheMid fileKey
	testHookMoved = func() { once.Do(func() { defer close(done); midMove() }) }
	midMove = func() {
		cacheMid, _ = statKey(filepath.Join(root, cacheName))
		// Another process's view of the folder (openAlone's Open and
		// Close of the shared account would wait for this mover).
		o := &Store{acc: &account{root: root, log: testLogger(&logBuf{}), folders: map[string]*folder{}, refs: 1}}
		defer o.Close()
		v, err := o.Select("INBOX", true)
		if err != nil {
			otherErr = err
			return
		}
		other, otherErr = v.Sync()
		v.Close()
	}
	defer func() { testHookMoved = nil }()
	v, err := s.Select("INBOX", false)
	must(t, err)
	selected, _ := statKey(filepath.Join(root, cacheName))
	<-done // between the first two chunks
	first := mustSync(t, v)
	v.Close()
	must(t, s.Close()) // waits for the mover
	testHookMoved = nil
	must(t, otherErr)
	if len(other.Msgs) != n || !slices.Equal(uidsOf(other), uidsOf(first)) {
		t.Fatalf("the other process saw %d messages (UIDs equal: %v), want %d", len(other.Msgs), slices.Equal(uidsOf(other), uidsOf(first)), n)
	}
	for i, m := range other.Msgs {
		if m.ModSeq != first.Msgs[i].ModSeq {
			t.Fatalf("UID %d: MODSEQ %d there, %d here", m.UID, m.ModSeq, first.Msgs[i].ModSeq)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "new")); len(ents) != 0 {
		t.Fatalf("%d files left in new/", len(ents))
	}
	if cacheMid != selected {
		t.Errorf("the cache file was rewritten before the move's end")
	}
	final, _ := statKey(filepath.Join(root, cacheName))
	if final == cacheMid {
		t.Errorf("the cache file was not written when the move ended")
	}
}

// TestEnsureSpecialUseTogether: the five folders of a first login are made
// side by side, each with its own uidlist and UIDVALIDITY as CREATE makes
// them, and the subscriptions file is written once for all five.
func TestEnsureSpecialUseTogether(t *testing.T) {
	s, root := testStore(t)
	var mu sync.Mutex
	writes := map[string]int{}
	afterReplace = func(path string) {
		mu.Lock()
		writes[filepath.Base(path)]++
		mu.Unlock()
	}
	defer func() { afterReplace = nil }()
	must(t, s.EnsureSpecialUse())
	afterReplace = nil
	if writes[subscriptionsName] != 1 {
		t.Errorf("subscriptions written %d times, want once", writes[subscriptionsName])
	}
	seen := map[uint32]string{}
	for _, name := range []string{"Sent", "Drafts", "Trash", "Junk", "Archive"} {
		b := readFile(t, filepath.Join(root, "."+name, uidlistName))
		u, err := parseUIDList(b)
		must(t, err)
		if other, dup := seen[u.uidValidity]; dup || u.uidValidity == 0 {
			t.Errorf("%s: UIDVALIDITY %d (also %s's)", name, u.uidValidity, other)
		}
		seen[u.uidValidity] = name
	}
	subs := parseSubscriptions(readFile(t, filepath.Join(root, subscriptionsName)))
	if want := []string{"Archive", "Drafts", "Junk", "Sent", "Trash"}; !slices.Equal(subs, want) {
		t.Errorf("subscriptions %q, want %q", subs, want)
	}
}
