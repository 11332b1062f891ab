package maildir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSave(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "md")
	if err := Create(dir); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	s, err := Save(dir, strings.NewReader("a\nb\r\nc"), SaveOptions{Flags: "SaF", Mtime: when})
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != 6 || s.VSize != 7 || !strings.HasSuffix(s.Name, ",S=6,W=7:2,FSa") || s.Key+":2,FSa" != s.Name {
		t.Errorf("saved %+v", s)
	}
	fi, err := os.Stat(filepath.Join(dir, "cur", s.Name))
	if err != nil || !fi.ModTime().Equal(when) || fi.Mode().Perm() != 0o600 {
		t.Errorf("file: %v %v", fi, err)
	}
	if size, vsize := NameSizes(s.Name); size != 6 || vsize != 7 {
		t.Errorf("NameSizes: %d %d", size, vsize)
	}
	if size, vsize := NameSizes("123.host:2,S"); size != -1 || vsize != -1 {
		t.Errorf("NameSizes of a plain name: %d %d", size, vsize)
	}
	// Over MaxSize: ErrTooBig, nothing left in tmp/ or cur/.
	_, err = Save(dir, strings.NewReader("12345"), SaveOptions{MaxSize: 4})
	if !errors.Is(err, ErrTooBig) {
		t.Errorf("oversize: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ keeps %d files", len(ents))
	}
	if _, err := Save(dir, strings.NewReader("1234"), SaveOptions{MaxSize: 4}); err != nil {
		t.Errorf("exactly MaxSize: %v", err)
	}
	if _, err := Save(filepath.Join(dir, "nope"), strings.NewReader("x"), SaveOptions{}); err == nil {
		t.Error("Save into a missing Maildir succeeded")
	}
}

func TestLinkMove(t *testing.T) {
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	for _, d := range []string{a, b} {
		if err := Create(d); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Save(a, strings.NewReader("hello\n"), SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(a, "cur", s.Name)
	l, err := Link(src, b, s.Size, s.VSize, SaveOptions{Flags: "S", Host: "other.host:1"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Key == s.Key || !strings.HasSuffix(l.Name, ".other.host\\0721,S=6,W=7:2,S") {
		t.Errorf("link %+v", l)
	}
	fa, _ := os.Stat(src)
	fb, _ := os.Stat(filepath.Join(b, "cur", l.Name))
	if !os.SameFile(fa, fb) {
		t.Error("Link did not hard-link")
	}
	m, err := Move(src, b, s.Size, s.VSize, SaveOptions{Flags: "T"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("source still there: %v", err)
	}
	if b2, err := os.ReadFile(filepath.Join(b, "cur", m.Name)); err != nil || string(b2) != "hello\n" {
		t.Errorf("moved: %q %v", b2, err)
	}
	if _, err := Move(src, b, 1, 1, SaveOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Move of a missing file: %v", err)
	}
	if _, err := Link(src, b, 1, 1, SaveOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Link of a missing file: %v", err)
	}
	// copyInto (Link's fallback across file systems) copies content and date.
	c, err := copyInto(filepath.Join(b, "cur", m.Name), a, SaveOptions{Flags: "R"})
	if err != nil {
		t.Fatal(err)
	}
	fc, _ := os.Stat(filepath.Join(a, "cur", c.Name))
	fm, _ := os.Stat(filepath.Join(b, "cur", m.Name))
	if os.SameFile(fc, fm) || !fc.ModTime().Equal(fm.ModTime()) || !strings.HasSuffix(c.Name, ":2,R") {
		t.Errorf("copy %+v", c)
	}
}

func TestCRLFSizeAndOrder(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "a": 1, "a\n": 3, "a\r\n": 3, "\n\n": 4, "a\rb": 3, "\r\n\n": 4} {
		if n, err := CRLFSize(strings.NewReader(in)); err != nil || n != want {
			t.Errorf("CRLFSize(%q) = %d, want %d", in, n, want)
		}
	}
	want := []string{"junk", "1700000000.M3P1.g", "1700000000.M3P1.h", "1700000000.M20P1.h", "1700000001.M5P1.h"}
	for i := range want {
		for j := range want {
			if c := DeliveryOrder(want[i], want[j]); (c < 0) != (i < j) || (c == 0) != (i == j) {
				t.Errorf("DeliveryOrder(%q, %q) = %d", want[i], want[j], c)
			}
		}
	}
}

// TestSaveNewAtTime: an imported message keeps its old date in its name
// (seconds and M<usec>, which order new messages) and its mtime, and one
// that was never read goes to new/ under its key, as Deliver names it.
func TestSaveNewAtTime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "md")
	if err := Create(dir); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	s, err := Save(dir, strings.NewReader("x\n"), SaveOptions{Time: when, Mtime: when, New: true, NoDirSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != s.Key || !strings.HasPrefix(s.Key, "981173106.M7P") {
		t.Errorf("saved %+v", s)
	}
	if sec, usec := DeliveryStamp(s.Key); sec != when.Unix() || usec != 7 {
		t.Errorf("stamp %d.%d", sec, usec)
	}
	fi, err := os.Stat(filepath.Join(dir, "new", s.Name))
	if err != nil || !fi.ModTime().Equal(when) {
		t.Errorf("new/%s: %v %v", s.Name, fi, err)
	}
	if _, err := Save(dir, strings.NewReader("x\n"), SaveOptions{New: true, Flags: "S"}); err == nil {
		t.Error("flags for new/ accepted")
	}
}
