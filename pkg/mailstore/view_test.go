package mailstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func flagsOf(s Snapshot, uid uint32) string {
	for _, m := range s.Msgs {
		if m.UID == uid {
			return strings.Join(m.Flags, " ")
		}
	}
	return "<gone>"
}

func msgOf(s Snapshot, uid uint32) Msg {
	for _, m := range s.Msgs {
		if m.UID == uid {
			return m
		}
	}
	return Msg{}
}

// pathOf is the file of uid as the view's folder knows it now.
func pathOf(v *View, uid uint32) string {
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	if i := v.f.find(uid); i >= 0 {
		return v.f.msgPath(&v.f.s.msgs[i])
	}
	return ""
}

func TestSelect(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	// EXAMINE moves nothing, takes no \Recent, sees it as \Recent.
	ro, err := s.Select("INBOX", true)
	must(t, err)
	if !ro.ReadOnly() {
		t.Error("EXAMINE view not read-only")
	}
	snap := mustSync(t, ro)
	if len(snap.Msgs) != 1 || !snap.Msgs[0].Recent {
		t.Errorf("EXAMINE snapshot %+v", snap)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "new")); len(ents) != 1 {
		t.Errorf("EXAMINE moved new/ files: %d left", len(ents))
	}
	// SELECT moves new/ to cur/ and takes \Recent; a later view does not
	// get it; the EXAMINE view keeps what it saw.
	v1, err := s.Select("INBOX", false)
	must(t, err)
	if v1.ReadOnly() {
		t.Error("SELECT view read-only")
	}
	if snap := mustSync(t, v1); len(snap.Msgs) != 1 || !snap.Msgs[0].Recent {
		t.Errorf("first SELECT: %+v", snap)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "new")); len(ents) != 0 {
		t.Errorf("SELECT left %d files in new/", len(ents))
	}
	v2, err := s.Select("INBOX", false)
	must(t, err)
	if snap := mustSync(t, v2); snap.Msgs[0].Recent {
		t.Error("second SELECT also got \\Recent")
	}
	if snap := mustSync(t, ro); !snap.Msgs[0].Recent {
		t.Error("EXAMINE lost its \\Recent")
	}
	deliver(t, root, 2)
	s2 := mustSync(t, v2) // v2 sees it first now
	s1 := mustSync(t, v1)
	if !s2.Msgs[1].Recent || s1.Msgs[1].Recent || !s1.Msgs[0].Recent {
		t.Errorf("\\Recent of a delivery: v2 %v, v1 %v %v", s2.Msgs[1].Recent, s1.Msgs[0].Recent, s1.Msgs[1].Recent)
	}
	if st, _ := s.Status("INBOX"); st.Recent != 0 {
		t.Errorf("Status Recent %d after both were taken", st.Recent)
	}
	// A view of a folder deleted meanwhile fails.
	must(t, s.Create("Gone", ""))
	vg, err := s.Select("Gone", false)
	must(t, err)
	must(t, s.Delete("Gone"))
	if _, err := vg.Sync(); !errors.Is(err, ErrNoMailbox) {
		t.Errorf("Sync of a deleted folder: %v", err)
	}
	for _, v := range []*View{ro, v1, v2, vg} {
		must(t, v.Close())
		must(t, v.Close())
	}
	if _, err := v1.Sync(); err == nil {
		t.Error("Sync of a closed view succeeded")
	}
	if _, err := s.Select("Nope", false); !errors.Is(err, ErrNoMailbox) {
		t.Errorf("Select(Nope): %v", err)
	}
	if _, err := s.Select("a..b", false); !errors.Is(err, ErrBadName) {
		t.Errorf("Select(a..b): %v", err)
	}
}

func TestStoreFlags(t *testing.T) {
	s, root := testStore(t)
	for i := 1; i <= 3; i++ {
		deliver(t, root, i)
	}
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	before := mustSync(t, v)
	changed, failed, err := v.Store([]uint32{1, 2, 99}, StoreAdd, []string{`\Seen`, "Work", `\recent`}, 0)
	must(t, err)
	if len(changed) != 2 || len(failed) != 0 || changed[0].ModSeq <= before.HighestModSeq || changed[0].ModSeq != changed[1].ModSeq {
		t.Fatalf("STORE +FLAGS: changed %+v failed %v", changed, failed)
	}
	snap := mustSync(t, v)
	if flagsOf(snap, 1) != `\Seen Work` || flagsOf(snap, 3) != "" || snap.HighestModSeq != changed[0].ModSeq {
		t.Errorf("after +FLAGS: %q %q, HIGHESTMODSEQ %d", flagsOf(snap, 1), flagsOf(snap, 3), snap.HighestModSeq)
	}
	if msgOf(snap, 3).ModSeq != msgOf(before, 3).ModSeq {
		t.Error("an untouched message's MODSEQ moved")
	}
	// The same flags again: no change, no new MODSEQ.
	changed, _, err = v.Store([]uint32{1}, StoreAdd, []string{`\Seen`}, 0)
	must(t, err)
	if len(changed) != 0 {
		t.Errorf("no-op STORE changed %+v", changed)
	}
	// UNCHANGEDSINCE: 1 changed after the given MODSEQ fails, 3 is fine.
	changed, failed, err = v.Store([]uint32{1, 3}, StoreReplace, []string{`\Flagged`}, msgOf(before, 3).ModSeq)
	must(t, err)
	if !slices.Equal(failed, []uint32{1}) || len(changed) != 1 || changed[0].UID != 3 || strings.Join(changed[0].Flags, " ") != `\Flagged` {
		t.Errorf("UNCHANGEDSINCE: changed %+v failed %v", changed, failed)
	}
	// Replace keeps letters IMAP has no name for (P, as mutt writes).
	v.f.mu.Lock()
	m1 := v.f.msgPath(&v.f.s.msgs[0])
	v.f.mu.Unlock()
	must(t, os.Rename(m1, strings.TrimSuffix(m1, "Sa")+"PSa"))
	p := filepath.Join(root, "cur")
	_, _, err = v.Store([]uint32{1}, StoreReplace, []string{`\Answered`}, 0)
	must(t, err)
	_, _, err = v.Store([]uint32{2}, StoreRemove, []string{`\Seen`, "WORK"}, 0)
	must(t, err)
	snap = mustSync(t, v)
	if flagsOf(snap, 1) != `\Answered` || flagsOf(snap, 2) != "" {
		t.Errorf("after FLAGS and -FLAGS: %q %q", flagsOf(snap, 1), flagsOf(snap, 2))
	}
	ents, _ := os.ReadDir(p)
	var got []string
	for _, e := range ents {
		got = append(got, nameLetters(e.Name()))
	}
	sort.Strings(got)
	if strings.Join(got, ",") != ",F,PR" {
		t.Errorf("letters in names: %q, want [ F PR]", got)
	}
	if _, _, err := v.Store([]uint32{1}, StoreAdd, []string{`\Nope`}, 0); !errors.Is(err, ErrBadFlag) {
		t.Errorf("bad flag: %v", err)
	}
	ro, err := s.Select("INBOX", true)
	must(t, err)
	defer ro.Close()
	if _, _, err := ro.Store([]uint32{1}, StoreAdd, []string{`\Seen`}, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("STORE on EXAMINE: %v", err)
	}
}

// TestStoreRenamedMeanwhile: another program changed the file's flags
// (renamed it) after our last look: STORE finds the new name and adds to
// the flags it has now.
func TestStoreRenamedMeanwhile(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	mustSync(t, v)
	ents, _ := os.ReadDir(filepath.Join(root, "cur"))
	old := filepath.Join(root, "cur", ents[0].Name())
	must(t, os.Rename(old, strings.TrimSuffix(old, ":2,")+":2,F"))
	changed, _, err := v.Store([]uint32{1}, StoreAdd, []string{`\Seen`}, 0)
	must(t, err)
	if len(changed) != 1 || strings.Join(changed[0].Flags, " ") != `\Flagged \Seen` {
		t.Errorf("changed %+v", changed)
	}
}

func TestExpunge(t *testing.T) {
	s, root := testStore(t)
	for i := 1; i <= 5; i++ {
		deliver(t, root, i)
	}
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	start := mustSync(t, v)
	_, _, err = v.Store([]uint32{1, 2, 4, 5}, StoreAdd, []string{`\Deleted`}, 0)
	must(t, err)
	mid := mustSync(t, v)
	// UID EXPUNGE: only 2 (3 is not \Deleted).
	gone, err := v.Expunge([]uint32{2, 3})
	must(t, err)
	if !slices.Equal(gone, []uint32{2}) {
		t.Errorf("UID EXPUNGE 2,3: %v", gone)
	}
	gone, err = v.Expunge(nil)
	must(t, err)
	if !slices.Equal(gone, []uint32{1, 4, 5}) {
		t.Errorf("EXPUNGE: %v", gone)
	}
	snap := mustSync(t, v)
	if !slices.Equal(uidsOf(snap), []uint32{3}) || snap.UIDNext != 6 {
		t.Errorf("left %v UIDNEXT %d", uidsOf(snap), snap.UIDNext)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "cur")); len(ents) != 1 {
		t.Errorf("cur/ has %d files", len(ents))
	}
	if u, exact := v.Vanished(mid.HighestModSeq); !exact || !slices.Equal(u, []uint32{1, 2, 4, 5}) {
		t.Errorf("Vanished(before the expunges): %v exact %v", u, exact)
	}
	if u, exact := v.Vanished(snap.HighestModSeq); !exact || len(u) != 0 {
		t.Errorf("Vanished(now): %v exact %v", u, exact)
	}
	if _, exact := v.Vanished(start.HighestModSeq - 5); exact {
		t.Error("Vanished from before the cache was made claims to be exact")
	}
	ro, err := s.Select("INBOX", true)
	must(t, err)
	defer ro.Close()
	if _, err := ro.Expunge(nil); !errors.Is(err, ErrReadOnly) {
		t.Errorf("EXPUNGE on EXAMINE: %v", err)
	}
	// The uidlist keeps no record of the expunged once rewritten, and the
	// next UID is never given again.
	deliver(t, root, 6)
	snap = mustSync(t, v)
	if !slices.Equal(uidsOf(snap), []uint32{3, 6}) {
		t.Errorf("after a new delivery: %v", uidsOf(snap))
	}
	ul := readFile(t, filepath.Join(root, "dovecot-uidlist"))
	if strings.Count(ul, "\n") != 3 || !strings.Contains(ul, " N7 ") {
		t.Errorf("uidlist:\n%s", ul)
	}
}

// TestExpungeRenamedMeanwhile: a \Deleted message that another program
// undeleted (renamed) before EXPUNGE stays.
func TestExpungeRenamedMeanwhile(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	deliver(t, root, 2)
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	mustSync(t, v)
	_, _, err = v.Store([]uint32{1, 2}, StoreAdd, []string{`\Deleted`}, 0)
	must(t, err)
	mustSync(t, v)
	old := pathOf(v, 1)
	must(t, os.Rename(old, strings.TrimSuffix(old, "T")+"S"))
	gone, err := v.Expunge(nil)
	must(t, err)
	if !slices.Equal(gone, []uint32{2}) {
		t.Errorf("expunged %v, want [2]", gone)
	}
	if snap := mustSync(t, v); !slices.Equal(uidsOf(snap), []uint32{1}) || flagsOf(snap, 1) != `\Seen` {
		t.Errorf("left %v %q", uidsOf(snap), flagsOf(snap, 1))
	}
}

func TestOpenMessage(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	deliver(t, root, 2)
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	mustSync(t, v)
	r, err := v.Open(1)
	must(t, err)
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "Subject: m1\n\nbody 1\n" {
		t.Errorf("content %q", b)
	}
	// Renamed by someone else: found under its new name.
	ents, _ := os.ReadDir(filepath.Join(root, "cur"))
	for _, e := range ents {
		p := filepath.Join(root, "cur", e.Name())
		must(t, os.Rename(p, p+"S"))
	}
	r, err = v.Open(1)
	must(t, err)
	r.Close()
	if _, err := v.Open(99); !errors.Is(err, ErrExpunged) {
		t.Errorf("Open(99): %v", err)
	}
	// Removed by someone else: ErrExpunged.
	must(t, os.Remove(pathOf(v, 2)))
	if _, err := v.Open(2); !errors.Is(err, ErrExpunged) {
		t.Errorf("Open of a removed file: %v", err)
	}
	// A message file replaced by a symlink is not followed.
	p := pathOf(v, 1)
	secret := filepath.Join(t.TempDir(), "secret")
	must(t, os.WriteFile(secret, []byte("secret"), 0o600))
	must(t, os.Remove(p))
	must(t, os.Symlink(secret, p))
	if r, err := v.Open(1); err == nil {
		b, _ := io.ReadAll(r)
		t.Errorf("Open followed a symlink: %q", b)
	}
	// Nor is anything but a regular file read: a directory put in the
	// message's place.
	must(t, os.Remove(p))
	must(t, os.Mkdir(p, 0o700))
	if r, err := v.Open(1); err == nil {
		r.Close()
		t.Errorf("Open of a directory succeeded")
	}
}

// TestSymlinksSkipped: entries of new/ and cur/ that are not regular
// files (symlinks to files outside, directories) are never messages.
func TestSymlinksSkipped(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	secret := filepath.Join(t.TempDir(), "secret")
	must(t, os.WriteFile(secret, []byte("Subject: secret\n\n"), 0o600))
	must(t, os.Symlink(secret, filepath.Join(root, "new", "1.M1P1.evil")))
	must(t, os.Symlink(secret, filepath.Join(root, "cur", "2.M2P2.evil:2,S")))
	must(t, os.Mkdir(filepath.Join(root, "cur", "3.M3P3.dir:2,"), 0o700))
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	if snap := mustSync(t, v); len(snap.Msgs) != 1 {
		t.Errorf("%d messages, want 1: %+v", len(snap.Msgs), snap.Msgs)
	}
}

func TestCopyMove(t *testing.T) {
	s, root := testStore(t)
	must(t, s.Create("Dest", ""))
	// Dest has its own keyword letters: "other" is its 'a'.
	_, err := s.Append("Dest", []string{"other"}, time.Time{}, strings.NewReader("x\n"))
	must(t, err)
	date := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	for i := 1; i <= 3; i++ {
		_, err := s.Append("INBOX", []string{`\Seen`, "work"}, date, strings.NewReader(fmt.Sprintf("m%d\n", i)))
		must(t, err)
	}
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	mustSync(t, v)
	res, err := v.Copy([]uint32{3, 1, 99}, "Dest")
	must(t, err)
	dst, _ := s.Status("Dest")
	if !slices.Equal(res.SrcUIDs, []uint32{1, 3}) || !slices.Equal(res.DstUIDs, []uint32{2, 3}) || res.UIDValidity != dst.UIDValidity {
		t.Errorf("COPYUID %+v (Dest %+v)", res, dst)
	}
	dv, err := s.Select("Dest", true)
	must(t, err)
	defer dv.Close()
	snap := mustSync(t, dv)
	if flagsOf(snap, 2) != `\Seen work` || !msgOf(snap, 2).InternalDate.Equal(date) || msgOf(snap, 2).Size != 4 {
		t.Errorf("copy in Dest: %+v", msgOf(snap, 2))
	}
	if got := readFile(t, filepath.Join(root, ".Dest", "dovecot-keywords")); got != "0 other\n1 work\n" {
		t.Errorf("Dest keywords %q", got)
	}
	if src := mustSync(t, v); len(src.Msgs) != 3 {
		t.Errorf("COPY took messages from the source: %v", uidsOf(src))
	}
	r, err := dv.Open(3)
	must(t, err)
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "m3\n" {
		t.Errorf("copied content %q", b)
	}
	// MOVE: in Dest, gone from INBOX, VANISHED there.
	before := mustSync(t, v)
	res, err = v.Move([]uint32{2}, "Dest")
	must(t, err)
	if !slices.Equal(res.SrcUIDs, []uint32{2}) || !slices.Equal(res.DstUIDs, []uint32{4}) {
		t.Errorf("MOVE COPYUID %+v", res)
	}
	src := mustSync(t, v)
	if !slices.Equal(uidsOf(src), []uint32{1, 3}) {
		t.Errorf("INBOX after MOVE: %v", uidsOf(src))
	}
	if u, _ := v.Vanished(before.HighestModSeq); !slices.Equal(u, []uint32{2}) {
		t.Errorf("Vanished after MOVE: %v", u)
	}
	snap = mustSync(t, dv)
	if flagsOf(snap, 4) != `\Seen work` || len(snap.Msgs) != 4 {
		t.Errorf("Dest after MOVE: %v %q", uidsOf(snap), flagsOf(snap, 4))
	}
	// Copy to the same folder, MOVE back: new UIDs each time, never old ones.
	res, err = v.Copy([]uint32{1}, "INBOX")
	must(t, err)
	if !slices.Equal(res.DstUIDs, []uint32{4}) {
		t.Errorf("copy to self: %+v", res)
	}
	dw, err := s.Select("Dest", false)
	must(t, err)
	defer dw.Close()
	mustSync(t, dw)
	res, err = dw.Move([]uint32{4}, "INBOX")
	must(t, err)
	if !slices.Equal(res.DstUIDs, []uint32{5}) {
		t.Errorf("move back: %+v", res)
	}
	if got := uidsOf(mustSync(t, v)); !slices.Equal(got, []uint32{1, 3, 4, 5}) {
		t.Errorf("INBOX: %v", got)
	}
	// Errors.
	if _, err := v.Copy([]uint32{1}, "Nope"); !errors.Is(err, ErrNoMailbox) {
		t.Errorf("COPY to a missing folder: %v", err)
	}
	if _, err := v.Move([]uint32{1}, "a..b"); !errors.Is(err, ErrBadName) {
		t.Errorf("MOVE to a bad name: %v", err)
	}
	if _, err := dv.Move([]uint32{1}, "INBOX"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("MOVE from EXAMINE: %v", err)
	}
	if res, err := dv.Copy([]uint32{1}, "INBOX"); err != nil || len(res.DstUIDs) != 1 {
		t.Errorf("COPY from EXAMINE: %+v %v", res, err)
	}
}

// TestCopyExpungedMeanwhile: a message whose file another program removed
// makes COPY fail with ErrExpunged and copy nothing; MOVE moves the rest.
func TestCopyExpungedMeanwhile(t *testing.T) {
	s, root := testStore(t)
	must(t, s.Create("Dest", ""))
	deliver(t, root, 1)
	deliver(t, root, 2)
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	mustSync(t, v)
	// Removed after COPY found its file, before the copy was made.
	v.f.mu.Lock()
	m2 := v.f.msgPath(&v.f.s.msgs[1])
	v.f.mu.Unlock()
	testHookTransfer = func() { os.Remove(m2) }
	defer func() { testHookTransfer = nil }()
	if _, err := v.Copy([]uint32{1, 2}, "Dest"); !errors.Is(err, ErrExpunged) {
		t.Errorf("COPY: %v", err)
	}
	if st, _ := s.Status("Dest"); st.Messages != 0 {
		t.Errorf("a failed COPY left %d messages", st.Messages)
	}
	testHookTransfer = nil
	mustSync(t, v)
	deliver(t, root, 3)
	mustSync(t, v)
	v.f.mu.Lock()
	m3 := v.f.msgPath(&v.f.s.msgs[1])
	v.f.mu.Unlock()
	testHookTransfer = func() { os.Remove(m3) }
	res, err := v.Move([]uint32{1, 3}, "Dest")
	must(t, err)
	if !slices.Equal(res.SrcUIDs, []uint32{1}) {
		t.Errorf("MOVE: %+v", res)
	}
}

// TestTwoViews: two sessions on one folder with deliveries in between:
// each sees new messages, the other's flag changes (with a higher MODSEQ)
// and expunges, and its Watch wakes for each.
func TestTwoViews(t *testing.T) {
	s, root := testStore(t)
	a, err := s.Select("INBOX", false)
	must(t, err)
	defer a.Close()
	b, err := s.Select("INBOX", false)
	must(t, err)
	defer b.Close()
	wb, stop := b.Watch()
	defer stop()
	drain := func() {
		select {
		case <-wb:
		default:
		}
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-wb:
		case <-time.After(10 * time.Second):
			t.Fatalf("watch did not wake for %s", what)
		}
	}
	for round := 1; round <= 3; round++ {
		drain()
		deliver(t, root, round)
		wait("a delivery")
		sa, sb := mustSync(t, a), mustSync(t, b)
		if len(sa.Msgs) != round || len(sb.Msgs) != round {
			t.Fatalf("round %d: a sees %d, b %d", round, len(sa.Msgs), len(sb.Msgs))
		}
		uid := sa.Msgs[round-1].UID
		drain()
		changed, _, err := a.Store([]uint32{uid}, StoreAdd, []string{`\Seen`}, 0)
		must(t, err)
		wait("a flag change")
		sb2 := mustSync(t, b)
		if flagsOf(sb2, uid) != `\Seen` || msgOf(sb2, uid).ModSeq != changed[0].ModSeq || sb2.HighestModSeq < changed[0].ModSeq {
			t.Errorf("round %d: b sees %q MODSEQ %d, a set %d", round, flagsOf(sb2, uid), msgOf(sb2, uid).ModSeq, changed[0].ModSeq)
		}
	}
	drain()
	_, _, err = b.Store([]uint32{2}, StoreAdd, []string{`\Deleted`}, 0)
	must(t, err)
	_, err = b.Expunge(nil)
	must(t, err)
	wait("an expunge")
	if got := uidsOf(mustSync(t, a)); !slices.Equal(got, []uint32{1, 3}) {
		t.Errorf("a after b's expunge: %v", got)
	}
	// Another program renames a file (flags) and removes one.
	drain()
	p := pathOf(a, 1)
	three := pathOf(a, 3)
	must(t, os.Rename(p, strings.TrimSuffix(p, "S")+"FS"))
	wait("a rename by another program")
	sa := mustSync(t, a)
	if flagsOf(sa, 1) != `\Flagged \Seen` {
		t.Errorf("a sees %q", flagsOf(sa, 1))
	}
	drain()
	must(t, os.Remove(three))
	wait("a removal by another program")
	sb := mustSync(t, b)
	if !slices.Equal(uidsOf(sb), []uint32{1}) {
		t.Errorf("b after a removal: %v", uidsOf(sb))
	}
	if u, exact := b.Vanished(sa.HighestModSeq); !exact || !slices.Equal(u, []uint32{3}) {
		t.Errorf("Vanished: %v %v", u, exact)
	}
}

// TestWatchPoll: with inotify unable to see a change (here: not watching
// at all), PollInterval still wakes the watcher.
func TestWatchPoll(t *testing.T) {
	root := filepath.Join(t.TempDir(), "Maildir")
	s, err := Open(Options{Root: root, PollInterval: 50 * time.Millisecond})
	must(t, err)
	defer s.Close()
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	// Directories changed long ago: only the delivery can wake the poller
	// (TestWatchPollUnsettled covers directories changed just now).
	setDirTimes(t, root, time.Now().Add(-time.Hour))
	c, stop := v.Watch()
	defer stop()
	unwatchDirs(v.f) // as if inotify could not see other hosts' writes
	select {
	case <-c:
	default:
	}
	deliver(t, root, 1)
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatal("poll did not wake the watcher")
	}
	stop()
	stop()
}

// TestWatchPollUnsettled: when new/ or cur/ had changed within a clock
// tick of the poller's look, a later delivery could leave them with the
// same (inode, size, mtime); the poller then wakes the watchers at its
// next look without waiting for a difference. An mtime in the future
// (a server's clock ahead of ours) is never settled.
func TestWatchPollUnsettled(t *testing.T) {
	root := filepath.Join(t.TempDir(), "Maildir")
	s, err := Open(Options{Root: root, PollInterval: 50 * time.Millisecond})
	must(t, err)
	defer s.Close()
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	setDirTimes(t, root, time.Now().Add(time.Hour))
	c, stop := v.Watch()
	defer stop()
	unwatchDirs(v.f)
	select {
	case <-c:
	default:
	}
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatal("an unsettled look did not make the next poll wake the watcher")
	}
}

func setDirTimes(t *testing.T, root string, when time.Time) {
	t.Helper()
	for _, sub := range []string{"new", "cur"} {
		must(t, os.Chtimes(filepath.Join(root, sub), when, when))
	}
}

// TestWatchPollsOnNFS: without PollInterval, a folder on NFS is polled
// anyway (every nfsPoll), since inotify cannot see other hosts' writes.
func TestWatchPollsOnNFS(t *testing.T) {
	defer func(f func(string) bool, d time.Duration) { onNFS, nfsPoll = f, d }(onNFS, nfsPoll)
	onNFS = func(string) bool { return true }
	nfsPoll = 50 * time.Millisecond
	root := filepath.Join(t.TempDir(), "Maildir")
	s, err := Open(Options{Root: root})
	must(t, err)
	defer s.Close()
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	setDirTimes(t, root, time.Now().Add(-time.Hour)) // only the delivery wakes it
	c, stop := v.Watch()
	defer stop()
	unwatchDirs(v.f) // inotify sees nothing of other hosts' writes
	select {
	case <-c:
	default:
	}
	deliver(t, root, 1)
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatal("a folder on NFS was not polled")
	}
}

// TestAppendConcurrent: many goroutines appending at once get unique,
// increasing UIDs, and every message is there with the UID it was told.
func TestAppendConcurrent(t *testing.T) {
	s, _ := testStore(t)
	const workers, each = 8, 25
	var mu sync.Mutex
	got := map[uint32]string{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var last uint32
			for i := 0; i < each; i++ {
				body := fmt.Sprintf("w%d i%d\n", w, i)
				r, err := s.Append("INBOX", nil, time.Time{}, strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				if r.UID <= last {
					t.Errorf("worker %d: UID %d after %d", w, r.UID, last)
				}
				last = r.UID
				mu.Lock()
				if prev, dup := got[r.UID]; dup {
					t.Errorf("UID %d given twice (%q, %q)", r.UID, prev, body)
				}
				got[r.UID] = body
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	v, err := s.Select("INBOX", true)
	must(t, err)
	defer v.Close()
	snap := mustSync(t, v)
	if len(snap.Msgs) != workers*each {
		t.Fatalf("%d messages, want %d", len(snap.Msgs), workers*each)
	}
	for _, m := range snap.Msgs {
		r, err := v.Open(m.UID)
		must(t, err)
		b, _ := io.ReadAll(r)
		r.Close()
		if string(b) != got[m.UID] {
			t.Errorf("UID %d holds %q, APPEND said %q", m.UID, b, got[m.UID])
		}
	}
}

// TestBulkNewMovedLater: a SELECT finding many messages in new/ answers
// with their UIDs at once and takes them into cur/ afterwards, a chunk at
// a time; nothing about them changes for the sessions (UIDs, MODSEQs).
func TestBulkNewMovedLater(t *testing.T) {
	s, root := testStore(t)
	n := bulkNew + 600
	for i := 0; i < n; i++ {
		must(t, os.WriteFile(filepath.Join(root, "new", fmt.Sprintf("1700000000.M%dP1.bulk", i)), []byte("Subject: x\n\n"), 0o600))
	}
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	first := mustSync(t, v)
	if len(first.Msgs) != n {
		t.Fatalf("%d messages, want %d", len(first.Msgs), n)
	}
	waitFor(t, "new/ to be emptied", func() bool {
		ents, _ := os.ReadDir(filepath.Join(root, "new"))
		return len(ents) == 0
	})
	waitFor(t, "the mover to finish", func() bool {
		v.f.mu.Lock()
		defer v.f.mu.Unlock()
		return !v.f.moving
	})
	after := mustSync(t, v)
	if ents, _ := os.ReadDir(filepath.Join(root, "cur")); len(ents) != n {
		t.Errorf("cur/ has %d files, want %d", len(ents), n)
	}
	if after.HighestModSeq != first.HighestModSeq || !slices.Equal(uidsOf(after), uidsOf(first)) {
		t.Errorf("moving changed the folder: HIGHESTMODSEQ %d → %d", first.HighestModSeq, after.HighestModSeq)
	}
	for i, m := range after.Msgs {
		if m.ModSeq != first.Msgs[i].ModSeq || !m.Recent {
			t.Fatalf("UID %d: MODSEQ %d → %d, recent %v", m.UID, first.Msgs[i].ModSeq, m.ModSeq, m.Recent)
		}
	}
	r, err := v.Open(after.Msgs[n-1].UID)
	must(t, err)
	r.Close()
}

// TestCloseFinishesBulkNew: a store closed while its mover still takes a
// large new/ into cur/ lets it finish first, so a session's end (an
// inetd-started imapd's exit) does not leave the rest, and a rescan of
// the whole folder for each share, to the sessions after it.
func TestCloseFinishesBulkNew(t *testing.T) {
	s, root := testStore(t)
	n := bulkNew + 3000
	for i := 0; i < n; i++ {
		must(t, os.WriteFile(filepath.Join(root, "new", fmt.Sprintf("1700000000.M%dP1.bulk", i)), []byte("Subject: x\n\n"), 0o600))
	}
	v, err := s.Select("INBOX", false)
	must(t, err)
	if snap := mustSync(t, v); len(snap.Msgs) != n {
		t.Fatalf("%d messages, want %d", len(snap.Msgs), n)
	}
	must(t, v.Close())
	must(t, s.Close())
	if ents, _ := os.ReadDir(filepath.Join(root, "new")); len(ents) != 0 {
		t.Fatalf("Close returned with %d files still in new/", len(ents))
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "cur")); len(ents) != n {
		t.Fatalf("cur/ has %d files, want %d", len(ents), n)
	}
}
