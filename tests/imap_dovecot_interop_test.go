//go:build interop

package tests

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Differential test against Dovecot: the same scripted session runs
// against Dovecot's imap and against imapd, each on its own copy of one
// Maildir, and the untagged responses (and the tagged status and code)
// are compared. Differences we keep on purpose are listed in
// dovecotDifferences, each with its reason; anything else fails.

// dovecotScript: one command per entry; "APPEND" entries carry their
// literal. Message numbers refer to diffMaildir's messages.
var dovecotScript = []string{
	`LIST "" "*"`,
	`LIST "" "%"`,
	`LSUB "" "*"`,
	`LIST (SPECIAL-USE) "" "*"`,
	`LIST "" ""`,
	`NAMESPACE`,
	`STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)`,
	`SELECT INBOX`,
	`FETCH 1:* (FLAGS)`,
	`FETCH 1:* (UID RFC822.SIZE INTERNALDATE)`,
	`FETCH 1:* (ENVELOPE)`,
	`FETCH 1:* (BODYSTRUCTURE)`,
	`FETCH 1:* (BODY)`,
	`FETCH 1:* (BODY.PEEK[HEADER])`,
	`FETCH 1:* (BODY.PEEK[TEXT])`,
	`FETCH 1:* (BODY.PEEK[1])`,
	`FETCH 1:* (BODY.PEEK[1.MIME])`,
	`FETCH 1:* (BODY.PEEK[2])`,
	`FETCH 1:* (BODY.PEEK[2.MIME])`,
	`FETCH 1:* (BODY.PEEK[1.1])`,
	`FETCH 1:* (BODY.PEEK[2.HEADER])`,
	`FETCH 1:* (BODY.PEEK[3.TEXT])`,
	`FETCH 1:* (BODY.PEEK[HEADER.FIELDS (From Subject Date)])`,
	`FETCH 1:* (BODY.PEEK[HEADER.FIELDS.NOT (Received Subject)])`,
	`FETCH 1:* (BODY.PEEK[]<0.120>)`,
	`FETCH 1:* (BODY.PEEK[TEXT]<5.20>)`,
	`FETCH 1:* (RFC822.HEADER)`,
	`UID FETCH 1:* (FLAGS)`,
	`SEARCH ALL`,
	`SEARCH FROM alice`,
	`SEARCH FROM "example.com"`,
	`SEARCH TO bob`,
	`SEARCH CC carol`,
	`SEARCH SUBJECT "re:"`,
	`SEARCH SUBJECT Köln`,
	`SEARCH CHARSET UTF-8 SUBJECT Köln`,
	`SEARCH BODY attached`,
	`SEARCH TEXT "the original"`,
	`SEARCH HEADER Message-ID thread`,
	`SEARCH HEADER X-Nothing ""`,
	`SEARCH LARGER 1000`,
	`SEARCH SMALLER 300`,
	`SEARCH SENTBEFORE 1-Jan-2020`,
	`SEARCH SENTSINCE 1-Jan-2024`,
	`SEARCH SENTON 5-Mar-2024`,
	`SEARCH SINCE 1-Jan-2024`,
	`SEARCH BEFORE 1-Jan-2024`,
	`SEARCH ON 2-Feb-2024`,
	`SEARCH NOT SUBJECT re`,
	`SEARCH OR FROM alice TO alice`,
	`SEARCH UID 2:4`,
	`SEARCH 3:*`,
	`SEARCH NEW`,
	`SEARCH UNSEEN`,
	`SEARCH RETURN (MIN MAX COUNT) ALL`,
	`UID SEARCH RETURN (ALL) SUBJECT a`,
	`SORT (SUBJECT) UTF-8 ALL`,
	`SORT (DATE) UTF-8 ALL`,
	`SORT (REVERSE SIZE) UTF-8 ALL`,
	`SORT (FROM) UTF-8 ALL`,
	`SORT (TO) UTF-8 ALL`,
	`SORT (CC ARRIVAL) UTF-8 ALL`,
	`SORT (DISPLAYFROM) UTF-8 ALL`,
	`UID SORT (REVERSE ARRIVAL) UTF-8 NOT DELETED`,
	`THREAD REFERENCES UTF-8 ALL`,
	`THREAD ORDEREDSUBJECT UTF-8 ALL`,
	`STORE 1 +FLAGS (\Flagged $Label1)`,
	`STORE 2 FLAGS (\Seen \Answered)`,
	`STORE 1 -FLAGS ($Label1)`,
	`STORE 3 +FLAGS.SILENT (\Draft)`,
	`FETCH 1:3 (FLAGS)`,
	`SEARCH KEYWORD $Label1`,
	`SEARCH FLAGGED`,
	`SEARCH ANSWERED SEEN`,
	`FETCH 4 (BODY[HEADER.FIELDS (Subject)])`,
	`FETCH 4 (FLAGS)`,
	`COPY 1:2 Archive`,
	`STATUS Archive (MESSAGES UNSEEN)`,
	`CREATE Foo`,
	`CREATE Foo.Bar`,
	`LIST "" "Foo*"`,
	`RENAME Foo.Bar Foo.Baz`,
	`LIST "" "Foo*"`,
	`SUBSCRIBE Foo.Baz`,
	`LSUB "" "F*"`,
	`UNSUBSCRIBE Foo.Baz`,
	`DELETE Foo.Baz`,
	`DELETE Foo`,
	`LIST "" "Foo*"`,
	`CREATE Par.Child`,
	`LIST "" "Par*"`,
	`STORE 2 +FLAGS (\Deleted)`,
	`EXPUNGE`,
	`FETCH 1:* (UID FLAGS)`,
	"APPEND Drafts (\\Draft) {36}\r\nSubject: draft\r\nFrom: a@b.c\r\n\r\nhi\r\n",
	`STATUS Drafts (MESSAGES UIDNEXT)`,
	`EXAMINE Archive`,
	`FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])`,
	`SELECT INBOX`,
	`MOVE 1 Trash`,
	`UID FETCH 1:* (FLAGS)`,
	`FETCH 99 (FLAGS)`,
	`FETCH 0 (FLAGS)`,
	`SELECT Nonexistent`,
	`SELECT INBOX`,
	`CREATE INBOX`,
	`CREATE Sent`,
	`DELETE INBOX`,
	`STATUS Nonexistent (MESSAGES)`,
	`COPY 1 Nonexistent`,
	`BOGUS`,
	`UNSELECT`,
	`CHECK`,
}

// diffMessages are the test messages: pkg/mime's torture corpus and some
// for addresses, threads and dates.
func diffMessages(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, m := range []string{
		"From: Alice Example <alice@example.com>\nTo: bob@example.org, \"Last, First\" <lf@example.org>\nCc: carol@example.net\n" +
			"Subject: thread start\nDate: Tue, 5 Mar 2024 10:00:00 +0100\nMessage-ID: <thread-1@example.com>\n\nfirst in the thread\n",
		"From: bob@example.org\nTo: alice@example.com\nSubject: Re: thread start\nDate: Wed, 6 Mar 2024 09:00:00 +0000\n" +
			"Message-ID: <thread-2@example.org>\nIn-Reply-To: <thread-1@example.com>\nReferences: <thread-1@example.com>\n\nreply\n",
		"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.de>\nTo: undisclosed-recipients:;\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\n" +
			"Date: Sat, 3 Feb 2018 08:00:00 +0100\nMessage-ID: <koeln@example.de>\n\nnaïve body\n",
		"From: carol@example.net (Carol C)\nTo: group: alice@example.com, bob@example.org;\nSubject: [list] Fwd: a plan (fwd)\n" +
			"Date: Fri, 5 Jan 2024 12:00:00 -0500\nMessage-ID: <plan@example.net>\nReferences: <thread-1@example.com> <thread-2@example.org>\n\n" + strings.Repeat("long line of text for size\n", 60),
		"Subject: no from, no date\n\nbare\n",
	} {
		out = append(out, m)
	}
	files, err := filepath.Glob("../testdata/mime/*.eml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(t, err)
		out = append(out, string(b))
	}
	return out
}

// diffMaildir writes the messages into a Maildir's new/ with fixed names
// and mtimes (the internal dates), and the special-use folders.
func diffMaildir(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"new", "cur", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(dir, sub), 0o700))
	}
	base := time.Date(2024, 2, 1, 12, 0, 0, 0, time.UTC)
	for i, m := range diffMessages(t) {
		name := fmt.Sprintf("%d.M%dP1.diff", base.Unix()+int64(i), i)
		if i%2 == 0 {
			// The size with CRLF line ends in the name, as Dovecot's
			// deliveries carry it: imapd then reads such a file's date
			// only when asked (INTERNALDATE, SEARCH BEFORE/SINCE, SORT),
			// a path the other half of the messages does not take.
			name += fmt.Sprintf(",W=%d", len(m)+strings.Count(m, "\n")-strings.Count(m, "\r\n"))
		}
		p := filepath.Join(dir, "new", name)
		must(t, os.WriteFile(p, []byte(m), 0o600))
		d := base.Add(time.Duration(i) * 24 * time.Hour)
		must(t, os.Chtimes(p, d, d))
	}
	for _, f := range []string{"Sent", "Drafts", "Trash", "Junk", "Archive"} {
		for _, sub := range []string{"new", "cur", "tmp"} {
			must(t, os.MkdirAll(filepath.Join(dir, "."+f, sub), 0o700))
		}
	}
	must(t, os.WriteFile(filepath.Join(dir, "subscriptions"), []byte("Sent\nDrafts\nTrash\nJunk\nArchive\n"), 0o600))
}

// response is one command's outcome, normalized.
type response struct {
	cmd      string
	untagged []string
	tagged   string
}

// runScript runs dovecotScript in one session on the server started by
// cmd (stdin/stdout), after login when login is set.
func runScript(t *testing.T, cmd *exec.Cmd, login string) []response {
	return runCommands(t, cmd, login, dovecotScript)
}

// stateScript lists what both servers must agree on when they open one
// Maildir: folders, subscriptions, and each folder's UIDs, flags and
// keywords.
var stateScript = []string{`LIST "" "*"`, `LSUB "" "*"`,
	`EXAMINE INBOX`, `UID FETCH 1:* (FLAGS)`, `EXAMINE Archive`, `UID FETCH 1:* (FLAGS)`,
	`EXAMINE Drafts`, `UID FETCH 1:* (FLAGS)`, `EXAMINE Trash`, `UID FETCH 1:* (FLAGS)`,
	`STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)`, `STATUS Archive (MESSAGES UIDNEXT UIDVALIDITY)`}

func runCommands(t *testing.T, cmd *exec.Cmd, login string, script []string) []response {
	t.Helper()
	in, err := cmd.StdinPipe()
	must(t, err)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	defer func() { in.Close(); cmd.Process.Kill(); cmd.Wait() }()
	r := bufio.NewReader(out)
	c := &imapConn{t: t, r: r, conn: nil}
	readLine := func() string { return c.line() }
	readLine() // greeting
	n := 0
	do := func(command string) response {
		n++
		tag := fmt.Sprintf("d%d", n)
		if strings.HasPrefix(command, "APPEND") {
			head, lit, _ := strings.Cut(command, "\r\n")
			io.WriteString(in, tag+" "+head+"\r\n")
			if l := readLine(); !strings.HasPrefix(l, "+") {
				return response{cmd: command, tagged: l}
			}
			io.WriteString(in, lit+"\r\n")
		} else {
			io.WriteString(in, tag+" "+command+"\r\n")
		}
		res := response{cmd: command}
		for {
			l := readLine()
			if strings.HasPrefix(l, tag+" ") {
				res.tagged = normalize(strings.TrimPrefix(l, tag+" "), true)
				return res
			}
			res.untagged = append(res.untagged, normalize(l, false))
		}
	}
	if login != "" {
		if r := do(login); !strings.HasPrefix(r.tagged, "OK") {
			t.Fatalf("login: %q", r.tagged)
		}
		n = 0
	}
	var all []response
	for _, command := range script {
		all = append(all, do(command))
	}
	return all
}

// keepValidity: compare UIDVALIDITY values (one Maildir for both servers).
var keepValidity bool

var (
	reText      = regexp.MustCompile(`^(\* )?(OK|NO|BAD|BYE)( \[[^\]]*\])?( .*)?$`)
	reValidity  = regexp.MustCompile(`\[(UIDVALIDITY|APPENDUID|COPYUID) \d+`)
	reCodeValue = regexp.MustCompile(`\[(HIGHESTMODSEQ|UIDNEXT) \d+\]`)
)

// normalize drops what is free text in IMAP (texts after OK, NO, BAD) and
// values that differ by design (UIDVALIDITY, made from the time).
func normalize(l string, tagged bool) string {
	if !keepValidity {
		l = reValidity.ReplaceAllString(l, "[$1 V")
	}
	if m := reText.FindStringSubmatch(l); m != nil {
		l = m[1] + m[2] + m[3]
	}
	return l
}

// dovecotDifferences are the differences we keep, each with its reason:
// a response to one of cmds (all commands when nil), for one of msgs (a
// FETCH response's message number; any response when nil), differs.
// HIGHESTMODSEQ is taken out of our SELECT responses before comparing: we
// send it at every SELECT (RFC 7162 § 3.1.2.1: a server that keeps
// MODSEQs MUST), Dovecot only once CONDSTORE is enabled.
var dovecotDifferences = []struct {
	why  string
	cmds []string
	msgs []int
}{
	{"a part that ends with a nested multipart's closing boundary (or a message/rfc822 behind a transfer " +
		"encoding) ends, for us, before the line break that precedes the next boundary, which belongs to that " +
		"boundary (RFC 2046 § 5.1.1); Dovecot counts that line break in the part (2 octets, 1 line more)",
		[]string{"FETCH 1:* (BODYSTRUCTURE)", "FETCH 1:* (BODY)", "FETCH 1:* (BODY.PEEK[1])", "FETCH 1:* (BODY.PEEK[2])",
			"FETCH 1:* (BODY.PEEK[1.1])", "FETCH 1:* (BODY.PEEK[3.TEXT])"}, []int{8, 10, 13}},
	{"a part whose first line is no header field and that has no blank line: we read that line as its body " +
		"(pkg/mime keeps the text), Dovecot as a broken header and the body as empty",
		[]string{"FETCH 1:* (BODYSTRUCTURE)", "FETCH 1:* (BODY)", "FETCH 1:* (BODY.PEEK[2])", "FETCH 1:* (BODY.PEEK[2.MIME])"}, []int{11}},
	{"a multipart whose boundary never comes: we keep its text as part 1 (pkg/mime's rescue), Dovecot gives an empty part",
		[]string{"FETCH 1:* (BODYSTRUCTURE)", "FETCH 1:* (BODY)", "FETCH 1:* (BODY.PEEK[1])", "FETCH 1:* (BODY.PEEK[1.1])"}, []int{14}},
	{"SEARCH compares case-folded text; Dovecot compares decomposed text (i;unicode-casemap): for it \"re\" is in \"Réunion\"",
		[]string{"SEARCH NOT SUBJECT re"}, nil},
	{"8-bit text in an unquoted search string: we read it as UTF-8, Dovecot answers BAD",
		[]string{"SEARCH SUBJECT Köln", "SEARCH CHARSET UTF-8 SUBJECT Köln"}, nil},
	{"FLAGS and PERMANENTFLAGS list the keywords messages carry (the store's snapshot); Dovecot also those " +
		"dovecot-keywords still defines after the last message lost them",
		[]string{"SELECT INBOX", "EXAMINE Archive"}, nil},
	{"CREATE a.b also creates a, selectable (RFC 9051 § 6.3.4: the server SHOULD create the superior names); " +
		"Dovecot's Maildir++ leaves a as \\Noselect",
		[]string{`LIST "" "Par*"`}, nil},
}

// explained says whether a difference is a documented one.
func explained(cmd string, msg int) bool {
	for _, d := range dovecotDifferences {
		cmdOK := d.cmds == nil
		for _, c := range d.cmds {
			cmdOK = cmdOK || c == cmd
		}
		msgOK := d.msgs == nil
		for _, m := range d.msgs {
			msgOK = msgOK || m == msg
		}
		if cmdOK && msgOK {
			return true
		}
	}
	return false
}

var reFetchNum = regexp.MustCompile(`^\* (\d+) FETCH `)

// taggedExplained: we add RFC 5530 response codes where Dovecot 2.3 has
// none (NO [NONEXISTENT], NO [CANNOT]); the status is the same.
func taggedExplained(cmd, dv, lb string) bool {
	if dv == lb {
		return true
	}
	if explained(cmd, 0) {
		return true
	}
	return !strings.Contains(dv, "[") && strings.HasPrefix(lb, dv+" [")
}

func withoutHighestModSeq(ls []string) []string {
	var out []string
	for _, l := range ls {
		if !strings.HasPrefix(l, "* OK [HIGHESTMODSEQ") {
			out = append(out, l)
		}
	}
	return out
}

// TestInteropIMAPDovecotDifferential: see the top of the file. Then each
// server opens the Maildir the other used and reports the same UIDs,
// flags, keywords and folders.
func TestInteropIMAPDovecotDifferential(t *testing.T) {
	needPeer(t, "/usr/lib/dovecot/imap", "setpriv")
	dir := pop3OpenDir(t)
	dvMD, lbMD := filepath.Join(dir, "dovecot"), filepath.Join(dir, "letterbox")
	diffMaildir(t, dvMD)
	diffMaildir(t, lbMD)
	chownNobody(t, dir)
	dvConf := filepath.Join(dir, "dovecot.conf")
	dovecotConf := func(md string) string {
		return fmt.Sprintf(`mail_location = maildir:%s
ssl = no
log_path = /dev/null
namespace inbox {
  inbox = yes
  separator = .
  mailbox Sent {
    special_use = \Sent
  }
  mailbox Drafts {
    special_use = \Drafts
  }
  mailbox Trash {
    special_use = \Trash
  }
  mailbox Junk {
    special_use = \Junk
  }
  mailbox Archive {
    special_use = \Archive
  }
}
`, md)
	}
	must(t, os.WriteFile(dvConf, []byte(dovecotConf(dvMD)), 0o644))
	asNobody := []string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}
	dovecot := func(conf string) *exec.Cmd {
		return exec.Command(asNobody[0], append(asNobody[1:], "env", "-i", "USER=nobody", "HOME="+dir, "TZ=UTC",
			"/usr/lib/dovecot/imap", "-c", conf)...)
	}
	users, conf := filepath.Join(dir, "users"), filepath.Join(dir, "letterbox.conf")
	must(t, os.WriteFile(users, []byte("alice@example.test:{PLAIN}alice pw::::::mail=maildir:"+lbMD+"\n"), 0o644))
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf("hostname = \"mx.example.test\"\nusers = %q\nlog-level = \"warn\"\n", users)), 0o644))
	must(t, os.Chmod(filepath.Dir(bin(t, "imapd")), 0o755))
	imapd := func() *exec.Cmd {
		c := exec.Command(asNobody[0], append(asNobody[1:], "env", "TZ=UTC", "TCPREMOTEIP=127.0.0.1",
			"LETTERBOX_CONFIG="+conf, bin(t, "imapd"))...)
		c.Stderr = os.Stderr
		return c
	}
	dv := runScript(t, dovecot(dvConf), "")
	lb := runScript(t, imapd(), `LOGIN alice@example.test "alice pw"`)
	var unexplained []string
	for i := range dv {
		d, l := dv[i], lb[i]
		du, lu := d.untagged, l.untagged
		switch {
		case strings.HasPrefix(d.cmd, "SELECT") || strings.HasPrefix(d.cmd, "EXAMINE"):
			du, lu = sortedCopyStrings(du), sortedCopyStrings(withoutHighestModSeq(lu))
		case strings.HasPrefix(d.cmd, "LIST") || strings.HasPrefix(d.cmd, "LSUB"):
			// The order of LIST responses is free; Dovecot's is the
			// directory's.
			du, lu = sortedCopyStrings(du), sortedCopyStrings(lu)
		}
		same := taggedExplained(d.cmd, d.tagged, l.tagged)
		n := len(du)
		if len(lu) > n {
			n = len(lu)
		}
		for k := 0; k < n && same; k++ {
			var dl, ll string
			if k < len(du) {
				dl = du[k]
			}
			if k < len(lu) {
				ll = lu[k]
			}
			if dl == ll {
				continue
			}
			msg := 0
			if m := reFetchNum.FindStringSubmatch(dl); m != nil {
				msg, _ = strconv.Atoi(m[1])
			}
			same = explained(d.cmd, msg)
		}
		if !same {
			unexplained = append(unexplained, d.cmd+"\n"+lineDiff(d.tagged, l.tagged, du, lu))
		}
	}
	if len(unexplained) > 0 {
		t.Errorf("%d commands answered differently:\n%s", len(unexplained), strings.Join(unexplained, "\n"))
	}
	// Each server on the Maildir the other used: the same folders, UIDs,
	// UIDVALIDITY, flags and keywords, both ways.
	keepValidity = true
	defer func() { keepValidity = false }()
	for _, md := range []string{lbMD, dvMD} {
		conf := filepath.Join(dir, "dovecot-"+filepath.Base(md)+".conf")
		must(t, os.WriteFile(conf, []byte(dovecotConf(md)), 0o644))
		must(t, os.WriteFile(users, []byte("alice@example.test:{PLAIN}alice pw::::::mail=maildir:"+md+"\n"), 0o644))
		for round := 0; round < 2; round++ { // the second round: after the other wrote its files
			dvs := runCommands(t, dovecot(conf), "", stateScript)
			lbs := runCommands(t, imapd(), `LOGIN alice@example.test "alice pw"`, stateScript)
			for i := range dvs {
				// \Recent and \Marked are each server's own bookkeeping
				// (Dovecot's index, our cache), not the Maildir's: they are
				// not compared here.
				du, lu := withoutRecent(dvs[i].untagged), withoutRecent(lbs[i].untagged)
				if strings.HasPrefix(dvs[i].cmd, "L") || strings.HasPrefix(dvs[i].cmd, "EXAMINE") {
					du, lu = sortedCopyStrings(du), sortedCopyStrings(withoutHighestModSeq(lu))
				}
				if strings.HasPrefix(dvs[i].cmd, "EXAMINE") {
					du, lu = keepCodes(du, "UIDVALIDITY", "UIDNEXT", "EXISTS"), keepCodes(lu, "UIDVALIDITY", "UIDNEXT", "EXISTS")
				}
				if strings.Join(du, "\n") != strings.Join(lu, "\n") || !taggedExplained(dvs[i].cmd, dvs[i].tagged, lbs[i].tagged) {
					t.Errorf("on the Maildir %s used, round %d, %s:\n%s", filepath.Base(md), round, dvs[i].cmd,
						lineDiff(dvs[i].tagged, lbs[i].tagged, du, lu))
				}
			}
		}
	}
}

func withoutRecent(ls []string) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		l = strings.ReplaceAll(strings.ReplaceAll(l, ` \Recent`, ""), `(\Recent)`, "()")
		out[i] = strings.ReplaceAll(l, ` \Marked`, "")
	}
	return out
}

// keepCodes keeps the responses with one of the codes or words.
func keepCodes(ls []string, words ...string) []string {
	var out []string
	for _, l := range ls {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// lineDiff shows the responses that differ, pair by pair.
func lineDiff(dt, lt string, du, lu []string) string {
	var b strings.Builder
	if dt != lt {
		fmt.Fprintf(&b, "  tagged: dovecot %q, letterbox %q\n", dt, lt)
	}
	n := len(du)
	if len(lu) > n {
		n = len(lu)
	}
	for i := 0; i < n; i++ {
		var d, l string
		if i < len(du) {
			d = du[i]
		}
		if i < len(lu) {
			l = lu[i]
		}
		if d != l {
			// From a little before the first difference.
			k := 0
			for k < len(d) && k < len(l) && d[k] == l[k] {
				k++
			}
			from := k - 60
			if from < 0 {
				from = 0
			}
			cut := func(s string) string {
				if from > len(s) {
					return ""
				}
				s = s[from:]
				if len(s) > 240 {
					s = s[:240] + "…"
				}
				return s
			}
			fmt.Fprintf(&b, "  dovecot:   %s%q\n  letterbox: %s%q\n", d[:min(len(d), 12)], cut(d), l[:min(len(l), 12)], cut(l))
		}
	}
	return b.String()
}

func sortedCopyStrings(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

// chownNobody gives a tree to nobody (Dovecot refuses to serve root's mail).
func chownNobody(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("chown", "-R", "nobody:nogroup", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
}
