package mailstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpen(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Error("Open without a root succeeded")
	}
	root := filepath.Join(t.TempDir(), "a", "Maildir")
	s, err := Open(Options{Root: root})
	must(t, err)
	for _, sub := range []string{"cur", "new", "tmp"} {
		if fi, err := os.Stat(filepath.Join(root, sub)); err != nil || !fi.IsDir() {
			t.Errorf("%s/ not created: %v", sub, err)
		}
	}
	// A second Open shares the account; closing one keeps the other.
	s2, err := Open(Options{Root: root + "/"})
	must(t, err)
	if s2.acc != s.acc {
		t.Error("two Opens of one root do not share state")
	}
	must(t, s.Close())
	must(t, s.Close()) // twice is harmless
	if _, err := s2.Status("INBOX"); err != nil {
		t.Errorf("Status after the other store closed: %v", err)
	}
	s2.Close()
	// A file where the Maildir should be.
	file := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(file, nil, 0o600))
	if _, err := Open(Options{Root: file}); err == nil {
		t.Error("Open of a regular file succeeded")
	}
}

func names(t *testing.T, s *Store) string {
	t.Helper()
	l, err := s.List()
	must(t, err)
	var out []string
	for _, m := range l {
		n := m.Name
		if m.SpecialUse != "" {
			n += m.SpecialUse
		}
		if m.Subscribed {
			n += "*"
		}
		if m.NonExistent {
			n += "!"
		}
		if m.HasChildren {
			n += "+"
		}
		out = append(out, n)
	}
	return strings.Join(out, " ")
}

func TestCreateList(t *testing.T) {
	s, root := testStore(t)
	must(t, s.Create("Work.Proj", ""))
	must(t, s.Create("Ünïcode & more", ""))
	must(t, s.Create("Lists.", "")) // trailing separator: a parent-to-be
	must(t, s.Create("Bin", `\trash`))
	if got, want := names(t, s), `INBOX Bin\Trash Lists Work+ Work.Proj Ünïcode & more`; got != want {
		t.Errorf("List: %q, want %q", got, want)
	}
	for _, d := range []string{".Work", ".Work.Proj", ".&ANw-n&AO8-code &- more", ".Lists"} {
		for _, f := range []string{"cur", "new", "tmp", "maildirfolder", "dovecot-uidlist"} {
			if _, err := os.Stat(filepath.Join(root, d, f)); err != nil {
				t.Errorf("%s/%s: %v", d, f, err)
			}
		}
	}
	// Each folder its own UIDVALIDITY, from Dovecot's generator.
	a, _ := s.Status("Work")
	b, _ := s.Status("Work.Proj")
	if a.UIDValidity == 0 || a.UIDValidity == b.UIDValidity || a.UIDNext != 1 {
		t.Errorf("UIDVALIDITY %d and %d, UIDNEXT %d", a.UIDValidity, b.UIDValidity, a.UIDNext)
	}
	if _, err := os.Stat(filepath.Join(root, "dovecot-uidvalidity")); err != nil {
		t.Error(err)
	}
	// Directories that are not folders are not listed: dot-dot names,
	// bad modified UTF-7, symlinks, files.
	must(t, os.Mkdir(filepath.Join(root, "..DOVECOT-TRASHED"), 0o700))
	must(t, os.Mkdir(filepath.Join(root, ".bad&AGE-"), 0o700))
	must(t, os.Symlink(filepath.Join(root, ".Work"), filepath.Join(root, ".Link")))
	must(t, os.WriteFile(filepath.Join(root, ".file"), nil, 0o600))
	if got, want := names(t, s), `INBOX Bin\Trash Lists Work+ Work.Proj Ünïcode & more`; got != want {
		t.Errorf("List with junk: %q, want %q", got, want)
	}
	if _, err := s.Select("Link", true); !errors.Is(err, ErrNoMailbox) {
		t.Errorf("Select of a symlinked folder: %v, want ErrNoMailbox", err)
	}
}

func TestCreateErrors(t *testing.T) {
	s, _ := testStore(t)
	must(t, s.Create("Exists", ""))
	for _, c := range []struct {
		name, use string
		err       error
	}{
		{"", "", ErrBadName}, {".", "", ErrBadName}, {".a", "", ErrBadName}, {"a..b", "", ErrBadName},
		{"a/b", "", ErrBadName}, {"../x", "", ErrBadName}, {"#news", "", ErrBadName}, {"~x", "", ErrBadName},
		{"a\x01b", "", ErrBadName}, {"a\x7fb", "", ErrBadName}, {"a\u0085b", "", ErrBadName}, {"\xff", "", ErrBadName},
		{strings.Repeat("x", 201), "", ErrBadName}, {"a\\b", "", ErrBadName},
		{"INBOX", "", ErrExists}, {"inbox", "", ErrExists}, {"Exists", "", ErrExists},
		{"New", `\All`, ErrSpecialUse}, {"New", `\Bogus`, ErrSpecialUse},
	} {
		if err := s.Create(c.name, c.use); !errors.Is(err, c.err) {
			t.Errorf("Create(%q, %q): %v, want %v", c.name, c.use, err, c.err)
		}
	}
	if _, err := s.Status("New"); !errors.Is(err, ErrNoMailbox) {
		t.Errorf("a refused Create left a folder: %v", err)
	}
}

func TestDelete(t *testing.T) {
	s, root := testStore(t)
	must(t, s.Create("A.B", ""))
	must(t, s.Create("Junk", `\Junk`))
	_, err := s.Append("A", nil, time.Time{}, strings.NewReader("x\n"))
	must(t, err)
	old, _ := s.Status("A")
	must(t, s.SetSubscribed("A", true))
	must(t, s.Delete("A"))
	// Children stay; the parent shows as \NonExistent; so does its
	// subscription.
	if got, want := names(t, s), `INBOX A*!+ A.B Junk\Junk`; got != want {
		t.Errorf("after Delete: %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(root, ".A")); !os.IsNotExist(err) {
		t.Errorf(".A still there: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ keeps %d entries", len(ents))
	}
	must(t, s.Delete("Junk"))
	if b, _ := os.ReadFile(filepath.Join(root, specialUseName)); strings.Contains(string(b), "Junk") {
		t.Errorf("special use of a deleted folder kept: %q", b)
	}
	// A folder created again gets another UIDVALIDITY.
	must(t, s.Create("A", ""))
	if st, _ := s.Status("A"); st.UIDValidity == old.UIDValidity || st.Messages != 0 {
		t.Errorf("recreated: %+v, old UIDVALIDITY %d", st, old.UIDValidity)
	}
	for _, c := range []struct {
		name string
		err  error
	}{{"INBOX", ErrInbox}, {"Nope", ErrNoMailbox}, {"a..b", ErrBadName}} {
		if err := s.Delete(c.name); !errors.Is(err, c.err) {
			t.Errorf("Delete(%q): %v, want %v", c.name, err, c.err)
		}
	}
}

func TestRename(t *testing.T) {
	s, _ := testStore(t)
	must(t, s.Create("A.B.C", ""))
	must(t, s.Create("Other", `\Archive`))
	r, err := s.Append("A.B", []string{`\Seen`, "kw"}, time.Time{}, strings.NewReader("x\n"))
	must(t, err)
	must(t, s.Rename("A.B", "X.Y"))
	if got, want := names(t, s), `INBOX A Other\Archive X+ X.Y+ X.Y.C`; got != want {
		t.Errorf("after Rename: %q, want %q", got, want)
	}
	v, err := s.Select("X.Y", true)
	must(t, err)
	snap := mustSync(t, v)
	v.Close()
	if snap.UIDValidity != r.UIDValidity || len(snap.Msgs) != 1 || snap.Msgs[0].UID != r.UID || strings.Join(snap.Msgs[0].Flags, " ") != `\Seen kw` {
		t.Errorf("renamed folder: %+v, want UIDVALIDITY %d UID %d", snap, r.UIDValidity, r.UID)
	}
	must(t, s.Rename("Other", "Archive.Old"))
	if got, want := names(t, s), `INBOX A Archive+ Archive.Old\Archive X+ X.Y+ X.Y.C`; got != want {
		t.Errorf("special use after Rename: %q, want %q", got, want)
	}
	for _, c := range []struct {
		from, to string
		err      error
	}{
		{"Nope", "Z", ErrNoMailbox}, {"A", "X", ErrExists}, {"A", "INBOX", ErrExists},
		{"X", "X.Z", ErrBadName}, {"X", "X", ErrBadName}, {"A", "a..b", ErrBadName}, {"..", "Z", ErrBadName},
		{"A", "X.Y.C", ErrExists},
	} {
		if err := s.Rename(c.from, c.to); !errors.Is(err, c.err) {
			t.Errorf("Rename(%q, %q): %v, want %v", c.from, c.to, err, c.err)
		}
	}
}

func TestRenameInbox(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	deliver(t, root, 2)
	must(t, s.Rename("INBOX", "Old"))
	in, _ := s.Status("INBOX")
	old, _ := s.Status("Old")
	if in.Messages != 0 || old.Messages != 2 || in.UIDNext != 3 {
		t.Errorf("INBOX %+v, Old %+v", in, old)
	}
}

func TestSubscriptions(t *testing.T) {
	s, root := testStore(t)
	must(t, s.SetSubscribed("Ünïcode & more.x", true))
	must(t, s.SetSubscribed("inbox", true))
	must(t, s.SetSubscribed("Gone", true))
	must(t, s.SetSubscribed("Gone", true)) // twice: once in the file
	must(t, s.SetSubscribed("Gone", false))
	must(t, s.SetSubscribed("Never", false))
	if got, want := readFile(t, filepath.Join(root, "subscriptions")), "V\t2\n\nINBOX\n&ANw-n&AO8-code &- more\tx\n"; got != want {
		t.Errorf("subscriptions file %q, want %q (Dovecot's version 2)", got, want)
	}
	if got, want := names(t, s), "INBOX* Ünïcode & more.x*!"; got != want {
		t.Errorf("List: %q, want %q", got, want)
	}
	if err := s.SetSubscribed("a..b", true); !errors.Is(err, ErrBadName) {
		t.Errorf("bad name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "subscriptions.lock")); !os.IsNotExist(err) {
		t.Errorf("lock left behind: %v", err)
	}
}

func TestEnsureSpecialUse(t *testing.T) {
	s, root := testStore(t)
	must(t, s.Create("Spam", "")) // a well-known name: already \Junk
	must(t, s.EnsureSpecialUse())
	want := `INBOX Archive\Archive* Drafts\Drafts* Sent\Sent* Spam\Junk Trash\Trash*`
	if got := names(t, s); got != want {
		t.Errorf("List: %q, want %q", got, want)
	}
	must(t, s.EnsureSpecialUse()) // again: nothing new
	if got := names(t, s); got != want {
		t.Errorf("second EnsureSpecialUse: %q", got)
	}
	// The file names the attribute: a renamed Sent keeps it, and no
	// second Sent is made.
	must(t, s.Rename("Sent", "Outbox"))
	must(t, s.EnsureSpecialUse())
	// (Its subscription stays, as Dovecot leaves it: "Sent*!".)
	if got := names(t, s); !strings.Contains(got, `Outbox\Sent`) || !strings.Contains(got, " Sent*! ") {
		t.Errorf("after renaming Sent: %q", got)
	}
	if b := readFile(t, filepath.Join(root, specialUseName)); !strings.Contains(b, "\\Sent Outbox\n") {
		t.Errorf("%s: %q", specialUseName, b)
	}
}

func TestStatus(t *testing.T) {
	s, root := testStore(t)
	deliver(t, root, 1)
	_, err := s.Append("INBOX", []string{`\Seen`}, time.Time{}, strings.NewReader("a\nb\n"))
	must(t, err)
	_, err = s.Append("INBOX", []string{`\Deleted`, `\Seen`}, time.Time{}, strings.NewReader("a\r\n"))
	must(t, err)
	st, err := s.Status("INBOX")
	must(t, err)
	want := Status{Messages: 3, Recent: 3, Unseen: 1, Deleted: 1, UIDNext: 4, UIDValidity: st.UIDValidity, Size: 23 + 6 + 3, HighestModSeq: st.HighestModSeq}
	if st != want || st.HighestModSeq == 0 {
		t.Errorf("Status %+v, want %+v", st, want)
	}
	// STATUS takes no \Recent and moves nothing out of new/.
	if ents, _ := os.ReadDir(filepath.Join(root, "new")); len(ents) != 1 {
		t.Errorf("new/ has %d files after STATUS", len(ents))
	}
	st2, _ := s.Status("INBOX")
	if st2.Recent != 3 {
		t.Errorf("second Status: Recent %d", st2.Recent)
	}
	for _, c := range []struct {
		name string
		err  error
	}{{"Nope", ErrNoMailbox}, {"", ErrBadName}} {
		if _, err := s.Status(c.name); !errors.Is(err, c.err) {
			t.Errorf("Status(%q): %v, want %v", c.name, err, c.err)
		}
	}
}

func TestAppend(t *testing.T) {
	root := filepath.Join(t.TempDir(), "Maildir")
	s, err := Open(Options{Root: root, MaxMessageSize: 100})
	must(t, err)
	defer s.Close()
	date := time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)
	r1, err := s.Append("INBOX", []string{`\SEEN`, `\Recent`, "$Label1", "work"}, date, strings.NewReader("Subject: x\n\nbody\n"))
	must(t, err)
	r2, err := s.Append("inbox", []string{"WORK", `\Flagged`}, time.Time{}, strings.NewReader("y\r\n"))
	must(t, err)
	if r1.UID != 1 || r2.UID != 2 || r1.UIDValidity == 0 || r1.UIDValidity != r2.UIDValidity {
		t.Fatalf("APPENDUID %+v %+v", r1, r2)
	}
	if got := readFile(t, filepath.Join(root, "dovecot-keywords")); got != "0 $Label1\n1 work\n" {
		t.Errorf("dovecot-keywords: %q", got)
	}
	ents, _ := os.ReadDir(filepath.Join(root, "cur"))
	var fnames []string
	for _, e := range ents {
		fnames = append(fnames, e.Name()[strings.IndexByte(e.Name(), ','):])
	}
	if got := strings.Join(fnames, " "); got != ",S=17,W=20:2,Sab ,S=3,W=3:2,Fb" && got != ",S=3,W=3:2,Fb ,S=17,W=20:2,Sab" {
		t.Errorf("file names end %q", got)
	}
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	snap := mustSync(t, v)
	m := snap.Msgs[0]
	if strings.Join(m.Flags, " ") != `\Seen $Label1 work` || !m.InternalDate.Equal(date) || m.Size != 20 {
		t.Errorf("appended: %+v", m)
	}
	if got := strings.Join(snap.Msgs[1].Flags, " "); got != `\Flagged work` {
		t.Errorf("keyword matched without case: %q", got)
	}
	// Too big: ErrTooBig and nothing left behind.
	_, err = s.Append("INBOX", nil, time.Time{}, strings.NewReader(strings.Repeat("x", 101)))
	if !errors.Is(err, ErrTooBig) {
		t.Errorf("oversize: %v", err)
	}
	for _, sub := range []string{"tmp", "cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(root, sub))
		if want := map[string]int{"cur": 2}[sub]; len(ents) != want {
			t.Errorf("%s/ has %d files after a refused APPEND, want %d", sub, len(ents), want)
		}
	}
	_, err = s.Append("INBOX", nil, time.Time{}, strings.NewReader(strings.Repeat("x", 100)))
	must(t, err) // exactly the limit is fine
	for _, c := range []struct {
		box   string
		flags []string
		err   error
	}{
		{"Nope", nil, ErrNoMailbox}, {"a..b", nil, ErrBadName},
		{"INBOX", []string{`\Bogus`}, ErrBadFlag}, {"INBOX", []string{"a b"}, ErrBadFlag}, {"INBOX", []string{"x(y"}, ErrBadFlag},
	} {
		if _, err := s.Append(c.box, c.flags, time.Time{}, strings.NewReader("x\n")); !errors.Is(err, c.err) {
			t.Errorf("Append(%q, %q): %v, want %v", c.box, c.flags, err, c.err)
		}
	}
	// The 27th keyword has no letter left.
	var kws []string
	for i := 0; i < 24; i++ {
		kws = append(kws, "k"+string(rune('a'+i)))
	}
	_, err = s.Append("INBOX", kws, time.Time{}, strings.NewReader("x\n"))
	must(t, err)
	if _, err = s.Append("INBOX", []string{"one-too-many"}, time.Time{}, strings.NewReader("x\n")); !errors.Is(err, ErrNoKeywords) {
		t.Errorf("27th keyword: %v", err)
	}
	snap = mustSync(t, v)
	if !snap.NoNewKeywords || len(snap.Keywords) != 26 {
		t.Errorf("Keywords %d, NoNewKeywords %v", len(snap.Keywords), snap.NoNewKeywords)
	}
}

// errReader fails after some bytes, as a client dropping mid-APPEND.
type errReader struct{ n int }

func (e *errReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, errors.New("connection reset")
	}
	k := min(len(p), e.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	e.n -= k
	return k, nil
}

func TestAppendReaderFails(t *testing.T) {
	s, root := testStore(t)
	if _, err := s.Append("INBOX", nil, time.Time{}, &errReader{n: 5000}); err == nil {
		t.Fatal("APPEND of a failing reader succeeded")
	}
	for _, sub := range []string{"tmp", "cur", "new"} {
		if ents, _ := os.ReadDir(filepath.Join(root, sub)); len(ents) != 0 {
			t.Errorf("%s/ has %d files", sub, len(ents))
		}
	}
}

// TestHostname: Options.Hostname names the files APPEND, COPY and MOVE
// write (several hosts sharing one Maildir), escaped as the Maildir spec
// says.
func TestHostname(t *testing.T) {
	root := filepath.Join(t.TempDir(), "Maildir")
	s, err := Open(Options{Root: root, Hostname: "mx2.example/x"})
	must(t, err)
	defer s.Close()
	must(t, s.Create("Other", ""))
	_, err = s.Append("INBOX", nil, time.Time{}, strings.NewReader("x\n"))
	must(t, err)
	v, err := s.Select("INBOX", false)
	must(t, err)
	defer v.Close()
	mustSync(t, v)
	_, err = v.Copy([]uint32{1}, "Other")
	must(t, err)
	for _, d := range []string{filepath.Join(root, "cur"), filepath.Join(root, ".Other", "cur")} {
		ents, _ := os.ReadDir(d)
		if len(ents) != 1 || !strings.Contains(ents[0].Name(), `.mx2.example\057x,S=2,W=3:2,`) {
			t.Errorf("%s: %v", d, ents)
		}
	}
}
