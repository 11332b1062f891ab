//go:build interop

package tests

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// imapd against the clients people sync with: mbsync (isync), offlineimap
// and mutt, each doing its whole job against the real binary.

// localMaildir lists a client-side Maildir folder: base name (before
// ":2,") → flags, for every message in new/ and cur/.
func localMaildir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			name, flags, _ := strings.Cut(e.Name(), ":2,")
			out[name] = flags
		}
	}
	return out
}

// subjects returns the Subject of every message in a Maildir folder,
// sorted, with its flags: "subject/FLAGS".
func subjects(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			must(t, err)
			subj := ""
			for _, l := range strings.Split(string(b), "\n") {
				if s, ok := strings.CutPrefix(strings.TrimRight(l, "\r"), "Subject: "); ok {
					subj = s
					break
				}
			}
			_, flags, _ := strings.Cut(e.Name(), ":2,")
			out = append(out, subj+"/"+flags)
		}
	}
	sort.Strings(out)
	return out
}

// serverState logs in and lists a folder's messages as "subject/flags"
// (system flags as Maildir letters, sorted), sorted.
func serverState(t *testing.T, addr, folder string) []string {
	t.Helper()
	c := imapLogin(t, addr)
	c.ok("EXAMINE " + folder)
	var out []string
	letters := map[string]string{`\Seen`: "S", `\Answered`: "R", `\Flagged`: "F", `\Deleted`: "T", `\Draft`: "D"}
	for _, l := range c.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])") {
		i := strings.Index(l, "FLAGS (")
		j := strings.Index(l[i:], ")")
		var fl []string
		for _, f := range strings.Fields(l[i+7 : i+j]) {
			if m, ok := letters[f]; ok {
				fl = append(fl, m)
			}
		}
		sort.Strings(fl)
		subj := ""
		if k := strings.Index(l, "Subject: "); k >= 0 {
			subj = strings.TrimSpace(strings.SplitN(l[k+9:], "\r\n", 2)[0])
		}
		out = append(out, subj+"/"+strings.Join(fl, ""))
	}
	c.ok("LOGOUT")
	sort.Strings(out)
	return out
}

func equalLists(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// TestInteropIMAPMbsync: mbsync keeps a local Maildir and imapd in step
// both ways: new mail, flags, deletions and a new folder on either side.
func TestInteropIMAPMbsync(t *testing.T) {
	needPeer(t, "mbsync")
	ie := newIMAPEnv(t)
	for _, s := range []string{"one", "two", "three", "four"} {
		ie.deliver(s, "body of "+s+"\n")
	}
	s := ie.start("imapd", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	local := filepath.Join(ie.Dir, "local")
	must(t, os.MkdirAll(local, 0o700))
	rc := filepath.Join(ie.Dir, "mbsyncrc")
	must(t, os.WriteFile(rc, []byte(fmt.Sprintf(`IMAPAccount lb
Host %s
Port %s
User alice@example.test
Pass "alice pw"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account lb

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel lb
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
`, host, port, local, local)), 0o600))
	sync := func() { runPeer(t, nil, "mbsync", "-c", rc, "-a") }
	sync()
	inbox := filepath.Join(local, "INBOX")
	equalLists(t, "local INBOX after the first sync", subjects(t, inbox), []string{"four/", "one/", "three/", "two/"})
	for _, f := range []string{"Sent", "Drafts", "Trash", "Junk", "Archive"} {
		if _, err := os.Stat(filepath.Join(local, f, "cur")); err != nil {
			t.Errorf("folder %s not synced: %v", f, err)
		}
	}
	// Local side: "one" seen, "two" deleted (trashed and expunged by
	// mbsync), a new folder with a message.
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(inbox, sub))
		for _, e := range ents {
			p := filepath.Join(inbox, sub, e.Name())
			b, _ := os.ReadFile(p)
			base, _, _ := strings.Cut(e.Name(), ":2,")
			switch {
			case strings.Contains(string(b), "Subject: one"):
				must(t, os.Rename(p, filepath.Join(inbox, "cur", base+":2,S")))
			case strings.Contains(string(b), "Subject: two"):
				must(t, os.Remove(p))
			}
		}
	}
	proj := filepath.Join(local, "Projects")
	for _, sub := range []string{"new", "cur", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(proj, sub), 0o700))
	}
	must(t, os.WriteFile(filepath.Join(proj, "new", "1700000000.1.local"), []byte("Subject: plan\n\nlocal\n"), 0o600))
	// Server side: "three" flagged, "four" deleted, a new delivery.
	c := imapLogin(t, s.Addr)
	c.ok("SELECT INBOX")
	c.ok(`UID STORE 3 +FLAGS (\Flagged)`)
	c.ok(`UID STORE 4 +FLAGS (\Deleted)`)
	c.ok("EXPUNGE")
	c.ok("LOGOUT")
	ie.deliver("five", "new on the server\n")
	sync()
	want := []string{"five/", "one/S", "three/F"}
	equalLists(t, "server INBOX after the second sync", serverState(t, s.Addr, "INBOX"), want)
	equalLists(t, "local INBOX after the second sync", subjects(t, inbox), want)
	equalLists(t, "server Projects", serverState(t, s.Addr, "Projects"), []string{"plan/"})
	// A third sync changes nothing.
	sync()
	equalLists(t, "server INBOX after a sync with nothing to do", serverState(t, s.Addr, "INBOX"), want)
	equalLists(t, "local INBOX after a sync with nothing to do", subjects(t, inbox), want)
}

// TestInteropIMAPOfflineimap: offlineimap (the Python one) syncs down, then
// a local flag change and deletion go up.
func TestInteropIMAPOfflineimap(t *testing.T) {
	needPeer(t, "offlineimap")
	ie := newIMAPEnv(t)
	for _, s := range []string{"one", "two", "three"} {
		ie.deliver(s, "body of "+s+"\n")
	}
	s := ie.start("imapd", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	local := filepath.Join(ie.Dir, "oimap")
	must(t, os.MkdirAll(local, 0o700))
	rc := filepath.Join(ie.Dir, "offlineimaprc")
	must(t, os.WriteFile(rc, []byte(fmt.Sprintf(`[general]
accounts = lb
metadata = %s/meta
ui = basic

[Account lb]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = %s

[Repository remote]
type = IMAP
remotehost = %s
remoteport = %s
remoteuser = alice@example.test
remotepass = alice pw
ssl = no
starttls = no
`, ie.Dir, local, host, port)), 0o600))
	sync := func() { runPeer(t, []string{"env", "HOME=" + ie.Dir}, "offlineimap", "-c", rc, "-o", "-u", "basic") }
	sync()
	inbox := filepath.Join(local, "INBOX")
	got := subjects(t, inbox)
	if len(got) != 3 || !strings.HasPrefix(got[0], "one/") || !strings.HasPrefix(got[2], "two/") {
		t.Fatalf("local INBOX after the first sync: %q", got)
	}
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(inbox, sub))
		for _, e := range ents {
			p := filepath.Join(inbox, sub, e.Name())
			b, _ := os.ReadFile(p)
			base, _, _ := strings.Cut(e.Name(), ":2,")
			switch {
			case strings.Contains(string(b), "Subject: one"):
				must(t, os.Rename(p, filepath.Join(inbox, "cur", base+":2,FS")))
			case strings.Contains(string(b), "Subject: two"):
				must(t, os.Remove(p))
			}
		}
	}
	sync()
	equalLists(t, "server INBOX after offlineimap's second sync", serverState(t, s.Addr, "INBOX"), []string{"one/FS", "three/"})
}

// TestInteropIMAPMutt: mutt over imap:// reads the folders, copies every
// message to a local Maildir and flags one, which imapd keeps.
func TestInteropIMAPMutt(t *testing.T) {
	needPeer(t, "mutt", "script")
	ie := newIMAPEnv(t)
	ie.deliver("first", "first body\n")
	ie.deliver("Grüße aus Köln", "naïve body\n")
	s := ie.start("imapd", "")
	dir := t.TempDir()
	copyTo := filepath.Join(dir, "copied")
	muttrc := filepath.Join(dir, "muttrc")
	url := "imap://alice%40example.test@" + s.Addr + "/"
	must(t, os.WriteFile(muttrc, []byte(`set folder="`+url+`"
set spoolfile="`+url+`INBOX"
set imap_pass="alice pw"
set ssl_starttls=no
set ssl_force_tls=no
set mbox="`+dir+`/mbox"
set postponed="`+dir+`/postponed"
set record=""
set mbox_type=Maildir
set charset="utf-8"
set confirmcreate=no
set confirmappend=no
set move=no
set quit=yes
set wait_key=no
set sleep_time=0
set header_cache=""
set message_cachedir=""
set imap_check_subscribed=yes
set sort=mailbox-order
push "<tag-pattern>~A<enter><tag-prefix><copy-message>`+copyTo+`<enter><untag-pattern>~A<enter><search>Köln<enter><flag-message><sync-mailbox><quit>"
`), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-qec", "mutt -n -F "+muttrc, "/dev/null")
	cmd.Env = append(os.Environ(), "HOME="+dir, "TERM=xterm", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "LINES=24", "COLUMNS=80")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mutt: %v\n%q", err, out)
	}
	got := subjects(t, copyTo)
	if len(got) != 2 || !strings.HasPrefix(got[0], "Grüße aus Köln/") || !strings.HasPrefix(got[1], "first/") {
		t.Fatalf("mutt copied: %q\n%q", got, out)
	}
	st := serverState(t, s.Addr, "INBOX")
	if len(st) != 2 || !strings.Contains(st[0], "F") {
		t.Fatalf("server after mutt flagged a message: %q", st)
	}
}
