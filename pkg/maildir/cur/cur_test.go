package cur

import (
	"os"
	"path/filepath"
	"testing"

	"letterbox/pkg/maildir"
)

// TestSetFlags: a message goes from new/ to cur/ with its flags sorted, and
// a stale Message (renamed since by another program) is found by its key.
func TestSetFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	maildir.Create(dir)
	// Other programs' names, out of order, one with the microseconds that
	// make name order differ from delivery order.
	files := map[string]string{
		"new/1000000002.M5P1.host,S=3":                       "abc",
		"cur/1000000001.M999P1.host:2,S":                     "first",
		"cur/1000000002.M10P1.host,S=5,W=6:2,RSa":            "12345",
		"cur/1000000000.mutt.example:2,":                     "zero!",
		"cur/.hidden":                                        "skip",
		"new/1000000003.M1P1.dovecot,S=99,W=100:2,garbage%%": "size from S=",
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := maildir.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 5 || msgs[2].Key != "1000000002.M5P1.host,S=3" || !msgs[2].New {
		t.Fatalf("List: %+v", msgs)
	}
	// new → cur with :2,FLAGS sorted.
	m, err := SetFlags(dir, msgs[2], "SFS")
	if err != nil {
		t.Fatal(err)
	}
	if m.New || m.Flags != "FS" || m.Name != "1000000002.M5P1.host,S=3:2,FS" {
		t.Fatalf("SetFlags: %+v", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "cur", m.Name)); err != nil {
		t.Fatal(err)
	}
	// A stale Message (renamed since by someone else) is found by its key.
	stale := msgs[2]
	m2, err := SetFlags(dir, stale, "")
	if err != nil || m2.Name != "1000000002.M5P1.host,S=3:2," {
		t.Fatalf("SetFlags on a stale message: %+v %v", m2, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cur", m2.Name)); err != nil {
		t.Fatalf("stale message not renamed: %v", err)
	}
	after, _ := maildir.List(dir)
	if len(after) != len(msgs) {
		t.Fatalf("%d messages after SetFlags, want %d", len(after), len(msgs))
	}
}

// TestFindKey: a renamed message is found by its key, through go-maildir
// when its parser takes the name, through ParseName when it refuses it.
func TestFindKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	maildir.Create(dir)
	for _, n := range []string{"1.M1P1.a,S=3,W=4:2,Sa", "2.M2P2.b:1,experimental", "3.M3P3.c"} {
		if err := os.WriteFile(filepath.Join(dir, "cur", n), []byte("abc"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	gm, p, ok := FindKey(dir, "1.M1P1.a,S=3,W=4")
	if !ok || gm == nil || p != filepath.Join(dir, "cur", "1.M1P1.a,S=3,W=4:2,Sa") || p != gm.Filename() || string(gm.Flags()) != "Sa" {
		t.Fatalf("FindKey of a Dovecot name: %v %q %v", gm, p, ok)
	}
	gm, p, ok = FindKey(dir, "2.M2P2.b")
	if !ok || gm != nil || p != filepath.Join(dir, "cur", "2.M2P2.b:1,experimental") {
		t.Fatalf("FindKey of a name go-maildir refuses: %v %q %v", gm, p, ok)
	}
	for _, key := range []string{"3.M3P3.c", "4.M4P4.gone", "1.M1P1"} {
		if gm, p, ok := FindKey(dir, key); ok {
			t.Errorf("FindKey(%q) = %v %q", key, gm, p)
		}
	}
}
