package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPop3dDeps fails when pop3d links urfave/cli or what its config file
// support drags in: pop3d is started once per connection in inetd mode,
// and each package's init and pages are paid at every login.
func TestPop3dDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "letterbox/cmd/pop3d").Output()
	if err != nil {
		t.Fatalf("go list -deps letterbox/cmd/pop3d: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || deps[len(deps)-1] != "letterbox/cmd/pop3d" {
		t.Fatalf("go list gave an unexpected answer: %q", out)
	}
	for _, d := range deps {
		for _, h := range []string{"github.com/urfave/cli", "gopkg.in/yaml", "net/http", "letterbox/pkg/config/cliapp", "github.com/russross/blackfriday"} {
			if d == h || strings.HasPrefix(d, h+"/") {
				t.Errorf("cmd/pop3d links %s: it must start fast; see pkg/config's lean parser", d)
			}
		}
	}
}
