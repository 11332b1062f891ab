//go:build interop

package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func qNeed(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not installed (tests/interop/packages.txt)", c)
		}
	}
}

// queue-runner --mda with MDAs nobody here wrote: mblaze's mdeliver and
// procmail each deliver into a Maildir that mblaze's mlist then reads.
func TestInteropQueueMDAs(t *testing.T) {
	qNeed(t, "mdeliver", "mlist", "procmail", "mshow")
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	for _, mda := range []string{"mdeliver", "procmail"} {
		t.Run(mda, func(t *testing.T) {
			box := filepath.Join(e.Dir, mda+"-box")
			for _, sub := range []string{"cur", "new", "tmp"} {
				must(t, os.MkdirAll(filepath.Join(box, sub), 0o700))
			}
			cmd := "mdeliver " + box
			if mda == "procmail" {
				rc := filepath.Join(e.Dir, "procmailrc")
				must(t, os.WriteFile(rc, []byte(":0\n"+box+"/\n"), 0o600))
				cmd = "procmail -m " + rc
			}
			id := qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(3))
			qRun(t, e, "--mda", cmd)
			if !qSpoolEmpty(t, e) {
				t.Fatalf("%s: message %s still queued", mda, id)
			}
			out, err := exec.Command("mlist", box).CombinedOutput()
			if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || len(out) == 0 {
				t.Fatalf("mlist: %v\n%s", err, out)
			}
			msg, _ := os.ReadFile(strings.TrimSpace(string(out)))
			if !strings.Contains(string(msg), "Return-Path: <alice@example.test>") || !strings.Contains(string(msg), "Subject: test 3") {
				t.Fatalf("delivered by %s:\n%s", mda, msg)
			}
		})
	}
}

// A bounce read with mblaze's mshow: its MIME structure and the
// delivery-status part.
func TestInteropQueueDSNmshow(t *testing.T) {
	qNeed(t, "mshow")
	e := newEnv(t)
	e.addUser("alice@example.test", "pw")
	qSubmit(t, e, "alice@example.test", []string{"nobody@example.test"}, qMsg(9))
	qRun(t, e)
	files := maildirFiles(t, qMailbox(e, "alice"), "new")
	if len(files) != 1 {
		t.Fatalf("alice's maildir: %v", files)
	}
	out, err := exec.Command("mshow", "-t", files[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("mshow -t: %v\n%s", err, out)
	}
	for _, want := range []string{"multipart/report", "text/plain", "message/delivery-status", "message/rfc822"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("mshow -t lacks %s:\n%s", want, out)
		}
	}
	out, err = exec.Command("mshow", "-O", files[0], "3").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Final-Recipient: rfc822; nobody@example.test") || !strings.Contains(string(out), "Status: 5.1.1") {
		t.Fatalf("mshow -O 3: %v\n%s", err, out)
	}
}
