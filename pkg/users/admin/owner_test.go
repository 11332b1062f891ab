package admin

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"letterbox/pkg/privsep/privseptest"
	"letterbox/pkg/users"
)

// testAdmin is an Admin over a new users file whose password comes from a
// file holding one line.
func testAdmin(t *testing.T, mailRoot string) *Admin {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(pw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &Admin{UsersFile: filepath.Join(dir, "users"), MailRoot: mailRoot, Domains: []string{"example.test"},
		Stdin: f, Out: io.Discard, Err: io.Discard}
}

// wantOwned checks that each directory is owned by uid:gid with mode.
func wantOwned(t *testing.T, uid, gid uint32, mode os.FileMode, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		fi, err := os.Lstat(d)
		if err != nil {
			t.Errorf("%s: %v", d, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || st.Uid != uid || st.Gid != gid || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v owned by %d:%d, want a directory %v owned by %d:%d", d, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
		}
	}
}

func maildirLevels(md string) []string {
	return []string{md, filepath.Join(md, "tmp"), filepath.Join(md, "new"), filepath.Join(md, "cur")}
}

// A virtual mailbox under mail-root with the users file's uid and gid:
// root makes it and gives it to the user.
func TestAddMaildirOwnedByUID(t *testing.T) {
	bob := privseptest.NewUser(t)
	root := filepath.Join(t.TempDir(), "mail")
	a := testAdmin(t, root)
	err := a.Add("bob@example.test", AddOptions{Scheme: "SHA512-CRYPT",
		UID: strconv.Itoa(int(bob.UID)), GID: strconv.Itoa(int(bob.GID))})
	if err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(root, "example.test", "bob")
	wantOwned(t, bob.UID, bob.GID, 0o700, maildirLevels(md)...)
	// The levels above, made by root, stay root's and let bob through.
	wantOwned(t, 0, 0, 0o711, root, filepath.Join(root, "example.test"))
	db, err := users.Load(a.UsersFile)
	if err != nil {
		t.Fatal(err)
	}
	if u := db.Lookup("bob@example.test"); u == nil || u.UID != strconv.Itoa(int(bob.UID)) || u.GID != strconv.Itoa(int(bob.GID)) {
		t.Errorf("users file: %+v", u)
	}
}

// A Maildir in the home directory: made by its owner, with its rights.
func TestAddMaildirInHome(t *testing.T) {
	bob := privseptest.NewUser(t)
	a := testAdmin(t, t.TempDir())
	if err := a.Add("bob@example.test", AddOptions{Scheme: "SHA512-CRYPT", Home: bob.Home}); err != nil {
		t.Fatal(err)
	}
	wantOwned(t, bob.UID, bob.GID, 0o700, maildirLevels(bob.Path("Maildir"))...)
}

// A symlink planted where the Maildir goes: nothing is created through it,
// whether root or the owner would make the Maildir.
func TestAddMaildirSymlink(t *testing.T) {
	bob := privseptest.NewUser(t)
	target := filepath.Join(t.TempDir(), "root-only")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, bob.Path("Maildir")); err != nil {
		t.Fatal(err)
	}
	a := testAdmin(t, t.TempDir())
	err := a.Add("bob@example.test", AddOptions{Scheme: "SHA512-CRYPT", Home: bob.Home,
		UID: strconv.Itoa(int(bob.UID)), GID: strconv.Itoa(int(bob.GID))})
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Add through a symlinked Maildir: %v", err)
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("created through the symlink: %v", ents)
	}

	// A level above the Maildir under mail-root is a symlink.
	root := t.TempDir()
	elsewhere := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Mkdir(elsewhere, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(root, "example.test")); err != nil {
		t.Fatal(err)
	}
	a = testAdmin(t, root)
	err = a.Add("carol@example.test", AddOptions{Scheme: "SHA512-CRYPT", UID: strconv.Itoa(int(bob.UID))})
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Add under a symlinked domain directory: %v", err)
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("created through the symlink: %v", ents)
	}
	// The Maildir exists, reached through the symlinked level above it.
	if err := os.Mkdir(filepath.Join(elsewhere, "dave"), 0o700); err != nil {
		t.Fatal(err)
	}
	a = testAdmin(t, root)
	err = a.Add("dave@example.test", AddOptions{Scheme: "SHA512-CRYPT", UID: strconv.Itoa(int(bob.UID))})
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Add of an existing Maildir under a symlinked directory: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(elsewhere, "dave")); len(ents) != 0 {
		t.Errorf("created through the symlink: %v", ents)
	}
	wantOwned(t, 0, 0, 0o700, filepath.Join(elsewhere, "dave"))
}

// rootOnly decides whether root may create the Maildir itself: only where
// no one else can put anything in its way.
func TestRootOnly(t *testing.T) {
	bob := privseptest.NewUser(t)
	top := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(top, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sticky := mk("sticky", 0o777|os.ModeSticky)
	under := filepath.Join(sticky, "root")
	if err := os.Mkdir(under, 0o755); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]bool{
		top:                    true,
		mk("open", 0o777):      false,
		mk("group", 0o775):     false,
		sticky:                 false, // anyone may create the next level first
		under:                  true,  // a sticky directory above: root's entry stays root's
		bob.Home:               false,
		filepath.Dir(bob.Home): true,
	} {
		if got := rootOnly(dir); got != want {
			t.Errorf("rootOnly(%s) = %v, want %v", dir, got, want)
		}
	}
}

// giveAway never follows a symlink, even one swapped in after the checks.
func TestGiveAwayNoFollow(t *testing.T) {
	bob := privseptest.NewUser(t)
	md := filepath.Join(t.TempDir(), "md")
	target := filepath.Join(t.TempDir(), "root-only")
	for _, d := range []string{md, target} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"new", "cur"} {
		if err := os.Mkdir(filepath.Join(md, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(target, filepath.Join(md, "tmp")); err != nil {
		t.Fatal(err)
	}
	// O_NOFOLLOW|O_DIRECTORY on a symlink: ENOTDIR (Linux) or ELOOP.
	if err := giveAway(md, nil, bob.Cred); !errors.Is(err, syscall.ENOTDIR) && !errors.Is(err, syscall.ELOOP) {
		t.Errorf("giveAway with tmp a symlink: %v", err)
	}
	wantOwned(t, 0, 0, 0o700, target)
}
