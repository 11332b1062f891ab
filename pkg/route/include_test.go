package route

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"letterbox/pkg/aliases"
	"letterbox/pkg/privsep/privseptest"
	"letterbox/pkg/users"
)

// fileRouter is a Router over an aliases file at p (loaded from disk, so
// that targets carry their file's owner).
func fileRouter(t *testing.T, p string) *Router {
	t.Helper()
	db, err := users.Parse(strings.NewReader(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	al, err := aliases.LoadLog(p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("a bad :include: must not fail the table: %v", err)
	}
	return &Router{Domains: []string{"example.test", "catch.test"}, MailRoot: t.TempDir(), Users: db, Aliases: al, AllowPipes: true}
}

func TestAliasOwner(t *testing.T) {
	bob := privseptest.NewUser(t)
	dir := t.TempDir()
	inc := filepath.Join(dir, "bob.list")
	if err := os.WriteFile(inc, []byte("|/bin/bobs, /home/bob/box, /home/bob/md/, alice\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(inc, int(bob.UID), int(bob.GID)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "aliases")
	src := "roots: |/bin/roots, /var/mail/roots, /srv/roots/, bob, far@remote.test\n" +
		"bobs: :include:" + inc + "\n" +
		"both: roots, bobs\n"
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	// The aliases file is bob's, so bob's include is accepted; its own
	// targets are bob's too.
	if err := os.Chown(p, int(bob.UID), int(bob.GID)); err != nil {
		t.Fatal(err)
	}
	r := fileRouter(t, p)
	owners := func(addr string) map[string]int {
		t.Helper()
		ds, err := r.Resolve(addr)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		m := map[string]int{}
		for _, d := range ds {
			m[summary(r, []Destination{d})] = d.AliasOwner
		}
		return m
	}
	b := int(bob.UID)
	check := func(addr string, want map[string]int) {
		t.Helper()
		got := owners(addr)
		if len(got) != len(want) {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
		for k, w := range want {
			if g, ok := got[k]; !ok || g != w {
				t.Errorf("%s: %s AliasOwner %d (present %v), want %d", addr, k, g, ok, w)
			}
		}
	}
	check("roots@example.test", map[string]int{"pipe:/bin/roots": b, "mbox:/var/mail/roots": b, "maildir:/srv/roots": b,
		"maildir:$R/example.test/bob": -1, "remote:far@remote.test": -1})
	check("bobs@example.test", map[string]int{"pipe:/bin/bobs": b, "mbox:/home/bob/box": b, "maildir:/home/bob/md": b,
		"maildir:$R/example.test/Alice": -1})

	// Root's aliases file and root's include: 0 (default-privs).
	if err := os.Chown(p, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(inc, 0, 0); err != nil {
		t.Fatal(err)
	}
	r = fileRouter(t, p)
	check("both@example.test", map[string]int{"pipe:/bin/roots": 0, "mbox:/var/mail/roots": 0, "maildir:/srv/roots": 0,
		"maildir:$R/example.test/bob": -1, "remote:far@remote.test": -1,
		"pipe:/bin/bobs": 0, "mbox:/home/bob/box": 0, "maildir:/home/bob/md": 0, "maildir:$R/example.test/Alice": -1})
	check("bob@example.test", map[string]int{"maildir:$R/example.test/bob": -1})
	check("someone@remote.test", map[string]int{"remote:someone@remote.test": -1})
	check("postmaster@example.test", map[string]int{"maildir:$R/postmaster": -1})

	// Root's aliases file, bob's include: refused, the alias deferred.
	if err := os.Chown(inc, b, int(bob.GID)); err != nil {
		t.Fatal(err)
	}
	r = fileRouter(t, p)
	if _, err := r.Resolve("bobs@example.test"); !errors.Is(err, ErrAliasDisabled) {
		t.Errorf("bob's include in root's aliases: %v", err)
	}
	check("roots@example.test", map[string]int{"pipe:/bin/roots": 0, "mbox:/var/mail/roots": 0, "maildir:/srv/roots": 0,
		"maildir:$R/example.test/bob": -1, "remote:far@remote.test": -1})
}

// A disabled alias is a temporary error wherever it is met, and only there.
func TestAliasDisabled(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "list")
	if err := os.WriteFile(inc, []byte("|/bin/evil\n"), 0o664); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(inc, 0o664); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "aliases")
	src := "list: bob, :include:" + inc + "\nvia: alice, list\nok: alice\n@catch.test: :include:" + filepath.Join(dir, "absent") + "\n"
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r := fileRouter(t, p)
	for _, addr := range []string{"list@example.test", "via@example.test", "list+x@example.test", "anyone@catch.test"} {
		ds, err := r.Resolve(addr)
		if !errors.Is(err, ErrAliasDisabled) || errors.Is(err, ErrNoSuchUser) || errors.Is(err, ErrLoop) ||
			errors.Is(err, ErrBadAddress) || errors.Is(err, ErrNotAllowed) || len(ds) != 0 {
			t.Errorf("Resolve(%s) = %q, %v; want only ErrAliasDisabled", addr, summary(r, ds), err)
		}
		if err := r.Exists(addr); !errors.Is(err, ErrAliasDisabled) {
			t.Errorf("Exists(%s) = %v", addr, err)
		}
	}
	for addr, want := range map[string]string{"ok@example.test": "maildir:$R/example.test/Alice", "bob@example.test": "maildir:$R/example.test/bob"} {
		if ds, err := r.Resolve(addr); err != nil || summary(r, ds) != want {
			t.Errorf("Resolve(%s) = %q, %v; want %q", addr, summary(r, ds), err, want)
		}
	}
}
