//go:build interop

package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Two letterbox hosts writing one mail root at once, as over NFS: each
// host has its own configuration, hostname, spool, queue-runner and
// imapd; the mail root is the same. The kernel NFS server exports it when
// the machine has one; otherwise the test says so plainly and the hosts
// share a local directory (which does not test NFS).

// sharedMailRoot returns the mail root as host A and host B see it, and
// whether that is NFS.
func sharedMailRoot(t *testing.T) (rootA, rootB string, nfs bool) {
	t.Helper()
	dir, err := os.MkdirTemp("", "letterbox-shared-root-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	export := filepath.Join(dir, "export")
	must(t, os.MkdirAll(export, 0o755))
	if why := nfsServerMissing(); why != "" {
		msg := "NFS: no kernel NFS server here (" + why + "): the two hosts share a local directory; this run does NOT test NFS"
		fmt.Fprintln(os.Stderr, "--- NOTE "+t.Name()+": "+msg) // make interop shows "--- " lines
		t.Log(msg)
		return export, export, false
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("NFS setup: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	if b, _ := os.ReadFile("/proc/fs/nfsd/threads"); strings.TrimSpace(string(b)) == "" || strings.TrimSpace(string(b)) == "0" {
		run("rpc.nfsd", "4")
		t.Cleanup(func() { exec.Command("rpc.nfsd", "0").Run() })
	}
	if exec.Command("pgrep", "-x", "rpc.mountd").Run() != nil {
		mountd := exec.Command("rpc.mountd", "-F") // in the foreground: ours to stop
		must(t, mountd.Start())
		t.Cleanup(func() { mountd.Process.Kill(); mountd.Wait() })
	}
	run("exportfs", "-o", "rw,sync,no_root_squash,no_subtree_check,insecure,fsid=4711", "127.0.0.1:"+export)
	t.Cleanup(func() { exec.Command("exportfs", "-u", "127.0.0.1:"+export).Run() })
	for _, m := range []string{"a", "b"} {
		mnt := filepath.Join(dir, "host-"+m)
		must(t, os.MkdirAll(mnt, 0o755))
		// nosharecache: two mounts with caches of their own, as two hosts.
		run("mount", "-t", "nfs", "-o", "vers=4.2,proto=tcp,nosharecache,actimeo=1", "127.0.0.1:"+export, mnt)
		t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	}
	fmt.Fprintln(os.Stderr, "--- NOTE "+t.Name()+": NFS: the mail root is exported by the kernel NFS server and mounted twice")
	return filepath.Join(dir, "host-a"), filepath.Join(dir, "host-b"), true
}

// nfsServerMissing says why the kernel NFS server cannot be used, or "".
func nfsServerMissing() string {
	for _, c := range []string{"exportfs", "rpc.nfsd", "rpc.mountd", "mount.nfs"} {
		if _, err := exec.LookPath(c); err != nil {
			return c + " not installed (package nfs-kernel-server, nfs-common)"
		}
	}
	fs, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fs), "nfsd") {
		if out, err := exec.Command("modprobe", "nfsd").CombinedOutput(); err != nil {
			return "the kernel has no nfsd: modprobe nfsd: " + strings.TrimSpace(string(out)+" "+err.Error())
		}
	}
	if _, err := os.Stat("/proc/fs/nfsd/threads"); err != nil {
		if out, err := exec.Command("mount", "-t", "nfsd", "nfsd", "/proc/fs/nfsd").CombinedOutput(); err != nil {
			return "cannot mount /proc/fs/nfsd: " + strings.TrimSpace(string(out))
		}
	}
	return ""
}

// sharedHost is one host's installation on the shared mail root.
func sharedHost(t *testing.T, name, root string) *env {
	t.Helper()
	e := hostEnv(t, name, []string{"example.test"})
	b, err := os.ReadFile(e.Config)
	must(t, err)
	conf := strings.Replace(string(b), fmt.Sprintf("mail-root = %q", e.MailRoot), fmt.Sprintf("mail-root = %q", root), 1)
	must(t, os.WriteFile(e.Config, []byte(conf), 0o600))
	e.MailRoot = root
	return e
}

// nfsSession is one host's IMAP client for one user (Python's imaplib):
// it acts on every message of the user, by the number in its Message-ID,
// as its role says, until it has acted on all of them, checking on every
// listing that UIDs increase and that no message is shown twice.
const nfsSession = `
import imaplib, json, re, sys, time
host, port, user, role, ids = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
m = imaplib.IMAP4(host, port)
m.login(user, "pw")
def ok(r, what):
    if r[0] != "OK":
        print("FAIL", what, r); sys.exit(1)
def listing():
    ok(m.select("INBOX"), "select")
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    if typ == "NO" and b"EXPUNGEISSUED" in data[0]:
        return None  # another host took a message away meanwhile: look again
    ok((typ, data), "fetch")
    out, seen, last = {}, set(), 0
    for d in data:
        if not isinstance(d, tuple):
            continue
        uid = int(re.search(rb"UID (\d+)", d[0]).group(1))
        mid = re.search(rb"<([^>]*)>", d[1]).group(1).decode()
        if uid <= last:
            print("FAIL UIDs not increasing:", last, uid); sys.exit(1)
        if mid in seen:
            print("FAIL shown twice:", mid); sys.exit(1)
        last = uid; seen.add(mid)
        out[mid] = (uid, d[0].decode())
    return out
def target(mid):
    i = int(re.search(r"-(\d+)@", mid).group(1))
    return {"move": i % 4 == 1, "flag": i % 4 == 2, "seen": i % 4 == 2, "expunge": i % 4 == 3}[role]
todo = set(x for x in ids if target(x))
deadline = time.time() + 150
while todo and time.time() < deadline:
    l = listing()
    if l is None:
        time.sleep(0.2)
        continue
    for mid, (uid, meta) in l.items():
        if mid not in todo:
            continue
        u = str(uid)
        if role == "move":
            ok(m.uid("MOVE", u, "Archive"), "move")
        elif role == "flag":
            ok(m.uid("STORE", u, "+FLAGS", r"(\Flagged)"), "store")
        elif role == "seen":
            ok(m.uid("STORE", u, "+FLAGS", r"(\Seen)"), "store")
        else:
            ok(m.uid("STORE", u, "+FLAGS", r"(\Deleted)"), "store")
            ok(m.uid("EXPUNGE", u), "expunge")
        todo.discard(mid)
    if todo:
        time.sleep(0.2)
if todo:
    print("FAIL never saw:", sorted(todo)); sys.exit(1)
m.logout()
print("done", role, user)
`

// nfsFinal lists INBOX and Archive of a user: per message its Message-ID,
// mailbox, UID and flags, as JSON; it fails on a UID out of order or a
// message shown twice.
const nfsFinal = `
import imaplib, json, re, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login(sys.argv[3], "pw")
out = []
for box in ["INBOX", "Archive"]:
    typ, _ = m.select(box, readonly=True)
    assert typ == "OK", box
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    last = 0
    for d in data:
        if not isinstance(d, tuple):
            continue
        uid = int(re.search(rb"UID (\d+)", d[0]).group(1))
        assert uid > last, (box, last, uid)
        last = uid
        flags = sorted(f.decode() for f in re.search(rb"FLAGS \(([^)]*)\)", d[0]).group(1).split() if f != rb"\Recent")
        out.append({"box": box, "uid": uid, "id": re.search(rb"<([^>]*)>", d[1]).group(1).decode(), "flags": flags})
m.logout()
print(json.dumps(out))
`

// nfsIdle waits in IDLE for a new message (EXISTS) and says when it came.
const nfsIdle = `
import imaplib, sys, time, socket
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login(sys.argv[3], "pw")
typ, data = m.select("INBOX")
n = int(data[0])
m.send(b"i1 IDLE\r\n")
assert m.readline().startswith(b"+"), "no continuation"
print("idling", flush=True)
m.sock.settimeout(float(sys.argv[4]))
while True:
    l = m.readline()
    if not l:
        print("FAIL connection closed"); sys.exit(1)
    if l.endswith(b"EXISTS\r\n") and int(l.split()[1]) > n:
        print("exists", l.decode().strip(), flush=True)
        break
m.send(b"DONE\r\n")
while not m.readline().startswith(b"i1 "):
    pass
m.logout()
`

type nfsListed struct {
	Box   string   `json:"box"`
	UID   uint32   `json:"uid"`
	ID    string   `json:"id"`
	Flags []string `json:"flags"`
}

// parseUIDList reads a dovecot-uidlist (version 3): its next UID and each
// record's UID and base name, failing on anything it cannot parse and on
// UIDs that do not increase.
func parseUIDList(t *testing.T, path string) (next uint32, names map[string]uint32) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("uidlist: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	hdr := strings.Fields(lines[0])
	if len(hdr) < 3 || hdr[0] != "3" {
		t.Fatalf("%s: header %q is not version 3", path, lines[0])
	}
	for _, f := range hdr[1:] {
		if f[0] == 'N' {
			n, err := strconv.ParseUint(f[1:], 10, 32)
			if err != nil {
				t.Fatalf("%s: header %q", path, lines[0])
			}
			next = uint32(n)
		}
	}
	names = map[string]uint32{}
	var last uint64
	for _, l := range lines[1:] {
		head, name, ok := strings.Cut(l, ":")
		f := strings.Fields(head)
		if !ok || len(f) == 0 || name == "" {
			t.Fatalf("%s: record %q does not parse", path, l)
		}
		uid, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil || uid <= last {
			t.Fatalf("%s: record %q: UID not above %d", path, l, last)
		}
		if _, dup := names[name]; dup {
			t.Fatalf("%s: %s listed twice", path, name)
		}
		last = uid
		names[name] = uint32(uid)
	}
	if next != 0 && uint32(last) >= next {
		t.Fatalf("%s: UID %d at or above the next UID %d", path, last, next)
	}
	return next, names
}

// TestInteropSharedMailRoot: deliveries from two hosts (deliver on one,
// sendmail and queue-runner on the other) to the same users while imapd
// sessions on both hosts move, flag and expunge; afterwards no message is
// lost or shown twice, UIDs are unique and increasing, dovecot-uidlist
// parses and lists every file, IDLE on one host sees the other's
// delivery, and Dovecot reads the result as imapd shows it.
func TestInteropSharedMailRoot(t *testing.T) {
	needPeer(t, "python3", "doveadm")
	rootA, rootB, nfs := sharedMailRoot(t)
	a := sharedHost(t, "host-a.test", rootA)
	b := sharedHost(t, "host-b.test", rootB)
	users := []string{"u1", "u2"}
	for _, u := range users {
		a.addUser(u+"@example.test", "pw")
	}
	ub, err := os.ReadFile(a.Users)
	must(t, err)
	must(t, os.WriteFile(b.Users, ub, 0o600))
	imapA := a.startAt(freeAddr(t, "127.0.0.2"), "imapd", "", "--poll-interval", "1s")
	imapB := b.startAt(freeAddr(t, "127.0.0.3"), "imapd", "", "--poll-interval", "1s")

	const n = 16 // messages per host and user
	ids := map[string][]string{}
	for _, u := range users {
		for _, h := range []string{"a", "b"} {
			for i := 0; i < n; i++ {
				ids[u] = append(ids[u], fmt.Sprintf("%s-%s-%d@nfs.test", h, u, i))
			}
		}
	}
	msg := func(id string) string {
		return fmt.Sprintf("From: sender@else.test\nSubject: %s\nMessage-ID: <%s>\n\nbody of %s\n", id, id, id)
	}

	var wg sync.WaitGroup
	errs := make(chan string, 16)
	wg.Add(2)
	go func() { // host A: deliver
		defer wg.Done()
		for i := 0; i < n; i++ {
			for _, u := range users {
				id := fmt.Sprintf("a-%s-%d@nfs.test", u, i)
				if out, e, code := a.run(msg(id), "deliver", "-f", "sender@else.test", u+"@example.test"); code != 0 {
					errs <- fmt.Sprintf("deliver on host A: exit %d %s%s", code, out, e)
					return
				}
			}
		}
	}()
	go func() { // host B: sendmail, queue-runner passes
		defer wg.Done()
		for i := 0; i < n; i++ {
			for _, u := range users {
				id := fmt.Sprintf("b-%s-%d@nfs.test", u, i)
				if out, e, code := b.run(msg(id), "sendmail", "-f", "sender@else.test", u+"@example.test"); code != 0 {
					errs <- fmt.Sprintf("sendmail on host B: exit %d %s%s", code, out, e)
					return
				}
			}
			if i%4 == 3 {
				if out, e, code := b.run("", "queue-runner"); code != 0 {
					errs <- fmt.Sprintf("queue-runner on host B: exit %d %s%s", code, out, e)
					return
				}
			}
		}
		if out, e, code := b.run("", "queue-runner"); code != 0 {
			errs <- fmt.Sprintf("queue-runner on host B: exit %d %s%s", code, out, e)
		}
	}()
	type role struct {
		srv  *server
		name string
	}
	roles := []role{{imapA, "move"}, {imapA, "flag"}, {imapB, "seen"}, {imapB, "expunge"}}
	for _, u := range users {
		all, err := json.Marshal(ids[u])
		must(t, err)
		for _, r := range roles {
			wg.Add(1)
			go func(r role, u string) {
				defer wg.Done()
				host, port, _ := strings.Cut(r.srv.Addr, ":")
				c := bounded(t, exec.Command("python3", "-c", nfsSession, host, port, u+"@example.test", r.name, string(all)))
				out, err := c.CombinedOutput()
				if err != nil {
					errs <- fmt.Sprintf("IMAP session %s for %s: %v\n%s", r.name, u, err, out)
				}
			}(r, u)
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		t.FailNow()
	}
	if l := qList(t, b); len(l) != 0 {
		t.Fatalf("host B's queue still holds %v", l)
	}

	// IDLE on host B sees a delivery made on host A.
	idle := bounded(t, exec.Command("python3", "-c", nfsIdle, strings.Split(imapB.Addr, ":")[0], strings.Split(imapB.Addr, ":")[1], "u1@example.test", "30"))
	stdout, err := idle.StdoutPipe()
	must(t, err)
	idle.Stderr = idle.Stdout
	must(t, idle.Start())
	rd := bufio.NewReader(stdout)
	if l, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(l, "idling") {
		t.Fatalf("IDLE client: %q %v", l, err)
	}
	if out, e, code := a.run(msg("idle-u1-0@nfs.test"), "deliver", "-f", "sender@else.test", "u1@example.test"); code != 0 {
		t.Fatalf("deliver on host A: exit %d %s%s", code, out, e)
	}
	l, _ := rd.ReadString('\n')
	rest, _ := rd.ReadString(0)
	if err := idle.Wait(); err != nil || !strings.HasPrefix(l, "exists") {
		t.Fatalf("IDLE on host B did not see host A's delivery: %q %s %v", l, rest, err)
	}
	ids["u1"] = append(ids["u1"], "idle-u1-0@nfs.test")

	// What each message must have become, by the number in its Message-ID.
	idRe := regexp.MustCompile(`-(\d+)@`)
	listedBy := map[string][]nfsListed{}
	for _, u := range users {
		host, port, _ := strings.Cut(imapA.Addr, ":")
		var listed []nfsListed
		out := python(t, nfsFinal, host, port, u+"@example.test")
		must(t, json.Unmarshal([]byte(out), &listed))
		listedBy[u] = listed
		got := map[string][]nfsListed{}
		for _, m := range listed {
			got[m.ID] = append(got[m.ID], m)
		}
		for _, id := range ids[u] {
			i, _ := strconv.Atoi(idRe.FindStringSubmatch(id)[1])
			ms := got[id]
			delete(got, id)
			switch {
			case i%4 == 3:
				if len(ms) != 0 {
					t.Errorf("%s: %s was expunged but is listed: %v", u, id, ms)
				}
			case len(ms) != 1:
				t.Errorf("%s: %s listed %d times: %v", u, id, len(ms), ms)
			case i%4 == 1 && ms[0].Box != "Archive", i%4 != 1 && ms[0].Box != "INBOX":
				t.Errorf("%s: %s in %s", u, id, ms[0].Box)
			case i%4 == 2 && strings.Join(ms[0].Flags, " ") != `\Flagged \Seen`:
				t.Errorf("%s: %s has flags %v, want \\Flagged \\Seen (set at once from two hosts)", u, id, ms[0].Flags)
			case i%4 != 2 && len(ms[0].Flags) != 0:
				t.Errorf("%s: %s has flags %v, want none", u, id, ms[0].Flags)
			}
		}
		for id, ms := range got {
			t.Errorf("%s: %s listed, never sent: %v", u, id, ms)
		}

		// dovecot-uidlist of each mailbox parses, lists every file once,
		// and agrees with the UIDs imapd gave.
		md := filepath.Join(rootB, "example.test", u)
		for box, dir := range map[string]string{"INBOX": md, "Archive": filepath.Join(md, ".Archive")} {
			_, names := parseUIDList(t, filepath.Join(dir, "dovecot-uidlist"))
			files := 0
			for _, sub := range []string{"new", "cur"} {
				for _, f := range maildirFiles(t, dir, sub) {
					files++
					base, _, _ := strings.Cut(filepath.Base(f), ":")
					if _, ok := names[base]; !ok {
						t.Errorf("%s %s: %s has no uidlist record", u, box, base)
					}
				}
			}
			want := 0
			for _, m := range listed {
				if m.Box == box {
					want++
				}
			}
			if files != want {
				t.Errorf("%s %s: %d files, imapd lists %d", u, box, files, want)
			}
		}

	}

	// Dovecot reads the same mailboxes, UIDs and flags (as nobody, on the
	// mail root as host B sees it; indexes in memory only).
	imapA.stop()
	imapB.stop()
	for _, u := range users {
		md := filepath.Join(rootB, "example.test", u)
		listed := listedBy[u]
		peerDir, as := deliverPeerDir(t)
		conf := filepath.Join(peerDir, "dovecot.conf")
		must(t, os.WriteFile(conf, []byte("base_dir = "+peerDir+"/run\nlog_path = /dev/stderr\nssl = no\nmail_location = maildir:"+md+":INDEX=MEMORY\n"), 0o644))
		giveAway(t, peerDir)
		giveAway(t, md)
		for p := filepath.Dir(md); p != filepath.Clean(os.TempDir()) && p != "/"; p = filepath.Dir(p) {
			must(t, os.Chmod(p, 0o755)) // nobody may pass through
		}
		dc := &dovecotSide{t: t, as: as, conf: conf, md: md}
		var ours []string
		for _, m := range listed {
			ours = append(ours, fmt.Sprintf("%s %d %s", m.Box, m.UID, strings.Join(m.Flags, " ")))
		}
		var theirs []string
		for _, box := range []string{"INBOX", "Archive"} {
			ms, _, _ := dc.fetch(box)
			for _, m := range ms {
				fl := append([]string(nil), m.Flags...)
				sort.Strings(fl)
				theirs = append(theirs, fmt.Sprintf("%s %d %s", box, m.UID, strings.Join(fl, " ")))
			}
		}
		sort.Strings(ours)
		sort.Strings(theirs)
		if strings.Join(ours, "\n") != strings.Join(theirs, "\n") {
			t.Errorf("%s: Dovecot reads another state.\nimapd:\n%s\nDovecot:\n%s", u, strings.Join(ours, "\n"), strings.Join(theirs, "\n"))
		}
	}
	if !nfs {
		t.Log("passed on a shared local directory, not over NFS (see the first line)")
	}
}
