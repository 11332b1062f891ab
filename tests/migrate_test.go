package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/privsep/privseptest"
)

// An mboxrd file as export writes it: From_ lines with the sender and the
// date, Status and X-Status last in the header, From_ quoting of mboxrd.
// Two messages share a second (they must keep their order); the third is
// new (no Status), the second is read, answered and flagged, the fourth is
// old but unread, a draft and deleted.
const migrateMbox = "From alice@example.org Mon Mar  4 10:00:00 2024\n" +
	"From: Alice <alice@example.org>\nSubject: one\nStatus: RO\n\n" +
	">From the start of a line\n>>From quoted in the original\nend\n\n" +
	"From bob@example.org Mon Mar  4 10:00:00 2024\n" +
	"Return-Path: <bob@example.org>\nFrom: Bob <b@example.org>\nSubject: two\nStatus: RO\nX-Status: AF\n\nsame second\n\n" +
	"From MAILER-DAEMON Tue Mar  5 11:30:15 2024\n" +
	"Subject: three, new\n\nnew\n>>>From deep\n\n" +
	"From carol@example.org Sat Dec 28 23:59:59 2024\n" +
	"From: carol@example.org\nSubject: four\nStatus: O\nX-Status: TD\n\n\nblank lines around\n\n\n"

// migrateFiles are the Maildir files of migrateMbox: where each goes,
// with which flags and which content.
var migrateFiles = []struct {
	sub, flags, date, content string
}{
	{"cur", "S", "Mon Mar 4 10:00:00 2024", "From: Alice <alice@example.org>\nSubject: one\n\nFrom the start of a line\n>From quoted in the original\nend\n"},
	{"cur", "FRS", "Mon Mar 4 10:00:00 2024", "Return-Path: <bob@example.org>\nFrom: Bob <b@example.org>\nSubject: two\n\nsame second\n"},
	{"new", "", "Tue Mar 5 11:30:15 2024", "Subject: three, new\n\nnew\n>>From deep\n"},
	{"cur", "DT", "Sat Dec 28 23:59:59 2024", "From: carol@example.org\nSubject: four\n\n\nblank lines around\n\n"},
}

// maildirMessages returns the messages of a Maildir folder in delivery
// order (the time in the name, then the name): sub, flags, mtime, content.
func maildirMessages(t *testing.T, dir string) [][4]string {
	t.Helper()
	type msg struct {
		name string
		m    [4]string
	}
	var all []msg
	for _, sub := range []string{"new", "cur"} {
		for _, p := range maildirFilesSoFar(t, dir, sub) {
			b, err := os.ReadFile(p)
			fi, err2 := os.Stat(p)
			if err != nil || err2 != nil {
				t.Fatal(err, err2)
			}
			base := filepath.Base(p)
			_, flags, _ := strings.Cut(base, ":2,")
			all = append(all, msg{base, [4]string{sub, flags, fi.ModTime().Format("Mon Jan 2 15:04:05 2006"), string(b)}})
		}
	}
	stamp := func(n string) string {
		sec, rest, _ := strings.Cut(n, ".")
		usec := ""
		if r, ok := strings.CutPrefix(rest, "M"); ok {
			usec, _, _ = strings.Cut(r, "P")
		}
		return fmt.Sprintf("%012s%07s%s", sec, usec, n)
	}
	sort.Slice(all, func(i, j int) bool { return stamp(all[i].name) < stamp(all[j].name) })
	out := make([][4]string, len(all))
	for i, m := range all {
		out[i] = m.m
	}
	return out
}

func checkMigrated(t *testing.T, dir string) {
	t.Helper()
	got := maildirMessages(t, dir)
	if len(got) != len(migrateFiles) {
		t.Fatalf("%d messages in %s, want %d: %q", len(got), dir, len(migrateFiles), got)
	}
	for i, w := range migrateFiles {
		if got[i] != [4]string{w.sub, w.flags, w.date, w.content} {
			t.Errorf("message %d:\n got %q\nwant %q", i+1, got[i], [4]string{w.sub, w.flags, w.date, w.content})
		}
	}
}

// TestMailuserImportExportRoundTrip: an mboxrd file goes into the Maildir
// with its flags (Status/X-Status → name letters, new/ or cur/), dates
// (From_ line → mtime and name) and bodies (unquoted, the flags headers
// taken off), durably; and comes back byte for byte from export.
func TestMailuserImportExportRoundTrip(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	in := filepath.Join(e.Dir, "in.mbox")
	must(t, os.WriteFile(in, []byte(migrateMbox), 0o600))
	out, _ := e.muExpect(0, "", "import", "bob@example.test", in, "--format", "mboxrd")
	if !strings.Contains(out, "imported 4 messages") {
		t.Errorf("import said %q", out)
	}
	md := filepath.Join(e.MailRoot, "example.test", "bob")
	checkMigrated(t, md)
	if ents := mustReadDir(t, filepath.Join(md, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ keeps %d files", len(ents))
	}
	exported, errs := e.muExpect(0, "", "export", "bob@example.test")
	if exported != migrateMbox {
		t.Errorf("export differs from what was imported:\n%s\nwant\n%s", exported, migrateMbox)
	}
	if !strings.Contains(errs, "exported 4 messages") {
		t.Errorf("export said %q", errs)
	}
}

// TestMailuserImportQuoting: the same file read as mboxrd (the default)
// and as mboxo: mboxo takes one '>' from ">From " only and starts a message
// at every "From " line; mboxrd takes one from every ^>+From  line.
func TestMailuserImportQuoting(t *testing.T) {
	const mbox = "From a@example.org Mon Mar  4 10:00:00 2024\nFrom: a@example.org\nSubject: q\n\n>From one\n>>From two\n>From\n\n"
	for _, c := range []struct {
		format       string
		want, export string
	}{
		{"", "From: a@example.org\nSubject: q\n\nFrom one\n>From two\n>From\n", mbox},
		{"mboxo", "From: a@example.org\nSubject: q\n\nFrom one\n>>From two\n>From\n",
			"From a@example.org Mon Mar  4 10:00:00 2024\nFrom: a@example.org\nSubject: q\n\n>From one\n>>>From two\n>From\n\n"},
		{"mboxrd", "From: a@example.org\nSubject: q\n\nFrom one\n>From two\n>From\n", mbox},
	} {
		e := newEnv(t)
		e.addUser("bob@example.test", "pw")
		in := filepath.Join(e.Dir, "in.mbox")
		must(t, os.WriteFile(in, []byte(mbox), 0o600))
		args := []string{"import", "bob@example.test", in}
		if c.format != "" {
			args = append(args, "--format", c.format)
		}
		e.muExpect(0, "", args...)
		got := maildirMessages(t, filepath.Join(e.MailRoot, "example.test", "bob"))
		if len(got) != 1 || got[0][3] != c.want {
			t.Errorf("format %q: %q, want %q", c.format, got, c.want)
		}
		// Export writes mboxrd, whatever was read.
		if exported, _ := e.muExpect(0, "", "export", "bob@example.test"); exported != c.export {
			t.Errorf("format %q: export\n%q\nwant\n%q", c.format, exported, c.export)
		}
	}
	// mboxo: a From line without a blank line before it starts a message.
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	in := filepath.Join(e.Dir, "in.mbox")
	must(t, os.WriteFile(in, []byte("From a Mon Mar  4 10:00:00 2024\nSubject: a\n\nx\nFrom b Mon Mar  4 10:00:01 2024\nSubject: b\n\ny\n"), 0o600))
	out, _ := e.muExpect(0, "", "import", "bob@example.test", in, "--format", "mboxo")
	if !strings.Contains(out, "imported 2 messages") {
		t.Errorf("mboxo split: %q", out)
	}
}

// TestMailuserImportContentLength: mutt and Dovecot leave From_ lines in
// bodies unquoted and count lengths; the default reader takes a
// Content-Length the file bears out, and drops it with the rest of
// Dovecot's bookkeeping fields. Read as mboxo, such a file stops the
// import (65) rather than split a message.
func TestMailuserImportContentLength(t *testing.T) {
	body := "From the body, unquoted\n>From kept as is\n"
	mbox := "From MAILER-DAEMON Mon Mar  4 10:00:00 2024\nSubject: dovecot\nX-IMAPbase: 1 2\nX-UID: 1\nStatus: RO\n" +
		"X-Keywords: $Work     \nContent-Length: " + strconv.Itoa(len(body)) + "\nX-Status: F\nX-Delivery-ID: x\nX-IMAP: 1 2\n\n" + body + "\n"
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	in := filepath.Join(e.Dir, "in.mbox")
	must(t, os.WriteFile(in, []byte(mbox), 0o600))
	_, errs := e.muExpect(65, "", "import", "bob@example.test", in, "--format", "mboxo")
	if !strings.Contains(errs, "Content-Length") || !strings.Contains(errs, "stopped after 0 messages") {
		t.Errorf("mboxo: %q", errs)
	}
	md := filepath.Join(e.MailRoot, "example.test", "bob")
	if got := maildirMessages(t, md); len(got) != 0 {
		t.Fatalf("mboxo import left %q", got)
	}
	e.muExpect(0, "", "import", "bob@example.test", in)
	got := maildirMessages(t, md)
	if len(got) != 1 || got[0] != [4]string{"cur", "FS", "Mon Mar 4 10:00:00 2024", "Subject: dovecot\n\n" + body} {
		t.Errorf("imported %q", got)
	}
}

// TestMailuserImportFolderIMAP: an import into a folder that does not
// exist creates it as imapd does, and imaplib sees the messages there
// with their flags and internal dates.
func TestMailuserImportFolderIMAP(t *testing.T) {
	ie := newIMAPEnv(t)
	in := filepath.Join(ie.Dir, "in.mbox")
	must(t, os.WriteFile(in, []byte(migrateMbox), 0o600))
	out, _ := ie.muExpect(0, "", "import", "--folder", "Archive.2024", "--format=mboxrd", "alice@example.test", in)
	if !strings.Contains(out, "imported 4 messages") || !strings.Contains(out, "Archive.2024") {
		t.Errorf("import said %q", out)
	}
	dir := filepath.Join(ie.Maildir, ".Archive.2024")
	checkMigrated(t, dir)
	for _, f := range []string{filepath.Join(ie.Maildir, ".Archive", "maildirfolder"), filepath.Join(dir, "maildirfolder"), filepath.Join(dir, "dovecot-uidlist")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("folder not made as imapd makes it: %v", err)
		}
	}
	s := ie.start("imapd", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	got := python(t, `
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login("alice@example.test", "alice pw")
print(m.list()[1])
typ, data = m.select("Archive.2024", readonly=True)
print(typ, data)
typ, data = m.fetch("1:4", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
for d in data:
    if isinstance(d, tuple):
        print(d[0].decode().replace(" \\Recent", "").replace("\\Recent ", "").replace("\\Recent", ""), d[1].decode().strip())
m.logout()
`, host, port)
	for _, want := range []string{
		`Archive.2024`, "OK [b'4']",
		`1 (FLAGS (\Seen) INTERNALDATE "04-Mar-2024 10:00:00 ` + zone(2024, 3, 4) + `"`, "Subject: one",
		`2 (FLAGS (\Answered \Flagged \Seen) INTERNALDATE "04-Mar-2024 10:00:00 ` + zone(2024, 3, 4) + `"`, "Subject: two",
		`3 (FLAGS () INTERNALDATE "05-Mar-2024 11:30:15 ` + zone(2024, 3, 5) + `"`, "Subject: three, new",
		`4 (FLAGS (\Deleted \Draft) INTERNALDATE "28-Dec-2024 23:59:59 ` + zone(2024, 12, 28) + `"`, "Subject: four",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("imaplib: no %s in\n%s", want, got)
		}
	}
	// A second import into the existing folder adds, as doveadm import does.
	ie.muExpect(0, "", "import", "alice@example.test", in, "--folder", "Archive.2024", "--format", "mboxrd")
	if n := len(maildirMessages(t, dir)); n != 8 {
		t.Errorf("second import: %d messages, want 8", n)
	}
}

// zone is the local UTC offset on a day, as IMAP writes it (+0000).
func zone(y int, m time.Month, d int) string {
	return time.Date(y, m, d, 12, 0, 0, 0, time.Local).Format("-0700")
}

// TestMailuserImportBadInput: what is not an mbox, a truncated file, an
// unknown user, a folder name that would leave the Maildir: a clear error
// and exit code, and nothing half-imported reported as success.
func TestMailuserImportBadInput(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	md := filepath.Join(e.MailRoot, "example.test", "bob")
	write := func(name, content string) string {
		p := filepath.Join(e.Dir, name)
		must(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	good := write("good.mbox", migrateMbox)
	notMbox := write("not.mbox", "Subject: hello\n\nthis is a message, not an mbox\n")
	// Two whole messages, then one cut in the middle of a line.
	truncated := write("cut.mbox", migrateMbox[:strings.Index(migrateMbox, "From MAILER-DAEMON")]+"From MAILER-DAEMON Tue Mar  5 11:30:15 2024\nSubject: three\n\nnew\nand cut he")
	for _, c := range []struct {
		code int
		args []string
		want string
	}{
		{65, []string{"import", "bob@example.test", notMbox}, "not an mbox"},
		{65, []string{"import", "bob@example.test", notMbox, "--format", "mboxo"}, "not an mbox"},
		{67, []string{"import", "nobody@example.test", good}, "nobody@example.test"},
		{66, []string{"import", "bob@example.test", filepath.Join(e.Dir, "missing.mbox")}, "missing.mbox"},
		{66, []string{"import", "bob@example.test", e.Dir}, "directory"},
		{64, []string{"import", "bob@example.test", good, "--folder", "a/b"}, "slash"},
		{64, []string{"import", "bob@example.test", good, "--folder", "a..b"}, "empty component"},
		{64, []string{"import", "bob@example.test", good, "--folder", "../../x"}, "--folder"},
		{64, []string{"import", "bob@example.test", good, "--folder", ".."}, "--folder"},
		{64, []string{"import", "bob@example.test", good, "--format", "mmdf"}, "mboxo or mboxrd"},
		{64, []string{"import", "bob@example.test"}, "usage"},
		{64, []string{"export", "bob@example.test", "extra"}, "usage"},
		{67, []string{"export", "nobody@example.test"}, "nobody@example.test"},
		{66, []string{"export", "bob@example.test", "--folder", "Nope"}, "no such folder"},
		{64, []string{"export", "bob@example.test", "--folder", "x/../../y"}, "slash"},
	} {
		_, errs := e.muExpect(c.code, "", c.args...)
		if !strings.Contains(errs, c.want) {
			t.Errorf("%v: stderr %q lacks %q", c.args, errs, c.want)
		}
	}
	if got := maildirMessages(t, md); len(got) != 0 {
		t.Fatalf("refused imports left %d messages", len(got))
	}
	if ents, _ := os.ReadDir(e.MailRoot); len(ents) != 1 {
		t.Errorf("something was created beside the user's domain: %v", ents)
	}
	_, errs := e.muExpect(65, "", "import", "bob@example.test", truncated, "--format", "mboxrd")
	if !strings.Contains(errs, "stopped after 2 messages") || !strings.Contains(errs, "truncated") {
		t.Errorf("truncated import: %q", errs)
	}
	if got := maildirMessages(t, md); len(got) != 2 || got[1][3] != migrateFiles[1].content {
		t.Errorf("after a truncated import: %q", got)
	}
	if ents := mustReadDir(t, filepath.Join(md, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ keeps the cut message: %d files", len(ents))
	}
	_, errs = e.muExpect(65, "", "import", "bob@example.test", truncated, "--format", "mboxo")
	if !strings.Contains(errs, "stopped after 2 messages") {
		t.Errorf("truncated import (mboxo): %q", errs)
	}
	// A user whose mailbox is an mbox has no Maildir to import into.
	f, err := os.OpenFile(e.Users, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	f.WriteString("carol@example.test:{PLAIN}x::::::mail=mbox:" + filepath.Join(e.Dir, "carol.mbox") + "\n")
	f.Close()
	_, errs = e.muExpect(65, "", "import", "carol@example.test", good)
	if !strings.Contains(errs, "not a Maildir") {
		t.Errorf("mbox user: %q", errs)
	}
}

// TestMailuserImportOwner: run as root, import creates every file and
// folder as the mailbox's owner, reads an mbox only root can read, and
// export reads as the owner; run as another user, both refuse (77).
func TestMailuserImportOwner(t *testing.T) {
	owner := privseptest.NewUser(t)
	other := privseptest.NewUser(t)
	e := newEnv(t)
	// The users file names the owner by its uid and gid columns; the
	// mailbox is in its home.
	line := "bob@example.test:{PLAIN}pw:" + strconv.Itoa(int(owner.UID)) + ":" + strconv.Itoa(int(owner.GID)) + "::" + owner.Home + "::\n"
	must(t, os.WriteFile(e.Users, []byte(line), 0o644))
	in := filepath.Join(e.Dir, "root-only.mbox")
	must(t, os.WriteFile(in, []byte(migrateMbox), 0o600))
	e.muExpect(0, "", "import", "bob@example.test", in, "--format", "mboxrd", "--folder", "Old.Mail")
	md := owner.Path("Maildir")
	checkMigrated(t, filepath.Join(md, ".Old.Mail"))
	filepath.Walk(md, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != owner.UID || st.Gid != owner.GID {
			t.Errorf("%s belongs to %d:%d, not the mailbox's owner %d:%d", p, st.Uid, st.Gid, owner.UID, owner.GID)
		}
		return nil
	})
	exported, _ := e.muExpect(0, "", "export", "bob@example.test", "--folder", "Old.Mail")
	if exported != migrateMbox {
		t.Errorf("export as the owner:\n%s", exported)
	}

	// Another user may neither import into nor export bob's mailbox (the
	// config, users file and commands opened to it).
	openTo(t, e)
	pub := filepath.Join(e.Dir, "in.mbox")
	must(t, os.WriteFile(pub, []byte(migrateMbox), 0o644))
	for _, args := range [][]string{{"import", "bob@example.test", pub}, {"export", "bob@example.test"}} {
		out, code := e.as(other, "", "mailuser", args...)
		if code != 77 || !strings.Contains(out, "run as root or as that user") {
			t.Errorf("%v as another user: exit %d\n%s", args, code, out)
		}
	}
	if n := len(maildirMessages(t, md)); n != 0 {
		t.Errorf("INBOX got %d messages from another user", n)
	}
}
