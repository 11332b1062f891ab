//go:build interop

package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// postfixInstance is a private Postfix: its own main.cf, master.cf, queue
// and log file under a temp dir, so tests never touch the system's Postfix
// (which need not even be configured). Daemons run unchrooted.
type postfixInstance struct {
	Dir string // etc/ (main.cf, master.cf, whatever the test adds), queue/, data/, postfix.log
}

// Etc is the configuration directory, for postfix -c and sendmail -C.
func (p *postfixInstance) Etc() string { return filepath.Join(p.Dir, "etc") }

// Log returns Postfix's log so far.
func (p *postfixInstance) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "postfix.log"))
	return string(b)
}

// newPostfix prepares the directories of an instance (not started yet: the
// caller may add files to Etc first). The directory goes away at the end
// of the test, also when Postfix never starts.
func newPostfix(t *testing.T, prefix string) *postfixInstance {
	t.Helper()
	for _, c := range []string{"postfix", "postconf"} {
		if _, err := exec.LookPath(c); err != nil {
			if _, err := os.Stat("/usr/sbin/" + c); err != nil {
				t.Fatalf("%s not installed (tests/interop/packages.txt)", c)
			}
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("a private Postfix instance needs root")
	}
	dir, err := os.MkdirTemp("", prefix)
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	for _, d := range []string{"etc", "queue", "data"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	postfixRun(t, "chown", "postfix", filepath.Join(dir, "data"))
	return &postfixInstance{Dir: dir}
}

func postfixRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// start writes main.cf (the settings every instance needs, then mainCf)
// and a master.cf made from the system's, with its smtpd inet service
// replaced by the inet lines given (none: no listener at all, a client-only
// Postfix), starts Postfix and waits until each inet address accepts. At
// the end of the test Postfix is stopped, and its log shown if the test
// failed.
func (p *postfixInstance) start(t *testing.T, mainCf string, inet ...string) {
	t.Helper()
	common := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
inet_protocols = ipv4
maillog_file_prefixes = /tmp, /var
maillog_file = %[1]s/postfix.log
`, p.Dir)
	must(t, os.WriteFile(filepath.Join(p.Etc(), "main.cf"), []byte(common+mainCf), 0o644))
	master, err := os.ReadFile("/etc/postfix/master.cf")
	must(t, err)
	var lines []string
	for _, l := range strings.Split(string(master), "\n") {
		if strings.HasPrefix(l, "smtp ") && strings.Contains(l, " inet ") {
			continue
		}
		if strings.HasPrefix(l, "#postlog") {
			l = strings.TrimPrefix(l, "#")
		}
		lines = append(lines, l)
	}
	m := strings.Join(lines, "\n")
	if !strings.Contains(m, "\npostlog") {
		m += "\npostlog unix-dgram n - n - 1 postlogd\n"
	}
	m += "\n" + strings.Join(inet, "\n") + "\n"
	must(t, os.WriteFile(filepath.Join(p.Etc(), "master.cf"), []byte(m), 0o644))
	postfixRun(t, "postconf", "-c", p.Etc(), "-F", "*/*/chroot = n")
	exec.Command("postfix", "-c", p.Etc(), "check").Run()
	t.Cleanup(func() {
		exec.Command("postfix", "-c", p.Etc(), "stop").Run()
		if t.Failed() {
			t.Logf("postfix log:\n%s", p.Log())
		}
		// Postfix's daemons take a moment to leave the queue directory.
		waitFor(t, 10*time.Second, "postfix to stop", func() bool {
			return exec.Command("postfix", "-c", p.Etc(), "status").Run() != nil
		})
		os.RemoveAll(p.Dir)
	})
	postfixRun(t, "postfix", "-c", p.Etc(), "start")
	// `postfix start` returns before master(8) has opened its FIFOs:
	// mail posted earlier would wait for pickup's next poll, a minute
	// later. master logs this line once they are open.
	waitFor(t, 60*time.Second, "Postfix's master to log that it started", func() bool {
		return strings.Contains(p.Log(), "daemon started -- version")
	})
	for _, l := range inet {
		addr, _, _ := strings.Cut(l, " ")
		waitListening(t, addr)
	}
}
