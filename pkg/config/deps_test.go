package config

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// heavyForDeliver are packages deliver must not link: each costs start-up
// time at every message (urfave/cli alone tripled deliver's time per
// message), and deliver needs none of them. The password hashing belongs
// to pkg/users/passwd, which deliver does not import.
var heavyForDeliver = []string{
	"github.com/urfave/cli",
	"github.com/cpuguy83/go-md2man",
	"github.com/russross/blackfriday",
	"gopkg.in/yaml",
	"net",
	"net/http",
	// crypto/rand (go-maildir's, for names deliver does not make) links
	// the FIPS crypto packages, whose initialisation cost ~0.5 ms a run.
	"crypto",
	"github.com/emersion/go-maildir",
	"regexp",
	"golang.org/x/crypto",
	"letterbox/pkg/users/passwd",
	"letterbox/pkg/config/cliapp",
}

// TestDeliverDeps fails when cmd/deliver, or anything it imports, links
// one of heavyForDeliver.
func TestDeliverDeps(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("go not in PATH: %v", err)
	}
	out, err := exec.Command("go", "list", "-deps", "letterbox/cmd/deliver").Output()
	if err != nil {
		t.Fatalf("go list -deps letterbox/cmd/deliver: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || deps[len(deps)-1] != "letterbox/cmd/deliver" {
		t.Fatalf("go list gave an unexpected answer: %q", out)
	}
	for _, d := range deps {
		for _, h := range heavyForDeliver {
			if d == h || strings.HasPrefix(d, h+"/") {
				t.Errorf("cmd/deliver links %s (via %s): it must start fast; see pkg/config's lean parser", h, d)
			}
		}
	}
}

// TestConfigIsLean: pkg/config itself stays free of urfave/cli, which is
// in pkg/config/cliapp.
func TestConfigIsLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "letterbox/pkg/config").Output()
	if err != nil {
		t.Fatalf("go list -deps letterbox/pkg/config: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		if strings.HasPrefix(d, "github.com/urfave/cli") || d == "net/http" {
			t.Errorf("pkg/config links %s", d)
		}
	}
}

// TestServersLinkNoDocGenerators: built as the Makefile builds them (its
// TAGS), the commands started per connection link neither urfave/cli's
// Markdown and man page generators nor the Markdown library, whose
// package initialisation runs at every start.
func TestServersLinkNoDocGenerators(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	var tags string
	for _, l := range strings.Split(string(mk), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == "TAGS" {
			tags = strings.TrimSpace(v)
		}
	}
	if tags == "" {
		t.Fatal("the Makefile sets no TAGS")
	}
	for _, cmd := range []string{"imapd", "pop3d", "smtpd"} {
		out, err := exec.Command("go", "list", "-deps", "-tags", tags, "letterbox/cmd/"+cmd).Output()
		if err != nil {
			t.Fatalf("go list -deps -tags %s letterbox/cmd/%s: %v", tags, cmd, err)
		}
		for _, d := range strings.Fields(string(out)) {
			if strings.HasPrefix(d, "github.com/russross/blackfriday") || strings.HasPrefix(d, "github.com/cpuguy83/go-md2man") {
				t.Errorf("cmd/%s built with -tags %s links %s", cmd, tags, d)
			}
		}
	}
}

// TestDeliverRuntimeSettings: deliver is built with updatemaxprocs=0 (its
// //go:debug line): no goroutine following the CPU limit is started in a
// process that lives a few milliseconds.
func TestDeliverRuntimeSettings(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.DefaultGODEBUG}}", "letterbox/cmd/deliver").Output()
	if err != nil {
		t.Fatalf("go list -f {{.DefaultGODEBUG}} letterbox/cmd/deliver: %v", err)
	}
	settings := strings.Split(strings.TrimSpace(string(out)), ",")
	found := false
	for _, s := range settings {
		found = found || s == "updatemaxprocs=0"
	}
	if !found {
		t.Errorf("cmd/deliver's default GODEBUG is %q, without updatemaxprocs=0", out)
	}
}
