package mailstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestDotlockStale: a dovecot-uidlist.lock untouched for Dovecot's two
// minutes is a dead holder's: removed, and the work goes on.
func TestDotlockStale(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	lock := filepath.Join(root, uidlistName+".lock")
	must(t, os.WriteFile(lock, []byte("3 V1 N1\n"), 0o600))
	old := time.Now().Add(-dotlockStale - time.Second)
	must(t, os.Chtimes(lock, old, old))
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	if snap := mustSync(t, v); len(snap.Msgs) != 1 {
		t.Errorf("%d messages", len(snap.Msgs))
	}
	if _, err := os.Stat(lock); !os.IsNotExist(err) {
		t.Errorf("stale lock still there: %v", err)
	}
}

// TestDotlockWaits: a live dot-lock (Dovecot's, nobody recorded it) is
// waited for: nothing is numbered while it is there, and the work goes on
// when it goes.
func TestDotlockWaits(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	lock := filepath.Join(root, uidlistName+".lock")
	must(t, os.WriteFile(lock, nil, 0o600))
	var waits atomic.Int32
	testHookDotlockWait = func(string) { waits.Add(1) }
	defer func() { testHookDotlockWait = nil }()
	done := make(chan error, 1)
	go func() {
		v, err := s.Select("INBOX", false)
		if err == nil {
			v.Close()
		}
		done <- err
	}()
	waitFor(t, "Select to wait for the lock", func() bool { return waits.Load() >= 2 })
	if _, err := os.Stat(filepath.Join(root, uidlistName)); !os.IsNotExist(err) {
		t.Errorf("uidlist written under another's lock: %v", err)
	}
	must(t, os.Remove(lock))
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Select still waiting after the lock went")
	}
	if st, _ := s.Status("INBOX"); st.Messages != 1 || st.UIDNext != 2 {
		t.Errorf("after the wait: %+v", st)
	}
}

// TestDotlockTimeout: a lock that never goes away fails the operation with
// ErrLocked after the timeout, and nothing is written.
func TestDotlockTimeout(t *testing.T) {
	defer func(d time.Duration) { dotlockTimeout = d }(dotlockTimeout)
	dotlockTimeout = 300 * time.Millisecond
	s, root := testStore(t)
	deliver(t, root, 1)
	must(t, os.WriteFile(filepath.Join(root, uidlistName+".lock"), nil, 0o600))
	if _, err := s.Select("INBOX", false); !errors.Is(err, ErrLocked) {
		t.Errorf("Select under a held lock: %v", err)
	}
	if err := s.SetSubscribed("x", true); err != nil {
		t.Errorf("another file's lock is not this one: %v", err)
	}
	must(t, os.WriteFile(filepath.Join(root, subscriptionsName+".lock"), nil, 0o600))
	if err := s.SetSubscribed("y", true); !errors.Is(err, ErrLocked) {
		t.Errorf("SetSubscribed under a held lock: %v", err)
	}
}

// TestDotlockOursCrashed: a dot-lock left by a letterbox process that died
// holding it (its flock gone, its record still there) is removed at once,
// without Dovecot's two-minute wait.
func TestDotlockOursCrashed(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	dead := &dirLock{dir: root}
	must(t, dead.lock())
	if _, err := dead.dotlock(uidlistName); err != nil {
		t.Fatal(err)
	}
	dead.f.Close() // the process dies: the kernel drops its flock
	lock := filepath.Join(root, uidlistName+".lock")
	if _, err := os.Stat(lock); err != nil {
		t.Fatal(err)
	}
	var waits atomic.Int32
	testHookDotlockWait = func(string) { waits.Add(1) }
	defer func() { testHookDotlockWait = nil }()
	v, err := s.Select("INBOX", false)
	must(t, err)
	v.Close()
	if waits.Load() != 0 {
		t.Errorf("waited %d times for our own dead lock", waits.Load())
	}
	if _, err := os.Stat(lock); !os.IsNotExist(err) {
		t.Errorf("dead lock still there: %v", err)
	}
	// A recorded inode that is now another file's (Dovecot's new lock
	// after ours was renamed away) is not ours.
	dead2 := &dirLock{dir: root}
	must(t, dead2.lock())
	d, err := dead2.dotlock(uidlistName)
	must(t, err)
	must(t, os.Rename(d.path, d.path+".moved"))
	must(t, os.WriteFile(lock, nil, 0o600)) // "Dovecot's" lock, another inode
	dead2.f.Close()
	defer func(dl time.Duration) { dotlockTimeout = dl }(dotlockTimeout)
	dotlockTimeout = 300 * time.Millisecond
	deliver(t, root, 2)
	if _, err := s.Status("INBOX"); !errors.Is(err, ErrLocked) {
		t.Errorf("a foreign lock with an unrecorded inode was not waited for: %v", err)
	}
}

// TestDotlockOtherHostWaited: on NFS the flock may be host-local, so a
// record written by another host never makes its dot-lock dead: it is
// waited for, and taken as stale only after Dovecot's two minutes.
func TestDotlockOtherHostWaited(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	other := &dirLock{dir: root, host: "other.example"}
	must(t, other.lock())
	if _, err := other.dotlock(uidlistName); err != nil {
		t.Fatal(err)
	}
	other.f.Close() // its flock gone (as seen from here), its record left
	rec, err := os.ReadFile(filepath.Join(root, lockFileName))
	must(t, err)
	if !strings.Contains(string(rec), " other.example\n") {
		t.Fatalf("the record does not name its host: %q", rec)
	}
	lock := filepath.Join(root, uidlistName+".lock")
	defer func(dl time.Duration) { dotlockTimeout = dl }(dotlockTimeout)
	dotlockTimeout = 300 * time.Millisecond
	if _, err := s.Status("INBOX"); !errors.Is(err, ErrLocked) {
		t.Fatalf("another host's live dot-lock was not waited for: %v", err)
	}
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("another host's dot-lock was removed: %v", err)
	}
	old := time.Now().Add(-dotlockStale - time.Minute)
	must(t, os.Chtimes(lock, old, old))
	if _, err := s.Status("INBOX"); err != nil {
		t.Fatalf("a stale dot-lock of another host: %v", err)
	}
	if _, err := os.Stat(lock); !os.IsNotExist(err) {
		t.Errorf("stale lock still there: %v", err)
	}
}

// TestDotlockLinkFailedButMade: over NFS, link(2) can report an error for
// a link the server made (a retransmitted request); the link count of our
// file says we hold the lock.
func TestDotlockLinkFailedButMade(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	defer func() { linkFile = os.Link }()
	linkFile = func(old, new string) error {
		if err := os.Link(old, new); err != nil {
			return err
		}
		return &os.LinkError{Op: "link", Old: old, New: new, Err: syscall.EEXIST}
	}
	defer func(dl time.Duration) { dotlockTimeout = dl }(dotlockTimeout)
	dotlockTimeout = 300 * time.Millisecond
	st, err := s.Status("INBOX")
	if err != nil {
		t.Fatalf("Status with a link that failed but was made: %v", err)
	}
	if st.Messages != 1 {
		t.Fatalf("status %+v", st)
	}
	if _, err := os.Stat(filepath.Join(root, uidlistName)); err != nil {
		t.Fatalf("no uidlist written: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, uidlistName+".lock")); !os.IsNotExist(err) {
		t.Fatalf("lock left behind: %v", err)
	}
}

// TestFlockSerializes: two states of one folder (two processes) never
// number at once: UIDs stay unique under concurrent deliveries and syncs.
func TestFlockSerializes(t *testing.T) {
	_, root := testStore(t)
	a := openAlone(t, root, nil)
	b := openAlone(t, root, nil)
	done := make(chan []uint32, 2)
	for _, s := range []*Store{a, b} {
		go func(s *Store) {
			var uids []uint32
			for i := 0; i < 20; i++ {
				r, err := s.Append("INBOX", nil, time.Time{}, stringsReader("x\n"))
				if err != nil {
					t.Error(err)
					break
				}
				uids = append(uids, r.UID)
				s.Status("INBOX")
			}
			done <- uids
		}(s)
	}
	all := append(<-done, <-done...)
	slices.Sort(all)
	if len(slices.Compact(slices.Clone(all))) != 40 || all[0] != 1 || all[39] != 40 {
		t.Errorf("UIDs %v", all)
	}
}

// TestReplaceKeyIsWhatWeWrote: dovecot-lda may take the uidlist's lock the
// moment our replace renamed it and append its new message's record in
// place. The version we remember must be that of what we wrote, or the
// next APPEND trusts our older content as current, gives Dovecot's UID to
// another message and drops Dovecot's record (a CI flake of
// TestInteropMailstoreConcurrent, reproduced here without Dovecot).
func TestReplaceKeyIsWhatWeWrote(t *testing.T) {
	s, root := testStore(t)
	if _, err := s.Append("INBOX", nil, time.Time{}, strings.NewReader("Subject: first\n\nx\n")); err != nil {
		t.Fatal(err)
	}
	ul := filepath.Join(root, uidlistName)
	theirs := "theirs-1796514859.M1P1.host"
	var theirUID uint32
	afterReplace = func(path string) {
		if path != ul || theirUID != 0 {
			return
		}
		theirUID = appendLikeDovecot(t, root, theirs, 0)
	}
	defer func() { afterReplace = nil }()
	first, err := s.Append("INBOX", nil, time.Time{}, strings.NewReader("Subject: second\n\nx\n"))
	must(t, err)
	afterReplace = nil
	if theirUID == 0 || theirUID == first.UID {
		t.Fatalf("the hook did not run after the UID was given (theirs %d, ours %d)", theirUID, first.UID)
	}
	next, err := s.Append("INBOX", nil, time.Time{}, strings.NewReader("Subject: third\n\nx\n"))
	must(t, err)
	if next.UID == theirUID {
		t.Fatalf("APPEND gave UID %d, which Dovecot's record holds", next.UID)
	}
	b, err := os.ReadFile(ul)
	must(t, err)
	u, err := parseUIDList(string(b))
	must(t, err)
	if got := u.index()[theirs]; got != theirUID {
		t.Fatalf("Dovecot's record: UID %d in the uidlist, want %d:\n%s", got, theirUID, b)
	}
}

// TestReplaceKeyIsWhatWeWriteSync: the same for the uidlist a sync
// rewrites when it numbers a delivered file: Dovecot's record appended
// right after our rename keeps its UID in every later view.
func TestReplaceKeyIsWhatWeWriteSync(t *testing.T) {
	s, root := testStore(t)
	if _, err := s.Append("INBOX", nil, time.Time{}, strings.NewReader("Subject: first\n\nx\n")); err != nil {
		t.Fatal(err)
	}
	deliver(t, root, 2)
	ul := filepath.Join(root, uidlistName)
	theirs := "theirs-1796514859.M2P2.host"
	var theirUID uint32
	afterReplace = func(path string) {
		if path != ul || theirUID != 0 {
			return
		}
		theirUID = appendLikeDovecot(t, root, theirs, 5) // a UID no sync of ours would give it
	}
	defer func() { afterReplace = nil }()
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	afterReplace = nil
	if theirUID == 0 {
		t.Fatal("the sync did not rewrite the uidlist")
	}
	snap, err := v.Sync()
	must(t, err)
	if u := uidsOf(snap); !slices.Contains(u, theirUID) {
		t.Fatalf("UIDs %v: Dovecot's message lost its UID %d", u, theirUID)
	}
}

// appendLikeDovecot does what dovecot-lda does under the uidlist's lock:
// the message file in cur/, its record appended to the uidlist in place
// (UID: the header's next UID + skip), the header left as it was.
func appendLikeDovecot(t *testing.T, root, name string, skip uint32) uint32 {
	ul := filepath.Join(root, uidlistName)
	b, err := os.ReadFile(ul)
	must(t, err)
	u, err := parseUIDList(string(b))
	must(t, err)
	uid := u.nextUID + skip
	must(t, os.WriteFile(filepath.Join(root, "cur", name+":2,"), []byte("Subject: theirs\n\ny\n"), 0o600))
	fh, err := os.OpenFile(ul, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	fmt.Fprintf(fh, "%d :%s\n", uid, name)
	must(t, fh.Close())
	return uid
}
