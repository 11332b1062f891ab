package mailstore

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
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

// TestCacheNamesLazy: a process that finds the cache up to date reads
// its records, not the file names (SELECT and flags need none); the names
// are read when a body is opened, flags change or messages are expunged,
// and names damaged in the file are a damaged cache found then: rebuilt,
// with the right bodies, the same UIDs and flags, MODSEQs above the old.
func TestCacheNamesLazy(t *testing.T) {
	for _, damaged := range []bool{false, true} {
		t.Run(map[bool]string{false: "intact", true: "names damaged"}[damaged], func(t *testing.T) {
			_, root := testStore(t)
			for i := 1; i <= 3; i++ {
				deliver(t, root, i)
			}
			p1 := openAlone(t, root, nil)
			v1, err := p1.Select("INBOX", false)
			must(t, err)
			_, _, err = v1.Store([]uint32{2}, StoreAdd, []string{`\Seen`}, 0)
			must(t, err)
			v1.Close()
			settleDirs(t, root)
			p2 := openAlone(t, root, nil) // records the settled directories
			v2, err := p2.Select("INBOX", false)
			must(t, err)
			want := mustSync(t, v2)
			v2.Close()
			if damaged {
				p := filepath.Join(root, cacheName)
				must(t, os.WriteFile(p, []byte(flipAt(readFile(t, p), len(readFile(t, p))-3)), 0o600))
			}
			log := &logBuf{}
			p3 := openAlone(t, root, log)
			v3, err := p3.Select("INBOX", false)
			must(t, err)
			defer v3.Close()
			got := mustSync(t, v3)
			if v3.f.s.names.len == 0 || v3.f.s.msgs[0].name != "" || v3.f.rescans != 0 {
				t.Errorf("SELECT read the names (%d octets left, %q) or the directories (%d)", v3.f.s.names.len, v3.f.s.msgs[0].name, v3.f.rescans)
			}
			if !slices.Equal(uidsOf(got), []uint32{1, 2, 3}) || strings.Join(got.Msgs[1].Flags, " ") != `\Seen` {
				t.Fatalf("from the records: %+v", got)
			}
			for i := uint32(1); i <= 3; i++ {
				r, err := v3.Open(i)
				must(t, err)
				b, _ := io.ReadAll(r)
				r.Close()
				if want := fmt.Sprintf("Subject: m%d\n\nbody %d\n", i, i); string(b) != want {
					t.Errorf("UID %d: %q, want %q", i, b, want)
				}
			}
			if v3.f.s.names.len != 0 {
				t.Error("names still not read after Open")
			}
			after := mustSync(t, v3)
			if !slices.Equal(uidsOf(after), []uint32{1, 2, 3}) || strings.Join(after.Msgs[1].Flags, " ") != `\Seen` || after.UIDValidity != want.UIDValidity {
				t.Errorf("after the names: %+v", after)
			}
			if rebuilt := strings.Contains(log.String(), "cache rebuilt"); rebuilt != damaged {
				t.Errorf("rebuilt %v, damaged %v:\n%s", rebuilt, damaged, log)
			}
			if damaged && after.HighestModSeq <= want.HighestModSeq {
				t.Errorf("MODSEQ %d after the rebuild, %d before", after.HighestModSeq, want.HighestModSeq)
			}
			if !damaged && after.HighestModSeq != want.HighestModSeq {
				t.Errorf("MODSEQ %d after reading the names, %d before", after.HighestModSeq, want.HighestModSeq)
			}
			// Flags and expunges work on the names read.
			_, _, err = v3.Store([]uint32{3}, StoreAdd, []string{`\Deleted`}, 0)
			must(t, err)
			gone, err := v3.Expunge(nil)
			must(t, err)
			if !slices.Equal(gone, []uint32{3}) {
				t.Errorf("expunged %v", gone)
			}
			if _, err := os.Stat(pathOf(v3, 1)); err != nil {
				t.Errorf("UID 1: %v", err)
			}
			if b, _, _ := readCacheFile(root); b == nil {
				t.Error("no cache")
			} else if _, err := parseCache(b); err != nil {
				t.Errorf("cache after: %v", err)
			}
		})
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
		{"records bit flip", func(s string) string { return flipAt(s, strings.Index(s, "head ")+30) }},
		{"names bit flip", func(s string) string { return flipAt(s, len(s)-3) }},
		{"other version", func(s string) string { return strings.Replace(s, cacheMagic, "letterbox-imap-cache 0", 1) }},
		// A file of format 1 (text lines with the names), from before an upgrade.
		{"version 1", func(string) string { return readFile(t, "testdata/cache/bad-version-1") }},
		// Format 2 (every date read at SELECT), from before an upgrade.
		{"version 2", func(string) string { return readFile(t, "testdata/cache/bad-version-2") }},
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

// flipAt flips the lowest bit of s[i].
func flipAt(s string, i int) string {
	b := []byte(s)
	b[i] ^= 1
	return string(b)
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

// TestCacheRecords: the binary records and the names read back as
// written, at the limits of each field, and a file whose CRCs match but
// whose records or names break the rules is refused (formatCache writes
// whatever it is given).
func TestCacheRecords(t *testing.T) {
	name := "1700000000.M1P2.host,S=5,W=6:2,Sa"
	valid := func() cacheState {
		s := cacheState{uidValidity: 7, uidNext: 1<<32 - 1, highest: 1<<63 - 1, recentFrom: 3}
		s.kw[0] = "$Label1"
		for i, m := range []msg{
			{uid: 1, modseq: 2, size: 3, date: 4},
			{uid: 2, modseq: 2, size: 0, date: dateUnknown}, // not read yet
			{uid: 1<<32 - 2, modseq: 1<<63 - 1, size: 1 << 40, date: 1<<63 - 1, inNew: true},
		} {
			m.setName(name)
			if i == 2 {
				m.setName("1700000001.M1P2.host")
			}
			s.msgs = append(s.msgs, m)
		}
		s.expunged = []expRange{{lo: 5, hi: 9, modseq: 1}}
		s.counts = countsOf(s.msgs, s.recentFrom)
		return s
	}
	s := valid()
	got, err := parseCache(formatCache(&s))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("read back:\n%+v\nwant\n%+v", got, s)
	}
	if m := got.msgs[0]; !m.has('S') || !m.has('a') || m.has('T') || m.letters() != "Sa" {
		t.Errorf("letters of %q: mask %x", m.name, m.mask)
	}
	// Without its names (SELECT's read), then the names alone.
	b := formatCache(&s)
	names := len(s.msgs[0].name) + len(s.msgs[1].name) + len(s.msgs[2].name) + 3
	recs, err := parseCacheRecords(b[:len(b)-names], int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	off := int(recs.names.off)
	if recs.msgs[0].name != "" || recs.names.len == 0 || recs.counts != s.counts {
		t.Errorf("records alone: %+v", recs)
	}
	if err := parseNames(&recs, b[recs.names.off:]); err != nil || !reflect.DeepEqual(recs, s) {
		t.Errorf("names: %v\n%+v", err, recs)
	}
	for _, c := range []struct {
		what   string
		change func(*cacheState)
	}{
		{"UID 0", func(s *cacheState) { s.msgs[0].uid = 0 }},
		{"UIDs not ascending", func(s *cacheState) { s.msgs[2].uid = 1 }},
		{"UID at UIDNEXT", func(s *cacheState) { s.msgs[2].uid = s.uidNext }},
		{"MODSEQ above the highest", func(s *cacheState) { s.highest = 5 }},
		{"negative size", func(s *cacheState) { s.msgs[0].size = -1 }},
		{"date below dateUnknown", func(s *cacheState) { s.msgs[0].date = dateUnknown - 1 }},
		{"mask beyond the letters", func(s *cacheState) { s.msgs[0].mask |= 1 << 60 }},
		{"mask not the name's", func(s *cacheState) { s.msgs[0].mask = letterMask("S") }},
		{"hidden name", func(s *cacheState) { s.msgs[0].name = ".hidden" }},
		{"name with a slash", func(s *cacheState) { s.msgs[0].name = "a/b" }},
		{"name with NUL", func(s *cacheState) { s.msgs[0].name = "a\x00b" }},
		{"empty name", func(s *cacheState) { s.msgs[0].name, s.msgs[0].mask = "", 0 }},
		{"name with a newline", func(s *cacheState) { s.msgs[0].name = "a\nb" }},
		{"expunge of UID 0", func(s *cacheState) { s.expunged[0].lo = 0 }},
		{"expunge range backwards", func(s *cacheState) { s.expunged[0].lo = 10 }},
		{"expunge at UIDNEXT", func(s *cacheState) { s.expunged[0].hi = s.uidNext }},
		{"expunges out of MODSEQ order", func(s *cacheState) {
			s.expunged = append(s.expunged, expRange{lo: 11, hi: 11, modseq: 0})
		}},
	} {
		s := valid()
		c.change(&s)
		s.counts = countsOf(s.msgs, s.recentFrom)
		if c.what == "MODSEQ above the highest" {
			s.expunged = nil
		}
		if _, err := parseCache(formatCache(&s)); err == nil {
			t.Errorf("%s: accepted", c.what)
		}
	}
	// A bit flipped in the records or the names, or a length that does
	// not add up, fails a CRC or the size check.
	good := formatCache(&s)
	for _, at := range []int{len(good) - 3, off - 10, off - 2} {
		bad := []byte(string(good))
		bad[at] ^= 1
		if _, err := parseCache(bad); err == nil {
			t.Errorf("bit flipped at %d of %d: accepted", at, len(good))
		}
	}
	if _, err := parseCache(append([]byte(string(good)), 'x')); err == nil {
		t.Error("an octet too many: accepted")
	}
}
