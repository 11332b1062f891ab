package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"letterbox/pkg/sysexits"
)

// deliver runs the command in-process with an empty config file and returns
// its exit code, stdout and stderr.
func deliver(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "letterbox.conf")
	if err := os.WriteFile(conf, []byte("log-level = \"error\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LETTERBOX_CONFIG", conf)
	var out, errw bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errw)
	return code, out.String(), errw.String()
}

// TestMaildirReadsNoUsersOrAliases: --maildir and --mbox deliver without
// reading the users and aliases files, so broken ones don't matter.
func TestMaildirReadsNoUsersOrAliases(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("no colon here\n:\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(dir, "Maildir")
	code, _, errs := deliver(t, "Subject: s\n\nbody\n", "--users", broken, "--aliases", broken, "-f", "a@b.test", "--maildir", md)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	files, _ := filepath.Glob(filepath.Join(md, "new", "*"))
	if len(files) != 1 {
		t.Fatalf("%d messages in new/", len(files))
	}
	mb := filepath.Join(dir, "mbox")
	if code, _, errs := deliver(t, "Subject: s\n\nbody\n", "--users", broken, "--aliases", broken, "--mbox", mb); code != 0 {
		t.Fatalf("mbox: exit %d: %s", code, errs)
	}
	// The ADDRESS form does read them, and a broken users file is a
	// temporary failure (the mail waits for the fix).
	if code, _, errs := deliver(t, "Subject: s\n\nbody\n", "--users", broken, "--aliases", broken, "u@localhost"); code != sysexits.TempFail {
		t.Errorf("ADDRESS with a broken users file: exit %d, want %d: %s", code, sysexits.TempFail, errs)
	}
}

func TestExitCodes(t *testing.T) {
	md := filepath.Join(t.TempDir(), "Maildir")
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--help"}, 0, "GLOBAL OPTIONS:"},
		{[]string{"--version"}, 0, "deliver version "},
		{[]string{"--bogus", "--maildir", md}, sysexits.Usage, ""},
		{[]string{"--maildir"}, sysexits.Usage, ""},
		{[]string{"a@b.test", "c@d.test"}, sysexits.Usage, ""},
		{[]string{"--maildir", md, "--mbox", md + ".mbox"}, sysexits.Usage, ""},
		{[]string{}, sysexits.Usage, ""},
		{[]string{"--log-level", "loud", "--maildir", md}, sysexits.TempFail, ""},
		{[]string{"--config", filepath.Join(md, "absent.conf"), "--maildir", md}, sysexits.TempFail, ""},
	} {
		code, out, errs := deliver(t, "Subject: s\n\nbody\n", c.args...)
		if code != c.code || !strings.Contains(out, c.out) {
			t.Errorf("%q: exit %d, want %d; stdout %.60q; stderr %q", c.args, code, c.code, out, errs)
		}
	}
}
