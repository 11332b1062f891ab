package mailstore

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCacheUsed: a new process opening a folder nobody changed reads the
// cache, not the directories, and finds the same MODSEQs, sizes, dates
// and \Recent state.
func TestCacheUsed(t *testing.T) {
	_, root := testStore(t)
	for i := 1; i <= 3; i++ {
		deliver(t, root, i)
	}
	log := &logBuf{}
	p1 := openAlone(t, root, log)
	v1, err := p1.Select("INBOX", false)
	must(t, err)
	_, _, err = v1.Store([]uint32{2}, StoreAdd, []string{`\Seen`}, 0)
	must(t, err)
	want := mustSync(t, v1)
	v1.Close()
	settleDirs(t, root)
	p2 := openAlone(t, root, log) // records the settled directories
	v2, err := p2.Select("INBOX", false)
	must(t, err)
	v2.Close()
	p3 := openAlone(t, root, log)
	v3, err := p3.Select("INBOX", false)
	must(t, err)
	defer v3.Close()
	got := mustSync(t, v3)
	if v3.f.rescans != 0 {
		t.Errorf("a third process read the directories %d times", v3.f.rescans)
	}
	if got.HighestModSeq != want.HighestModSeq || got.UIDValidity != want.UIDValidity || got.UIDNext != want.UIDNext || len(got.Msgs) != 3 {
		t.Fatalf("from the cache: %+v\nwant %+v", got, want)
	}
	for i, m := range got.Msgs {
		w := want.Msgs[i]
		if m.UID != w.UID || m.ModSeq != w.ModSeq || m.Size != w.Size || !m.InternalDate.Equal(w.InternalDate) || strings.Join(m.Flags, " ") != strings.Join(w.Flags, " ") || m.Recent {
			t.Errorf("from the cache: %+v, want %+v (not \\Recent: taken by the first)", m, w)
		}
	}
	if strings.Contains(log.String(), "level=WARN") {
		t.Errorf("warnings:\n%s", log)
	}
}

// settleDirs dates new/ and cur/ a minute back, as directories nobody
// changed lately.
func settleDirs(t testing.TB, root string) {
	old := time.Now().Add(-time.Minute)
	for _, sub := range []string{"cur", "new"} {
		must(t, os.Chtimes(filepath.Join(root, sub), old, old))
	}
}

// TestCacheDamaged: a cache that is truncated, damaged, of another
// version or for another UIDVALIDITY is rebuilt from the Maildir; the
// MODSEQs after a rebuild are above any given before, and VANISHED from
// before is inexact.
func TestCacheDamaged(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(string) string
	}{
		{"truncated", func(s string) string { return s[:len(s)/2] }},
		{"bit flip", func(s string) string { return strings.Replace(s, "m 2 ", "m 9 ", 1) }},
		{"other version", func(s string) string { return strings.Replace(s, cacheMagic, "letterbox-imap-cache 0", 1) }},
		{"empty", func(string) string { return "" }},
		{"garbage", func(string) string { return "\x00\xff\n\nend 0\n" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, root := testStore(t)
			deliver(t, root, 1)
			deliver(t, root, 2)
			p1 := openAlone(t, root, nil)
			v1, err := p1.Select("INBOX", false)
			must(t, err)
			_, _, err = v1.Store([]uint32{1}, StoreAdd, []string{`\Deleted`}, 0)
			must(t, err)
			_, err = v1.Expunge(nil)
			must(t, err)
			before := mustSync(t, v1)
			v1.Close()
			p := filepath.Join(root, cacheName)
			must(t, os.WriteFile(p, []byte(c.damage(readFile(t, p))), 0o600))
			log := &logBuf{}
			p2 := openAlone(t, root, log)
			v2, err := p2.Select("INBOX", false)
			must(t, err)
			defer v2.Close()
			after := mustSync(t, v2)
			if !slices.Equal(uidsOf(after), []uint32{2}) || after.UIDValidity != before.UIDValidity || after.UIDNext != 3 {
				t.Errorf("after rebuild: %v %+v", uidsOf(after), after)
			}
			if after.HighestModSeq <= before.HighestModSeq || after.Msgs[0].ModSeq <= before.HighestModSeq {
				t.Errorf("MODSEQ %d after rebuild, %d before", after.HighestModSeq, before.HighestModSeq)
			}
			if _, exact := v2.Vanished(before.HighestModSeq - 1); exact {
				t.Error("Vanished from before the rebuild says exact")
			}
			if b, _, _ := readCacheFile(root); b == nil {
				t.Error("no cache written")
			} else if _, err := parseCache(b); err != nil {
				t.Errorf("rebuilt cache: %v", err)
			}
			if c.name != "empty" && !strings.Contains(log.String(), "cache rebuilt") {
				t.Errorf("no log line for the rebuild:\n%s", log)
			}
		})
	}
}

// TestProcesses: two processes (states of their own) on one folder: each
// sees the other's changes with the same MODSEQs, \Recent is taken once,
// and VANISHED knows the other's expunges.
func TestProcesses(t *testing.T) {
	_, root := testStore(t)
	deliver(t, root, 1)
	a := openAlone(t, root, nil)
	b := openAlone(t, root, nil)
	va, err := a.Select("INBOX", false)
	must(t, err)
	defer va.Close()
	vb, err := b.Select("INBOX", false)
	must(t, err)
	defer vb.Close()
	sa, sb := mustSync(t, va), mustSync(t, vb)
	if !sa.Msgs[0].Recent || sb.Msgs[0].Recent {
		t.Errorf("\\Recent: a %v, b %v", sa.Msgs[0].Recent, sb.Msgs[0].Recent)
	}
	deliver(t, root, 2)
	changed, _, err := va.Store([]uint32{1}, StoreAdd, []string{`\Answered`}, 0)
	must(t, err)
	sb = mustSync(t, vb)
	sa = mustSync(t, va)
	if len(sb.Msgs) != 2 || flagsOf(sb, 1) != `\Answered` || msgOf(sb, 1).ModSeq != changed[0].ModSeq {
		t.Errorf("b sees %+v; a set MODSEQ %d", sb.Msgs, changed[0].ModSeq)
	}
	if msgOf(sa, 2).ModSeq != msgOf(sb, 2).ModSeq || sa.HighestModSeq != sb.HighestModSeq {
		t.Errorf("MODSEQs differ: a %+v b %+v", sa, sb)
	}
	if !msgOf(sb, 2).Recent || msgOf(sa, 2).Recent {
		t.Errorf("\\Recent of 2: a %v, b %v (b looked first)", msgOf(sa, 2).Recent, msgOf(sb, 2).Recent)
	}
	_, _, err = vb.Store([]uint32{2}, StoreAdd, []string{`\Deleted`}, 0)
	must(t, err)
	_, err = vb.Expunge(nil)
	must(t, err)
	sa2 := mustSync(t, va)
	if !slices.Equal(uidsOf(sa2), []uint32{1}) {
		t.Errorf("a after b's expunge: %v", uidsOf(sa2))
	}
	if u, exact := va.Vanished(sa.HighestModSeq); !exact || !slices.Equal(u, []uint32{2}) {
		t.Errorf("a's Vanished: %v %v", u, exact)
	}
}

// TestExternalChanges: what other programs do to the files. A message
// that comes back after its expunge gets a new UID; UIDs Dovecot gave are
// kept; a deleted uidlist is made again from the cache with the same
// UIDs; a uidlist with another UIDVALIDITY renumbers everything.
func TestExternalChanges(t *testing.T) {
	s, root := testStore(t)
	p1 := deliver(t, root, 1)
	deliver(t, root, 2)
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	snap := mustSync(t, v)
	ents, _ := os.ReadDir(filepath.Join(root, "cur"))
	var one string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), filepath.Base(p1)) {
			one = filepath.Join(root, "cur", e.Name())
		}
	}
	content := readFile(t, one)
	// Expunged by another program, then back (a restore).
	must(t, os.Remove(one))
	mid := mustSync(t, v)
	must(t, os.WriteFile(one, []byte(content), 0o600))
	back := mustSync(t, v)
	if !slices.Equal(uidsOf(mid), []uint32{2}) || !slices.Equal(uidsOf(back), []uint32{2, 3}) {
		t.Errorf("gone %v, back %v (want a new UID)", uidsOf(mid), uidsOf(back))
	}
	// The uidlist deleted: made again with the same UIDs and UIDVALIDITY.
	must(t, os.Remove(filepath.Join(root, uidlistName)))
	again := mustSync(t, v)
	if !slices.Equal(uidsOf(again), []uint32{2, 3}) || again.UIDValidity != snap.UIDValidity || again.UIDNext != 4 {
		t.Errorf("uidlist remade: %v %+v", uidsOf(again), again)
	}
	ul := readFile(t, filepath.Join(root, uidlistName))
	if !strings.HasPrefix(ul, "3 V") || strings.Count(ul, "\n") != 3 {
		t.Errorf("uidlist:\n%s", ul)
	}
	// Another program gives UIDs (Dovecot numbering a delivery): kept.
	// (Its W extension gives the size: the name has no ,W=.)
	key := "1700000000.M1P1.dovecot"
	must(t, os.WriteFile(filepath.Join(root, "new", key), []byte("Subject: 3\n\n"), 0o600))
	ul = readFile(t, filepath.Join(root, uidlistName))
	must(t, os.WriteFile(filepath.Join(root, uidlistName), []byte(ul+"7 W99 :"+key+"\n"), 0o600))
	snap = mustSync(t, v)
	if !slices.Equal(uidsOf(snap), []uint32{2, 3, 7}) || snap.UIDNext != 8 || msgOf(snap, 7).Size != 99 {
		t.Errorf("after Dovecot's numbering: %v UIDNEXT %d size %d", uidsOf(snap), snap.UIDNext, msgOf(snap, 7).Size)
	}
	// Another UIDVALIDITY: everything renumbered from the new uidlist.
	must(t, os.WriteFile(filepath.Join(root, uidlistName), []byte("3 V12345 N1\n"), 0o600))
	snap = mustSync(t, v)
	if snap.UIDValidity != 12345 || !slices.Equal(uidsOf(snap), []uint32{1, 2, 3}) {
		t.Errorf("after a new UIDVALIDITY: %d %v", snap.UIDValidity, uidsOf(snap))
	}
}

// TestUnreadableUIDList: a uidlist whose header we cannot read is left
// alone (rewriting it would lose Dovecot's UIDs): the folder fails.
func TestUnreadableUIDList(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	must(t, os.WriteFile(filepath.Join(root, uidlistName), []byte("4 V1 N2\n1 :x\n"), 0o600))
	if _, err := s.Select("INBOX", false); err == nil {
		t.Error("SELECT with an unreadable uidlist succeeded")
	}
	if got := readFile(t, filepath.Join(root, uidlistName)); got != "4 V1 N2\n1 :x\n" {
		t.Errorf("uidlist changed to %q", got)
	}
}

// TestStatusFromHeader: STATUS of a folder this process does not hold, in
// a Maildir unchanged since the cache was written, reads the cache's
// header only, and says what a full look says; after a change it looks.
func TestStatusFromHeader(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	_, err := s.Append("INBOX", []string{`\Seen`, `\Deleted`}, time.Time{}, stringsReader("ab\n"))
	must(t, err)
	full, err := s.Status("INBOX")
	must(t, err)
	settleDirs(t, root)
	_, err = openAlone(t, root, nil).Status("INBOX") // records the settled directories
	must(t, err)
	p := openAlone(t, root, nil)
	st, err := p.Status("INBOX")
	must(t, err)
	if f := p.acc.folder("INBOX"); f.loaded || f.rescans != 0 {
		t.Errorf("STATUS loaded the folder (rescans %d)", f.rescans)
	}
	if st != full {
		t.Errorf("from the header %+v, full %+v", st, full)
	}
	deliver(t, root, 3)
	st, err = p.Status("INBOX")
	must(t, err)
	if st.Messages != 3 || st.UIDNext != 4 || st.Recent != 3 {
		t.Errorf("after a delivery: %+v", st)
	}
}

// TestSettled: which directory mtimes the state may be trusted with.
func TestSettled(t *testing.T) {
	now := time.Now().UnixNano()
	sec := now - now%int64(time.Second)
	for _, c := range []struct {
		mtime int64
		want  bool
	}{
		{0, false},
		{now - int64(100*time.Millisecond), false}, // within a clock tick's reach
		{now - int64(300*time.Millisecond) + 1, true},
		{sec - int64(time.Second), false}, // whole seconds: the file system may be coarse
		{sec - int64(3*time.Second), true},
	} {
		if got := settled(c.mtime, now); got != c.want {
			t.Errorf("settled(now-%v) = %v", time.Duration(now-c.mtime), got)
		}
	}
}

// TestParseMsgLine: the in-place number reader takes what strconv took
// for the cache's own lines, and refuses what does not fit the field.
func TestParseMsgLine(t *testing.T) {
	name := "1700000000.M1P2.host,S=5,W=6:2,S"
	good := []struct {
		line string
		want msg
	}{
		{"1 2 3 4 c " + name, msg{uid: 1, modseq: 2, size: 3, date: 4, name: name}},
		{"4294967295 9223372036854775807 0 0 n " + name, msg{uid: 1<<32 - 1, modseq: 1<<63 - 1, name: name, inNew: true}},
		{"007 1 1 1 c " + name, msg{uid: 7, modseq: 1, size: 1, date: 1, name: name}},
	}
	for _, g := range good {
		m, ok := parseMsgLine(g.line)
		if !ok || m != g.want {
			t.Errorf("parseMsgLine(%q) = %+v, %v; want %+v", g.line, m, ok, g.want)
		}
	}
	for _, bad := range []string{
		"0 1 1 1 c " + name,          // UID 0
		"4294967296 1 1 1 c " + name, // UID above 32 bits
		"1 9223372036854775808 1 1 c " + name,
		"1 18446744073709551616 1 1 c " + name, // overflows 64 bits
		"+1 1 1 1 c " + name,
		"1 -1 1 1 c " + name,
		"1  1 1 1 c " + name,
		"1 1 1 1 x " + name,
		"1 1 1 1 c",
		"1 1 1 1 c ",
		"1 1 1 1 c .hidden",
		"1 1 1 1 c a/b",
		"1 1 1 1 c a\x00b",
		"1 1 1 1",
		"",
	} {
		if m, ok := parseMsgLine(bad); ok {
			t.Errorf("parseMsgLine(%q) = %+v, want refused", bad, m)
		}
	}
}
