//go:build interop

package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// migrateSource are the messages the interop tests move around: subject,
// body, Maildir flags, whether new.
var migrateSource = []struct {
	subject, body, flags string
	isNew                bool
}{
	{"seen one", "From the start of a line\nplain\n", "S", false},
	{"answered flagged", "second body\n\n\nwith blank lines\n", "FRS", false},
	{"brand new", "third\n", "", true},
}

// runMutt runs mutt under script(1) with a muttrc whose pushed keys do
// the whole job (nothing waits for time), HOME and every startup path
// inside dir.
func runMutt(t *testing.T, dir, folder, push string, extra ...string) string {
	t.Helper()
	muttrc := filepath.Join(dir, "muttrc")
	rc := `set folder="` + dir + `"
set spoolfile="` + folder + `"
set mbox="` + dir + `/mbox"
set postponed="` + dir + `/postponed"
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
set mark_old=no
` + strings.Join(extra, "\n") + `
push "` + push + `"
`
	must(t, os.WriteFile(muttrc, []byte(rc), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-qec", "mutt -n -R -F "+muttrc+" -f "+folder, "/dev/null")
	cmd.Env = append(os.Environ(), "HOME="+dir, "TERM=xterm", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "LINES=24", "COLUMNS=80", "MAIL="+folder)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mutt: %v\n%q", err, out)
	}
	return string(out)
}

// maildirBySubject reads a Maildir's messages: subject → [body, flags,
// new/cur]. In ours (an import's), no mbox bookkeeping header is left.
func maildirBySubject(t *testing.T, md string, ours bool) map[string][3]string {
	t.Helper()
	got := map[string][3]string{}
	for _, m := range maildirMessages(t, md) {
		head, body, _ := strings.Cut(m[3], "\n\n")
		subject := ""
		for _, l := range strings.Split(head, "\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				subject = s
			}
			for _, hidden := range []string{"Status:", "X-Status:", "X-UID:", "X-IMAPbase:", "X-Keywords:", "Content-Length:"} {
				if ours && strings.HasPrefix(l, hidden) {
					t.Errorf("%s: %s kept in the Maildir", subject, l)
				}
			}
		}
		got[subject] = [3]string{body, m[1], m[0]}
	}
	return got
}

// checkSource checks messages read back against migrateSource; quoted
// says a reader that keeps mboxrd's quoting (mutt shows ">From ").
func checkSource(t *testing.T, who string, got map[string][3]string, quoted bool) {
	t.Helper()
	if len(got) != len(migrateSource) {
		t.Fatalf("%s: %d messages, want %d: %q", who, len(got), len(migrateSource), got)
	}
	for _, m := range migrateSource {
		sub := "cur"
		if m.isNew {
			sub = "new"
		}
		body := m.body
		if quoted {
			body = strings.ReplaceAll(body, "From the start", ">From the start")
		}
		if want := [3]string{body, m.flags, sub}; got[m.subject] != want {
			t.Errorf("%s: %q: %q, want %q", who, m.subject, got[m.subject], want)
		}
	}
}

// TestInteropMailuserMutt: mutt saves a Maildir's messages to an mbox
// (Status and X-Status, Content-Length, From_ lines in bodies unquoted);
// mailuser imports it (by default) with bodies, flags and From_ dates;
// mailuser exports the Maildir and mutt reads the export: every message,
// body and flag.
func TestInteropMailuserMutt(t *testing.T) {
	needPeer(t, "mutt", "script")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, sub := range []string{"tmp", "new", "cur"} {
		must(t, os.MkdirAll(filepath.Join(src, sub), 0o700))
	}
	when := time.Date(2023, 6, 7, 8, 9, 10, 0, time.Local)
	for i, m := range migrateSource {
		name := filepath.Join(src, "cur", "100"+string(rune('0'+i))+".src:2,"+m.flags)
		if m.isNew {
			name = filepath.Join(src, "new", "100"+string(rune('0'+i))+".src")
		}
		must(t, os.WriteFile(name, []byte("From: alice@example.org\nSubject: "+m.subject+"\nDate: Wed, 7 Jun 2023 08:09:10 +0000\n\n"+m.body), 0o600))
		must(t, os.Chtimes(name, when, when.Add(time.Duration(i)*time.Minute)))
	}
	saved := filepath.Join(dir, "saved.mbox")
	runMutt(t, dir, src, "<tag-pattern>~A<enter><tag-prefix><copy-message>"+saved+"<enter><quit>", "set mbox_type=mbox")
	raw, err := os.ReadFile(saved)
	must(t, err)
	// mutt writes Content-Length and leaves the From_ line unquoted.
	if !strings.Contains(string(raw), "Status: RO") || !strings.Contains(string(raw), "Content-Length: ") || !strings.Contains(string(raw), "\n\nFrom the start") {
		t.Fatalf("mutt's mbox is not as expected:\n%s", raw)
	}

	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	// Read as mboxo (go-mbox: no lengths), the unquoted line would split
	// the first message: the import stops instead.
	_, errs := e.muExpect(65, "", "import", "bob@example.test", saved, "--format", "mboxo", "--folder", "Split")
	if !strings.Contains(errs, "Content-Length") {
		t.Errorf("mboxo import of mutt's file: %q", errs)
	}
	out, _ := e.muExpect(0, "", "import", "bob@example.test", saved)
	if !strings.Contains(out, "imported 3 messages") {
		t.Fatalf("import: %q", out)
	}
	md := filepath.Join(e.MailRoot, "example.test", "bob")
	checkSource(t, "imported from mutt", maildirBySubject(t, md, true), false)
	// Each message's mtime is the date of its From_ line in mutt's file.
	var fromDates []string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "From ") && strings.Count(l, ":") >= 2 {
			f := strings.Fields(l)
			d, err := time.ParseInLocation("Mon Jan 2 15:04:05 2006", strings.Join(f[2:7], " "), time.Local)
			must(t, err)
			fromDates = append(fromDates, d.Format("Mon Jan 2 15:04:05 2006"))
		}
	}
	for i, m := range maildirMessages(t, md) {
		if i >= len(fromDates) || m[2] != fromDates[i] {
			t.Errorf("message %d: mtime %s, From_ dates %q", i+1, m[2], fromDates)
		}
	}

	// The export, read by mutt: three messages, bodies as they were but
	// for the '>' of mboxrd's quoting, which mutt shows (it does not read
	// mboxrd), flags from Status and X-Status, the new message new. mutt
	// saves them to a Maildir to be looked at.
	exported, _ := e.muExpect(0, "", "export", "bob@example.test")
	exp := filepath.Join(dir, "exported.mbox")
	must(t, os.WriteFile(exp, []byte(exported), 0o600))
	back := filepath.Join(dir, "back")
	runMutt(t, dir, exp, "<tag-pattern>~A<enter><tag-prefix><copy-message>"+back+"<enter><quit>", "set mbox_type=Maildir")
	checkSource(t, "mutt reading the export", maildirBySubject(t, back, false), true)
}

// TestInteropMailuserDovecot: Dovecot writes an mbox (dovecot-lda
// delivering into mbox:, doveadm setting flags); mailuser imports it as
// mboxrd (honouring its Content-Length) with bodies and flags, without
// Dovecot's bookkeeping headers.
func TestInteropMailuserDovecot(t *testing.T) {
	needPeer(t, "doveadm")
	if _, err := os.Stat("/usr/lib/dovecot/dovecot-lda"); err != nil {
		t.Fatal("dovecot-lda not installed (make interop installs dovecot-core)")
	}
	dir, as := deliverPeerDir(t)
	mail := filepath.Join(dir, "mail")
	inbox := filepath.Join(mail, "inbox")
	conf := filepath.Join(dir, "dovecot.conf")
	must(t, os.WriteFile(conf, []byte("base_dir = "+dir+"/run\nlog_path = /dev/stderr\nssl = no\nmail_location = mbox:"+mail+":INBOX="+inbox+"\n"), 0o644))
	must(t, os.MkdirAll(mail, 0o700))
	giveAway(t, dir)
	// Dovecot counts lengths (Content-Length) instead of quoting From_
	// lines: the first message's "From " line stays as it is.
	msgs := migrateSource
	lda := func(subject, body string) {
		c := exec.Command(as[0], append(as[1:], "/usr/lib/dovecot/dovecot-lda", "-c", conf, "-f", "alice@example.org")...)
		c.Stdin = strings.NewReader("From: alice@example.org\nSubject: " + subject + "\n\n" + body)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("dovecot-lda: %v %s", err, out)
		}
	}
	for _, m := range msgs {
		lda(m.subject, m.body)
	}
	adm := func(args ...string) string {
		return runPeer(t, as, append([]string{"doveadm", "-c", conf}, args...)...)
	}
	adm("flags", "add", `\Seen`, "mailbox", "INBOX", "1")
	adm("flags", "add", `\Seen \Answered \Flagged`, "mailbox", "INBOX", "2")
	// Message 3 stays new; 1 and 2 are old since Dovecot saw them.
	adm("fetch", "uid", "mailbox", "INBOX", "all") // a sync writes the flags out
	raw, err := os.ReadFile(inbox)
	must(t, err)
	if !strings.Contains(string(raw), "X-UID:") || !strings.Contains(string(raw), "Status: R") || !strings.Contains(string(raw), "X-Status: AF") {
		t.Fatalf("Dovecot's mbox lacks its headers:\n%s", raw)
	}
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	out, _ := e.muExpect(0, "", "import", "bob@example.test", inbox, "--format", "mboxrd", "--folder", "Dovecot")
	if !strings.Contains(out, "imported 3 messages") {
		t.Fatalf("import: %q\n%s", out, raw)
	}
	got := maildirBySubject(t, filepath.Join(e.MailRoot, "example.test", "bob", ".Dovecot"), true)
	for _, m := range msgs {
		g := got[m.subject]
		if g[0] != m.body || g[1] != m.flags {
			t.Errorf("%q from Dovecot's mbox: %q, want body %q flags %q\nmbox:\n%s", m.subject, g, m.body, m.flags, raw)
		}
	}

	// Read as mboxo (go-mbox, no lengths), the first message would be
	// split at its From_ line: the import stops at once.
	_, errs := e.muExpect(65, "", "import", "bob@example.test", inbox, "--format", "mboxo", "--folder", "Again")
	if !strings.Contains(errs, "stopped after 0 messages") || !strings.Contains(errs, "Content-Length") {
		t.Errorf("mboxo import of Dovecot's file: %q", errs)
	}
}
