package users

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"letterbox/pkg/internal/testwait"
)

func TestParseLine(t *testing.T) {
	u, err := ParseLine("Bob@Example.TEST.:{PLAIN}pw:1000:100:Bob B:/home/bob:/bin/sh:mail=maildir:~/Mail:LAYOUT=fs quota_rule=*:storage=1G nopassword")
	if err != nil {
		t.Fatal(err)
	}
	want := User{Name: "Bob@example.test", Password: "{PLAIN}pw", UID: "1000", GID: "100", Gecos: "Bob B", Home: "/home/bob", Shell: "/bin/sh"}
	if u.Name != want.Name || u.Password != want.Password || u.UID != want.UID || u.GID != want.GID ||
		u.Gecos != want.Gecos || u.Home != want.Home || u.Shell != want.Shell {
		t.Errorf("got %+v", u)
	}
	if u.Extra["mail"] != "maildir:~/Mail:LAYOUT=fs" || u.Extra["quota_rule"] != "*:storage=1G" {
		t.Errorf("extra: %q", u.Extra)
	}
	if _, ok := u.Extra["nopassword"]; !ok {
		t.Errorf("bare extra key lost: %q", u.Extra)
	}

	// Fewer fields, as Dovecot allows.
	for _, l := range []string{"a@b.test", "a@b.test:", "a@b.test:{PLAIN}x", "a@b.test:{PLAIN}x:", "a@b.test:{PLAIN}x::::::", "a@b.test:{PLAIN}x\r"} {
		u, err := ParseLine(l)
		if err != nil || u == nil || u.Name != "a@b.test" {
			t.Errorf("%q: %v %v", l, u, err)
		}
	}
	for _, l := range []string{"", "   ", "# comment", "  # indented comment", "\t"} {
		if u, err := ParseLine(l); u != nil || err != nil {
			t.Errorf("%q: want nothing, got %v %v", l, u, err)
		}
	}
	for _, l := range []string{
		":{PLAIN}x",             // no name
		"bob:{PLAIN}x",          // not a full address
		"@b.test:{PLAIN}x",      // empty local part
		"bob@:{PLAIN}x",         // empty domain
		"a@b@c.test:{PLAIN}x",   // two @
		"b ob@b.test:{PLAIN}x",  // whitespace
		"../x@b.test:{PLAIN}x",  // slash
		"..@b.test:{PLAIN}x",    // dot-dot directory
		"a@.b.test:{PLAIN}x",    // bad domain
		"a@b..test:{PLAIN}x",    // bad domain
		"a@b.test:plaintext",    // no scheme, not crypt: refused rather than guessed
		"a\x00b@b.test:{PLAIN}", // control character
	} {
		if u, err := ParseLine(l); err == nil {
			t.Errorf("%q: accepted as %+v", l, u)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "users")
	os.WriteFile(p, []byte("# users\na@b.test:{PLAIN}x\n\nbad line\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), ":4:") {
		t.Errorf("malformed line: err = %v, want one naming line 4", err)
	}
	os.WriteFile(p, []byte("a@b.test:{PLAIN}x\nA@B.test:{PLAIN}y\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate: err = %v", err)
	}
	db, err := Load(filepath.Join(dir, "absent"))
	if err != nil || len(db.Names()) != 0 || db.Lookup("a@b.test") != nil {
		t.Errorf("missing file: %v %v", db, err)
	}
}

func TestLookupCase(t *testing.T) {
	db, err := Parse(strings.NewReader("Bob.Smith@Example.Test:{PLAIN}x\nalice@example.test:{PLAIN}y\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"Bob.Smith@example.test", "bob.smith@EXAMPLE.TEST", "BOB.SMITH@example.test.", "bob.smith@Example.Test"} {
		u := db.Lookup(a)
		if u == nil || u.Name != "Bob.Smith@example.test" {
			t.Errorf("Lookup(%q) = %v", a, u)
		}
	}
	for _, a := range []string{"bob.smith", "bobsmith@example.test", "bob.smith@example.test.x", "alice@example", "alice+x@example.test", " alice@example.test"} {
		if u := db.Lookup(a); u != nil {
			t.Errorf("Lookup(%q) = %v, want nil", a, u)
		}
	}
	var nilDB *DB
	if nilDB.Lookup("a@b") != nil {
		t.Error("nil DB found a user")
	}
}

// fakePasswords stands in for package passwd (which imports this one, so
// these tests can't use it): {PLAIN} compares, {FAKE} values are
// well-formed hashes, and every Verify is recorded.
type fakePasswords struct {
	mu       sync.Mutex
	verified []string
}

func (f *fakePasswords) Verify(stored, password string) bool {
	f.mu.Lock()
	f.verified = append(f.verified, stored)
	f.mu.Unlock()
	scheme, v := SplitScheme(stored)
	return scheme == "PLAIN" && v == password
}

func (f *fakePasswords) Hash(scheme, password string) (string, error) {
	if scheme != DefaultScheme {
		return "", ErrScheme
	}
	return "{FAKE}" + password, nil
}

func (f *fakePasswords) WellFormed(stored string) bool {
	scheme, _ := SplitScheme(stored)
	return scheme == "PLAIN" || scheme == "FAKE"
}

// withPasswords registers p for the test and restores the previous one.
func withPasswords(t testing.TB, p Passwords) {
	old := registered()
	RegisterPasswords(p)
	t.Cleanup(func() { RegisterPasswords(old) })
}

func TestAuthenticate(t *testing.T) {
	withPasswords(t, &fakePasswords{})
	db, _ := Parse(strings.NewReader("a@b.test:{PLAIN}pw\nnopw@b.test:\nclear@b.test:{CLEAR}c\nh@b.test:{FAKE}x\n"))
	if u, err := db.Authenticate("A@B.TEST", "pw"); err != nil || u.Name != "a@b.test" {
		t.Errorf("good: %v %v", u, err)
	}
	for _, c := range [][2]string{{"a@b.test", "pW"}, {"a@b.test", ""}, {"x@b.test", "pw"}, {"nopw@b.test", ""}, {"nopw@b.test", "x"}} {
		if u, err := db.Authenticate(c[0], c[1]); err != ErrAuth || u != nil {
			t.Errorf("Authenticate(%q, %q) = %v, %v", c[0], c[1], u, err)
		}
	}
	if pw, ok := db.Lookup("a@b.test").Plaintext(); !ok || pw != "pw" {
		t.Errorf("Plaintext = %q %v", pw, ok)
	}
	if _, ok := db.Lookup("h@b.test").Plaintext(); ok {
		t.Error("a hashed password has no plaintext")
	}
	if pw, ok := db.Lookup("clear@b.test").Plaintext(); !ok || pw != "c" {
		t.Error("{CLEAR} is {PLAIN}")
	}
}

// TestNoPasswordsLinked: without package passwd nothing authenticates,
// and the error says why.
func TestNoPasswordsLinked(t *testing.T) {
	withPasswords(t, nil)
	db, _ := Parse(strings.NewReader("a@b.test:{PLAIN}pw\n"))
	if _, err := db.Authenticate("a@b.test", "pw"); !errors.Is(err, ErrAuth) || !errors.Is(err, ErrNoPasswords) {
		t.Errorf("Authenticate without passwd: %v", err)
	}
	if Verify("{PLAIN}pw", "pw") {
		t.Error("Verify without passwd accepted")
	}
	if _, err := Hash(DefaultScheme, "pw"); !errors.Is(err, ErrNoPasswords) {
		t.Errorf("Hash without passwd: %v", err)
	}
	if u := db.Lookup("A@b.test"); u == nil {
		t.Error("lookups need no password code")
	}
}

// TestUnknownUserCostsAHash checks that an unknown user is not answered
// without a hash computation: a decoy is verified, the file's first hash,
// else a hash of the default scheme. (Timing itself belongs in benchmarks;
// this checks the mechanism.)
func TestUnknownUserCostsAHash(t *testing.T) {
	f := &fakePasswords{}
	withPasswords(t, f)
	db, _ := Parse(strings.NewReader("p@b.test:{PLAIN}x\n"))
	db.Authenticate("nobody@b.test", "guess")
	if len(f.verified) != 1 || f.verified[0] != dummy() || !strings.HasPrefix(dummy(), "{FAKE}") {
		t.Errorf("unknown user verified %q, want the default scheme's dummy %q", f.verified, dummy())
	}
	f.verified = nil
	db, _ = Parse(strings.NewReader("p@b.test:{PLAIN}x\nbad@b.test:{MD5}x\nh@b.test:{FAKE}decoy\n"))
	db.Authenticate("nobody@b.test", "guess")
	if len(f.verified) != 1 || f.verified[0] != "{FAKE}decoy" {
		t.Errorf("unknown user verified %q, want the file's first hash", f.verified)
	}
}

func TestDecoy(t *testing.T) {
	withPasswords(t, &fakePasswords{})
	db, _ := Parse(strings.NewReader("p@b.test:{PLAIN}x\nbad@b.test:{MD5}x\na@b.test:{FAKE}h\n"))
	if db.decoy != "{FAKE}h" {
		t.Errorf("decoy = %q, want the first verifiable hash", db.decoy)
	}
	empty, _ := Parse(strings.NewReader("p@b.test:{PLAIN}x\n"))
	if empty.decoy != "" {
		t.Errorf("a plaintext password must not be the decoy: %q", empty.decoy)
	}
}

func TestMailbox(t *testing.T) {
	cases := []struct{ line, kind, path string }{
		{"bob@Ex.test:{PLAIN}x", "maildir", "/var/mail/lb/ex.test/bob"},
		{"Bob@ex.test:{PLAIN}x", "maildir", "/var/mail/lb/ex.test/Bob"},
		{"bob@ex.test:{PLAIN}x:::: /home/bob", "maildir", "/var/mail/lb/ex.test/bob"}, // relative home: ignored
		{"bob@ex.test:{PLAIN}x::::home/bob", "maildir", "/var/mail/lb/ex.test/bob"},
		{"bob@ex.test:{PLAIN}x::::/home/bob", "maildir", "/home/bob/Maildir"},
		{"bob@ex.test:{PLAIN}x::::/home/bob::mail=maildir:~/Mail", "maildir", "/home/bob/Mail"},
		{"bob@ex.test:{PLAIN}x::::/home/bob::userdb_mail=maildir:~/M2:LAYOUT=fs", "maildir", "/home/bob/M2"},
		{"bob@ex.test:{PLAIN}x::::/home/bob::userdb_mail=maildir:/a mail=maildir:/b", "maildir", "/b"},
		{"bob@ex.test:{PLAIN}x:::::: mail=mbox:/var/mail/bob", "mbox", "/var/mail/bob"},
		{"bob@ex.test:{PLAIN}x::::/home/bob::mail=mbox:~/mail:INBOX=/var/mail/%n", "mbox", "/var/mail/bob"},
		{"bob@ex.test:{PLAIN}x:::::: mail=maildir:/srv/%d/%n/", "maildir", "/srv/ex.test/bob"},
		{"bob@ex.test:{PLAIN}x:::::: mail=maildir:/srv/%u", "maildir", "/srv/bob@ex.test"},
		// Unusable mail values fall back to the default.
		{"bob@ex.test:{PLAIN}x:::::: mail=maildir:~/Mail", "maildir", "/var/mail/lb/ex.test/bob"},
		{"bob@ex.test:{PLAIN}x:::::: mail=maildir:relative", "maildir", "/var/mail/lb/ex.test/bob"},
		{"bob@ex.test:{PLAIN}x:::::: mail=sdbox:/x", "maildir", "/var/mail/lb/ex.test/bob"},
	}
	for _, c := range cases {
		u, err := ParseLine(c.line)
		if err != nil {
			t.Fatalf("%q: %v", c.line, err)
		}
		mb := u.Mailbox("/var/mail/lb")
		if mb.Kind != c.kind || mb.Path != c.path {
			t.Errorf("%q: Mailbox = %+v, want %s %s", c.line, mb, c.kind, c.path)
		}
	}
}

func TestReload(t *testing.T) {
	withPasswords(t, &fakePasswords{})
	p := filepath.Join(t.TempDir(), "users")
	os.WriteFile(p, []byte("a@b.test:{PLAIN}1\n"), 0o600)
	db, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate("a@b.test", "1"); err != nil {
		t.Fatal(err)
	}
	// An edit through Add/SetPassword (rename: new inode) is seen.
	if err := Add(p, &User{Name: "c@b.test", Password: "{PLAIN}3"}); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(p, "A@B.test", "{PLAIN}2"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate("a@b.test", "2"); err != nil {
		t.Error("changed password not seen")
	}
	if db.Lookup("c@b.test") == nil {
		t.Error("added user not seen")
	}
	// A broken edit keeps the last good contents and reports the error.
	os.WriteFile(p, []byte("garbage line without at\n"), 0o600)
	later := time.Now().Add(2 * time.Second)
	os.Chtimes(p, later, later)
	if db.Lookup("c@b.test") == nil {
		t.Error("a broken file must not drop the users")
	}
	if db.Err() == nil {
		t.Error("reload error not reported")
	}
	os.Remove(p)
	if db.Lookup("c@b.test") != nil || db.Err() != nil {
		t.Error("a removed file is an empty DB")
	}
}

func TestEdit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "users")
	orig := "# our users\nbob@b.test:{PLAIN}x:1:2:Bob::/bin/sh:mail=maildir:/m/bob\n\n# end\n"
	os.WriteFile(p, []byte(orig), 0o640)
	if err := Add(p, &User{Name: "BOB@b.test", Password: "{PLAIN}y"}); err == nil {
		t.Error("duplicate (differing in case) added")
	}
	if err := Add(p, &User{Name: "bad name@b.test", Password: "{PLAIN}y"}); err == nil {
		t.Error("malformed name added")
	}
	if err := Add(p, &User{Name: "eve@b.test", Password: "{PLAIN}a:b"}); err == nil {
		t.Error("password with ':' added")
	}
	if err := Add(p, &User{Name: "al@b.test", Password: "{PLAIN}z"}); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(p, "bob@B.TEST", "{PLAIN}new"); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(p, "nobody@b.test", "{PLAIN}new"); err == nil {
		t.Error("passwd of an unknown user")
	}
	got, _ := os.ReadFile(p)
	want := "# our users\nbob@b.test:{PLAIN}new:1:2:Bob::/bin/sh:mail=maildir:/m/bob\n\n# end\nal@b.test:{PLAIN}z::::::\n"
	if string(got) != want {
		t.Errorf("file:\n%s\nwant:\n%s", got, want)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v not preserved", fi.Mode().Perm())
	}
	u, err := Delete(p, "BOB@b.test")
	if err != nil || u.Name != "bob@b.test" {
		t.Fatalf("Delete: %v %v", u, err)
	}
	if _, err := Delete(p, "bob@b.test"); err == nil {
		t.Error("deleted twice")
	}
	got, _ = os.ReadFile(p)
	if string(got) != "# our users\n\n# end\nal@b.test:{PLAIN}z::::::\n" {
		t.Errorf("after delete:\n%s", got)
	}
	// A new file is 0600; no temp files are left behind.
	p2 := filepath.Join(dir, "new-users")
	if err := Add(p2, &User{Name: "x@b.test", Password: "{PLAIN}1"}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p2); fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
}

func TestConcurrentAdds(t *testing.T) {
	p := filepath.Join(t.TempDir(), "users")
	var wg sync.WaitGroup
	const n = 40
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- Add(p, &User{Name: fmt.Sprintf("u%d@b.test", i), Password: "{PLAIN}x"})
		}(i)
	}
	testwait.Group(t, &wg, 30*time.Second, "the concurrent adds")
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	db, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(db.Names()); got != n {
		t.Errorf("%d users after %d concurrent adds", got, n)
	}
}
