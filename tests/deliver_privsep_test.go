package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"letterbox/pkg/privsep/privseptest"
)

// Deliveries as the mailbox's owner (issue 15): deliver and queue-runner
// run as root, the mailboxes are in throw-away users' home directories, and
// each user plants the symlinks of the security review's attacks. After
// each: the target is unchanged, nothing was created outside the mailbox,
// the mail is delivered or deferred with a log line naming the reason, and
// what is delivered belongs to the owner, mode 0600.

const attackMsg = "From: mallory@example.test\nSubject: attack\n\nssh-ed25519 AAAA mallory's key\n"

// rootOnlyDir is a directory only root may write into (and list), standing
// in for /etc or /root/.ssh.
func rootOnlyDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "root-dir")
	must(t, os.Mkdir(d, 0o755))
	return d
}

// assertNothingIn fails when dir holds anything.
func assertNothingIn(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	for _, e := range ents {
		t.Errorf("%s: %s was created through a user's symlink", dir, e.Name())
	}
}

// assertUnchanged fails when the file at p no longer holds content.
func assertUnchanged(t *testing.T, p, content string) {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	if string(b) != content {
		t.Errorf("%s was changed through a user's symlink: %q", p, b)
	}
}

// assertOwnedFiles fails unless each file is a regular file of u, 0600.
func assertOwnedFiles(t *testing.T, u privseptest.User, files ...string) {
	t.Helper()
	if len(files) == 0 {
		t.Fatal("nothing delivered")
	}
	for _, f := range files {
		fi, err := os.Lstat(f)
		must(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || st.Uid != u.UID || st.Gid != u.GID {
			t.Errorf("%s: mode %v owner %d:%d, want a regular file 0600 of %d:%d", f, fi.Mode(), st.Uid, st.Gid, u.UID, u.GID)
		}
	}
}

// queueAndPass submits msg for rcpt with root's sendmail and runs one
// queue-runner pass as root; it returns the pass's log.
func queueAndPass(t *testing.T, e *env, rcpt string) string {
	t.Helper()
	if out, errs, code := e.run(attackMsg, "sendmail", "-f", "mallory@example.test", rcpt); code != 0 {
		t.Fatalf("sendmail %s: exit %d %s%s", rcpt, code, out, errs)
	}
	out, errs, code := e.run("", "queue-runner")
	if code != 0 {
		t.Fatalf("queue-runner: exit %d %s%s", code, out, errs)
	}
	return out + errs
}

// queuedFor is how many messages the queue holds for rcpt.
func queuedFor(t *testing.T, e *env, rcpt string) int {
	t.Helper()
	q, errs, code := e.run("", "queue-runner", "list", "--json")
	if code != 0 {
		t.Fatalf("queue-runner list: exit %d %s", code, errs)
	}
	return strings.Count(q, `"address": "`+rcpt+`"`)
}

// passDelivers queues a message for rcpt and runs a pass: it returns the
// pass's log and whether the new message left the queue.
func passDelivers(t *testing.T, e *env, rcpt string) (string, bool) {
	t.Helper()
	before := queuedFor(t, e, rcpt)
	log := queueAndPass(t, e, rcpt)
	return log, queuedFor(t, e, rcpt) == before
}

// The Maildir attacks: tmp/ or new/ a symlink to a root-only directory,
// a folder .x a symlink to any directory (mail to user+x@), a folder's
// maildirfolder a symlink to a file root would create. Each through
// deliver as root and through a queue-runner pass as root.
func TestPrivDeliverMaildirSymlinks(t *testing.T) {
	for _, via := range []string{"deliver", "queue-runner"} {
		t.Run(via, func(t *testing.T) {
			u := privseptest.NewUser(t)
			e := newOwnerEnv(t)
			e.add("victim@example.test", u, "")
			md := userMaildir(t, u, nil)
			deliverAs := func(rcpt string) (log string, delivered bool) {
				if via == "deliver" {
					_, errs, code := e.run(attackMsg, "deliver", "-f", "mallory@example.test", rcpt)
					return errs, code == 0
				}
				return passDelivers(t, e.env, rcpt)
			}

			for _, sub := range []string{"tmp", "new"} {
				target := rootOnlyDir(t)
				must(t, os.Remove(filepath.Join(md, sub)))
				must(t, os.Symlink(target, filepath.Join(md, sub)))
				u.Chown(t, filepath.Join(md, sub))
				log, ok := deliverAs("victim@example.test")
				if ok {
					t.Errorf("%s/ a symlink: delivered anyway\n%s", sub, log)
				}
				if !strings.Contains(log, "symlink") {
					t.Errorf("%s/ a symlink: the log does not say why the mail waits:\n%s", sub, log)
				}
				assertNothingIn(t, target)
				must(t, os.Remove(filepath.Join(md, sub)))
				must(t, os.Mkdir(filepath.Join(md, sub), 0o700))
				u.Chown(t, filepath.Join(md, sub))
			}
			if via == "queue-runner" {
				// The deferred mail arrives once the Maildir is repaired.
				if out, errs, code := e.run("", "queue-runner", "flush"); code != 0 {
					t.Fatalf("flush: %d %s%s", code, out, errs)
				}
				if queuedFor(t, e.env, "victim@example.test") != 0 {
					t.Fatal("the deferred message was not delivered after the repair")
				}
			}

			// A folder that is a symlink is no folder: the mail goes to
			// INBOX.
			elsewhere := rootOnlyDir(t)
			must(t, os.Symlink(elsewhere, filepath.Join(md, ".x")))
			u.Chown(t, filepath.Join(md, ".x"))
			before := len(maildirFiles(t, md, "new"))
			if log, ok := deliverAs("victim+x@example.test"); !ok || len(maildirFiles(t, md, "new")) != before+1 {
				t.Errorf(".x a symlink: not delivered to INBOX\n%s", log)
			}
			assertNothingIn(t, elsewhere)

			marker := filepath.Join(rootOnlyDir(t), "nologin")
			y := filepath.Join(md, ".y")
			for _, s := range []string{"", "tmp", "new", "cur"} {
				must(t, os.MkdirAll(filepath.Join(y, s), 0o700))
			}
			must(t, os.Symlink(marker, filepath.Join(y, "maildirfolder")))
			u.Chown(t, y)
			if log, ok := deliverAs("victim+y@example.test"); !ok {
				t.Errorf("a real folder .y: not delivered\n%s", log)
			}
			if _, err := os.Lstat(marker); err == nil {
				t.Errorf("%s was created through .y/maildirfolder", marker)
			}
			assertOwnedFiles(t, u, maildirFiles(t, y, "new")...)

			// An ordinary delivery: the owner's file, 0600.
			if log, ok := deliverAs("victim@example.test"); !ok {
				t.Fatalf("ordinary delivery failed\n%s", log)
			}
			assertOwnedFiles(t, u, maildirFiles(t, md, "new")...)
		})
	}
}

// The mbox attacks: ~/mbox a symlink to a root-owned file, with and without
// a forged stale dotlock naming a dead process and a size (the next
// delivery truncated the target to it), and the dotlock itself a symlink.
//
// Via deliver as root, a queue-runner pass as root of root's sendmail, and
// a pass of the victim's own sendmail (through drop/).
func TestPrivDeliverMboxSymlinks(t *testing.T) {
	for _, via := range []string{"deliver", "queue-runner", "drop"} {
		t.Run(via, func(t *testing.T) {
			u := privseptest.NewUser(t)
			e := newOwnerEnv(t)
			e.add("victim@example.test", u, "mbox:~/mbox")
			mbox := u.Path("mbox")
			deliverAs := func() (string, bool) {
				if via == "deliver" {
					_, errs, code := e.run(attackMsg, "deliver", "-f", "mallory@example.test", "victim@example.test")
					return errs, code == 0
				}
				if via == "drop" {
					before := queuedFor(t, e.env, "victim@example.test")
					if out, code := e.as(u, attackMsg, "sendmail", "-f", "mallory@example.test", "victim@example.test"); code != 0 {
						t.Fatalf("sendmail as %s: exit %d %s", u.Name, code, out)
					}
					out, errs, code := e.run("", "queue-runner")
					if code != 0 {
						t.Fatalf("queue-runner: exit %d %s%s", code, out, errs)
					}
					return out + errs, queuedFor(t, e.env, "victim@example.test") == before
				}
				return passDelivers(t, e.env, "victim@example.test")
			}
			if via == "drop" {
				// The spool, with its drop/ open to every user.
				if _, errs, code := e.run("", "queue-runner"); code != 0 {
					t.Fatalf("queue-runner: exit %d %s", code, errs)
				}
			}

			target, content := rootSecret(t, "passwd")
			must(t, os.Chmod(filepath.Dir(target), 0o755))
			must(t, os.Chmod(target, 0o644))
			must(t, os.Symlink(target, mbox))
			u.Chown(t, mbox)
			if log, ok := deliverAs(); ok {
				t.Errorf("~/mbox a symlink: delivered anyway\n%s", log)
			}
			assertUnchanged(t, target, content)

			lock := mbox + ".lock"
			must(t, os.WriteFile(lock, []byte("999999999@"+hostnameForLock()+" 10\n"), 0o600))
			u.Chown(t, lock)
			if log, ok := deliverAs(); ok {
				t.Errorf("~/mbox a symlink, a forged stale lock: delivered anyway\n%s", log)
			}
			assertUnchanged(t, target, content)
			os.Remove(lock)
			must(t, os.Remove(mbox))

			// A symlinked dotlock is a trap: the link is removed, the mail
			// delivered, the target untouched.
			lockTarget, lockContent := rootSecret(t, "authorized_keys")
			must(t, os.Symlink(lockTarget, lock))
			u.Chown(t, lock)
			if log, ok := deliverAs(); !ok {
				t.Errorf("a symlinked dotlock: not delivered\n%s", log)
			}
			assertUnchanged(t, lockTarget, lockContent)
			if _, err := os.Lstat(lock); err == nil {
				t.Errorf("%s is still there", lock)
			}

			if log, ok := deliverAs(); !ok {
				t.Fatalf("ordinary delivery failed\n%s", log)
			}
			assertOwnedFiles(t, u, mbox)
			b, err := os.ReadFile(mbox)
			must(t, err)
			if !strings.HasPrefix(string(b), "From mallory@example.test ") || !strings.Contains(string(b), "mallory's key") {
				t.Errorf("the mbox holds %q", b)
			}
		})
	}
}

// hostnameForLock is this host's name as a dotlock records it.
func hostnameForLock() string {
	h, _ := os.Hostname()
	return h
}

// pipeIDs writes an aliases file (owned by aliasOwner) whose alias piper
// pipes to id(1) writing into res, delivers to it through deliver and
// through a queue-runner pass, both as root, and fails unless each run's
// uid and gid were want's.
func pipeIDs(t *testing.T, e *ownerEnv, aliasOwner privseptest.User, res string, want []string) {
	t.Helper()
	must(t, os.WriteFile(e.Aliases, []byte(fmt.Sprintf("postmaster: root\npiper: \"|id -u >%s; id -g >>%s\"\n", res, res)), 0o644))
	must(t, os.Chown(e.Aliases, int(aliasOwner.UID), int(aliasOwner.GID)))
	for _, via := range []string{"deliver", "queue-runner"} {
		os.Remove(res)
		if via == "deliver" {
			if _, errs, code := e.run(attackMsg, "deliver", "piper@example.test"); code != 0 {
				t.Fatalf("deliver: exit %d %s", code, errs)
			}
		} else {
			queueAndPass(t, e.env, "piper@example.test")
		}
		b, err := os.ReadFile(res)
		if err != nil {
			t.Fatalf("%s: the pipe did not run: %v", via, err)
		}
		if got := strings.Fields(string(b)); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("%s: the pipe ran as uid, gid %v, want %v", via, got, want)
		}
	}
}

// A |command target of a root-owned aliases file runs as default-privs,
// never as root; the process is checked from inside (id -u, id -g).
func TestPrivDeliverRootAliasPipe(t *testing.T) {
	e := newOwnerEnv(t, `default-privs = "nobody"`)
	out := privseptest.Dir(t)
	must(t, os.Chmod(out, 0o777))
	nobody, err := lookupIDs("nobody")
	must(t, err)
	pipeIDs(t, e, privseptest.User{}, filepath.Join(out, "ids"), nobody)
}

// A |command target of an aliases file that a user owns runs as that
// user (Postfix's rule for a non-root alias database).
func TestPrivDeliverUserAliasPipe(t *testing.T) {
	u := privseptest.NewUser(t)
	e := newOwnerEnv(t, `default-privs = "nobody"`)
	pipeIDs(t, e, u, u.Path("ids"), []string{strconv.FormatUint(uint64(u.UID), 10), strconv.FormatUint(uint64(u.GID), 10)})
}

// lookupIDs returns a login's uid and primary gid as id(1) prints them.
func lookupIDs(name string) ([]string, error) {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) > 3 && f[0] == name {
			if _, err := strconv.Atoi(f[2]); err != nil {
				return nil, fmt.Errorf("passwd: %s: uid %q", name, f[2])
			}
			return []string{f[2], f[3]}, nil
		}
	}
	return nil, fmt.Errorf("passwd: no %s", name)
}

// deliver --maildir and --mbox run by root deliver as the owner of the
// directory they deliver into (deliver(8) SECURITY CONSIDERATIONS).
func TestPrivDeliverExplicitPaths(t *testing.T) {
	u := privseptest.NewUser(t)
	e := newOwnerEnv(t)
	md, mb := u.Path("Maildir"), u.Path("mbox")
	for _, args := range [][]string{{"--maildir", md}, {"--mbox", mb}} {
		if _, errs, code := e.run(attackMsg, "deliver", append([]string{"-f", "mallory@example.test"}, args...)...); code != 0 {
			t.Fatalf("deliver %v: exit %d %s", args, code, errs)
		}
	}
	assertOwnedFiles(t, u, append(maildirFiles(t, md, "new"), mb)...)
	if uid := fileOwner(t, md); uid != u.UID {
		t.Errorf("%s belongs to uid %d, not %d", md, uid, u.UID)
	}
}

// queue-runner --mda runs the command as the recipient's mailbox owner,
// with the owner's HOME (queue-runner(8) SECURITY CONSIDERATIONS).
func TestPrivDeliverMDA(t *testing.T) {
	u := privseptest.NewUser(t)
	e := newOwnerEnv(t)
	e.add("victim@example.test", u, "")
	if out, errs, code := e.run(attackMsg, "sendmail", "-f", "mallory@example.test", "victim@example.test"); code != 0 {
		t.Fatalf("sendmail: exit %d %s%s", code, out, errs)
	}
	if out, errs, code := e.run("", "queue-runner", "--mda", `id -u >"$HOME/mda-ids"; id -g >>"$HOME/mda-ids"; cat >/dev/null`); code != 0 {
		t.Fatalf("queue-runner --mda: exit %d %s%s", code, out, errs)
	}
	b, err := os.ReadFile(u.Path("mda-ids"))
	if err != nil {
		t.Fatalf("the MDA did not write into the owner's HOME: %v", err)
	}
	want := []string{strconv.FormatUint(uint64(u.UID), 10), strconv.FormatUint(uint64(u.GID), 10)}
	if got := strings.Fields(string(b)); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("the MDA ran as uid, gid %v, want %v", got, want)
	}
}
