package tests

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// imapEnv is an installation with alice (Maildir under the mail root,
// {PLAIN} password so tests need no hashing) and bob.
type imapEnv struct {
	*env
	Maildir string
}

func newIMAPEnv(t *testing.T, extra ...string) *imapEnv {
	t.Helper()
	if !strings.Contains(strings.Join(extra, "\n"), "auth-failure-delay") {
		extra = append(extra, `auth-failure-delay = "10ms"`)
	}
	e := newEnv(t, extra...)
	ie := &imapEnv{env: e, Maildir: filepath.Join(e.MailRoot, "example.test", "alice")}
	must(t, os.WriteFile(e.Users, []byte("alice@example.test:{PLAIN}alice pw::::::\nbob@example.test:{PLAIN}bobpw::::::\n"), 0o600))
	return ie
}

// deliver runs the deliver command, as queue-runner would.
func (ie *imapEnv) deliver(subject, body string) {
	ie.t.Helper()
	msg := "From: Sender <sender@example.org>\nTo: alice@example.test\nSubject: " + subject +
		"\nDate: Tue, 5 Mar 2024 10:00:00 +0000\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.org>\n\n" + body
	if out, errs, code := ie.run(msg, "deliver", "alice@example.test"); code != 0 {
		ie.t.Fatalf("deliver: exit %d\n%s%s", code, out, errs)
	}
}

// imapConn is a raw IMAP client.
type imapConn struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	n    int
}

func imapDial(t testing.TB, addr string) *imapConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	ic := &imapConn{t: t, conn: c, r: bufio.NewReader(c)}
	if g := ic.line(); !strings.HasPrefix(g, "* OK [CAPABILITY IMAP4rev1 IMAP4rev2") {
		t.Fatalf("greeting %q", g)
	}
	return ic
}

func imapLogin(t testing.TB, addr string) *imapConn {
	c := imapDial(t, addr)
	c.ok(`LOGIN alice@example.test "alice pw"`)
	return c
}

func (c *imapConn) raw(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// line reads one response, with the literals it carries.
func (c *imapConn) line() string {
	c.t.Helper()
	var b strings.Builder
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read: %v (got %q)", err, b.String()+l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		b.WriteString(l)
		i := strings.LastIndexByte(l, '{')
		if !strings.HasSuffix(l, "}") || i < 0 {
			return b.String()
		}
		n, err := strconv.Atoi(l[i+1 : len(l)-1])
		if err != nil {
			return b.String()
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			c.t.Fatalf("read literal: %v", err)
		}
		b.WriteString("\r\n")
		b.Write(buf)
	}
}

func (c *imapConn) do(cmd string) ([]string, string) {
	c.t.Helper()
	c.n++
	tag := fmt.Sprintf("t%d", c.n)
	c.raw(tag + " " + cmd + "\r\n")
	return c.until(tag)
}

func (c *imapConn) until(tag string) ([]string, string) {
	c.t.Helper()
	var un []string
	for {
		l := c.line()
		if strings.HasPrefix(l, tag+" ") {
			return un, strings.TrimPrefix(l, tag+" ")
		}
		un = append(un, l)
	}
}

func (c *imapConn) ok(cmd string) []string {
	c.t.Helper()
	un, tagged := c.do(cmd)
	if !strings.HasPrefix(tagged, "OK") {
		c.t.Fatalf("%s: %s (untagged %q)", cmd, tagged, un)
	}
	return un
}

func (c *imapConn) expect(cmd, prefix string) []string {
	c.t.Helper()
	un, tagged := c.do(cmd)
	if !strings.HasPrefix(tagged, prefix) {
		c.t.Fatalf("%s: want %q…, got %q (untagged %q)", cmd, prefix, tagged, un)
	}
	return un
}

func hasLine(t testing.TB, lines []string, want string) {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(l, want) {
			return
		}
	}
	t.Fatalf("no response with %q in %q", want, lines)
}

const imapPyClient = `
import imaplib, sys, json
host, port = sys.argv[1], int(sys.argv[2])
m = imaplib.IMAP4(host, port)
out = {"caps": sorted(m.capabilities)}
m.login("alice@example.test", "alice pw")
out["caps_after"] = sorted(m.capabilities)
def r(name, res):
    typ, data = res
    out[name] = [typ, [d.decode("utf-8", "replace") if isinstance(d, bytes) else [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in d] if isinstance(d, tuple) else str(d) for d in data]]
r("namespace", m.namespace())
r("list", m.list())
r("create", m.create("Projects.2024"))
r("create_utf7", m.create("Entw&APw-rfe"))
r("subscribe", m.subscribe("Projects.2024"))
r("lsub", m.lsub())
r("select", m.select("INBOX"))
r("fetch", m.fetch("1:*", "(UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
r("fetch_body", m.fetch("1", "(BODY[])"))
r("flags_after_body", m.fetch("1", "(FLAGS)"))
r("search", m.search("UTF-8", "SUBJECT", "second"))
r("uid_search", m.uid("SEARCH", "UNSEEN"))
r("store", m.store("2", "+FLAGS", r"(\Flagged $Work)"))
r("copy", m.copy("1:2", "Projects.2024"))
r("uid_move", m.uid("MOVE", "1", "Archive"))
r("append", m.append("Sent", r"(\Seen)", imaplib.Time2Internaldate(1700000000), b"From: alice@example.test\r\nSubject: sent\r\n\r\nbye\r\n"))
r("status", m.status("Projects.2024", "(MESSAGES UIDNEXT UNSEEN SIZE)"))
r("store_del", m.store("1", "+FLAGS", r"(\Deleted)"))
r("expunge", m.expunge())
r("check", m.check())
r("rename", m.rename("Projects.2024", "Projects.Done"))
r("examine", m.select("Projects.Done", readonly=True))
r("ro_store", m.store("1", "+FLAGS", r"(\Deleted)") if False else ("NO", [b""]))
r("close", m.close())
r("delete", m.delete("Entw&APw-rfe"))
r("list_after", m.list())
r("logout", m.logout())
print(json.dumps(out))
`

// TestIMAPPython drives the real imapd with Python's imaplib over a
// Maildir deliver wrote, and checks what it left on disk.
func TestIMAPPython(t *testing.T) {
	ie := newIMAPEnv(t)
	ie.deliver("first", "hello\n")
	ie.deliver("second", "world\n")
	s := ie.start("imapd", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	out := python(t, imapPyClient, host, port)
	for _, want := range []string{
		`"caps": ["AUTH=PLAIN", "ENABLE", "ID", "IDLE", "IMAP4REV1", "IMAP4REV2", "LITERAL+", "SASL-IR"]`,
		`"namespace": ["OK", ["((\"\" \".\")) NIL NIL"]]`,
		`"create": ["OK"`, `"subscribe": ["OK"`, `Projects.2024`,
		`"select": ["OK", ["2"]]`,
		`Subject: first`, `BODYSTRUCTURE ((\"text\" \"plain\"` + "",
		`"flags_after_body": ["OK", ["1 (FLAGS (\\Seen \\Recent))"]]`,
		`"search": ["OK", ["2"]]`, `"uid_search": ["OK", ["2"]]`,
		`\\Flagged \\Recent $Work`, `"copy": ["OK", ["[COPYUID `, `"uid_move": ["OK"`, `"append": ["OK", ["[APPENDUID `,
		`"status": ["OK", ["Projects.2024 (MESSAGES 2 UIDNEXT 3 UNSEEN 1 SIZE `,
		`"expunge": ["OK", ["1"`, `"rename": ["OK"`, `"examine": ["OK", ["2"]]`, `"close": ["OK"`,
		`"delete": ["OK"`, `"logout": ["BYE"`,
	} {
		if !strings.Contains(out, want) && !strings.Contains(out, strings.ReplaceAll(want, `BODYSTRUCTURE ((\"text\" \"plain\"`, `BODYSTRUCTURE (\"text\" \"plain\"`)) {
			t.Errorf("imaplib: no %s in\n%s", want, out)
		}
	}
	// On disk, as Dovecot keeps it: folders as .Name directories (modified
	// UTF-7), UIDs in dovecot-uidlist, flags in file names.
	for _, d := range []string{".Projects.Done", ".Archive", ".Sent", ".Trash", ".Junk", ".Drafts"} {
		if fi, err := os.Stat(filepath.Join(ie.Maildir, d, "cur")); err != nil || !fi.IsDir() {
			t.Errorf("folder %s: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(ie.Maildir, ".Entw&APw-rfe")); !os.IsNotExist(err) {
		t.Errorf("deleted folder still there: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(ie.Maildir, "dovecot-uidlist")); err != nil || !strings.HasPrefix(string(b), "3 ") {
		t.Errorf("dovecot-uidlist: %q %v", b, err)
	}
	cur := maildirFiles(t, filepath.Join(ie.Maildir, ".Projects.Done"), "cur")
	flagged := 0
	for _, f := range cur {
		if strings.Contains(filepath.Base(f), ":2,") && strings.Contains(filepath.Base(f), "F") {
			flagged++
		}
	}
	if len(cur) != 2 || flagged != 1 {
		t.Errorf("Projects.Done/cur: %v", cur)
	}
	waitForLog(s, "folders_selected=2") // stderr is copied asynchronously
	if !strings.Contains(s.Log(), "msg=\"session end\"") || !strings.Contains(s.Log(), "user=alice@example.test") ||
		!strings.Contains(s.Log(), "folders_selected=2") || !strings.Contains(s.Log(), "fetched_bytes=") {
		t.Errorf("no session log line with user, folders and bytes:\n%s", s.Log())
	}
}

// TestIMAPCurl: curl lists, fetches and uploads over imap://.
func TestIMAPCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed for this test")
	}
	ie := newIMAPEnv(t)
	ie.deliver("by curl", "fetched by curl\n")
	s := ie.start("imapd", "")
	curl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "20", "-u", "alice@example.test:alice pw"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := curl("imap://" + s.Addr + "/"); !strings.Contains(out, `* LIST (\HasNoChildren) "." INBOX`) || !strings.Contains(out, `\Sent`) {
		t.Fatalf("curl list: %q", out)
	}
	if out := curl("imap://" + s.Addr + "/INBOX;UID=1"); !strings.Contains(out, "Subject: by curl\r\n") || !strings.Contains(out, "fetched by curl") {
		t.Fatalf("curl fetch: %q", out)
	}
	up := filepath.Join(ie.Dir, "up.eml")
	must(t, os.WriteFile(up, []byte("From: curl@example.org\r\nSubject: uploaded\r\n\r\nvia curl -T\r\n"), 0o600))
	curl("-T", up, "imap://"+s.Addr+"/Drafts")
	files := maildirFiles(t, filepath.Join(ie.Maildir, ".Drafts"), "cur")
	files = append(files, maildirFiles(t, filepath.Join(ie.Maildir, ".Drafts"), "new")...)
	if len(files) != 1 {
		t.Fatalf("after curl -T: %v", files)
	}
	if b, _ := os.ReadFile(files[0]); !bytes.Contains(b, []byte("via curl -T")) {
		t.Fatalf("uploaded message: %q", b)
	}
	if out := curl("imap://" + s.Addr + "/Drafts;UID=1/;SECTION=TEXT"); out != "via curl -T\r\n" {
		t.Fatalf("curl FETCH of a section: %q", out)
	}
	if out := curl("imap://"+s.Addr+"/INBOX", "-X", "SEARCH SUBJECT curl"); !strings.Contains(out, "* SEARCH 1") {
		t.Fatalf("curl SEARCH: %q", out)
	}
}

// imapStates puts a fresh connection in a state: 0 not authenticated, 1
// authenticated, 2 selected, 3 examined.
func imapStates(t *testing.T, addr string, st int) *imapConn {
	c := imapDial(t, addr)
	if st > 0 {
		c.ok(`LOGIN alice@example.test "alice pw"`)
	}
	switch st {
	case 2:
		c.ok("SELECT INBOX")
	case 3:
		c.ok("EXAMINE INBOX")
	}
	return c
}

// TestIMAPStates: every command in every state, against the binary; a
// command in the wrong state is BAD and the session goes on.
func TestIMAPStates(t *testing.T) {
	ie := newIMAPEnv(t)
	ie.deliver("one", "x\n")
	s := ie.start("imapd", "")
	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice pw"))
	// OK, NO or BAD in: not authenticated, authenticated, selected,
	// examined; %d is the state, so that each state has its own folders.
	table := []struct{ cmd, want string }{
		{"CAPABILITY", "OK OK OK OK"}, {"NOOP", "OK OK OK OK"}, {`ID ("name" "test")`, "OK OK OK OK"},
		{"STARTTLS", "BAD BAD BAD BAD"}, // no tls-cert here; see TestIMAPTLS
		{`LOGIN alice@example.test "alice pw"`, "OK BAD BAD BAD"}, {"AUTHENTICATE PLAIN " + plain, "OK BAD BAD BAD"},
		{"ENABLE QRESYNC", "BAD OK OK OK"}, {"SELECT INBOX", "BAD OK OK OK"}, {"EXAMINE INBOX", "BAD OK OK OK"},
		{"CREATE Box%d", "BAD OK OK OK"}, {"RENAME Box%d Ren%d", "BAD OK OK OK"}, {"SUBSCRIBE Ren%d", "BAD OK OK OK"},
		{"UNSUBSCRIBE Ren%d", "BAD OK OK OK"}, {"DELETE Ren%d", "BAD OK OK OK"}, {`LIST "" %%`, "BAD OK OK OK"},
		{`LSUB "" *`, "BAD OK OK OK"}, {"NAMESPACE", "BAD OK OK OK"}, {"STATUS INBOX (MESSAGES)", "BAD OK OK OK"},
		{"APPEND INBOX {3+}\r\nabc", "BAD OK OK OK"}, {"CHECK", "BAD BAD OK OK"}, {"FETCH 1 FLAGS", "BAD BAD OK OK"},
		{"STORE 1 +FLAGS \\Seen", "BAD BAD OK NO"}, {"SEARCH ALL", "BAD BAD OK OK"}, {"COPY 1 Trash", "BAD BAD OK OK"},
		{"UID FETCH 1 FLAGS", "BAD BAD OK OK"}, {"UID STORE 1 -FLAGS \\Seen", "BAD BAD OK NO"},
		{"UID SEARCH ALL", "BAD BAD OK OK"}, {"UID COPY 1 Trash", "BAD BAD OK OK"},
		{"SORT (SUBJECT) UTF-8 ALL", "BAD BAD OK OK"}, {"UID THREAD REFERENCES UTF-8 ALL", "BAD BAD OK OK"},
		{"MOVE 1 Trash", "BAD BAD OK NO"}, {"APPEND INBOX {3+}\r\nabc", "BAD OK OK OK"},
		{"UID MOVE 3 Trash", "BAD BAD OK NO"}, {"STORE 1 +FLAGS \\Deleted", "BAD BAD OK NO"},
		{"EXPUNGE", "BAD BAD OK NO"}, {"UID EXPUNGE 1", "BAD BAD OK NO"},
		{"UNSELECT", "BAD BAD OK OK"}, {"CLOSE", "BAD BAD OK OK"}, {"LOGOUT", "OK OK OK OK"},
	}
	for _, tc := range table {
		for st, want := range strings.Fields(tc.want) {
			cmd := strings.ReplaceAll(tc.cmd, "%d", strconv.Itoa(st))
			cmd = strings.ReplaceAll(cmd, "%%", "%")
			c := imapStates(t, s.Addr, st)
			un, tagged := c.do(cmd)
			if !strings.HasPrefix(tagged, want+" ") {
				t.Errorf("%q in state %d: %q, want %s (%q)", cmd, st, tagged, want, un)
				continue
			}
			if cmd != "LOGOUT" {
				c.ok("NOOP")
			}
		}
	}
	// IDLE in each state.
	for st, want := range []string{"BAD", "+", "+", "+"} {
		c := imapStates(t, s.Addr, st)
		c.raw("i IDLE\r\n")
		l := c.line()
		if !strings.HasPrefix(l, want) && !strings.HasPrefix(l, "i "+want) {
			t.Errorf("IDLE in state %d: %q", st, l)
			continue
		}
		if want == "+" {
			c.raw("DONE\r\n")
			if _, tagged := c.until("i"); !strings.HasPrefix(tagged, "OK") {
				t.Errorf("IDLE DONE in state %d: %q", st, tagged)
			}
		}
	}
}

// TestIMAPErrors: bad syntax, bad sequence sets, unknown folders, garbage
// bytes and over-long input get a clear answer and lose nothing.
func TestIMAPErrors(t *testing.T) {
	ie := newIMAPEnv(t, "max-message-size = 1000", "max-line-length = 2000")
	ie.deliver("one", "x\n")
	ie.deliver("two", "y\n")
	s := ie.start("imapd", "")
	c := imapLogin(t, s.Addr)
	c.ok("SELECT INBOX")
	for _, tc := range []struct{ cmd, want string }{
		{"FETCH 3 FLAGS", "BAD"}, {"FETCH 0:1 FLAGS", "BAD"}, {"FETCH 1:* FLAGS (", "BAD"},
		{"FETCH a FLAGS", "BAD"}, {"STORE 2:9 +FLAGS \\Seen", "BAD"}, {"COPY 5 Trash", "BAD"},
		{"UID FETCH 9:99 FLAGS", "OK"},
		{"SELECT Nowhere", "NO [NONEXISTENT]"}, {"SELECT INBOX", "OK"},
		{"STATUS Nowhere (MESSAGES)", "NO [NONEXISTENT]"}, {"COPY 1 Nowhere", "NO [TRYCREATE]"},
		{"APPEND Nowhere {3}", "NO [TRYCREATE]"}, {"DELETE Nowhere", "NO [NONEXISTENT]"},
		{"CREATE ..", "NO [CANNOT]"}, {"CREATE \"x/../../y\"", "NO [CANNOT]"}, {"CREATE \"tab\tname\"", "BAD"}, // not modified UTF-7
		{"APPEND INBOX {1001}", "NO [TOOBIG]"},
		{"SEARCH CHARSET BIG5 TEXT x", "NO [BADCHARSET"},
		{"FOO", "BAD"}, {"FETCH", "BAD"}, {"UID", "BAD"}, {"LOGIN a b", "BAD"},
	} {
		un, tagged := c.do(tc.cmd)
		if !strings.HasPrefix(tagged, tc.want) {
			t.Errorf("%q: %q, want %s… (%q)", tc.cmd, tagged, tc.want, un)
		}
		c.ok("NOOP")
	}
	// Garbage bytes: BAD, the session goes on.
	c.raw("\x00\x01\x02\xff\xfe\r\n")
	if l := c.line(); !strings.Contains(l, "BAD") {
		t.Fatalf("garbage: %q", l)
	}
	c.ok("NOOP")
	// A non-synchronizing literal over the APPEND limit is read and
	// dropped, and nothing of it runs as a command.
	big := strings.Repeat("x", 1001)
	c.raw("a APPEND INBOX {1001+}\r\n" + big[:500] + "\r\nz DELETE Sent\r\n" + big[516:] + "\r\n")
	if l := c.line(); !strings.HasPrefix(l, "a NO [TOOBIG]") {
		t.Fatalf("big APPEND+: %q", l)
	}
	un := c.ok(`LIST "" Sent`)
	hasLine(t, un, "Sent")
	un = c.ok("FETCH 1:* (UID)")
	if len(un) != 2 {
		t.Fatalf("messages after the errors: %q", un)
	}
	// Over max-line-length: BYE.
	c.raw("b NOOP " + strings.Repeat("y", 3000) + "\r\n")
	if l := c.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("long line: %q", l)
	}
	// Before login, a literal over 4 KiB: refused (synchronizing), or the
	// end of the session (non-synchronizing).
	d := imapDial(t, s.Addr)
	d.raw("a LOGIN {4097}\r\n")
	if l := d.line(); !strings.HasPrefix(l, "a BAD [TOOBIG]") {
		t.Fatalf("preauth literal: %q", l)
	}
	d.raw("b LOGIN {4097+}\r\n")
	if l := d.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("preauth literal+: %q", l)
	}
}

// TestIMAPAuthFailures: three failures (unknown user and wrong password
// alike) each delayed, then the connection is closed.
func TestIMAPAuthFailures(t *testing.T) {
	ie := newIMAPEnv(t, `auth-failure-delay = "300ms"`)
	s := ie.start("imapd", "")
	c := imapDial(t, s.Addr)
	start := time.Now()
	c.expect(`LOGIN alice@example.test wrong`, "NO [AUTHENTICATIONFAILED]")
	c.expect(`LOGIN nobody@example.test "alice pw"`, "NO [AUTHENTICATIONFAILED]")
	c.raw("x LOGIN alice@example.test wrong\r\n")
	if l := c.line(); !strings.HasPrefix(l, "x NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("third: %q", l)
	}
	if l := c.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("after three: %q", l)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("three failures in %v: no delay", d)
	}
}

// TestIMAPTwoSessionsAndIdle: two sessions on INBOX, a delivery (the
// deliver command) in between; an idling session hears of it within a
// second, and of the other session's flags and expunges.
func TestIMAPTwoSessionsAndIdle(t *testing.T) {
	ie := newIMAPEnv(t)
	ie.deliver("one", "x\n")
	s := ie.start("imapd", "")
	a, b := imapLogin(t, s.Addr), imapLogin(t, s.Addr)
	a.ok("SELECT INBOX")
	b.ok("SELECT INBOX")
	ie.deliver("two", "y\n")
	hasLine(t, a.ok("NOOP"), "* 2 EXISTS")
	hasLine(t, b.ok("NOOP"), "* 2 EXISTS")
	a.raw("i IDLE\r\n")
	if l := a.line(); !strings.HasPrefix(l, "+ ") {
		t.Fatalf("IDLE: %q", l)
	}
	ie.deliver("three", "z\n")
	delivered := time.Now()
	a.conn.SetReadDeadline(delivered.Add(time.Second))
	if l := a.line(); l != "* 3 EXISTS" {
		t.Fatalf("IDLE after a delivery: %q", l)
	}
	a.line() // RECENT
	a.conn.SetReadDeadline(time.Now().Add(time.Second))
	b.ok(`STORE 1 +FLAGS (\Deleted)`)
	if l := a.line(); !strings.HasPrefix(l, `* 1 FETCH (FLAGS (\Deleted`) {
		t.Fatalf("IDLE after another session's STORE: %q", l)
	}
	a.conn.SetReadDeadline(time.Now().Add(time.Second))
	b.ok("EXPUNGE")
	if l := a.line(); l != "* 1 EXPUNGE" {
		t.Fatalf("IDLE after another session's EXPUNGE: %q", l)
	}
	a.conn.SetDeadline(time.Now().Add(10 * time.Second))
	a.raw("DONE\r\n")
	a.until("i")
	un := a.ok("UID FETCH 1:* (UID)")
	if len(un) != 2 {
		t.Fatalf("after all that: %q", un)
	}
}

// TestIMAPSIGTERM: SIGTERM ends idling and waiting sessions with BYE and
// imapd exits within 5 s, nothing lost.
func TestIMAPSIGTERM(t *testing.T) {
	ie := newIMAPEnv(t)
	ie.deliver("one", "x\n")
	s := ie.start("imapd", "")
	a, b := imapLogin(t, s.Addr), imapLogin(t, s.Addr)
	a.ok("SELECT INBOX")
	a.raw("i IDLE\r\n")
	a.line()
	b.ok(`SELECT INBOX`)
	b.ok(`STORE 1 +FLAGS (\Deleted)`)
	start := time.Now()
	s.Cmd.Process.Signal(syscall.SIGTERM)
	for _, c := range []*imapConn{a, b} {
		for l := c.line(); !strings.HasPrefix(l, "* BYE"); l = c.line() {
			if !strings.HasPrefix(l, "* ") {
				t.Fatalf("after SIGTERM: %q", l)
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("imapd still running 5 s after SIGTERM")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stop took %v", d)
	}
	// \Deleted was not expunged: still one message.
	if n := len(maildirFiles(t, ie.Maildir, "cur")) + len(maildirFiles(t, ie.Maildir, "new")); n != 1 {
		t.Fatalf("%d messages after SIGTERM", n)
	}
}

// TestIMAPStdio: inetd and tcpserver mode on plain pipes; the peer is
// unknown (plaintext login refused, LOGINDISABLED) unless TCPREMOTEIP
// says loopback or --allow-insecure-auth.
func TestIMAPStdio(t *testing.T) {
	ie := newIMAPEnv(t)
	ie.deliver("one", "x\n")
	run := func(env []string, args ...string) string {
		c := ie.cmd("imapd", args...)
		c.Env = append(c.Env, env...)
		c.Stdin = strings.NewReader("a CAPABILITY\r\nb LOGIN alice@example.test \"alice pw\"\r\nc STATUS INBOX (MESSAGES)\r\nd LOGOUT\r\n")
		out, err := bounded(t, c).Output()
		if err != nil {
			t.Fatalf("imapd on pipes: %v", err)
		}
		return string(out)
	}
	if out := run(nil); !strings.Contains(out, "LOGINDISABLED") || !strings.Contains(out, "b NO [PRIVACYREQUIRED]") {
		t.Fatalf("unknown peer: %q", out)
	}
	for _, o := range []string{run([]string{"TCPREMOTEIP=127.0.0.1", "TCPREMOTEPORT=9"}), run(nil, "--allow-insecure-auth")} {
		if !strings.Contains(o, "* STATUS INBOX (MESSAGES 1)") || !strings.Contains(o, "* BYE") {
			t.Fatalf("stdio session: %q", o)
		}
	}
}

// TestIMAPStdioSocket: inetd / systemd Accept=yes hand a socket on
// stdin/stdout; the peer comes from getpeername.
func TestIMAPStdioSocket(t *testing.T) {
	ie := newIMAPEnv(t)
	ie.deliver("one", "x\n")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	must(t, err)
	defer client.Close()
	sc, err := l.Accept()
	must(t, err)
	f, err := sc.(*net.TCPConn).File()
	must(t, err)
	sc.Close()
	c := ie.cmd("imapd")
	c.Stdin, c.Stdout = f, f
	var errb syncBuffer
	c.Stderr = &errb
	must(t, c.Start())
	f.Close()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	client.SetDeadline(time.Now().Add(20 * time.Second))
	ic := &imapConn{t: t, conn: client, r: bufio.NewReader(client)}
	ic.line()
	ic.ok(`LOGIN alice@example.test "alice pw"`)
	hasLine(t, ic.ok("SELECT INBOX"), "* 1 EXISTS")
	ic.ok("LOGOUT")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("imapd exit: %v\n%s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		t.Fatal("imapd did not exit after its one session")
	}
	if !strings.Contains(errb.String(), "remote=127.0.0.1:") {
		t.Errorf("peer not logged:\n%s", errb.String())
	}
}

const imapPyTLS = `
import imaplib, ssl, sys
host, port, mode, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if mode == "starttls":
    m = imaplib.IMAP4(host, port)
    print("before:", " ".join(sorted(m.capabilities)))
    m.starttls(ssl_context=ctx)
    m._get_capabilities()
else:
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
print("after:", " ".join(sorted(m.capabilities)))
m.login("alice@example.test", "alice pw")
print("select:", m.select("INBOX"))
m.logout()
`

// TestIMAPTLS: STARTTLS and imaps (--listen imaps= and LISTEN_FDS with
// names imap and imaps: systemd Accept=no).
func TestIMAPTLS(t *testing.T) {
	dir := t.TempDir()
	ie := newIMAPEnv(t, pop3TLS(t, dir)...)
	ie.deliver("one", "x\n")
	ca := filepath.Join(dir, "pop3-cert.pem")
	s := ie.start("imapd", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	out := python(t, imapPyTLS, host, port, "starttls", ca)
	if !strings.Contains(out, "before: ") || !strings.Contains(out, "STARTTLS") || !strings.Contains(out, "select: ('OK', [b'1'])") {
		t.Fatalf("STARTTLS: %s", out)
	}
	if after := out[strings.Index(out, "after:"):]; strings.Contains(after, "STARTTLS") {
		t.Fatalf("STARTTLS offered under TLS: %s", out)
	}
	s2 := ie.start("imapd", "imaps")
	host, port, _ = net.SplitHostPort(s2.Addr)
	if out := python(t, imapPyTLS, host, port, "imaps", ca); !strings.Contains(out, "select: ('OK', [b'1'])") {
		t.Fatalf("imaps: %s", out)
	}
	// LISTEN_FDS: an imap and an imaps socket passed in.
	var files []*os.File
	var addrs []string
	for i := 0; i < 2; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		f, err := l.(*net.TCPListener).File()
		must(t, err)
		addrs = append(addrs, l.Addr().String())
		l.Close()
		files = append(files, f)
	}
	c := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=imap:imaps exec "$0"`, bin(t, "imapd"))
	c.Env = append(os.Environ(), "LETTERBOX_CONFIG="+ie.Config)
	c.ExtraFiles = files
	var errb syncBuffer
	c.Stderr = &errb
	must(t, c.Start())
	for _, f := range files {
		f.Close()
	}
	defer func() { c.Process.Kill(); c.Wait() }()
	hasLine(t, imapLogin(t, addrs[0]).ok("SELECT INBOX"), "* 1 EXISTS")
	host, port, _ = net.SplitHostPort(addrs[1])
	if out := python(t, imapPyTLS, host, port, "imaps", ca); !strings.Contains(out, "select: ('OK', [b'1'])") {
		t.Fatalf("imaps socket: %s", out)
	}
	c.Process.Signal(syscall.SIGTERM)
	if err := c.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, errb.String())
	}
}

func TestIMAPHelpVersion(t *testing.T) {
	ie := newIMAPEnv(t)
	out, _, code := ie.run("", "imapd", "--help")
	for _, f := range []string{"--idle-timeout", "--max-line-length", "--max-preauth-literal", "--max-message-size", "--allow-insecure-auth", "--poll-interval"} {
		if code != 0 || !strings.Contains(out, f) {
			t.Fatalf("--help lacks %s: exit %d\n%s", f, code, out)
		}
	}
	if out, _, code := ie.run("", "imapd", "--version"); code != 0 || !strings.Contains(out, "imapd") {
		t.Fatalf("--version: exit %d %q", code, out)
	}
	if _, errs, code := ie.run("", "imapd", "--listen", "pop3=127.0.0.1:0"); code == 0 || !strings.Contains(errs, "unknown mode") {
		t.Fatalf("bad --listen mode: exit %d %q", code, errs)
	}
	if _, errs, code := ie.run("", "imapd", "--listen", "imaps=127.0.0.1:0"); code == 0 || !strings.Contains(errs, "tls-cert") {
		t.Fatalf("imaps without a certificate: exit %d %q", code, errs)
	}
}
