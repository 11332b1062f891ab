package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config"
	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/imap"
)

// TestImapdDeps fails when imapd links urfave/cli or what its config file
// support drags in: imapd is started once per connection in inetd mode,
// and with a cold page cache the whole binary is read from disk at each
// start (the VM's disk reads ahead 8 MiB), so every package linked is paid
// at login.
func TestImapdDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-tags", "urfave_cli_no_docs", "letterbox/cmd/imapd").Output()
	if err != nil {
		t.Fatalf("go list -deps letterbox/cmd/imapd: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || deps[len(deps)-1] != "letterbox/cmd/imapd" {
		t.Fatalf("go list gave an unexpected answer: %q", out)
	}
	for _, d := range deps {
		for _, h := range []string{"github.com/urfave/cli", "gopkg.in/yaml", "text/template", "letterbox/pkg/config/cliapp",
			"github.com/russross/blackfriday", "github.com/cpuguy83/go-md2man"} {
			if d == h || strings.HasPrefix(d, h+"/") {
				t.Errorf("cmd/imapd links %s: it must start fast; see pkg/config's lean parser", d)
			}
		}
	}
}

// TestImapdHelp: imapd's --help is the one urfave/cli printed for the same
// flags, byte for byte (imapd(8) and scripts rely on its flag list).
func TestImapdHelp(t *testing.T) {
	os.Unsetenv("LETTERBOX_HOSTNAME")
	var want, got bytes.Buffer
	app := cliapp.NewApp("imapd", usage, cliapp.Flags(imap.Flags()))
	app.Writer, app.ErrWriter = &want, io.Discard
	app.Action = func(*cli.Context) error { return errors.New("no help printed") }
	if err := app.Run([]string{"imapd", "--help"}); err != nil {
		t.Fatal(err)
	}
	p := config.NewLean("imapd", usage, "", imap.Flags())
	p.Stdout = &got
	if _, err := p.Parse([]string{"--help"}); !errors.Is(err, config.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	if got.String() != want.String() {
		t.Errorf("--help differs from urfave/cli's\nurfave/cli:\n%s\nimapd:\n%s", want.String(), got.String())
	}
	for _, f := range []string{"--listen", "--max-preauth-literal", "--poll-interval", "(default: false)", "(default: 0s)"} {
		if !strings.Contains(got.String(), f) {
			t.Errorf("--help lacks %s", f)
		}
	}
}

// TestImapdStripped: the Makefile links imapd without symbol table and
// DWARF (-s -w). A cold start reads the whole file, so the 3.5 MB of
// debug data cost about a fifth of a cold login (bench/NOTES-perf.md).
func TestImapdStripped(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mk), "\n") {
		if strings.Contains(l, " build ") && strings.HasSuffix(strings.TrimSpace(l), "./cmd/imapd") {
			if !strings.Contains(l, "-s -w") {
				t.Errorf("the Makefile builds imapd without -s -w: %s", l)
			}
			return
		}
	}
	t.Error("the Makefile has no build line of its own for ./cmd/imapd")
}
