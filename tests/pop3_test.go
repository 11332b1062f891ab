package tests

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/privsep/privseptest"
)

// pop3Env is an installation with two users: alice (Maildir, bcrypt-free
// {PLAIN} password so APOP works) and bob (mbox).
type pop3Env struct {
	*env
	Maildir string
	Mbox    string
}

func newPOP3Env(t *testing.T, extra ...string) *pop3Env {
	t.Helper()
	e := newEnv(t, append([]string{`auth-failure-delay = "10ms"`}, extra...)...)
	pe := &pop3Env{env: e,
		Maildir: filepath.Join(e.MailRoot, "example.test", "alice"),
		Mbox:    filepath.Join(e.Dir, "bob.mbox"),
	}
	for _, sub := range []string{"new", "cur", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(pe.Maildir, sub), 0o700))
	}
	must(t, os.WriteFile(pe.Mbox, nil, 0o600))
	users := "alice@example.test:{PLAIN}alice pw::::::\n" +
		"bob@example.test:{PLAIN}bobpw::::::mail=mbox:" + pe.Mbox + "\n"
	must(t, os.WriteFile(e.Users, []byte(users), 0o600))
	return pe
}

// pop3Msg builds a message with LF line ends.
func pop3Msg(subject, body string) string {
	return "From: sender@example.org\nTo: alice@example.test\nSubject: " + subject + "\nMessage-ID: <" + subject + "@example.org>\n\n" + body
}

// putMaildir writes msg into the Maildir's new/ under name (as another
// program would) and returns its path.
func (pe *pop3Env) putMaildir(sub, name, msg string) string {
	p := filepath.Join(pe.Maildir, sub, name)
	must(pe.t, os.WriteFile(p, []byte(msg), 0o600))
	return p
}

// mboxRecord is one mbox record, mboxrd-quoted.
func mboxRecord(msg string) string {
	var b strings.Builder
	b.WriteString("From sender@example.org Mon Nov 23 10:00:00 2026\n")
	for _, l := range strings.SplitAfter(msg, "\n") {
		t := strings.TrimLeft(l, ">")
		if strings.HasPrefix(t, "From ") {
			b.WriteString(">")
		}
		b.WriteString(l)
	}
	if !strings.HasSuffix(msg, "\n") {
		b.WriteString("\n")
	}
	b.WriteString("\n")
	return b.String()
}

// crlf returns what POP3 sends for msg (before byte-stuffing).
func crlf(msg string) string {
	s := strings.ReplaceAll(msg, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	if s != "" && !strings.HasSuffix(s, "\r\n") {
		s += "\r\n"
	}
	return s
}

// pop3Login dials addr and logs in as user.
func pop3Login(t *testing.T, addr, user, pw string) *dialog {
	t.Helper()
	d := dial(t, addr)
	pop3Expect(d, "+OK")
	d.send("USER " + user)
	pop3Expect(d, "+OK")
	d.send("PASS " + pw)
	pop3Expect(d, "+OK")
	return d
}

// pop3Expect reads one line and fails unless it starts with prefix.
func pop3Expect(d *dialog, prefix string) string {
	d.t.Helper()
	l := d.line()
	if !strings.HasPrefix(l, prefix) {
		d.t.Fatalf("want %q…, got %q", prefix, l)
	}
	return l
}

// pop3Multi reads a multi-line body up to ".", un-stuffed, CRLF-joined.
func pop3Multi(d *dialog) string {
	d.t.Helper()
	var b strings.Builder
	for {
		l := d.line()
		if l == "." {
			return b.String()
		}
		b.WriteString(strings.TrimPrefix(l, "."))
		b.WriteString("\r\n")
	}
}

const pop3PyClient = `
import poplib, sys, json
host, port, user, pw, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
p = poplib.POP3(host, port, timeout=20)
out = {"welcome": p.getwelcome().decode()}
p.user(user)
p.pass_(pw)
out["stat"] = list(p.stat())
resp, lst, _ = p.list()
out["list"] = [l.decode() for l in lst]
resp, uid, _ = p.uidl()
out["uidl"] = [l.decode() for l in uid]
out["capa"] = sorted(p.capa().keys())
msgs = []
for i in range(1, out["stat"][0] + 1):
    resp, lines, octets = p.retr(i)
    msgs.append({"resp": resp.decode(), "body": "\r\n".join(l.decode("latin-1") for l in lines) + "\r\n", "octets": octets})
out["retr"] = msgs
if out["stat"][0]:
    resp, lines, _ = p.top(1, 0)
    out["top"] = "\r\n".join(l.decode() for l in lines)
errs = []
for f in (lambda: p.retr(99), lambda: p.dele(0), lambda: p.list(99), lambda: p.uidl(99), lambda: p.top(99, 1), lambda: p._shortcmd("USER x")):
    try:
        f(); errs.append("no error")
    except poplib.error_proto as e:
        errs.append(str(e))
out["errors"] = errs
if mode == "delete":
    for i in range(1, out["stat"][0] + 1):
        p.dele(i)
    try:
        p.retr(1); errs.append("deleted message retrieved")
    except poplib.error_proto as e:
        out["after_dele"] = str(e)
out["quit"] = p.quit().decode()
print(json.dumps(out))
`

type pyPOP3 struct {
	Welcome string   `json:"welcome"`
	Stat    []int    `json:"stat"`
	List    []string `json:"list"`
	UIDL    []string `json:"uidl"`
	Capa    []string `json:"capa"`
	Retr    []struct {
		Resp   string `json:"resp"`
		Body   string `json:"body"`
		Octets int    `json:"octets"`
	} `json:"retr"`
	Top       string   `json:"top"`
	Errors    []string `json:"errors"`
	AfterDele string   `json:"after_dele"`
	Quit      string   `json:"quit"`
}

func runPyPOP3(t *testing.T, addr, user, pw, mode string) pyPOP3 {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out := python(t, pop3PyClient, host, port, user, pw, mode)
	var r pyPOP3
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	return r
}

// checkPy checks a poplib session against the messages expected.
func checkPy(t *testing.T, r pyPOP3, msgs []string) {
	t.Helper()
	total := 0
	for _, m := range msgs {
		total += len(crlf(m))
	}
	if len(r.Stat) != 2 || r.Stat[0] != len(msgs) || r.Stat[1] != total {
		t.Fatalf("STAT %v, want %d %d", r.Stat, len(msgs), total)
	}
	if len(r.List) != len(msgs) || len(r.UIDL) != len(msgs) || len(r.Retr) != len(msgs) {
		t.Fatalf("LIST %v UIDL %v RETR %d", r.List, r.UIDL, len(r.Retr))
	}
	uids := map[string]bool{}
	for i, m := range msgs {
		want := crlf(m)
		if r.List[i] != fmt.Sprintf("%d %d", i+1, len(want)) {
			t.Errorf("LIST line %q, want size %d", r.List[i], len(want))
		}
		if r.Retr[i].Body != want {
			t.Errorf("RETR %d = %q, want %q", i+1, r.Retr[i].Body, want)
		}
		if r.Retr[i].Resp != fmt.Sprintf("+OK %d octets", len(want)) {
			t.Errorf("RETR %d reply %q", i+1, r.Retr[i].Resp)
		}
		_, uid, _ := strings.Cut(r.UIDL[i], " ")
		if uid == "" || uids[uid] || len(uid) > 70 {
			t.Errorf("bad or duplicate UIDL %q", r.UIDL[i])
		}
		uids[uid] = true
	}
	for _, c := range []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION"} {
		found := false
		for _, k := range r.Capa {
			found = found || k == c
		}
		if !found {
			t.Errorf("CAPA lacks %s: %v", c, r.Capa)
		}
	}
	for _, e := range r.Errors {
		if !strings.HasPrefix(e, "b'-ERR") {
			t.Errorf("error path answered %q", e)
		}
	}
}

func TestPOP3PythonMaildir(t *testing.T) {
	pe := newPOP3Env(t)
	// Our deliver's names, Dovecot's names (S= is the LF size, W= the CRLF
	// size) and plain names whose size must be computed; CRLF files too.
	msgs := []string{
		pop3Msg("one", "first\n.dot line\n..two dots\n"),
		pop3Msg("two", "second\r\nwith CRLF\r\n"),
		pop3Msg("three", "no final newline"),
		pop3Msg("four", strings.Repeat("long line ", 150)+"\n.\n"),
	}
	pe.putMaildir("new", "1700000001.M1P1Q1.host", msgs[0])
	w := len(crlf(msgs[1]))
	pe.putMaildir("cur", fmt.Sprintf("1700000002.M2P2.dovecot,S=%d,W=%d:2,S", len(msgs[1]), w), msgs[1])
	pe.putMaildir("new", "1700000003.M3P3.courier", msgs[2])
	pe.putMaildir("cur", fmt.Sprintf("1700000004.M4P4.host,S=%d:2,", len(msgs[3])), msgs[3])
	s := pe.start("pop3d", "")
	r := runPyPOP3(t, s.Addr, "alice@example.test", "alice pw", "keep")
	checkPy(t, r, msgs)
	if !strings.Contains(r.Welcome, "<") {
		t.Errorf("APOP timestamp missing for a {PLAIN} user: %q", r.Welcome)
	}
	if !strings.HasPrefix(r.Top, "From: sender@example.org") || !strings.HasSuffix(r.Top, "\r\n") {
		t.Errorf("TOP 1 0 = %q", r.Top)
	}
	// RETR marked everything seen and moved it to cur/, as Dovecot does.
	if n := len(maildirFiles(t, pe.Maildir, "new")); n != 0 {
		t.Errorf("%d messages left in new/", n)
	}
	for _, f := range maildirFiles(t, pe.Maildir, "cur") {
		if !strings.HasSuffix(f, ":2,S") {
			t.Errorf("not marked seen: %s", f)
		}
	}
	// UIDLs are stable across sessions (and renames into cur/).
	r2 := runPyPOP3(t, s.Addr, "alice@example.test", "alice pw", "delete")
	if strings.Join(r2.UIDL, ",") != strings.Join(r.UIDL, ",") {
		t.Errorf("UIDL changed: %v then %v", r.UIDL, r2.UIDL)
	}
	if !strings.Contains(r2.AfterDele, "-ERR") {
		t.Errorf("RETR of a deleted message: %q", r2.AfterDele)
	}
	if n := len(maildirFiles(t, pe.Maildir, "cur")) + len(maildirFiles(t, pe.Maildir, "new")); n != 0 {
		t.Errorf("%d messages left after DELE+QUIT", n)
	}
	// The session's log line comes after the QUIT reply.
	if !waitForLog(s, "deleted=4") {
		t.Errorf("log lacks deletion count:\n%s", s.Log())
	}
}

func TestPOP3NoFlagUpdates(t *testing.T) {
	pe := newPOP3Env(t)
	p := pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n"))
	s := pe.start("pop3d", "", "--no-flag-updates")
	runPyPOP3(t, s.Addr, "alice@example.test", "alice pw", "keep")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("--no-flag-updates moved the message: %v", err)
	}
}

func TestPOP3PythonMbox(t *testing.T) {
	pe := newPOP3Env(t)
	msgs := []string{
		pop3Msg("m1", "hello\nFrom the start of a line\n>From quoted once\n.dot\n"),
		pop3Msg("m2", "second\n"),
		"From: x@example.org\nX-UIDL: fixed-uid-1\nSubject: m3\n\nthird\n",
		pop3Msg("m2", "second\n"), // an exact duplicate of m2
	}
	var mb strings.Builder
	for _, m := range msgs {
		mb.WriteString(mboxRecord(m))
	}
	must(t, os.WriteFile(pe.Mbox, []byte(mb.String()), 0o600))
	s := pe.start("pop3d", "")
	r := runPyPOP3(t, s.Addr, "bob@example.test", "bobpw", "keep")
	checkPy(t, r, msgs)
	if !strings.HasSuffix(r.UIDL[2], " fixed-uid-1") {
		t.Errorf("X-UIDL not used: %v", r.UIDL)
	}
	after, _ := os.ReadFile(pe.Mbox)
	if string(after) != mb.String() {
		t.Fatal("mbox changed by a session without DELE")
	}
	// Deleting message 2 rewrites the mbox; UIDLs of the rest stay.
	d := pop3Login(t, s.Addr, "bob@example.test", "bobpw")
	d.send("DELE 2")
	pop3Expect(d, "+OK")
	d.send("QUIT")
	pop3Expect(d, "+OK")
	after, _ = os.ReadFile(pe.Mbox)
	want := mboxRecord(msgs[0]) + mboxRecord(msgs[2]) + mboxRecord(msgs[3])
	if string(after) != want {
		t.Fatalf("mbox after DELE 2:\n%q\nwant\n%q", after, want)
	}
	r2 := runPyPOP3(t, s.Addr, "bob@example.test", "bobpw", "keep")
	if len(r2.UIDL) != 3 || r2.UIDL[0] != r.UIDL[0] || !strings.HasSuffix(r2.UIDL[1], " fixed-uid-1") {
		t.Errorf("UIDLs after rewrite %v, before %v", r2.UIDL, r.UIDL)
	}
	if _, err := os.Stat(pe.Mbox + ".lock"); err == nil {
		t.Error("dotlock left behind")
	}
}

// The whole command set and every error path, on the raw protocol.
func TestPOP3Dialog(t *testing.T) {
	pe := newPOP3Env(t, "max-errors = 100")
	m1, m2 := pop3Msg("one", "a\n.b\n"), pop3Msg("two", "c\nd\ne\n")
	pe.putMaildir("new", "1700000001.M1P1Q1.host", m1)
	pe.putMaildir("new", "1700000002.M1P1Q1.host", m2)
	s := pe.start("pop3d", "")
	d := dial(t, s.Addr)
	pop3Expect(d, "+OK")
	// AUTHORIZATION: transaction commands are refused.
	for _, c := range []string{"STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL", "UIDL 1"} {
		d.send(c)
		pop3Expect(d, "-ERR")
	}
	for _, c := range []string{"PASS alice pw", "USER", "XYZZY", "", "\x01\x02\xff", "APOP alice@example.test", "AUTH FOO"} {
		d.send(c)
		pop3Expect(d, "-ERR")
	}
	d.send(strings.Repeat("A", 600))
	pop3Expect(d, "-ERR line too long")
	d.send(strings.Repeat("B", 100000))
	pop3Expect(d, "-ERR line too long")
	d.send("CAPA")
	pop3Expect(d, "+OK")
	if c := pop3Multi(d); !strings.Contains(c, "UIDL\r\n") || strings.Contains(c, "STLS") {
		t.Errorf("CAPA: %q", c)
	}
	d.send("user alice@example.test")
	pop3Expect(d, "+OK")
	d.send("pass alice pw")
	pop3Expect(d, "+OK maildrop has 2 messages")
	w1, w2 := len(crlf(m1)), len(crlf(m2))
	d.send("STAT")
	pop3Expect(d, fmt.Sprintf("+OK 2 %d", w1+w2))
	d.send("LIST 2")
	pop3Expect(d, fmt.Sprintf("+OK 2 %d", w2))
	d.send("TOP 2 2")
	pop3Expect(d, "+OK")
	if got := pop3Multi(d); got != crlf(pop3Msg("two", "c\nd\n")) {
		t.Errorf("TOP 2 2 = %q", got)
	}
	d.send("RETR 1")
	pop3Expect(d, fmt.Sprintf("+OK %d octets", w1))
	var raw strings.Builder
	for l := d.line(); l != "."; l = d.line() {
		raw.WriteString(l + "\r\n")
	}
	if !strings.Contains(raw.String(), "\r\n..b\r\n") {
		t.Errorf("dot not stuffed: %q", raw.String())
	}
	for _, c := range []string{"RETR 0", "RETR 3", "RETR -1", "RETR x", "RETR 1 2", "RETR", "LIST 3", "UIDL 0",
		"TOP 1", "TOP 1 -5", "TOP 1 z", "DELE 99", "USER alice@example.test", "PASS x", "STLS", "AUTH PLAIN", "STAT 1", "BOGUS"} {
		d.send(c)
		pop3Expect(d, "-ERR")
	}
	d.send("DELE 1")
	pop3Expect(d, "+OK")
	for _, c := range []string{"DELE 1", "RETR 1", "LIST 1", "UIDL 1", "TOP 1 0"} {
		d.send(c)
		pop3Expect(d, "-ERR")
	}
	d.send("STAT")
	pop3Expect(d, fmt.Sprintf("+OK 1 %d", w2))
	d.send("LIST")
	pop3Expect(d, "+OK")
	if got := pop3Multi(d); got != fmt.Sprintf("2 %d\r\n", w2) {
		t.Errorf("LIST after DELE: %q", got)
	}
	d.send("RSET")
	pop3Expect(d, "+OK maildrop has 2 messages")
	d.send("DELE 2")
	pop3Expect(d, "+OK")
	d.send("NOOP")
	pop3Expect(d, "+OK")
	// Mail arriving during the session is not shown until the next one.
	pe.putMaildir("new", "1700000009.M9P9Q9.host", pop3Msg("late", "x\n"))
	d.send("UIDL")
	pop3Expect(d, "+OK")
	if got := pop3Multi(d); got != "1 1700000001.M1P1Q1.host\r\n" {
		t.Errorf("UIDL: %q", got)
	}
	if n := len(maildirFiles(t, pe.Maildir, "new")); n != 3 {
		t.Fatalf("deleted before QUIT: %d in new/", n)
	}
	d.send("QUIT")
	pop3Expect(d, "+OK")
	files := append(maildirFiles(t, pe.Maildir, "new"), maildirFiles(t, pe.Maildir, "cur")...)
	if len(files) != 2 || !strings.Contains(strings.Join(files, " "), "1700000009") {
		t.Fatalf("after QUIT: %v", files)
	}
}

func TestPOP3AuthFailures(t *testing.T) {
	pe := newPOP3Env(t, "[pop3d]", `auth-failure-delay = "200ms"`)
	s := pe.start("pop3d", "")
	d := dial(t, s.Addr)
	pop3Expect(d, "+OK")
	timeOf := func(user, pw string) (string, time.Duration) {
		d.send("USER " + user)
		pop3Expect(d, "+OK")
		start := time.Now()
		d.send("PASS " + pw)
		return d.line(), time.Since(start)
	}
	unknown, _ := timeOf("nobody@example.test", "x")
	bad, took := timeOf("alice@example.test", "wrong")
	if unknown != bad || !strings.HasPrefix(bad, "-ERR [AUTH]") {
		t.Fatalf("unknown user %q vs bad password %q", unknown, bad)
	}
	if took < 200*time.Millisecond {
		t.Fatalf("failure answered after %v, before the delay", took)
	}
	last, _ := timeOf("alice@example.test", "wrong")
	if !strings.Contains(last, "too many") {
		t.Fatalf("third failure: %q", last)
	}
	if _, err := d.r.ReadString('\n'); err != io.EOF {
		t.Fatalf("connection still open: %v", err)
	}
	if !strings.Contains(s.Log(), "login failed") {
		t.Errorf("failures not logged")
	}
}

func TestPOP3APOPAndAuthPlain(t *testing.T) {
	pe := newPOP3Env(t)
	pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n"))
	s := pe.start("pop3d", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	out := python(t, `
import poplib, sys, base64
p = poplib.POP3(sys.argv[1], int(sys.argv[2]))
try:
    p.apop("alice@example.test", "wrong")
    print("bad digest accepted")
except poplib.error_proto as e:
    print("bad:", e)
p.quit()
p = poplib.POP3(sys.argv[1], int(sys.argv[2]))
print(p.apop("alice@example.test", "alice pw"))
print(p.stat())
p.quit()
p = poplib.POP3(sys.argv[1], int(sys.argv[2]))
print(p._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0alice@example.test\0alice pw").decode()))
print(p.stat())
p.quit()
`, host, port)
	for _, want := range []string{"bad: b'-ERR [AUTH]", "b'+OK maildrop has 1 messages", "(1, "} {
		if !strings.Contains(out, want) {
			t.Errorf("APOP/AUTH: want %q in\n%s", want, out)
		}
	}
	// A users file without plaintext secrets: no APOP timestamp.
	must(t, os.WriteFile(pe.Users, []byte("alice@example.test:{SHA512-CRYPT}$6$abc$def::::::\n"), 0o600))
	d := dial(t, pe.start("pop3d", "").Addr)
	if g := pop3Expect(d, "+OK"); strings.Contains(g, "<") {
		t.Errorf("APOP offered without plaintext secrets: %q", g)
	}
}

func TestPOP3Curl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not installed")
	}
	for _, kind := range []string{"maildir", "mbox"} {
		t.Run(kind, func(t *testing.T) {
			pe := newPOP3Env(t)
			msgs := []string{pop3Msg("c1", "one\n"), pop3Msg("c2", "two\n.three\n")}
			user, pw := "alice@example.test", "alice pw"
			if kind == "mbox" {
				must(t, os.WriteFile(pe.Mbox, []byte(mboxRecord(msgs[0])+mboxRecord(msgs[1])), 0o600))
				user, pw = "bob@example.test", "bobpw"
			} else {
				pe.putMaildir("new", "1700000001.M1P1Q1.host", msgs[0])
				pe.putMaildir("new", "1700000002.M1P1Q1.host", msgs[1])
			}
			s := pe.start("pop3d", "")
			url := "pop3://" + s.Addr + "/"
			curl := func(args ...string) string {
				t.Helper()
				c := exec.Command("curl", append([]string{"-sS", "--max-time", "20", "-u", user + ":" + pw}, args...)...)
				out, err := bounded(t, c).CombinedOutput()
				if err != nil {
					t.Fatalf("curl %v: %v\n%s\n%s", args, err, out, s.Log())
				}
				return string(out)
			}
			list := curl("--list-only", url)
			want := fmt.Sprintf("1 %d\r\n2 %d\r\n", len(crlf(msgs[0])), len(crlf(msgs[1])))
			if list != want {
				t.Fatalf("curl LIST: %q want %q", list, want)
			}
			if got := curl(url + "2"); got != crlf(msgs[1]) {
				t.Fatalf("curl RETR 2: %q", got)
			}
			curl("--request", "DELE", url+"1", "--list-only")
			if got := curl("--request", "UIDL", url); strings.Count(got, "\r\n") != 1 || !strings.HasPrefix(got, "1 ") {
				t.Fatalf("after DELE, UIDL: %q", got)
			}
			if got := curl(url + "1"); got != crlf(msgs[1]) {
				t.Fatalf("after DELE, RETR 1: %q", got)
			}
			// A bad message number fails curl.
			c := exec.Command("curl", "-sS", "--max-time", "20", "-u", user+":"+pw, url+"7")
			if out, err := bounded(t, c).CombinedOutput(); err == nil {
				t.Fatalf("RETR 7 succeeded: %s", out)
			}
		})
	}
}

func TestPOP3InUseAndCrash(t *testing.T) {
	for _, kind := range []string{"maildir", "mbox"} {
		t.Run(kind, func(t *testing.T) {
			pe := newPOP3Env(t, `mbox-lock-timeout = "300ms"`)
			user, pw := "alice@example.test", "alice pw"
			msg := pop3Msg("crash", "x\n")
			if kind == "mbox" {
				user, pw = "bob@example.test", "bobpw"
				must(t, os.WriteFile(pe.Mbox, []byte(mboxRecord(msg)), 0o600))
			} else {
				pe.putMaildir("new", "1700000001.M1P1Q1.host", msg)
			}
			s1 := pe.start("pop3d", "")
			s2 := pe.start("pop3d", "")
			d1 := pop3Login(t, s1.Addr, user, pw)
			d1.send("DELE 1")
			pop3Expect(d1, "+OK")
			// Same process and another process: both see the lock.
			for _, addr := range []string{s1.Addr, s2.Addr} {
				d := dial(t, addr)
				pop3Expect(d, "+OK")
				d.send("USER " + user)
				pop3Expect(d, "+OK")
				d.send("PASS " + pw)
				pop3Expect(d, "-ERR [IN-USE]")
			}
			// SIGKILL after DELE, before QUIT: nothing deleted, no lock left.
			s1.Cmd.Process.Kill()
			s1.Cmd.Wait()
			d := pop3Login(t, s2.Addr, user, pw)
			d.send("STAT")
			pop3Expect(d, fmt.Sprintf("+OK 1 %d", len(crlf(msg))))
			d.send("QUIT")
			pop3Expect(d, "+OK")
		})
	}
}

// SIGKILL during the mbox rewrite at QUIT, in a loop: the mbox is always
// either the old one or the new one, byte for byte.
func TestPOP3MboxRewriteCrash(t *testing.T) {
	pe := newPOP3Env(t)
	var records []string
	body := strings.Repeat("0123456789 abcdefghijklmnopqrstuvwxyz\n", 400) // ~16 KB
	for i := 0; i < 400; i++ {
		records = append(records, mboxRecord(pop3Msg(fmt.Sprintf("big%d", i), body)))
	}
	must(t, os.WriteFile(pe.Mbox, []byte(strings.Join(records, "")), 0o600))
	deleted := 0 // records[deleted:] is the current mbox
	killed, midRewrite := 0, 0
	for iter := 0; iter < 12; iter++ {
		c, stdin, out := pop3Stdio(t, pe.env)
		io.WriteString(stdin, "USER bob@example.test\r\nPASS bobpw\r\nDELE 1\r\n")
		waitFor(t, 10*time.Second, "DELE reply", func() bool { return strings.Contains(out.String(), "deleted") })
		// QUIT starts the rewrite (a few tens of ms for this mbox); the kill
		// lands at a different point of it each time.
		io.WriteString(stdin, "QUIT\r\n")
		time.Sleep(time.Duration(iter*iter*2) * time.Millisecond)
		c.Process.Signal(syscall.SIGKILL)
		c.Wait()
		// The rewrite's temporary file left behind: the kill landed in it.
		if tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(pe.Mbox), "."+filepath.Base(pe.Mbox)+".rewrite-*")); len(tmps) > 0 {
			midRewrite++
			for _, p := range tmps {
				os.Remove(p)
			}
		}
		got, err := os.ReadFile(pe.Mbox)
		must(t, err)
		old := strings.Join(records[deleted:], "")
		new := strings.Join(records[deleted+1:], "")
		switch string(got) {
		case old:
			killed++
		case new:
			deleted++
		default:
			t.Fatalf("iteration %d: mbox damaged (%d bytes; old %d, new %d)", iter, len(got), len(old), len(new))
		}
	}
	t.Logf("%d kills left the old mbox (%d of them in the middle of the rewrite), %d the new one", killed, midRewrite, deleted)
	if midRewrite == 0 {
		t.Fatal("no kill landed while the mbox was being rewritten (no temporary file left): the test proved nothing")
	}
	// And the mbox still serves after all that (stale dotlocks recovered).
	s := pe.start("pop3d", "")
	d := pop3Login(t, s.Addr, "bob@example.test", "bobpw")
	d.send("STAT")
	pop3Expect(d, fmt.Sprintf("+OK %d ", len(records)-deleted))
}

// pop3Stdio starts pop3d on pipes, its peer a loopback tcpserver client,
// and returns the process, its input and its output so far.
func pop3Stdio(t *testing.T, e *env) (*exec.Cmd, io.WriteCloser, *syncBuffer) {
	t.Helper()
	c := e.cmd("pop3d")
	c.Env = append(c.Env, "TCPREMOTEIP=127.0.0.1")
	stdin, err := c.StdinPipe()
	must(t, err)
	out := &syncBuffer{}
	c.Stdout = out
	must(t, c.Start())
	return c, stdin, out
}

func TestPOP3SIGTERM(t *testing.T) {
	pe := newPOP3Env(t)
	pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n"))
	s := pe.start("pop3d", "")
	d := pop3Login(t, s.Addr, "alice@example.test", "alice pw")
	pop3SIGTERM(t, s, d, pe.Maildir)
}

// pop3SIGTERM sends SIGTERM to pop3d while d's session (on a maildrop of
// one message in md's new/) has that message marked deleted: the client
// gets -ERR [SYS/TEMP], pop3d exits 0 within 5 s, nothing is deleted.
func pop3SIGTERM(t *testing.T, s *server, d *dialog, md string) {
	t.Helper()
	d.send("DELE 1")
	pop3Expect(d, "+OK")
	start := time.Now()
	s.Cmd.Process.Signal(syscall.SIGTERM)
	pop3Expect(d, "-ERR [SYS/TEMP]")
	done := make(chan error, 1)
	go func() { done <- s.Cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pop3d still running 5s after SIGTERM")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("stop took %v", time.Since(start))
	}
	if n := len(maildirFiles(t, md, "new")); n != 1 {
		t.Fatalf("SIGTERM deleted a message not QUIT: %d left", n)
	}
}

func TestPOP3StdioPipes(t *testing.T) {
	pe := newPOP3Env(t)
	pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n"))
	run := func(env []string, input string, args ...string) string {
		c := pe.cmd("pop3d", args...)
		c.Env = append(c.Env, env...)
		c.Stdin = strings.NewReader(input)
		out, err := bounded(t, c).Output()
		if err != nil {
			t.Fatalf("pop3d on pipes: %v", err)
		}
		return string(out)
	}
	in := "USER alice@example.test\r\nPASS alice pw\r\nSTAT\r\nQUIT\r\n"
	// The peer on pipes is unknown: plaintext login refused...
	if out := run(nil, in); !strings.Contains(out, "-ERR [AUTH]") || strings.Contains(out, "+OK 1 ") {
		t.Fatalf("plaintext login on unknown pipes: %q", out)
	}
	// ...unless tcpserver says it is loopback, or insecure auth is allowed.
	if out := run([]string{"TCPREMOTEIP=127.0.0.1", "TCPREMOTEPORT=1234"}, in); !strings.Contains(out, "+OK 1 ") {
		t.Fatalf("tcpserver loopback: %q", out)
	}
	if out := run(nil, in, "--allow-insecure-auth"); !strings.Contains(out, "+OK 1 ") {
		t.Fatalf("--allow-insecure-auth: %q", out)
	}
}

// pop3TLS writes a self-signed certificate made with crypto/x509 and returns
// the config lines naming it.
func pop3TLS(t *testing.T, dir string) []string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "mx.example.test"},
		DNSNames:     []string{"mx.example.test", "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	cert, keyf := filepath.Join(dir, "pop3-cert.pem"), filepath.Join(dir, "pop3-key.pem")
	must(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(t, os.WriteFile(keyf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return []string{fmt.Sprintf("tls-cert = %q", cert), fmt.Sprintf("tls-key = %q", keyf)}
}

const pop3PyTLS = `
import poplib, ssl, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=sys.argv[4])
if mode == "stls":
    p = poplib.POP3(host, port, timeout=20)
    print("before:", sorted(p.capa().keys()))
    p.stls(context=ctx)
else:
    p = poplib.POP3_SSL(host, port, context=ctx, timeout=20)
print("after:", sorted(p.capa().keys()))
p.user("alice@example.test")
p.pass_("alice pw")
print("stat:", p.stat())
p.quit()
`

func TestPOP3TLS(t *testing.T) {
	dir := t.TempDir()
	tlsConf := pop3TLS(t, dir)
	pe := newPOP3Env(t, tlsConf...)
	pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n"))
	cert := filepath.Join(dir, "pop3-cert.pem")
	s := pe.start("pop3d", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	out := python(t, pop3PyTLS, host, port, "stls", cert)
	if !strings.Contains(out, "before: [") || !strings.Contains(out, "'STLS'") || !strings.Contains(out, "stat: (1,") {
		t.Fatalf("STLS: %s", out)
	}
	if after := out[strings.Index(out, "after:"):]; strings.Contains(after, "STLS") {
		t.Fatalf("STLS offered again under TLS: %s", out)
	}
	// Plaintext pipelined behind STLS is dropped, not executed under TLS.
	d := dial(t, s.Addr)
	pop3Expect(d, "+OK")
	d.raw("STLS\r\nUSER alice@example.test\r\n")
	pop3Expect(d, "+OK")
	// Read in one piece (the usual case on loopback) the injected line is
	// dropped; read apart, it is taken for a TLS record and fails the
	// handshake. Either way it is never run as a command.
	if !waitForLog(s, "dropped plaintext", "STLS handshake failed") {
		t.Error("injected plaintext after STLS neither dropped nor refused")
	}

	// pop3s via --listen pop3s=ADDR.
	s2 := pe.start("pop3d", "pop3s")
	host, port, _ = net.SplitHostPort(s2.Addr)
	out = python(t, pop3PyTLS, host, port, "pop3s", cert)
	if !strings.Contains(out, "stat: (1,") || strings.Contains(out, "STLS") {
		t.Fatalf("pop3s: %s", out)
	}
}

// waitForLog polls the server's log for any of whats, up to 10 s.
func waitForLog(s *server, whats ...string) bool {
	for i := 0; i < 500; i++ {
		for _, what := range whats {
			if strings.Contains(s.Log(), what) {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// LISTEN_FDS (systemd Accept=no): a pop3s socket and a pop3 socket passed
// in, each serving its mode.
func TestPOP3ListenFDs(t *testing.T) {
	dir := t.TempDir()
	pe := newPOP3Env(t, pop3TLS(t, dir)...)
	pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n"))
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
	c := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=pop3:pop3s exec "$0"`, bin(t, "pop3d"))
	c.Env = append(os.Environ(), "LETTERBOX_CONFIG="+pe.Config)
	c.ExtraFiles = files
	var errb syncBuffer
	c.Stderr = &errb
	must(t, c.Start())
	for _, f := range files {
		f.Close()
	}
	defer func() { c.Process.Kill(); c.Wait() }()
	d := pop3Login(t, addrs[0], "alice@example.test", "alice pw")
	d.send("STAT")
	pop3Expect(d, "+OK 1 ")
	d.send("QUIT")
	pop3Expect(d, "+OK")
	host, port, _ := net.SplitHostPort(addrs[1])
	if out := python(t, pop3PyTLS, host, port, "pop3s", filepath.Join(dir, "pop3-cert.pem")); !strings.Contains(out, "stat: (1,") {
		t.Fatalf("pop3s socket: %s", out)
	}
	c.Process.Signal(syscall.SIGTERM)
	if err := c.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, errb.String())
	}
}

// Dovecot's and our Maildir bookkeeping files in the Maildir root are not
// messages.
func TestPOP3ForeignFiles(t *testing.T) {
	pe := newPOP3Env(t)
	pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n"))
	must(t, os.WriteFile(filepath.Join(pe.Maildir, "dovecot-uidlist"), []byte("3 V1 N2\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(pe.Maildir, "cur", ".hidden"), []byte("x"), 0o600))
	must(t, os.MkdirAll(filepath.Join(pe.Maildir, ".Sent", "cur"), 0o700))
	s := pe.start("pop3d", "")
	d := pop3Login(t, s.Addr, "alice@example.test", "alice pw")
	d.send("STAT")
	pop3Expect(d, "+OK 1 ")
	// Pipelined commands get their replies in order.
	d.raw("NOOP\r\nUIDL 1\r\nLIST 1\r\nQUIT\r\n")
	pop3Expect(d, "+OK")
	pop3Expect(d, "+OK 1 1700000001.M1P1Q1")
	pop3Expect(d, "+OK 1 ")
	pop3Expect(d, "+OK")
}

// inetd / systemd Accept=yes: the connection is a socket on stdin/stdout and
// the peer (loopback here) comes from getpeername.
func TestPOP3StdioSocket(t *testing.T) {
	pe := newPOP3Env(t)
	pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	must(t, err)
	defer client.Close()
	srvConn, err := l.Accept()
	must(t, err)
	f, err := srvConn.(*net.TCPConn).File()
	must(t, err)
	srvConn.Close()
	c := pe.cmd("pop3d")
	c.Stdin, c.Stdout = f, f
	var errb syncBuffer
	c.Stderr = &errb
	must(t, c.Start())
	f.Close()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	client.SetDeadline(time.Now().Add(20 * time.Second))
	d := &dialog{t: t, conn: client, r: bufio.NewReader(client)}
	pop3Expect(d, "+OK")
	d.send("USER alice@example.test")
	pop3Expect(d, "+OK")
	d.send("PASS alice pw")
	pop3Expect(d, "+OK maildrop has 1 messages")
	d.send("QUIT")
	pop3Expect(d, "+OK")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pop3d exit: %v\n%s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		t.Fatal("pop3d did not exit after the session")
	}
	if !strings.Contains(errb.String(), "remote=127.0.0.1:") {
		t.Errorf("peer address not logged:\n%s", errb.String())
	}
}

func TestPOP3HelpVersion(t *testing.T) {
	pe := newPOP3Env(t)
	out, _, code := pe.run("", "pop3d", "--help")
	if code != 0 || !strings.Contains(out, "--idle-timeout") || !strings.Contains(out, "--no-flag-updates") {
		t.Fatalf("--help: exit %d\n%s", code, out)
	}
	if out, _, code := pe.run("", "pop3d", "--version"); code != 0 || !strings.Contains(out, "pop3d") {
		t.Fatalf("--version: exit %d %q", code, out)
	}
	if _, errs, code := pe.run("", "pop3d", "--listen", "smtp=127.0.0.1:0"); code == 0 || !strings.Contains(errs, "unknown mode") {
		t.Fatalf("bad --listen mode: exit %d %q", code, errs)
	}
}

// --user: started as root, pop3d binds, then serves as the user (here
// nobody, owner of the Maildir); a file only root can read stays unread.
func TestPOP3DropPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("--user needs the test to run as root")
	}
	dir, err := os.MkdirTemp("", "letterbox-pop3-user-")
	must(t, err)
	defer os.RemoveAll(dir)
	must(t, os.Chmod(dir, 0o755))
	md := filepath.Join(dir, "Maildir")
	for _, sub := range []string{"new", "cur", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(md, sub), 0o700))
	}
	must(t, os.WriteFile(filepath.Join(md, "new", "1700000001.M1P1Q1.host"), []byte(pop3Msg("one", "x\n")), 0o600))
	users := filepath.Join(dir, "users")
	must(t, os.WriteFile(users, []byte("alice@example.test:{PLAIN}alice pw::::::mail=maildir:"+md+"\n"), 0o644))
	out, err := exec.Command("chown", "-R", "nobody", md).CombinedOutput()
	if err != nil {
		t.Fatalf("chown nobody: %v %s", err, out)
	}
	addr := freeAddr(t, "127.0.0.1")
	c := exec.Command(bin(t, "pop3d"), "--listen", addr, "--user", "nobody", "--users", users,
		"--hostname", "mx.example.test", "--auth-failure-delay", "10ms")
	c.Env = append(os.Environ(), "LETTERBOX_CONFIG=")
	var errb syncBuffer
	c.Stderr = &errb
	must(t, c.Start())
	defer func() { c.Process.Kill(); c.Wait() }()
	waitListening(t, addr)
	d := pop3Login(t, addr, "alice@example.test", "alice pw")
	d.send("STAT")
	pop3Expect(d, "+OK 1 ")
	d.send("QUIT")
	pop3Expect(d, "+OK")
	// Serving means the drop is done (it comes after binding, which is all
	// waitListening sees).
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Process.Pid))
	must(t, err)
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "Uid:") && strings.Contains(l, "\t0\t") {
			t.Fatalf("still root after --user: %s", l)
		}
	}
	// The maildrop lock file was created by nobody.
	fi, err := os.Stat(filepath.Join(md, "letterbox-pop3.lock"))
	must(t, err)
	if fi.Sys().(*syscall.Stat_t).Uid == 0 {
		t.Fatal("lock file created as root")
	}
}

// QUIT commits and releases the maildrop before its +OK: a client that
// reconnects the moment it reads it (a poller, a second fetch) never
// finds the maildrop locked. Maildir and mbox, served by pop3d itself and
// by a session process as the owner.
func TestPOP3ReconnectAfterQuit(t *testing.T) {
	alice := privseptest.NewUser(t)
	for _, served := range []string{"pop3d", "session process"} {
		for _, kind := range []string{"maildir", "mbox"} {
			t.Run(served+"/"+kind, func(t *testing.T) {
				var s *server
				user, pw := "alice@example.test", "alice pw"
				if served == "pop3d" {
					pe := newPOP3Env(t)
					if kind == "mbox" {
						user, pw = "bob@example.test", "bobpw"
						must(t, os.WriteFile(pe.Mbox, []byte(mboxRecord(pop3Msg("one", "x\n"))), 0o600))
					} else {
						pe.putMaildir("new", "1700000001.M1P1Q1.host", pop3Msg("one", "x\n"))
					}
					s = pe.start("pop3d", "")
				} else {
					o := newOwnerEnv(t)
					pw = "pw"
					if kind == "mbox" {
						o.add(user, alice, "mbox:~/mbox")
						mb := alice.Path("mbox")
						must(t, os.WriteFile(mb, []byte(mboxRecord(pop3Msg("one", "x\n"))), 0o600))
						alice.Chown(t, mb)
					} else {
						o.add(user, alice, "")
						userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": pop3Msg("one", "x\n")})
					}
					s = o.start("pop3d", "")
				}
				d := pop3Login(t, s.Addr, user, pw)
				for i := 0; i < 50; i++ {
					d.send("RETR 1")
					pop3Expect(d, "+OK")
					pop3Multi(d)
					d.send("QUIT")
					pop3Expect(d, "+OK")
					d = dial(t, s.Addr)
					pop3Expect(d, "+OK")
					d.send("USER " + user)
					pop3Expect(d, "+OK")
					d.send("PASS " + pw)
					if l := d.line(); !strings.HasPrefix(l, "+OK") {
						t.Fatalf("reconnect %d right after QUIT's +OK: %q", i, l)
					}
				}
			})
		}
	}
}
