package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIMAPContrib: imapd's units and inetd line name modes imapd serves
// and options it takes, and the sockets feed the services they name.
func TestIMAPContrib(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "contrib", name))
		must(t, err)
		return string(b)
	}
	key := func(unit, k string) []string {
		var out []string
		for _, l := range strings.Split(unit, "\n") {
			if v, ok := strings.CutPrefix(l, k+"="); ok {
				out = append(out, v)
			}
		}
		return out
	}
	for sock, want := range map[string]string{"imapd.socket": "imap 143", "imaps.socket": "imaps 993"} {
		u := read(sock)
		mode, port, _ := strings.Cut(want, " ")
		if got := key(u, "FileDescriptorName"); len(got) != 1 || got[0] != mode {
			t.Errorf("%s: FileDescriptorName %v, want %s", sock, got, mode)
		}
		if got := key(u, "ListenStream"); len(got) != 1 || got[0] != port {
			t.Errorf("%s: ListenStream %v", sock, got)
		}
		if got := key(u, "Service"); len(got) != 1 || got[0] != "imapd.service" {
			t.Errorf("%s: Service %v", sock, got)
		}
	}
	ie := newIMAPEnv(t)
	help, _, _ := ie.run("", "imapd", "--help")
	for _, unit := range []string{"imapd.service", "imapd-accept@.service"} {
		for _, ex := range key(read(unit), "ExecStart") {
			args := strings.Fields(ex)
			if filepath.Base(args[0]) != "imapd" {
				t.Errorf("%s: ExecStart %s", unit, ex)
			}
			for _, a := range args[1:] {
				if strings.HasPrefix(a, "--") && !strings.Contains(help, a) {
					t.Errorf("%s: imapd has no %s", unit, a)
				}
			}
		}
	}
	if got := key(read("imapd-accept.socket"), "Accept"); len(got) != 1 || got[0] != "yes" {
		t.Errorf("imapd-accept.socket: Accept %v", got)
	}
	n := 0
	for _, l := range strings.Split(read("inetd.conf"), "\n") {
		f := strings.Fields(l)
		if len(f) < 7 || filepath.Base(f[5]) != "imapd" {
			continue
		}
		n++
		if f[0] != "imap2" && f[0] != "imaps" || f[1] != "stream" || f[3] != "nowait" {
			t.Errorf("inetd.conf: %q", l)
		}
		if f[0] == "imaps" && strings.Join(f[6:], " ") != "imapd --mode imaps" {
			t.Errorf("inetd.conf imaps line: %q", l)
		}
	}
	if n != 2 {
		t.Errorf("inetd.conf: %d imapd lines, want 2", n)
	}
}
