package tests

// Durability order, observed: each commit path of the real binaries runs
// under strace (strace_test.go) and its calls are replayed against a model
// of what a power loss keeps. The promises are those of DESIGN.md's
// Guarantees, letterbox-spool(5), deliver(8) and README: data flushed
// before the rename or link that publishes it, the directory flushed
// before success is reported (a 250 or +OK on the socket, exit 0), and
// nothing reported before that.

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
			durableAt(what+": the dotlock (the record of where the append started) goes only once the mbox is on disk",
				removes(mb+".lock"), paths(mb), nil).
			check()
	}
	// An append that fails half-way (the file size limit stops the write)
	// cuts the mbox back to where it was, on disk, before the dotlock
	// recording the append's start goes away.
	before, err := os.ReadFile(mb)
	must(t, err)
	big := durableMsg + strings.Repeat("a line of the body that will not fit\n", 200)
	c := e.cmd("deliver", "-f", "s@example.org", "--mbox", mb)
	c.Args = append([]string{"prlimit", fmt.Sprintf("--fsize=%d", len(before)+100), "--"}, c.Args...)
	c.Path = mustLookPath(t, "prlimit")
	_, errs, code, tr := e.runTracedCmd(c, big)
	if code == 0 {
		t.Fatalf("deliver past the file size limit: exit 0\n%s", errs)
	}
	if after, _ := os.ReadFile(mb); string(after) != string(before) {
		t.Fatalf("a failed append left %d bytes, had %d", len(after), len(before))
	}
	tr.promises(t).
		durableAt("a failed append: the dotlock goes only once the mbox is cut back on disk",
			removes(mb+".lock"), paths(mb), nil).
		check()
}

// mustLookPath finds a program the test needs, failing when it is missing.
func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: %v", name, err)
	}
	return p
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

// removes selects the successful calls that remove p (a dotlock going
// away; its creation, a link from a unique file, is no removal).
func removes(p string) func(*sysCall) bool {
	return func(c *sysCall) bool {
		if !c.ok() {
			return false
		}
		switch c.Name {
		case "unlink":
			return c.pathAt(-1, 0) == p
		case "unlinkat":
			return c.pathAt(0, 1) == p
		case "rename", "renameat", "renameat2":
			return publishSource(c) == p // moved aside as stale
		}
		return false
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

// qDeliveredFiles maps each of msgs messages (qMsg(i), i < msgs) to its
// file in box's new/.
func qDeliveredFiles(t *testing.T, box string, msgs int) map[int]string {
	t.Helper()
	files := map[int]string{}
	for _, f := range maildirFiles(t, box, "new") {
		b, err := os.ReadFile(f)
		must(t, err)
		for i := 0; i < msgs; i++ {
			if strings.Contains(string(b), fmt.Sprintf("end-of-message-%d\r\n", i)) {
				files[i] = f
			}
		}
	}
	if len(files) != msgs {
		t.Fatalf("%d of %d messages in %s/new", len(files), msgs, box)
	}
	return files
}

// queueSharedPromises: each message's Maildir file is on disk before its
// envelope leaves the spool, while the deliveries share new/'s fsyncs.
func queueSharedPromises(t *testing.T, e *env, tr *sysTrace, box string, ids []string) *durability {
	files := qDeliveredFiles(t, box, len(ids))
	p := tr.promises(t).published(filepath.Join(box, "new"))
	for i, id := range ids {
		p.durableAt(fmt.Sprintf("message %d (%s) is on disk in the Maildir before it leaves the spool", i, id),
			changes(filepath.Join(e.Spool, "env", id)), paths(files[i]), nil)
	}
	return p
}

// TestDurabilityQueueShared: four workers delivering into one Maildir at
// once share the fsyncs of its new/ (and the pass makes its removals
// durable with one fsync of env/): still, each message is on disk in the
// Maildir before it leaves the spool, and every removal is on disk before
// the pass exits 0. The first deliveries make the Maildir, at once: none
// is reported before the Maildir another worker is making is on disk.
func TestDurabilityQueueShared(t *testing.T) {
	e := newEnv(t)
	e.deliverUsers("bob@example.test")
	var ids, envs []string
	for i := 0; i < 8; i++ {
		ids = append(ids, qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(i)))
		envs = append(envs, filepath.Join(e.Spool, "env", ids[i]))
	}
	_, errs, code, tr := e.runTraced("", "queue-runner", "--concurrency", "4")
	if code != 0 {
		t.Fatalf("queue-runner: exit %d\n%s", code, errs)
	}
	queueSharedPromises(t, e, tr, qMailbox(e, "bob"), ids).
		durableAt("the pass exits 0 with every message durably out of the spool", tr.exitOK(), nil, paths(envs...)).
		check()
}

// TestDurabilityQueueDaemon: queue-runner --daemon, its deliveries into
// one Maildir sharing new/'s fsyncs and its removals flushed in batches
// beside them: each message is on disk in the Maildir before it leaves the
// spool, and the daemon stops (SIGTERM) with every removal on disk.
func TestDurabilityQueueDaemon(t *testing.T) {
	e := newEnv(t)
	e.deliverUsers("bob@example.test")
	var ids, envs []string
	for i := 0; i < 8; i++ {
		ids = append(ids, qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(i)))
		envs = append(envs, filepath.Join(e.Spool, "env", ids[i]))
	}
	c := e.cmd("queue-runner", "--daemon", "--concurrency", "4")
	read := tracedCmd(t, c, e.Dir)
	errs := &syncBuffer{}
	c.Stderr = errs
	must(t, c.Start())
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	t.Cleanup(func() {
		c.Process.Kill() // strace kills its tracees when killed
		<-done
	})
	waitFor(t, 20*time.Second, "the daemon to deliver every message", func() bool { return qSpoolEmpty(t, e) })
	syscall.Kill(tracedPID(t, c.Process.Pid), syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("queue-runner --daemon still running 20s after SIGTERM\n%s", errs.String())
	}
	tr := read()
	queueSharedPromises(t, e, tr, qMailbox(e, "bob"), ids).
		durableAt("the daemon stops with every message durably out of the spool", tr.exitOK(), nil, paths(envs...)).
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

// spoolCommit adds the spool's commit promises: an envelope appears in
// env/ only with its content and its message data durable.
func spoolCommit(d *durability, spoolDir string) *durability {
	envDir, dataDir := filepath.Join(spoolDir, "env"), filepath.Join(spoolDir, "data")
	return d.published(envDir).
		rule("a message's data is durable before its envelope appears in env/", func(c *sysCall) bool {
			return c.ok() && isPublish(c) && filepath.Dir(publishTarget(c)) == envDir
		}, func(c *sysCall, m *fsModel) []string {
			if w := m.why(filepath.Join(dataDir, filepath.Base(publishTarget(c))), true); w != "" {
				return []string{w}
			}
			return nil
		})
}

// committed returns the ids of the envelopes a trace renamed into env/.
func committed(tr *sysTrace, spoolDir string) []string {
	envDir := filepath.Join(spoolDir, "env")
	var ids []string
	for _, c := range tr.Calls {
		if c.ok() && isPublish(c) && filepath.Dir(publishTarget(c)) == envDir {
			ids = append(ids, filepath.Base(publishTarget(c)))
		}
	}
	return ids
}

// messagePaths returns env/ID and data/ID of each id.
func messagePaths(spoolDir string, ids ...string) []string {
	var out []string
	for _, id := range ids {
		out = append(out, filepath.Join(spoolDir, "env", id), filepath.Join(spoolDir, "data", id))
	}
	return out
}

// TestDurabilitySendmail: sendmail (allowed to write the spool) exits 0
// only once the message is committed and on disk.
func TestDurabilitySendmail(t *testing.T) {
	e := newEnv(t)
	e.deliverUsers("bob@example.test")
	_, errs, code, tr := e.runTraced("Subject: cron\n\nhello\n", "sendmail", "bob@example.test")
	if code != 0 {
		t.Fatalf("sendmail: exit %d\n%s", code, errs)
	}
	ids := committed(tr, e.Spool)
	if len(ids) != 1 {
		t.Fatalf("sendmail committed %v", ids)
	}
	spoolCommit(tr.promises(t), e.Spool).
		durableAt("sendmail exits 0 only once the message is on disk", tr.exitOK(), paths(messagePaths(e.Spool, ids...)...), nil).
		check()
}

// asNobody returns a command running a letterbox command as nobody
// (setpriv), with e's files made reachable to it. It fails, not skips,
// when the test cannot switch users.
func asNobody(t *testing.T, e *env, name string, args ...string) *exec.Cmd {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Fatalf("running %s as nobody needs root and setpriv(1) (util-linux): euid %d, %v", name, os.Geteuid(), err)
	}
	openToNobody(t, e)
	exe := bin(t, name)
	must(t, os.Chmod(filepath.Dir(exe), 0o711))
	must(t, os.Chmod(exe, 0o755))
	c := exec.Command(setpriv, append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", exe}, args...)...)
	c.Env = append(os.Environ(), "LETTERBOX_CONFIG="+e.Config)
	return c
}

// TestDurabilitySendmailDrop: a user who may not write the spool leaves
// the message in drop/. The file is marked complete (mode 0744) only once
// its content is on disk — queue-runner takes complete files in, so a
// crash must never show a complete mark on partial data — and sendmail
// exits 0 with it on disk. queue-runner commits what it takes in before
// it removes the drop file, and the removal is on disk before the pass
// exits 0 (or the message would be taken in again).
func TestDurabilitySendmailDrop(t *testing.T) {
	e := newEnv(t)
	e.deliverUsers("bob@example.test")
	qRun(t, e, "list") // the spool, made by root
	dropDir := filepath.Join(e.Spool, "drop")
	isDropFile := func(p string) bool { return filepath.Dir(p) == dropDir }
	for _, readable := range []bool{false, true} {
		if readable {
			// A site that lets the writers' group read drop/: then the
			// directory's entry is flushed too (otherwise fsyncing it is
			// impossible for the writer and only the file's own fsync,
			// which journaling file systems extend to its entry, stands).
			g, err := user.LookupGroup("nogroup")
			must(t, err)
			gid, _ := strconv.Atoi(g.Gid)
			must(t, os.Chown(dropDir, 0, gid))
			must(t, os.Chmod(dropDir, 0o1773|os.ModeSticky))
		}
		_, errs, code, tr := e.runTracedCmd(asNobody(t, e, "sendmail", "bob@example.test"), "Subject: from nobody\n\nhello\n")
		if code != 0 {
			t.Fatalf("sendmail as nobody: exit %d\n%s", code, errs)
		}
		var drop string
		for _, c := range tr.Calls {
			if c.Name == "openat" && c.ok() && strings.Contains(c.Args[2], "O_CREAT") && isDropFile(c.pathAt(0, 1)) {
				drop = c.pathAt(0, 1)
			}
		}
		if drop == "" {
			t.Fatalf("sendmail as nobody created no drop file\n%s", errs)
		}
		p := tr.promises(t).
			rule("a drop file is marked complete only once its content is on disk", func(c *sysCall) bool {
				return c.Name == "fchmod" && c.ok() && c.fdPath(0) == drop
			}, func(c *sysCall, m *fsModel) []string {
				if w := m.contentWhy(drop); w != "" {
					return []string{w}
				}
				return nil
			}).
			rule("sendmail exits 0 only with the drop file's content on disk", tr.exitOK(), func(c *sysCall, m *fsModel) []string {
				if w := m.contentWhy(drop); w != "" {
					return []string{w}
				}
				return nil
			})
		if readable {
			p.durableAt("sendmail exits 0 only with the drop file (entry and content) on disk", tr.exitOK(), paths(drop), nil)
		}
		p.check()

		_, errs, code, qtr := e.runTraced("", "queue-runner", "--concurrency", "1")
		if code != 0 || !strings.Contains(errs, "drop taken in") {
			t.Fatalf("queue-runner: exit %d\n%s", code, errs)
		}
		ids := committed(qtr, e.Spool)
		if len(ids) != 1 {
			t.Fatalf("queue-runner committed %v from the drop", ids)
		}
		spoolCommit(qtr.promises(t), e.Spool).
			durableAt("a drop file is removed only once its message is committed", changes(drop),
				paths(messagePaths(e.Spool, ids[0])...), nil).
			durableAt("the pass exits 0 with the drop file durably removed", qtr.exitOK(), nil, paths(drop)).
			check()
	}
	if n := qCount(t, qMailbox(e, "bob")); n != 2 {
		t.Fatalf("bob has %d messages, want 2", n)
	}
}

// TestDurabilityMailuser: add, passwd and del rewrite the users file
// atomically: the new file is on disk before it replaces the old one, and
// in place before mailuser exits 0; add also leaves the new Maildir on
// disk.
func TestDurabilityMailuser(t *testing.T) {
	e := newEnv(t)
	usersDir := filepath.Dir(e.Users)
	for _, step := range []struct {
		stdin string
		args  []string
	}{
		{"pw one\n", []string{"add", "alice@example.test"}},
		{"pw two\n", []string{"passwd", "alice@example.test"}},
		{"", []string{"del", "alice@example.test"}},
	} {
		_, errs, code, tr := e.runTraced(step.stdin, "mailuser", step.args...)
		if code != 0 {
			t.Fatalf("mailuser %v: exit %d\n%s", step.args, code, errs)
		}
		what := "mailuser " + step.args[0]
		p := tr.promises(t).published(usersDir).
			durableAt(what+" exits 0 only with the new users file on disk", tr.exitOK(), paths(e.Users), nil)
		if step.args[0] == "add" {
			p.allDurableAt(what+" exits 0 only with the new Maildir on disk", tr.exitOK(), e.MailRoot, nil)
		}
		p.check()
	}
}

// TestDurabilityPOP3Maildir: QUIT after DELE removes the messages, and
// the removals are on disk before the +OK that reports them done.
func TestDurabilityPOP3Maildir(t *testing.T) {
	pe := newPOP3Env(t)
	gone := []string{
		pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n")),
		pe.putMaildir("cur", "1700000002.M1P1Q1.host:2,S", pop3Msg("two", "y\n")),
	}
	kept := pe.putMaildir("cur", "1700000003.M1P1Q1.host:2,", pop3Msg("three", "z\n"))
	s := pe.startTraced("pop3d", "")
	d := pop3Login(t, s.Addr, "alice@example.test", "alice pw")
	for i := 1; i <= 2; i++ {
		d.send("DELE " + strconv.Itoa(i))
		pop3Expect(d, "+OK")
	}
	d.send("QUIT")
	pop3Expect(d, "+OK")
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("the kept message: %v", err)
	}
	tr := s.stop()
	tr.promises(t).
		durableAt("QUIT's +OK only once the deleted messages are durably gone", sent("signing off"), nil, paths(gone...)).
		check()
}

// TestDurabilityPOP3Mbox: QUIT after DELE rewrites the mbox: the new file
// is on disk before it replaces the old one, and in place before the +OK.
func TestDurabilityPOP3Mbox(t *testing.T) {
	pe := newPOP3Env(t)
	must(t, os.WriteFile(pe.Mbox, []byte(mboxRecord(pop3Msg("one", "x\n"))+mboxRecord(pop3Msg("two", "y\n"))), 0o600))
	s := pe.startTraced("pop3d", "")
	d := pop3Login(t, s.Addr, "bob@example.test", "bobpw")
	d.send("DELE 1")
	pop3Expect(d, "+OK")
	d.send("QUIT")
	pop3Expect(d, "+OK")
	tr := s.stop()
	if b, _ := os.ReadFile(pe.Mbox); strings.Contains(string(b), "Subject: one") || !strings.Contains(string(b), "Subject: two") {
		t.Fatalf("mbox after QUIT:\n%s", b)
	}
	tr.promises(t).published(filepath.Dir(pe.Mbox)).
		durableAt("QUIT's +OK only once the rewritten mbox is in place on disk", sent("signing off"), paths(pe.Mbox), nil).
		check()
}

// TestDurabilityQueueLeftover: an envelope whose data is gone (a crash
// while removing) is taken away when a pass meets it, durably before the
// pass exits 0.
func TestDurabilityQueueLeftover(t *testing.T) {
	e := newEnv(t)
	e.deliverUsers("bob@example.test")
	qRun(t, e) // a first pass: the next one does not clean garbage by age
	id := qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(1))
	must(t, os.Remove(filepath.Join(e.Spool, "data", id)))
	_, errs, code, tr := e.runTraced("", "queue-runner", "--concurrency", "1")
	if code != 0 {
		t.Fatalf("queue-runner: exit %d\n%s", code, errs)
	}
	envp := filepath.Join(e.Spool, "env", id)
	if _, err := os.Stat(envp); !os.IsNotExist(err) {
		t.Fatalf("the envelope without data is still there: %v\n%s", err, errs)
	}
	tr.promises(t).
		durableAt("the pass exits 0 with the leftover envelope durably gone", tr.exitOK(), nil, paths(envp)).
		check()
}

// TestDurabilityMboxRecovery: a writer died half-way through an append,
// leaving its dotlock with the append's start. The next locker (here
// pop3d, which only reads) cuts the partial message away, and that cut is
// on disk before the dotlock goes: otherwise a crash would bring the
// partial message back with nothing left to say where it starts.
func TestDurabilityMboxRecovery(t *testing.T) {
	pe := newPOP3Env(t)
	whole := mboxRecord(pop3Msg("one", "x\n"))
	must(t, os.WriteFile(pe.Mbox, []byte(whole+"From dead@example.org Mon Nov 23 10:00:00 2026\nSubject: cut"), 0o600))
	dead := exec.Command("true")
	must(t, dead.Run())
	// The dotlock names the mbox it was appending to (device, inode): a
	// record without them cuts nothing.
	fi, err := os.Lstat(pe.Mbox)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	must(t, os.WriteFile(pe.Mbox+".lock", []byte(fmt.Sprintf("%d %d %d %d\n", dead.Process.Pid, len(whole), uint64(st.Dev), st.Ino)), 0o600))
	s := pe.startTraced("pop3d", "")
	d := pop3Login(t, s.Addr, "bob@example.test", "bobpw")
	d.send("STAT")
	pop3Expect(d, "+OK 1 ")
	d.send("QUIT")
	pop3Expect(d, "+OK")
	tr := s.stop()
	if b, _ := os.ReadFile(pe.Mbox); string(b) != whole {
		t.Fatalf("mbox after recovery: %q", b)
	}
	tr.promises(t).
		durableAt("the partial message is cut away on disk before the dotlock goes", removes(pe.Mbox+".lock"), paths(pe.Mbox), nil).
		check()
}

// imapCmd sends a tagged IMAP command and fails unless its tagged
// response is OK.
func imapCmd(d *dialog, tag, cmd string) string {
	d.t.Helper()
	d.send(tag + " " + cmd)
	l := imapTagged(d, tag)
	if !strings.HasPrefix(l, tag+" OK") {
		d.t.Fatalf("%s: %q", cmd, l)
	}
	return l
}

// TestDurabilityIMAP: imapd's OK to APPEND, CREATE, COPY, MOVE, RENAME and
// DELETE comes only once what it reports is on disk: the message files
// and the dovecot-uidlist that gives them their UIDs (APPENDUID, COPYUID),
// the folders, and for MOVE the message's removal from the source.
func TestDurabilityIMAP(t *testing.T) {
	e := newEnv(t)
	e.deliverUsers("alice@example.test")
	md := filepath.Join(e.MailRoot, "example.test", "alice")
	s := e.startTraced("imapd", "")
	d := dial(t, s.Addr)
	if l := d.line(); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q", l)
	}
	imapCmd(d, "a1", `LOGIN alice@example.test secret`)
	msg := "From: bob@example.org\r\nSubject: appended\r\n\r\nbody\r\n"
	d.send(fmt.Sprintf("a2 APPEND INBOX {%d}", len(msg)))
	if l := d.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("APPEND: %q", l)
	}
	d.raw(msg + "\r\n")
	if l := imapTagged(d, "a2"); !strings.HasPrefix(l, "a2 OK") {
		t.Fatalf("APPEND: %q", l)
	}
	imapCmd(d, "a3", "CREATE Work")
	imapCmd(d, "a4", "SELECT INBOX")
	imapCmd(d, "a5", "COPY 1 Work")
	imapCmd(d, "a6", "MOVE 1 Sent")
	imapCmd(d, "a7", "CREATE Old")
	imapCmd(d, "a8", "RENAME Old New")
	imapCmd(d, "a9", "DELETE Work")
	imapCmd(d, "z", "LOGOUT")
	tr := s.stop()
	folder := func(name string) string {
		if name == "" {
			return md
		}
		return filepath.Join(md, "."+name)
	}
	uidlist := func(name string) string { return filepath.Join(folder(name), "dovecot-uidlist") }
	// imapd's caches are rebuilt when missing or damaged (DESIGN): they
	// need not reach the disk. The special-use file is no cache: it holds
	// what CREATE-SPECIAL-USE and the first login assigned.
	cache := func(name string) bool {
		return strings.HasPrefix(name, "letterbox-imap.") && name != "letterbox-imap.specialuse"
	}
	p := tr.promises(t)
	for _, f := range []string{"", "Work", "Sent"} {
		p.published(filepath.Join(folder(f), "cur")).publishedExcept(cache, folder(f))
	}
	p.allDurableAt("APPEND's OK only once the message is in INBOX on disk", sent("a2 OK"), filepath.Join(md, "cur"), nil).
		durableAt("APPEND's OK only once its UID is on disk", sent("a2 OK"), paths(uidlist("")), nil).
		durableAt("CREATE's OK only once the folder is on disk", sent("a3 OK"), paths(filepath.Join(folder("Work"), "cur"), uidlist("Work")), nil).
		allDurableAt("COPY's OK only once the copy is on disk", sent("a5 OK"), filepath.Join(folder("Work"), "cur"), nil).
		durableAt("COPY's OK only once the copy's UID is on disk", sent("a5 OK"), paths(uidlist("Work")), nil).
		allDurableAt("MOVE's OK only once the message is durably in its new folder", sent("a6 OK"), filepath.Join(folder("Sent"), "cur"), nil).
		allDurableAt("MOVE's OK only once the message is durably out of its old folder", sent("a6 OK"), filepath.Join(md, "cur"), nil).
		durableAt("MOVE's OK only once the moved message's UID is on disk", sent("a6 OK"), paths(uidlist("Sent")), nil).
		durableAt("RENAME's OK only once the folder is durably under its new name", sent("a8 OK"),
			paths(filepath.Join(folder("New"), "cur")), paths(folder("Old"))).
		durableAt("DELETE's OK only once the folder is durably gone", sent("a9 OK"), nil, paths(folder("Work"))).
		check()
}

// TestDurabilityDKIMKeygen: mailuser dkim-keygen prints the DNS record
// (and exits 0) only once the private key — content, owner, its entry and
// the directories made for it — is on disk: a record published for a key
// a crash lost would fail every signature.
func TestDurabilityDKIMKeygen(t *testing.T) {
	e := newEnv(t)
	keys := filepath.Join(e.Dir, "dkim", "keys")
	out, errs, code, tr := e.runTraced("", "mailuser", "dkim-keygen", "example.test", "--selector", "s1", "--dkim-keys", keys)
	if code != 0 || !strings.Contains(out, "v=DKIM1") {
		t.Fatalf("dkim-keygen: exit %d\n%s%s", code, out, errs)
	}
	key := filepath.Join(keys, "example.test", "s1.key")
	if _, err := os.Stat(key); err != nil {
		t.Fatal(err)
	}
	tr.promises(t).
		durableAt("dkim-keygen exits 0 only with the key on disk", tr.exitOK(), paths(key), nil).
		allDurableAt("dkim-keygen exits 0 only with the key directories on disk", tr.exitOK(), filepath.Join(e.Dir, "dkim"), nil).
		check()
}

// TestDurabilityMailuserImport: mailuser import exits 0 only with every
// message it imported on disk (each file flushed before it is linked into
// new/ or cur/, and both directories flushed), in a folder it created.
func TestDurabilityMailuserImport(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	in := filepath.Join(e.Dir, "in.mbox")
	must(t, os.WriteFile(in, []byte(migrateMbox), 0o600))
	_, errs, code, tr := e.runTraced("", "mailuser", "import", "bob@example.test", in, "--folder", "Old")
	if code != 0 {
		t.Fatalf("mailuser import: exit %d\n%s", code, errs)
	}
	dir := filepath.Join(e.MailRoot, "example.test", "bob", ".Old")
	if n := len(maildirMessages(t, dir)); n != 4 {
		t.Fatalf("%d messages imported", n)
	}
	tr.promises(t).
		published(filepath.Join(dir, "new"), filepath.Join(dir, "cur")).
		allDurableAt("mailuser import exits 0 only with new/ on disk", tr.exitOK(), filepath.Join(dir, "new"), inTmp).
		allDurableAt("mailuser import exits 0 only with cur/ on disk", tr.exitOK(), filepath.Join(dir, "cur"), inTmp).
		check()
}
