package aliases

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"letterbox/pkg/privsep/privseptest"
)

func mustLoad(t *testing.T, p string) *Table {
	t.Helper()
	tb, err := Load(p)
	if err != nil {
		t.Fatalf("a bad :include: must not fail the whole table: %v", err)
	}
	return tb
}

// includeSetup writes an aliases file (mode 0644, root's) naming the
// include file inc for the alias list, beside aliases that must keep
// working, and returns its path.
func includeSetup(t *testing.T, dir, inc string) string {
	t.Helper()
	p := filepath.Join(dir, "aliases")
	src := "other: dan\nlist: ann, :include:" + inc + "\nmissing: :include:" + filepath.Join(dir, "absent") + "\nlast: |/bin/last\n"
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkDisabled loads p and checks that list alone is disabled, with a
// log line naming it, while other and last still resolve.
func checkDisabled(t *testing.T, p, why string) {
	t.Helper()
	var logs bytes.Buffer
	tb, err := LoadLog(p, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("%s: the whole table failed: %v", why, err)
	}
	a, ok := tb.FindExact("list", "x.test")
	if !ok || !errors.Is(a.Err, ErrBadInclude) || len(a.Targets) != 0 {
		t.Errorf("%s: include accepted: %+v", why, a)
	}
	if got, _ := tb.LookupExact("other", "x.test"); !reflect.DeepEqual(got, []string{"dan"}) {
		t.Errorf("%s: another alias lost: %q", why, got)
	}
	if got, _ := tb.LookupExact("last", "x.test"); !reflect.DeepEqual(got, []string{"|/bin/last"}) {
		t.Errorf("%s: an alias after the bad one lost: %q", why, got)
	}
	if !strings.Contains(logs.String(), "alias=list") || !strings.Contains(logs.String(), "alias disabled") {
		t.Errorf("%s: no log line for the disabled alias: %q", why, logs.String())
	}
	if tb.Err() != nil {
		t.Errorf("%s: Err() = %v (the table itself is fine)", why, tb.Err())
	}
}

func TestIncludeMissingDisablesOnlyItsAlias(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "list")
	must(t, os.WriteFile(inc, []byte("ben\n"), 0o644))
	p := includeSetup(t, dir, inc)
	tb := mustLoad(t, p)
	a, ok := tb.FindExact("missing", "x.test")
	if !ok || !errors.Is(a.Err, ErrBadInclude) || !errors.Is(a.Err, os.ErrNotExist) {
		t.Errorf("missing include: %+v", a)
	}
	if got, _ := tb.LookupExact("list", "x.test"); !reflect.DeepEqual(got, []string{"ann", "ben"}) {
		t.Errorf("list = %q", got)
	}
	// A syntax error, a nested include, a FIFO, a directory, a symlink.
	for why, setup := range map[string]func(){
		"syntax error": func() { os.WriteFile(inc, []byte("ok\nbob alice\n"), 0o644) },
		"nested":       func() { os.WriteFile(inc, []byte(":include:/etc/passwd\n"), 0o644) },
		"fifo":         func() { must(t, syscall.Mkfifo(inc, 0o644)) },
		"directory":    func() { must(t, os.Mkdir(inc, 0o755)) },
		"symlink": func() {
			target := filepath.Join(dir, "target")
			must(t, os.WriteFile(target, []byte("ben\n"), 0o644))
			must(t, os.Symlink(target, inc))
		},
	} {
		os.RemoveAll(inc)
		setup()
		checkDisabled(t, p, why)
		os.RemoveAll(inc)
	}
}

func TestIncludeModes(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "list")
	p := includeSetup(t, dir, inc)
	must(t, os.WriteFile(inc, []byte("|/bin/evil\n"), 0o644))
	for _, mode := range []os.FileMode{0o664, 0o666, 0o646, 0o620, 0o602} {
		must(t, os.Chmod(inc, mode))
		checkDisabled(t, p, "mode "+mode.String())
	}
	must(t, os.Chmod(inc, 0o644))
	if a, _ := mustLoad(t, p).FindExact("list", "x.test"); a.Err != nil || len(a.Targets) != 2 {
		t.Errorf("a safe include refused: %+v", a)
	}
}

// The attack of issue 15: an include owned by root, group bob, mode 0664,
// which bob can fill with "|command" lines for the mail system to run.
func TestIncludeRootGroupWritable(t *testing.T) {
	bob := privseptest.NewUser(t)
	dir := t.TempDir()
	inc := filepath.Join(dir, "list")
	must(t, os.WriteFile(inc, []byte("ben\n"), 0o664))
	must(t, os.Chmod(inc, 0o664))
	must(t, os.Chown(inc, 0, int(bob.GID)))
	p := includeSetup(t, dir, inc)
	checkDisabled(t, p, "root:bob 0664")

	// The table notices the fix (a chmod: ctime) without an edit of the
	// aliases file.
	tb := mustLoad(t, p)
	must(t, os.Chmod(inc, 0o644))
	a, _ := tb.FindExact("list", "x.test")
	if a.Err != nil || !reflect.DeepEqual(a.Targets, []Target{{"ann", 0}, {"ben", 0}}) {
		t.Errorf("after the fix: %+v", a)
	}
}

func TestIncludeOwner(t *testing.T) {
	bob := privseptest.NewUser(t)
	dir := t.TempDir()
	inc := filepath.Join(dir, "list")
	must(t, os.WriteFile(inc, []byte("|/bin/bobs\n"), 0o644))
	must(t, os.Chown(inc, int(bob.UID), int(bob.GID)))
	p := includeSetup(t, dir, inc)
	// Owned by bob, the aliases file by root: refused.
	checkDisabled(t, p, "owned by another user")

	// The aliases file is bob's too: accepted, and each target keeps the
	// uid of the file it came from.
	must(t, os.Chown(p, int(bob.UID), int(bob.GID)))
	a, _ := mustLoad(t, p).FindExact("list", "x.test")
	want := []Target{{"ann", int(bob.UID)}, {"|/bin/bobs", int(bob.UID)}}
	if a.Err != nil || !reflect.DeepEqual(a.Targets, want) {
		t.Errorf("bob's include of bob's aliases: %+v, want %+v", a, want)
	}

	// Root's include in root's aliases file: owner 0 for both.
	must(t, os.Chown(p, 0, 0))
	must(t, os.Chown(inc, 0, 0))
	a, _ = mustLoad(t, p).FindExact("list", "x.test")
	if want := []Target{{"ann", 0}, {"|/bin/bobs", 0}}; a.Err != nil || !reflect.DeepEqual(a.Targets, want) {
		t.Errorf("root's include: %+v, want %+v", a, want)
	}
}

// A safe file in an unsafe directory is refused: whoever may rename
// entries there can put another file in its place.
func TestIncludeDirectories(t *testing.T) {
	bob := privseptest.NewUser(t)
	top := t.TempDir()
	dir := filepath.Join(top, "lists")
	must(t, os.Mkdir(dir, 0o755))
	inc := filepath.Join(dir, "list")
	must(t, os.WriteFile(inc, []byte("ben\n"), 0o644))
	p := includeSetup(t, top, inc)
	ok := func(why string) {
		t.Helper()
		if a, _ := mustLoad(t, p).FindExact("list", "x.test"); a.Err != nil || len(a.Targets) != 2 {
			t.Errorf("%s: refused: %+v", why, a)
		}
	}
	ok("root's 0755 directory")

	must(t, os.Chmod(dir, 0o777))
	checkDisabled(t, p, "directory 0777")
	must(t, os.Chmod(dir, 0o775))
	checkDisabled(t, p, "directory 0775")
	must(t, os.Chmod(dir, 0o777|os.ModeSticky))
	ok("sticky 1777 directory")

	must(t, os.Chmod(dir, 0o755))
	must(t, os.Chown(dir, int(bob.UID), int(bob.GID)))
	checkDisabled(t, p, "directory owned by bob")
	must(t, os.Chown(dir, 0, 0))

	// A directory above is unsafe.
	must(t, os.Chmod(top, 0o777))
	checkDisabled(t, p, "parent directory 0777")
	must(t, os.Chmod(top, 0o700))

	// A symlinked directory is resolved: the directories checked are the
	// target's.
	link := filepath.Join(top, "linked")
	must(t, os.Symlink(dir, link))
	p2 := includeSetup(t, top, filepath.Join(link, "list"))
	if a, _ := mustLoad(t, p2).FindExact("list", "x.test"); a.Err != nil {
		t.Errorf("through a symlinked safe directory: %+v", a)
	}
	must(t, os.Chmod(dir, 0o777))
	checkDisabled(t, p2, "through a symlink to an unsafe directory")
}

func TestAliasesFileOwner(t *testing.T) {
	bob := privseptest.NewUser(t)
	p := filepath.Join(t.TempDir(), "aliases")
	must(t, os.WriteFile(p, []byte("x: |/bin/x, /var/mail/x\n"), 0o644))
	must(t, os.Chown(p, int(bob.UID), int(bob.GID)))
	a, _ := mustLoad(t, p).FindExact("x", "x.test")
	if want := []Target{{"|/bin/x", int(bob.UID)}, {"/var/mail/x", int(bob.UID)}}; !reflect.DeepEqual(a.Targets, want) {
		t.Errorf("targets %+v, want %+v", a.Targets, want)
	}
	tb, _ := Parse(strings.NewReader("x: |/bin/x\n"))
	if a, _ := tb.FindExact("x", "x.test"); a.Targets[0].Owner != -1 {
		t.Errorf("Parse: owner %d, want -1", a.Targets[0].Owner)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
