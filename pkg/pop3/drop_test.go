package pop3

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/maildir"
)

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, d Maildrop, i int) string {
	t.Helper()
	rc, err := d.Open(i)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMaildirDrop(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	d0, err := OpenMaildir(dir, true) // creates the Maildir
	if err != nil {
		t.Fatal(err)
	}
	if len(d0.Messages()) != 0 {
		t.Fatal("new Maildir not empty")
	}
	d0.Close()
	m1 := "Subject: a\n\nx\n"       // plain name: size computed
	m2 := "Subject: b\r\n\r\ny\r\n" // Dovecot name: W= used
	writeFile(t, filepath.Join(dir, "new", "1700000001.M1P1.host"), m1)
	writeFile(t, filepath.Join(dir, "cur", "1700000002.M2P2.host,S=18,W=18:2,FS"), m2)
	long := strings.Repeat("n", 80)
	writeFile(t, filepath.Join(dir, "cur", "1700000003."+long+":2,"), m1)

	d, err := OpenMaildir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenMaildir(dir, true); err != ErrInUse {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	ms := d.Messages()
	if len(ms) != 3 || ms[0].UID != "1700000001.M1P1.host" || ms[1].UID != "1700000002.M2P2.host" || ms[0].Size != 17 || ms[1].Size != 18 {
		t.Fatalf("messages %+v", ms)
	}
	if len(ms[2].UID) != 40 {
		t.Fatalf("long name UID not hashed: %q", ms[2].UID)
	}
	if readAll(t, d, 1) != m2 {
		t.Fatal("content")
	}
	if err := d.Commit([]int{0, 1}, []int{2}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := os.Stat(filepath.Join(dir, "cur", "1700000001.M1P1.host:2,S")); err != nil {
		t.Errorf("retrieved new message not moved to cur/ as seen: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cur", "1700000002.M2P2.host,S=18,W=18:2,FS")); err != nil {
		t.Errorf("already seen message renamed: %v", err)
	}
	cache, _ := os.ReadFile(filepath.Join(dir, SizeCacheName))
	if string(cache) != "1700000001.M1P1.host 17\n1700000003."+long+" 17\n" {
		t.Errorf("size cache %q", cache)
	}
	// The next session reads sizes from the cache (and drops entries of
	// deleted messages), and finds the lock free.
	writeFile(t, filepath.Join(dir, SizeCacheName), "1700000001.M1P1.host 99\ngone 5\n")
	d, err = OpenMaildir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if ms := d.Messages(); len(ms) != 2 || ms[0].Size != 99 {
		t.Fatalf("after commit %+v", ms)
	}
	d.Close()
	cache, _ = os.ReadFile(filepath.Join(dir, SizeCacheName))
	if string(cache) != "1700000001.M1P1.host 99\n" {
		t.Errorf("size cache not pruned: %q", cache)
	}
}

func TestMboxDrop(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mbox")
	rec := func(h, body string) string {
		return "From a@example.org Mon Nov 23 10:00:00 2026\n" + h + "\n" + body + "\n"
	}
	content := rec("Subject: one\nStatus: RO\n", "hello\n>From quoted\n") +
		rec("Subject: two\nX-UIDL: abc123\n", "b\n") +
		rec("Subject: one\n", "hello\n>From quoted\n") // same header but Status
	writeFile(t, path, content)
	d, err := OpenMbox(path, uint32(os.Geteuid()), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenMbox(path, uint32(os.Geteuid()), 100*time.Millisecond); err != ErrInUse {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	ms := d.Messages()
	if len(ms) != 3 || ms[1].UID != "abc123" || ms[2].UID != ms[0].UID+"-2" {
		t.Fatalf("UIDs %+v", ms)
	}
	if got := readAll(t, d, 0); got != "Subject: one\nStatus: RO\n\nhello\nFrom quoted\n" {
		t.Fatalf("content %q", got)
	}
	if n, _ := CRLFSize(strings.NewReader(readAll(t, d, 0))); n != ms[0].Size {
		t.Fatalf("size %d, content %d", ms[0].Size, n)
	}
	if err := d.Commit(nil, []int{0}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	got, _ := os.ReadFile(path)
	if string(got) != rec("Subject: two\nX-UIDL: abc123\n", "b\n")+rec("Subject: one\n", "hello\n>From quoted\n") {
		t.Fatalf("after rewrite %q", got)
	}
	d, err = OpenMbox(path, uint32(os.Geteuid()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if ms2 := d.Messages(); len(ms2) != 2 || ms2[1].UID != ms[0].UID {
		t.Fatalf("UIDs after rewrite %+v (before %+v)", ms2, ms)
	}
}

func TestNotMbox(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	writeFile(t, path, "not an mbox\n")
	_, err := OpenMbox(path, uint32(os.Geteuid()), time.Second)
	if _, ok := err.(*PermError); !ok {
		t.Fatalf("got %v, want a PermError", err)
	}
}

func TestPreauthLimit(t *testing.T) {
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: &fakeDrop{}}, MaxPreauthCommands: 3})
	c := connect(t, addr)
	c.expect("CAPA", "+OK")
	c.multi()
	c.expect("USER a", "+OK")
	c.expect("USER b", "+OK")
	c.expect("USER c", "-ERR too many commands")
	if _, err := c.r.ReadString('\n'); err != io.EOF {
		t.Fatalf("not closed: %v", err)
	}
}

// The last message of an mbox without a final line feed: the size listed is
// still what RETR sends.
func TestMboxNoFinalNewline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	for _, tail := range []string{"no newline", "trailing CR\r", "ok\n"} {
		writeFile(t, path, "From a@example.org Mon Nov 23 10:00:00 2026\nSubject: x\n\nfirst\n\nFrom a@example.org Mon Nov 23 10:00:00 2026\nSubject: y\n\n"+tail)
		d, err := OpenMbox(path, uint32(os.Geteuid()), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range d.Messages() {
			if n, _ := CRLFSize(strings.NewReader(readAll(t, d, i))); n != m.Size {
				t.Errorf("%q: message %d listed %d, sends %d", tail, i+1, m.Size, n)
			}
		}
		d.Close()
	}
}

// TestMaildirDeletedElsewhere: a message another session (on another host
// sharing the Maildir, where the lock does not hold) deleted first counts
// as deleted: Commit reports no error and the others are still removed.
func TestMaildirDeletedElsewhere(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	d0, err := OpenMaildir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	d0.Close()
	writeFile(t, filepath.Join(dir, "cur", "1700000001.M1P1.a:2,S"), "Subject: a\n\nx\n")
	writeFile(t, filepath.Join(dir, "cur", "1700000002.M2P2.b:2,S"), "Subject: b\n\ny\n")
	d, err := OpenMaildir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Messages()) != 2 {
		t.Fatalf("messages %+v", d.Messages())
	}
	if err := os.Remove(filepath.Join(dir, "cur", "1700000001.M1P1.a:2,S")); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(nil, []int{0, 1}); err != nil {
		t.Fatalf("Commit after another session deleted a message: %v", err)
	}
	d.Close()
	if ents, _ := os.ReadDir(filepath.Join(dir, "cur")); len(ents) != 0 {
		t.Fatalf("left in cur/: %v", ents)
	}
}

// TestMaildirRenamedElsewhere: messages another program renamed during the
// session (an IMAP client changed flags, took one from new/ into cur/, or
// gave one an info section go-maildir's parser refuses), before RETR or
// between RETR and QUIT, are still read, deleted and marked seen, keeping
// the flags they have now.
func TestMaildirRenamedElsewhere(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	d0, err := OpenMaildir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	d0.Close()
	files := []struct{ listed, renamed, content string }{
		// Renamed before RETR (and DELE for c).
		{"cur/1700000001.M1P1.a:2,", "cur/1700000001.M1P1.a:2,Fa", "Subject: a\n\na\n"},
		{"new/1700000002.M2P2.b", "cur/1700000002.M2P2.b:2,R", "Subject: b\n\nb\n"},
		{"cur/1700000003.M3P3.c:2,S", "cur/1700000003.M3P3.c:2,ST", "Subject: c\n\nc\n"},
		{"cur/1700000004.M4P4.d:2,F", "cur/1700000004.M4P4.d:1,x", "Subject: d\n\nd\n"},
		// Renamed after RETR, before QUIT.
		{"cur/1700000005.M5P5.e:2,", "cur/1700000005.M5P5.e:2,Fb", "Subject: e\n\ne\n"},
		{"new/1700000006.M6P6.f", "cur/1700000006.M6P6.f:1,y", "Subject: f\n\nf\n"},
		// Renamed before DELE, to a name go-maildir refuses.
		{"cur/1700000007.M7P7.g:2,", "cur/1700000007.M7P7.g:1,z", "Subject: g\n\ng\n"},
	}
	for _, f := range files {
		writeFile(t, filepath.Join(dir, f.listed), f.content)
	}
	d, err := OpenMaildir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(d.Messages()) != len(files) {
		t.Fatalf("messages %+v", d.Messages())
	}
	rename := func(i int) {
		if err := os.Rename(filepath.Join(dir, files[i].listed), filepath.Join(dir, files[i].renamed)); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{0, 1, 2, 3, 6} {
		rename(i)
	}
	for _, i := range []int{0, 1, 3, 4, 5} {
		if got := readAll(t, d, i); got != files[i].content {
			t.Fatalf("message %d reads %q", i+1, got)
		}
	}
	rename(4)
	rename(5)
	if err := d.Commit([]int{0, 1, 3, 4, 5}, []int{2, 6}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "cur"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := "1700000001.M1P1.a:2,FSa 1700000002.M2P2.b:2,RS 1700000004.M4P4.d:2,S 1700000005.M5P5.e:2,FSb 1700000006.M6P6.f:2,S"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("cur/ after QUIT: %s\nwant: %s", got, want)
	}
}

// TestMaildirDuplicateUIDs: a unique name in both new/ and cur/ (copied,
// not moved, by another program), or twice in cur/ with other fields, is
// one message, whether the messages of its delivery time are few (scanned)
// or many (a mailbox imported with one time for all: looked up in a map).
func TestMaildirDuplicateUIDs(t *testing.T) {
	for _, n := range []int{1, 3, dupMaxScan, dupMaxScan + 1, 3 * dupMaxScan} {
		dir := filepath.Join(t.TempDir(), "Maildir")
		d0, err := OpenMaildir(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		d0.Close()
		writeFile(t, filepath.Join(dir, "cur", "1600000000.M1P1.host:2,S"), "Subject: before\n\nx\n")
		for i := 0; i < n; i++ {
			// One time for all: "1700000000.<i>.host", a name of the
			// old format (no microseconds).
			base := fmt.Sprintf("1700000000.%d.host", i)
			writeFile(t, filepath.Join(dir, "cur", base+",S=16:2,S"), "Subject: a\n\nx\n")
			if i%2 == 0 {
				writeFile(t, filepath.Join(dir, "new", base), "Subject: a\n\nx\n")
			}
			if i%3 == 0 {
				writeFile(t, filepath.Join(dir, "cur", base+":2,"), "Subject: a\n\nx\n")
			}
		}
		writeFile(t, filepath.Join(dir, "new", "1800000000.M1P1.host"), "Subject: after\n\nx\n")
		d, err := OpenMaildir(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		ms := d.Messages()
		d.Close()
		if len(ms) != n+2 {
			t.Fatalf("%d messages of one time: %d listed, want %d: %+v", n, len(ms), n+2, ms)
		}
		uids := map[string]bool{}
		for _, m := range ms {
			if uids[m.UID] {
				t.Fatalf("%d messages of one time: UID %s listed twice", n, m.UID)
			}
			uids[m.UID] = true
		}
	}
}

// TestSubdirsRename: QUIT's seen renames go through the descriptors of
// new/ and cur/ when the message is directly in one of them, and by path
// when the descriptors could not be opened; both land in cur/ under the
// new name.
func TestSubdirsRename(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	if err := maildir.Create(dir); err != nil {
		t.Fatal(err)
	}
	d := &maildirDrop{dir: dir}
	for _, open := range []bool{true, false} {
		writeFile(t, filepath.Join(dir, "new", "1700000001.M1P1.a"), "x\n")
		writeFile(t, filepath.Join(dir, "cur", "1700000002.M2P2.b:2,F"), "y\n")
		dirs := subdirs{new: -1, cur: -1, newPath: filepath.Join(dir, "new"), curPath: filepath.Join(dir, "cur")}
		if open {
			dirs = d.openSubdirs()
		}
		for _, m := range []maildir.Message{
			{Key: "1700000001.M1P1.a", Name: "1700000001.M1P1.a", Path: filepath.Join(dir, "new", "1700000001.M1P1.a"), New: true},
			{Key: "1700000002.M2P2.b", Name: "1700000002.M2P2.b:2,F", Path: filepath.Join(dir, "cur", "1700000002.M2P2.b:2,F"), Flags: "F"},
		} {
			if err := d.markSeen(m, dirs); err != nil {
				t.Fatalf("open=%v: %s: %v", open, m.Name, err)
			}
		}
		dirs.close()
		for _, name := range []string{"1700000001.M1P1.a:2,S", "1700000002.M2P2.b:2,FS"} {
			if err := os.Remove(filepath.Join(dir, "cur", name)); err != nil {
				t.Fatalf("open=%v: %v", open, err)
			}
		}
	}
}
