package mailstore

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// untar extracts a testdata tar (a Maildir Dovecot wrote, hard links and
// modification times kept) into dir.
func untar(t testing.TB, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	must(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	type dated struct {
		path string
		at   time.Time
	}
	var dirs []dated
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		must(t, err)
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			must(t, os.MkdirAll(p, 0o700))
			dirs = append(dirs, dated{p, h.ModTime})
		case tar.TypeLink:
			must(t, os.Link(filepath.Join(dir, h.Linkname), p))
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			must(t, err)
			must(t, os.WriteFile(p, b, 0o600))
			must(t, os.Chtimes(p, h.ModTime, h.ModTime))
		}
	}
	for _, d := range dirs {
		os.Chtimes(d.path, d.at, d.at)
	}
}

// doveadmMsg is one message of doveadm fetch 'mailbox uid flags
// size.virtual date.received'.
type doveadmMsg struct {
	mailbox string
	uid     uint32
	flags   []string // without \Recent
	vsize   int64
	date    time.Time
}

// parseDoveadm reads doveadm fetch output and "NAME uidnext=N
// uidvalidity=V" lines.
func parseDoveadm(t testing.TB, text string) (map[string][]doveadmMsg, map[string][2]uint32) {
	t.Helper()
	msgs := map[string][]doveadmMsg{}
	status := map[string][2]uint32{}
	var cur doveadmMsg
	flush := func() {
		if cur.mailbox != "" {
			msgs[cur.mailbox] = append(msgs[cur.mailbox], cur)
		}
		cur = doveadmMsg{}
	}
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		switch {
		case line == "":
			flush()
		case strings.Contains(line, " uidnext="):
			flush()
			i := strings.LastIndex(line, " uidnext=")
			name := line[:i]
			var next, valid uint64
			for _, f := range strings.Fields(line[i:]) {
				kk, vv, _ := strings.Cut(f, "=")
				n, _ := strconv.ParseUint(vv, 10, 32)
				if kk == "uidnext" {
					next = n
				} else {
					valid = n
				}
			}
			status[name] = [2]uint32{uint32(next), uint32(valid)}
		case ok && k == "mailbox":
			flush()
			cur.mailbox = v
		case ok && k == "uid":
			n, _ := strconv.ParseUint(v, 10, 32)
			cur.uid = uint32(n)
		case (ok && k == "flags") || line == "flags:":
			for _, fl := range strings.Fields(v) {
				if fl != `\Recent` {
					cur.flags = append(cur.flags, fl)
				}
			}
		case ok && k == "size.virtual":
			cur.vsize, _ = strconv.ParseInt(v, 10, 64)
		case ok && k == "date.received":
			d, err := time.ParseInLocation("2006-01-02 15:04:05", v, time.Local)
			must(t, err)
			cur.date = d
		}
	}
	flush()
	for _, m := range msgs {
		slices.SortFunc(m, func(a, b doveadmMsg) int { return int(a.uid) - int(b.uid) })
	}
	return msgs, status
}

// checkLikeDovecot opens every mailbox of the store and compares it with
// what doveadm reported.
func checkLikeDovecot(t *testing.T, s *Store, want map[string][]doveadmMsg, status map[string][2]uint32) {
	t.Helper()
	for name, st := range status {
		v, err := s.Select(name, true)
		if err != nil {
			t.Errorf("select %q: %v", name, err)
			continue
		}
		snap := withDates(t, v, mustSync(t, v))
		v.Close()
		if snap.UIDValidity != st[1] || snap.UIDNext != st[0] {
			t.Errorf("%s: UIDVALIDITY %d UIDNEXT %d, Dovecot %d %d", name, snap.UIDValidity, snap.UIDNext, st[1], st[0])
		}
		wm := want[name]
		if len(snap.Msgs) != len(wm) {
			t.Errorf("%s: %d messages, Dovecot %d", name, len(snap.Msgs), len(wm))
			continue
		}
		for i, m := range snap.Msgs {
			w := wm[i]
			if m.UID != w.uid || strings.Join(m.Flags, " ") != strings.Join(w.flags, " ") || m.Size != w.vsize || !m.InternalDate.Equal(w.date) {
				t.Errorf("%s: got UID %d %v size %d date %v; Dovecot UID %d %v size %d date %v",
					name, m.UID, m.Flags, m.Size, m.InternalDate, w.uid, w.flags, w.vsize, w.date)
			}
		}
	}
}

// TestDovecotMaildir opens a Maildir Dovecot wrote (testdata/dovecot,
// made by make.sh with dovecot-lda and doveadm) and finds what doveadm
// reported about it: every folder (names in modified UTF-7 on disk), UID,
// UIDVALIDITY, UIDNEXT, flag and keyword, size and date; subscriptions;
// and a message Dovecot numbered after putting it in new/ by hand.
func TestDovecotMaildir(t *testing.T) {
	dir := t.TempDir()
	untar(t, "testdata/dovecot/maildir.tar", dir)
	want, status := parseDoveadm(t, readFile(t, "testdata/dovecot/expected.txt"))
	if len(status) != 4 || len(want["INBOX"]) != 6 {
		t.Fatalf("testdata: %d mailboxes, %d INBOX messages", len(status), len(want["INBOX"]))
	}
	s, err := Open(Options{Root: filepath.Join(dir, "Maildir")})
	must(t, err)
	defer s.Close()
	checkLikeDovecot(t, s, want, status)

	list, err := s.List()
	must(t, err)
	var got []string
	for _, m := range list {
		got = append(got, m.Name+map[bool]string{true: "*", false: ""}[m.Subscribed]+map[bool]string{true: "!", false: ""}[m.NonExistent])
	}
	if w := "INBOX* Sent* Work! Work.Proj* Ünïcode & more*"; strings.Join(got, " ") != w {
		t.Errorf("List: %q, want %q (* subscribed, ! nonexistent)", strings.Join(got, " "), w)
	}
	// After a writable SELECT (new/ moved to cur/) nothing changes either.
	v, err := s.Select("INBOX", false)
	must(t, err)
	v.Close()
	s.Close()
	s2 := reopen(t, filepath.Join(dir, "Maildir"))
	checkLikeDovecot(t, s2, want, status)
	if ents, _ := os.ReadDir(filepath.Join(dir, "Maildir", "new")); len(ents) != 0 {
		t.Errorf("new/ not emptied by a writable SELECT: %d files", len(ents))
	}
}
