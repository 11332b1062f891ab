package spool

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestScanKnown: ScanKnown finds what Scan finds, with the same due times,
// stats only what its callback does not know, and skips foreign names.
func TestScanKnown(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	// More than one getdents buffer's worth would need ~5,000 entries;
	// 600 still cross the parallel-stat threshold.
	for i := 0; i < 600; i++ {
		env := &Envelope{From: "a@example.test", Arrived: time.Unix(int64(1700000000+i), 0),
			Recipients: []*Recipient{{Address: "b@example.test", State: Pending}}}
		if _, err := s.Submit(env, strings.NewReader("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(s.Dir, "env", "not-an-id"), nil, 0o600)
	os.WriteFile(filepath.Join(s.Dir, "env", ".hidden"), nil, 0o600)
	want, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	got, stats, err := s.ScanKnown(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || stats != len(want) {
		t.Fatalf("ScanKnown: %d entries, %d stats; Scan: %d", len(got), stats, len(want))
	}
	byID := map[string]Stamp{}
	for _, e := range got {
		if e.Ino == 0 {
			t.Fatalf("%s: no inode", e.ID)
		}
		byID[e.ID] = e
	}
	for _, e := range want {
		g, ok := byID[e.ID]
		if !ok || !g.Due.Equal(e.Due) {
			t.Fatalf("%s: ScanKnown %v, Scan %v", e.ID, g.Due, e.Due)
		}
		var st os.FileInfo
		if st, err = os.Stat(filepath.Join(s.Dir, "env", e.ID)); err != nil {
			t.Fatal(err)
		}
		if ino := fileIno(st); ino != g.Ino {
			t.Fatalf("%s: readdir inode %d, stat inode %d", e.ID, g.Ino, ino)
		}
	}
	// Known entries are not stat'ed; their due time is the callback's.
	fake := time.Unix(42, 0)
	known := func(id string, ino uint64) (time.Time, bool) {
		if byID[id].Ino == ino && id < want[300].ID {
			return fake, true
		}
		return time.Time{}, false
	}
	got, stats, err = s.ScanKnown(known)
	if err != nil {
		t.Fatal(err)
	}
	if stats != 300 || len(got) != 600 {
		t.Fatalf("%d stats, %d entries; want 300, 600", stats, len(got))
	}
	for _, e := range got {
		if (e.ID < want[300].ID) != e.Due.Equal(fake) {
			t.Fatalf("%s: due %v", e.ID, e.Due)
		}
	}
}

func fileIno(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
