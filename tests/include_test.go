package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"letterbox/pkg/privsep/privseptest"
)

// Issue 15's :include: attack, replayed with the real commands: an
// include owned by root, group bob, mode 0664, which bob fills with a
// "|command" for root's queue-runner to run. It is refused; the alias's
// mail is deferred (4.3.0) with a log line naming the alias, while the
// rest of the table delivers; deliver exits 75 for it; sendmail -bs and
// sendmail keep working. The same for an include in a directory anyone may
// write (no sticky bit) and for a missing one.
func TestIncludeAttack(t *testing.T) {
	bob := privseptest.NewUser(t)
	e := newEnv(t)
	e.deliverUsers("joe@example.test", "ann@example.test")
	shared := privseptest.Dir(t) // 0711 root: bob reaches files in it
	// Whoever the command runs as (root, default-privs) may write here.
	out := filepath.Join(shared, "out")
	must(t, os.Mkdir(out, 0o777))
	must(t, os.Chmod(out, 0o777|os.ModeSticky))
	marker := filepath.Join(out, "ran")

	inc := filepath.Join(shared, "bob.list")
	must(t, os.WriteFile(inc, []byte("joe\n"), 0o664))
	must(t, os.Chmod(inc, 0o664))
	must(t, os.Chown(inc, 0, int(bob.GID)))
	// bob adds a command: the file lets him.
	add := exec.Command("/bin/sh", "-c", `echo '"|/bin/sh -c \"id -u > `+marker+`\""' >> `+inc)
	add.SysProcAttr = bob.SysProcAttr()
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("bob could not write the group-writable include: %v %s", err, out)
	}

	open := filepath.Join(shared, "open")
	must(t, os.Mkdir(open, 0o777))
	must(t, os.Chmod(open, 0o777))
	openInc := filepath.Join(open, "list")
	must(t, os.WriteFile(openInc, []byte("joe\n"), 0o644))

	must(t, os.WriteFile(e.Aliases, []byte("postmaster: joe\nlist: :include:"+inc+"\nopen: :include:"+openInc+
		"\nmissing: :include:"+filepath.Join(shared, "absent")+"\nstaff: ann\n"), 0o600))

	// deliver: 75 for each disabled alias, 0 for the rest.
	for _, a := range []string{"list", "open", "missing"} {
		if _, errs, code := e.run(deliverMsg, "deliver", a+"@example.test"); code != 75 {
			t.Errorf("deliver %s: exit %d, want 75: %s", a, code, errs)
		}
	}
	if _, errs, code := e.run(deliverMsg, "deliver", "staff@example.test"); code != 0 {
		t.Fatalf("deliver staff: exit %d: %s", code, errs)
	}

	// sendmail -bs: the session works; the disabled alias gets 451.
	bs, errs, code := e.run("EHLO local\r\nMAIL FROM:<joe@example.test>\r\nRCPT TO:<list@example.test>\r\nRCPT TO:<staff@example.test>\r\nDATA\r\nSubject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n", "sendmail", "-bs")
	if code != 0 || !strings.Contains(bs, "451 4.3.0") || !strings.Contains(bs, "250 2.0.0 OK: queued as ") {
		t.Fatalf("sendmail -bs: exit %d\n%s\n%s", code, bs, errs)
	}
	// sendmail: queued for queue-runner to defer, not refused.
	if _, errs, code := e.run("Subject: cmd\n\nx\n", "sendmail", "list@example.test", "open@example.test", "missing@example.test", "staff@example.test"); code != 0 {
		t.Fatalf("sendmail: exit %d: %s", code, errs)
	}

	_, logs, code := e.run("", "queue-runner")
	if code != 0 {
		t.Fatalf("queue-runner: exit %d: %s", code, logs)
	}
	if _, err := os.Stat(marker); err == nil {
		b, _ := os.ReadFile(marker)
		t.Fatalf("bob's command ran, as uid %s", b)
	}
	for _, a := range []string{"list", "open", "missing"} {
		if !strings.Contains(logs, "alias disabled") || !strings.Contains(logs, "alias="+a) {
			t.Errorf("no log line for the disabled alias %s:\n%s", a, logs)
		}
	}
	if n := qCount(t, qMailbox(e, "ann")); n != 3 {
		t.Errorf("ann (staff) has %d messages, want 3 (deliver, -bs, sendmail):\n%s", n, logs)
	}
	if _, err := os.Stat(qMailbox(e, "joe")); err == nil {
		t.Errorf("joe got %d messages through disabled aliases", qCount(t, qMailbox(e, "joe")))
	}
	js, errs, code := e.run("", "queue-runner", "list", "--json")
	if code != 0 {
		t.Fatalf("queue-runner list: %d %s", code, errs)
	}
	var queued []struct {
		Recipients []struct {
			Address, State string
			LastError      string `json:"last_error"`
		}
	}
	must(t, json.Unmarshal([]byte(js), &queued))
	deferred := map[string]string{}
	for _, m := range queued {
		for _, r := range m.Recipients {
			if r.State == "pending" && strings.Contains(r.LastError, "disabled by a bad :include:") {
				deferred[r.Address] = r.LastError
			}
		}
	}
	if len(queued) != 1 || len(deferred) != 3 || deferred["list@example.test"] == "" || deferred["open@example.test"] == "" || deferred["missing@example.test"] == "" {
		t.Errorf("want list, open and missing deferred (one message), got %v:\n%s", deferred, js)
	}

	// Fixed (mode 0644, the directory closed), the next pass delivers.
	must(t, os.Chmod(inc, 0o644))
	must(t, os.Chmod(open, 0o755))
	must(t, os.WriteFile(filepath.Join(shared, "absent"), []byte("joe\n"), 0o644))
	if _, logs, code := e.run("", "queue-runner", "flush"); code != 0 {
		t.Fatalf("queue-runner flush: exit %d: %s", code, logs)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("after the fix the include's command did not run: %v", err)
	}
	if n := qCount(t, qMailbox(e, "joe")); n != 3 {
		t.Errorf("after the fix joe has %d messages, want 3 (list, open, missing)", n)
	}
}
