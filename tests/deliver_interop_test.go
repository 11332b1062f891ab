//go:build interop

package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/maildir"
	"letterbox/pkg/maildir/cur"
)

// deliverPeerDir returns a world-searchable temp dir for mail that a peer
// program (Dovecot refuses root) reads, and the argv prefix that runs a
// program as the dir's owner: nobody when we are root, ourselves otherwise.
func deliverPeerDir(t *testing.T) (string, []string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "letterbox-deliver-interop-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	if os.Geteuid() != 0 {
		u, _ := user.Current()
		return dir, []string{"env", "USER=" + u.Username, "HOME=" + dir}
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv(1) needed to run peers as nobody")
	}
	return dir, []string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env", "USER=nobody", "HOME=" + dir}
}

// giveAway makes dir's tree belong to nobody when we are root.
func giveAway(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	if out, err := exec.Command("chown", "-R", "nobody:nogroup", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
}

// ownedByPeer fails unless each path belongs to the peer's user (nobody
// when we are root): deliver, run as root, delivered as the owner of the
// directory it delivered into.
func ownedByPeer(t *testing.T, paths ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	nobody, err := user.Lookup("nobody")
	must(t, err)
	for _, p := range paths {
		fi, err := os.Lstat(p)
		must(t, err)
		if uid := fi.Sys().(*syscall.Stat_t).Uid; strconv.FormatUint(uint64(uid), 10) != nobody.Uid {
			t.Errorf("%s belongs to uid %d, not to nobody (%s): not delivered as the owner", p, uid, nobody.Uid)
		}
	}
}

func runPeer(t *testing.T, prefix []string, args ...string) string {
	t.Helper()
	all := append(append([]string{}, prefix...), args...)
	out, err := exec.Command(all[0], all[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func needPeer(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s not installed (make interop installs it)", n)
		}
	}
}

func deliverSome(t *testing.T, e *env, n int, target ...string) {
	t.Helper()
	for i := 1; i <= n; i++ {
		msg := fmt.Sprintf("From: alice@example.org\nSubject: msg %d\n\nFrom the body of %d\n>From quoted\n", i, i)
		args := append([]string{"-f", "alice@example.org", "-a", "u@example.test"}, target...)
		if _, errs, code := e.run(msg, "deliver", args...); code != 0 {
			t.Fatalf("deliver: exit %d %s", code, errs)
		}
	}
}

func TestInteropDeliverDovecotMaildir(t *testing.T) {
	needPeer(t, "doveadm")
	e := newEnv(t)
	dir, as := deliverPeerDir(t)
	md := filepath.Join(dir, "Maildir")
	// The directory is its owner's before deliver (root) runs: deliver
	// delivers as that owner (issue 15), and Dovecot reads what it made.
	giveAway(t, dir)
	deliverSome(t, e, 3, "--maildir", md)
	ownedByPeer(t, append(maildirFiles(t, md, "new"), md)...)
	conf := filepath.Join(dir, "dovecot.conf")
	must(t, os.WriteFile(conf, []byte("base_dir = "+dir+"/run\nlog_path = /dev/stderr\nssl = no\n"), 0o644))
	giveAway(t, dir)
	doveadm := append(append([]string{}, as...), "doveadm", "-c", conf, "-o", "mail_location=maildir:"+md)

	out := runPeer(t, doveadm, "fetch", "hdr.subject hdr.return-path hdr.delivered-to", "all")
	for i := 1; i <= 3; i++ {
		if !strings.Contains(out, fmt.Sprintf("hdr.subject: msg %d\n", i)) {
			t.Errorf("doveadm lacks msg %d:\n%s", i, out)
		}
	}
	if strings.Count(out, "hdr.return-path: <alice@example.org>") != 3 || strings.Count(out, "hdr.delivered-to: u@example.test") != 3 {
		t.Errorf("trace headers as Dovecot sees them:\n%s", out)
	}

	// Dovecot sets flags and a keyword; we read its names.
	runPeer(t, doveadm, "flags", "add", `\Seen $Label1`, "mailbox", "INBOX", "all")
	msgs, err := maildir.List(md)
	must(t, err)
	if len(msgs) != 3 {
		t.Fatalf("List after Dovecot: %d messages", len(msgs))
	}
	for _, m := range msgs {
		if m.Flags != "Sa" {
			t.Errorf("%s: flags %q, want Sa (\\Seen + first keyword)", m.Name, m.Flags)
		}
	}
	// We set flags; Dovecot reads them.
	_, err = cur.SetFlags(md, msgs[0], "FS")
	must(t, err)
	giveAway(t, dir)
	out = runPeer(t, doveadm, "fetch", "flags hdr.subject", "all")
	if !strings.Contains(out, "flags: \\Flagged \\Seen") {
		t.Errorf("Dovecot doesn't see our flags:\n%s", out)
	}

	// dovecot-lda delivers into the same Maildir; we parse its names.
	lda := "/usr/lib/dovecot/dovecot-lda"
	if _, err := os.Stat(lda); err == nil {
		c := exec.Command(as[0], append(as[1:], lda, "-c", conf, "-o", "mail_location=maildir:"+md, "-f", "bob@example.org")...)
		c.Stdin = strings.NewReader("Subject: from dovecot-lda\n\nhello\n")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("dovecot-lda: %v %s", err, out)
		}
		msgs, err = maildir.List(md)
		must(t, err)
		if len(msgs) != 4 {
			t.Fatalf("%d messages after dovecot-lda", len(msgs))
		}
		for _, m := range msgs {
			fi, err := os.Stat(m.Path)
			must(t, err)
			if m.Size != fi.Size() {
				t.Errorf("%s: Size %d, file %d", m.Name, m.Size, fi.Size())
			}
		}
	}
}

func TestInteropDeliverDovecotMbox(t *testing.T) {
	needPeer(t, "doveadm")
	e := newEnv(t)
	dir, as := deliverPeerDir(t)
	mb := filepath.Join(dir, "inbox")
	giveAway(t, dir)
	deliverSome(t, e, 3, "--mbox", mb)
	ownedByPeer(t, mb)
	conf := filepath.Join(dir, "dovecot.conf")
	must(t, os.WriteFile(conf, []byte("base_dir = "+dir+"/run\nlog_path = /dev/stderr\nssl = no\n"), 0o644))
	giveAway(t, dir)
	doveadm := append(append([]string{}, as...), "doveadm", "-c", conf, "-o", "mail_location=mbox:"+dir+"/mail:INBOX="+mb)
	out := runPeer(t, doveadm, "fetch", "hdr.subject hdr.return-path body", "all")
	for i := 1; i <= 3; i++ {
		if !strings.Contains(out, fmt.Sprintf("hdr.subject: msg %d\nhdr.return-path: <alice@example.org>\nbody:\n", i)) {
			t.Errorf("doveadm lacks msg %d:\n%s", i, out)
		}
	}
	if strings.Contains(out, "\nFrom the body") && !strings.Contains(out, ">From the body") {
		t.Errorf("From_ line in the body not quoted:\n%s", out)
	}
}

func TestInteropDeliverMblaze(t *testing.T) {
	needPeer(t, "mlist", "mhdr", "mshow")
	e := newEnv(t)
	md := filepath.Join(e.Dir, "Maildir")
	deliverSome(t, e, 3, "--maildir", md)
	out, err := exec.Command("mlist", md).Output()
	must(t, err)
	files := strings.Fields(string(out))
	if len(files) != 3 {
		t.Fatalf("mlist: %q", out)
	}
	var subjects []string
	for _, f := range files {
		s, err := exec.Command("mhdr", "-h", "subject", f).Output()
		must(t, err)
		subjects = append(subjects, strings.TrimSpace(string(s)))
		rp, err := exec.Command("mhdr", "-h", "return-path", f).Output()
		must(t, err)
		if strings.TrimSpace(string(rp)) != "<alice@example.org>" {
			t.Errorf("%s: Return-Path %q", f, rp)
		}
	}
	sort.Strings(subjects)
	if strings.Join(subjects, ",") != "msg 1,msg 2,msg 3" {
		t.Fatalf("mhdr subjects: %v", subjects)
	}
	body, err := exec.Command("mshow", "-N", files[0]).Output()
	must(t, err)
	if !strings.Contains(string(body), "From the body of") {
		t.Errorf("mshow: %s", body)
	}
	// mblaze takes the messages in (minc: new/ → cur/) and marks one seen
	// (mflag -S): the names we read back.
	if _, err := exec.LookPath("mflag"); err != nil {
		t.Fatalf("mflag not installed (mblaze in tests/interop/packages.txt): %v", err)
	}
	out, err = exec.Command("minc", md).Output()
	must(t, err)
	moved := strings.Fields(string(out))
	if len(moved) != 3 {
		t.Fatalf("minc: %q", out)
	}
	must(t, exec.Command("mflag", "-S", moved[0]).Run())
	msgs, err := maildir.List(md)
	must(t, err)
	seen := 0
	for _, m := range msgs {
		if m.Flags == "S" {
			seen++
		}
	}
	if seen != 1 {
		t.Errorf("after mflag -S: %d seen", seen)
	}
}

func TestInteropDeliverPythonMaildir(t *testing.T) {
	e := newEnv(t)
	md := filepath.Join(e.Dir, "Maildir")
	deliverSome(t, e, 2, "--maildir", md)
	msgs, err := maildir.List(md)
	must(t, err)
	_, err = cur.SetFlags(md, msgs[1], "RS")
	must(t, err)
	out := python(t, `
import mailbox, sys
md = mailbox.Maildir(sys.argv[1], create=False)
for key in sorted(md.keys(), key=lambda k: md[k]["Subject"]):
    m = md[key]
    print(m["Subject"], m["Return-Path"], m.get_subdir(), m.get_flags() or "-")
`, md)
	want := "msg 1 <alice@example.org> new -\nmsg 2 <alice@example.org> cur RS\n"
	if out != want {
		t.Fatalf("python mailbox.Maildir:\n%s\nwant:\n%s", out, want)
	}
}

// mutt reads an mbox that deliver wrote: it sees three messages, parses the
// raw UTF-8 subject, and the body line "From " (quoted by deliver) did not
// split a message. mutt runs read-only (-R) under script(1) for its
// terminal, with every key pushed from its muttrc before it reads any, so
// nothing depends on timing; it copies the messages into Maildirs, whose
// files hold each message as mutt parsed it.
func TestInteropDeliverMuttMbox(t *testing.T) {
	needPeer(t, "mutt", "script")
	e := newEnv(t)
	// deliver (root) appends as the directory's owner (issue 15).
	dir, _ := deliverPeerDir(t)
	giveAway(t, dir)
	mb := filepath.Join(dir, "inbox")
	// seen is the body as mutt reads it. mutt reads mbox as mboxo: it
	// does not take off the '>' that deliver's mboxrd quoting puts
	// before "From " and ">From ", so those lines come back with one
	// more '>' — but inside their message, not splitting it.
	msgs := []struct{ subject, body, seen string }{
		{"plain one", "first body\n", "first body\n"},
		// Unquoted, this line would start a fourth message for mutt.
		{"quoting", "From bob@example.org Mon Nov 23 10:00:00 2026\n>From already quoted\n.dot\n", ">From bob@example.org Mon Nov 23 10:00:00 2026\n>>From already quoted\n.dot\n"},
		{"Grüße aus Köln", "naïve body\n", "naïve body\n"},
	}
	for _, m := range msgs {
		in := "From: alice@example.org\nTo: u@example.test\nSubject: " + m.subject + "\n\n" + m.body
		if _, errs, code := e.run(in, "deliver", "-f", "alice@example.org", "--mbox", mb); code != 0 {
			t.Fatalf("deliver: exit %d %s", code, errs)
		}
	}
	ownedByPeer(t, mb)
	before, err := os.ReadFile(mb)
	must(t, err)

	all, utf := filepath.Join(dir, "all"), filepath.Join(dir, "utf")
	muttrc := filepath.Join(dir, "muttrc")
	// Every path mutt would check or offer to create at startup exists
	// or is set: a prompt would eat the pushed keys.
	must(t, os.WriteFile(muttrc, []byte(`set folder="`+dir+`"
set spoolfile="`+mb+`"
set mbox="`+dir+`/mbox"
set postponed="`+dir+`/postponed"
set mbox_type=Maildir
set charset="utf-8"
set confirmcreate=no
set confirmappend=no
set move=no
set quit=yes
set wait_key=no
set sleep_time=0
set header_cache=""
set record=""
set sort=mailbox-order
push "<tag-pattern>~A<enter><tag-prefix><copy-message>`+all+`<enter><untag-pattern>~A<enter><tag-pattern>~s Köln<enter><tag-prefix><copy-message>`+utf+`<enter><quit>"
`), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-qec", "mutt -n -R -F "+muttrc+" -f "+mb, "/dev/null")
	cmd.Env = append(os.Environ(), "HOME="+dir, "TERM=xterm", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "LINES=24", "COLUMNS=80", "MAIL="+mb)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mutt: %v\n%q", err, out)
	}

	// read returns the messages mutt copied into a Maildir, by subject,
	// with the headers mutt adds when copying from an mbox taken out.
	read := func(md string) map[string]string {
		t.Helper()
		got := map[string]string{}
		for _, sub := range []string{"new", "cur"} {
			files, _ := filepath.Glob(filepath.Join(md, sub, "*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				must(t, err)
				head, body, ok := strings.Cut(string(b), "\n\n")
				if !ok {
					t.Fatalf("%s: no header/body separator:\n%s", f, b)
				}
				var subject string
				for _, l := range strings.Split(head, "\n") {
					if s, ok := strings.CutPrefix(l, "Subject: "); ok {
						subject = s
					}
				}
				if _, dup := got[subject]; dup {
					t.Fatalf("two messages with subject %q in %s", subject, md)
				}
				got[subject] = body
			}
		}
		return got
	}
	got := read(all)
	if len(got) != len(msgs) {
		t.Fatalf("mutt saw %d messages, want %d: %q\nmbox:\n%s\nmutt:\n%q", len(got), len(msgs), got, before, out)
	}
	for _, m := range msgs {
		if got[m.subject] != m.seen {
			t.Errorf("message %q as mutt read it:\n%q\nwant\n%q", m.subject, got[m.subject], m.seen)
		}
	}
	if u := read(utf); len(u) != 1 || u["Grüße aus Köln"] != "naïve body\n" {
		t.Errorf("mutt's ~s Köln matched %q, want only the UTF-8 subject", u)
	}
	after, err := os.ReadFile(mb)
	must(t, err)
	if string(after) != string(before) {
		t.Error("mutt -R changed the mbox")
	}
}
