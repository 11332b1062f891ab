package tests

// Durability order, observed: each commit path of the real binaries runs
// under strace (strace_test.go) and its calls are replayed against a model
// of what a power loss keeps. The promises are those of DESIGN.md's
// Guarantees, letterbox-spool(5), deliver(8) and README: data flushed
// before the rename or link that publishes it, the directory flushed
// before success is reported (a 250 or +OK on the socket, exit 0), and
// nothing reported before that.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// durableMsg is a small message for the traced deliveries.
const durableMsg = "From: s@example.org\nSubject: durable\n\nbody\n"

// TestDurabilityDeliverMaildir: deliver --maildir into a Maildir it must
// create; at exit 0 the message and the Maildir's directories are on disk.
func TestDurabilityDeliverMaildir(t *testing.T) {
	e := newEnv(t)
	md := filepath.Join(e.Dir, "Maildir")
	_, errs, code, tr := e.runTraced(durableMsg, "deliver", "-f", "s@example.org", "--maildir", md)
	if code != 0 {
		t.Fatalf("deliver: exit %d\n%s", code, errs)
	}
	if n := len(maildirFiles(t, md, "new")); n != 1 {
		t.Fatalf("%d messages in new/", n)
	}
	tr.promises(t).
		published(filepath.Join(md, "new")).
		allDurableAt("deliver exits 0 only with the message and its Maildir on disk", tr.exitOK(), md, inTmp).
		check()
}

// TestDurabilityDeliverMbox: deliver --mbox records where its append
// starts in the dotlock durably before appending (so a crash is undone by
// the next locker), and exits 0 with the message on disk and the dotlock
// durably gone (a dotlock surviving a crash would undo the delivery).
func TestDurabilityDeliverMbox(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.Dir, "box")
	must(t, os.Mkdir(dir, 0o700))
	mb := filepath.Join(dir, "mbox")
	for i, fresh := range []bool{true, false} {
		_, errs, code, tr := e.runTraced(durableMsg, "deliver", "-f", "s@example.org", "--mbox", mb)
		if code != 0 {
			t.Fatalf("deliver %d: exit %d\n%s", i, code, errs)
		}
		what := map[bool]string{true: "a new mbox", false: "an existing mbox"}[fresh]
		tr.promises(t).
			durableAt(what+": the append's start is in the dotlock, durably, before the first write to the mbox",
				firstWriteTo(tr, mb), paths(mb+".lock"), nil).
			durableAt(what+": deliver exits 0 only with the message on disk and the dotlock gone",
				tr.exitOK(), paths(mb), paths(mb+".lock")).
			check()
	}
}

// firstWriteTo selects the first successful write to the file p.
func firstWriteTo(tr *sysTrace, p string) func(*sysCall) bool {
	var first *sysCall
	for _, c := range tr.Calls {
		if c.Name == "write" && c.ok() && c.fdPath(0) == p {
			first = c
			break
		}
	}
	return func(c *sysCall) bool { return c == first }
}

// TestDurabilitySmtpd: smtpd's 250 after DATA comes only once the message's
// data and envelope are on disk, and an envelope appears in env/ (the
// commit point) only once its content and its data file are durable.
func TestDurabilitySmtpd(t *testing.T) {
	e := smtpdEnv(t)
	s := e.startTraced("smtpd", "")
	var ids []string
	for i := 0; i < 3; i++ {
		d := dial(t, s.Addr)
		d.expect("220")
		d.send("EHLO client.test")
		d.expect("250")
		ids = append(ids, smtpdQueueID(t, smtpdSend(d, "a@remote.test", "joe@example.test", "Subject: "+strings.Repeat("x", i)+"\r\n\r\nbody\r\n")))
		d.send("QUIT")
		d.expect("221")
	}
	tr := s.stop()
	envDir, dataDir := filepath.Join(e.Spool, "env"), filepath.Join(e.Spool, "data")
	p := tr.promises(t).published(envDir).
		rule("a message's data is durable before its envelope appears in env/", func(c *sysCall) bool {
			return c.ok() && isPublish(c) && filepath.Dir(publishTarget(c)) == envDir
		}, func(c *sysCall, m *fsModel) []string {
			if w := m.why(filepath.Join(dataDir, filepath.Base(publishTarget(c))), true); w != "" {
				return []string{w}
			}
			return nil
		})
	for _, id := range ids {
		p.durableAt("250 for "+id+" only once it is on disk", sent("queued as "+id),
			paths(filepath.Join(envDir, id), filepath.Join(dataDir, id)), nil)
	}
	p.check()
}

// changes selects the successful calls that rename onto, link to or
// remove p: an envelope's update or removal.
func changes(p string) func(*sysCall) bool {
	return func(c *sysCall) bool {
		if !c.ok() {
			return false
		}
		switch c.Name {
		case "unlink":
			return c.pathAt(-1, 0) == p
		case "unlinkat":
			return c.pathAt(0, 1) == p
		}
		return isPublish(c) && publishTarget(c) == p
	}
}

// publishedAs selects the renames and links that create p.
func publishedAs(p string) func(*sysCall) bool {
	return func(c *sysCall) bool { return c.ok() && isPublish(c) && publishTarget(c) == p }
}

// TestDurabilityQueueMaildir: queue-runner's in-process Maildir delivery
// is on disk — message, new/ entry, and the Maildir and the directories
// it had to create for a first delivery to a domain — before the message
// leaves the spool, and the removal is on disk before the pass exits 0.
func TestDurabilityQueueMaildir(t *testing.T) {
	e := newEnv(t)
	e.deliverUsers("bob@example.test")
	id := qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(1))
	_, errs, code, tr := e.runTraced("", "queue-runner", "--concurrency", "1")
	if code != 0 {
		t.Fatalf("queue-runner: exit %d\n%s", code, errs)
	}
	box := qMailbox(e, "bob")
	if n := len(maildirFiles(t, box, "new")); n != 1 {
		t.Fatalf("%d messages in bob's new/\n%s", n, errs)
	}
	envp := filepath.Join(e.Spool, "env", id)
	tr.promises(t).published(filepath.Join(box, "new")).
		allDurableAt("the delivery (and the Maildir made for it) is on disk before the message leaves the spool",
			changes(envp), e.MailRoot, inTmp).
		durableAt("the pass exits 0 with the message durably out of the spool", tr.exitOK(), nil, paths(envp)).
		check()
}

// TestDurabilityQueueMbox: queue-runner's in-process mbox delivery is on
// disk, and its dotlock durably gone, before the message leaves the spool.
func TestDurabilityQueueMbox(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.Dir, "boxes")
	must(t, os.Mkdir(dir, 0o700))
	mb := filepath.Join(dir, "bob")
	e.deliverUsers("bob@example.test mail=mbox:" + mb)
	id := qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(1))
	_, errs, code, tr := e.runTraced("", "queue-runner", "--concurrency", "1")
	if code != 0 {
		t.Fatalf("queue-runner: exit %d\n%s", code, errs)
	}
	if b, err := os.ReadFile(mb); err != nil || !strings.Contains(string(b), "end-of-message-1") {
		t.Fatalf("mbox: %v %q\n%s", err, b, errs)
	}
	envp := filepath.Join(e.Spool, "env", id)
	tr.promises(t).
		durableAt("the append's start is in the dotlock, durably, before the first write to the mbox",
			firstWriteTo(tr, mb), paths(mb+".lock"), nil).
		durableAt("the mbox delivery is on disk and its dotlock gone before the message leaves the spool",
			changes(envp), paths(mb), paths(mb+".lock")).
		durableAt("the pass exits 0 with the message durably out of the spool", tr.exitOK(), nil, paths(envp)).
		check()
}

// TestDurabilityQueueDeferred: a temporary failure rewrites the envelope
// (attempts, next try): the new envelope is on disk before it replaces the
// old one, and in env/ before the pass exits 0.
func TestDurabilityQueueDeferred(t *testing.T) {
	e := newEnv(t)
	e.deliverUsers("bob@example.test")
	id := qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(1))
	_, errs, code, tr := e.runTraced("", "queue-runner", "--concurrency", "1", "--mda", "cat >/dev/null; exit 75")
	if code != 0 {
		t.Fatalf("queue-runner: exit %d\n%s", code, errs)
	}
	envp := filepath.Join(e.Spool, "env", id)
	if b, err := os.ReadFile(envp); err != nil || !strings.Contains(string(b), "attempts") && !strings.Contains(string(b), "1") {
		t.Fatalf("envelope after a deferral: %v\n%s", err, b)
	}
	tr.promises(t).published(filepath.Join(e.Spool, "env")).
		durableAt("the envelope is replaced in env/ (its only change)", changes(envp), paths(filepath.Join(e.Spool, "data", id)), nil).
		durableAt("the pass exits 0 with the updated envelope on disk", tr.exitOK(), paths(envp), nil).
		check()
}

// TestDurabilityQueueBounce: a bounce (DSN) is committed — data and
// envelope on disk — before the message it reports on leaves the spool.
func TestDurabilityQueueBounce(t *testing.T) {
	e := newEnv(t)
	e.deliverUsers("alice@example.test")
	id := qSubmit(t, e, "alice@example.test", []string{"nobody@example.test"}, qMsg(1))
	_, errs, code, tr := e.runTraced("", "queue-runner", "--concurrency", "1")
	if code != 0 {
		t.Fatalf("queue-runner: exit %d\n%s", code, errs)
	}
	if n := qCount(t, qMailbox(e, "alice")); n != 1 {
		t.Fatalf("alice has %d messages, want the bounce\n%s", n, errs)
	}
	envDir, dataDir := filepath.Join(e.Spool, "env"), filepath.Join(e.Spool, "data")
	// The DSN's id is the other envelope that appeared during the run.
	var dsnID string
	for _, c := range tr.Calls {
		if c.ok() && isPublish(c) && filepath.Dir(publishTarget(c)) == envDir && filepath.Base(publishTarget(c)) != id {
			dsnID = filepath.Base(publishTarget(c))
		}
	}
	if dsnID == "" {
		t.Fatalf("no DSN was committed to env/\n%s", errs)
	}
	tr.promises(t).published(envDir).
		durableAt("the DSN's data is durable before its envelope appears", publishedAs(filepath.Join(envDir, dsnID)),
			paths(filepath.Join(dataDir, dsnID)), nil).
		durableAt("the DSN is on disk before the bounced message leaves the spool", changes(filepath.Join(envDir, id)),
			paths(filepath.Join(envDir, dsnID), filepath.Join(dataDir, dsnID)), nil).
		check()
}
