//go:build interop

package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"letterbox/pkg/mailstore"
)

// imapd's storage and Dovecot on one Maildir, in turn and at once. Our
// side runs in a child process (this test binary again, as the Maildir's
// owner, as imapd sessions do) that executes commands from its stdin, one
// JSON array a line, and answers each with one JSON line.
const storeChildEnv = "LETTERBOX_MAILSTORE_CHILD"

func init() {
	if root := os.Getenv(storeChildEnv); root != "" {
		storeChild(root)
		os.Exit(0)
	}
}

type storeReply struct {
	Err  string      `json:"err,omitempty"`
	UID  uint32      `json:"uid,omitempty"`
	UIDs []uint32    `json:"uids,omitempty"`
	Msgs []storeMsg  `json:"msgs,omitempty"`
	Info []storeInfo `json:"info,omitempty"`
	UV   uint32      `json:"uidvalidity,omitempty"`
	Next uint32      `json:"uidnext,omitempty"`
}

type storeMsg struct {
	Mailbox string   `json:"mailbox"`
	UID     uint32   `json:"uid"`
	Flags   []string `json:"flags"`
	Subject string   `json:"subject"`
	Size    int64    `json:"size"`
}

type storeInfo struct {
	Name       string `json:"name"`
	Use        string `json:"use,omitempty"`
	Subscribed bool   `json:"subscribed,omitempty"`
	NonExist   bool   `json:"nonexistent,omitempty"`
}

func storeChild(root string) {
	s, err := mailstore.Open(mailstore.Options{Root: root})
	out := json.NewEncoder(os.Stdout)
	if err != nil {
		out.Encode(storeReply{Err: err.Error()})
		return
	}
	defer s.Close()
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var cmd []string
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil || len(cmd) == 0 {
			out.Encode(storeReply{Err: fmt.Sprintf("bad command %q", sc.Text())})
			continue
		}
		out.Encode(storeRun(s, cmd))
	}
}

func parseUIDs(s string) []uint32 {
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.ParseUint(f, 10, 32); err == nil {
			out = append(out, uint32(n))
		}
	}
	return out
}

func storeRun(s *mailstore.Store, cmd []string) storeReply {
	fail := func(err error) storeReply { return storeReply{Err: err.Error()} }
	switch cmd[0] {
	case "ensure":
		if err := s.EnsureSpecialUse(); err != nil {
			return fail(err)
		}
	case "create": // name [use]
		use := ""
		if len(cmd) > 2 {
			use = cmd[2]
		}
		if err := s.Create(cmd[1], use); err != nil {
			return fail(err)
		}
	case "subscribe":
		if err := s.SetSubscribed(cmd[1], true); err != nil {
			return fail(err)
		}
	case "append": // mailbox subject flags...
		r, err := s.Append(cmd[1], cmd[3:], time.Time{}, strings.NewReader("From: a@example.org\nSubject: "+cmd[2]+"\n\nbody of "+cmd[2]+"\n"))
		if err != nil {
			return fail(err)
		}
		return storeReply{UID: r.UID, UV: r.UIDValidity}
	case "store", "copy", "move", "expunge": // mailbox uids arg...
		v, err := s.Select(cmd[1], false)
		if err != nil {
			return fail(err)
		}
		defer v.Close()
		if _, err := v.Sync(); err != nil {
			return fail(err)
		}
		uids := parseUIDs(cmd[2])
		switch cmd[0] {
		case "store":
			_, _, err = v.Store(uids, mailstore.StoreAdd, cmd[3:], 0)
		case "copy", "move":
			var r mailstore.CopyResult
			if cmd[0] == "copy" {
				r, err = v.Copy(uids, cmd[3])
			} else {
				r, err = v.Move(uids, cmd[3])
			}
			if err == nil {
				return storeReply{UIDs: r.DstUIDs, UV: r.UIDValidity}
			}
		case "expunge":
			var gone []uint32
			gone, err = v.Expunge(uids)
			if err == nil {
				return storeReply{UIDs: gone}
			}
		}
		if err != nil {
			return fail(err)
		}
	case "dump": // mailbox
		v, err := s.Select(cmd[1], false)
		if err != nil {
			return fail(err)
		}
		defer v.Close()
		snap, err := v.Sync()
		if err != nil {
			return fail(err)
		}
		r := storeReply{UV: snap.UIDValidity, Next: snap.UIDNext}
		for _, m := range snap.Msgs {
			f, err := v.Open(m.UID)
			if err != nil {
				return fail(err)
			}
			b, _ := io.ReadAll(f)
			f.Close()
			subj := ""
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "Subject: ") {
					subj = strings.TrimSpace(l[9:])
					break
				}
			}
			r.Msgs = append(r.Msgs, storeMsg{Mailbox: cmd[1], UID: m.UID, Flags: m.Flags, Subject: subj, Size: m.Size})
		}
		return r
	case "list":
		l, err := s.List()
		if err != nil {
			return fail(err)
		}
		var r storeReply
		for _, m := range l {
			r.Info = append(r.Info, storeInfo{m.Name, m.SpecialUse, m.Subscribed, m.NonExistent})
		}
		return r
	default:
		return storeReply{Err: "unknown command " + cmd[0]}
	}
	return storeReply{}
}

// storeSide is the child process: our storage, as the Maildir's owner.
type storeSide struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *json.Decoder
	mu  sync.Mutex
}

func startStoreSide(t *testing.T, dir string, as []string, md string) *storeSide {
	t.Helper()
	// The test binary may sit in a directory only we can enter: copy it
	// where the Maildir's owner can run it.
	self, err := os.Executable()
	must(t, err)
	exe := filepath.Join(dir, "store-side")
	if _, err := os.Stat(exe); err != nil {
		b, err := os.ReadFile(self)
		must(t, err)
		must(t, os.WriteFile(exe, b, 0o755))
	}
	argv := append(append([]string{}, as...), exe, "-test.run=^$")
	c := exec.Command(argv[0], argv[1:]...)
	c.Env = append(os.Environ(), storeChildEnv+"="+md)
	in, err := c.StdinPipe()
	must(t, err)
	out, err := c.StdoutPipe()
	must(t, err)
	c.Stderr = os.Stderr
	must(t, c.Start())
	s := &storeSide{t: t, cmd: c, in: in, out: json.NewDecoder(out)}
	t.Cleanup(s.stop)
	return s
}

func (s *storeSide) stop() {
	s.in.Close()
	s.cmd.Wait()
}

func (s *storeSide) do(args ...string) storeReply {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(args)
	if _, err := s.in.Write(append(b, '\n')); err != nil {
		s.t.Fatalf("store side: %v", err)
	}
	var r storeReply
	if err := s.out.Decode(&r); err != nil {
		s.t.Fatalf("store side: %v", err)
	}
	if r.Err != "" {
		s.t.Fatalf("store side %v: %s", args, r.Err)
	}
	return r
}

// dovecotSide runs doveadm and dovecot-lda on the Maildir as its owner.
type dovecotSide struct {
	t    *testing.T
	as   []string
	conf string
	md   string
	log  syncBuffer // what dovecot-lda and doveadm wrote, shown when the test fails
}

func newDovecotSide(t *testing.T) (*dovecotSide, string) {
	needPeer(t, "doveadm")
	if _, err := os.Stat("/usr/lib/dovecot/dovecot-lda"); err != nil {
		t.Fatal("dovecot-lda not installed (make interop installs dovecot-core)")
	}
	dir, as := deliverPeerDir(t)
	md := filepath.Join(dir, "Maildir")
	conf := filepath.Join(dir, "dovecot.conf")
	must(t, os.WriteFile(conf, []byte("base_dir = "+dir+"/run\nlog_path = /dev/stderr\nssl = no\nmail_location = maildir:"+md+"\n"), 0o644))
	must(t, os.MkdirAll(md, 0o700))
	giveAway(t, dir)
	d := &dovecotSide{t: t, as: as, conf: conf, md: md}
	t.Cleanup(func() {
		if t.Failed() {
			ul, _ := os.ReadFile(filepath.Join(md, "dovecot-uidlist"))
			t.Logf("Dovecot's output:\n%s\nINBOX's dovecot-uidlist:\n%s", d.log.String(), ul)
			if dump, err := exec.Command("doveadm", "dump", filepath.Join(md, "dovecot.index")).CombinedOutput(); err == nil || len(dump) > 0 {
				t.Logf("index dump:\n%s", dump)
			}
			if fi, err := os.Stat(filepath.Join(md, "dovecot-uidlist")); err == nil {
				t.Logf("uidlist now: size %d mtime %d", fi.Size(), fi.ModTime().UnixNano())
			}
		}
	})
	return d, dir
}

func (d *dovecotSide) adm(args ...string) string {
	d.t.Helper()
	out := runPeer(d.t, d.as, append([]string{"doveadm", "-c", d.conf}, args...)...)
	fmt.Fprintf(&d.log, "doveadm %s:\n%s", strings.Join(args, " "), out)
	return out
}

func (d *dovecotSide) lda(subject string) {
	d.t.Helper()
	argv := append(append([]string{}, d.as...), "/usr/lib/dovecot/dovecot-lda", "-c", d.conf, "-f", "b@example.org")
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin = strings.NewReader("From: b@example.org\nSubject: " + subject + "\n\nbody of " + subject + "\n")
	out, err := c.CombinedOutput()
	fmt.Fprintf(&d.log, "dovecot-lda %s:\n%s", subject, out)
	if err != nil {
		d.t.Fatalf("dovecot-lda: %v %s", err, out)
	}
}

// fetch returns what Dovecot reports of a mailbox: UID, flags (without
// \Recent) and subject of each message, its UIDVALIDITY and UIDNEXT.
func (d *dovecotSide) fetch(mailbox string) ([]storeMsg, uint32, uint32) {
	d.t.Helper()
	out := d.adm("-f", "tab", "fetch", "uid flags hdr.subject", "mailbox", mailbox, "all")
	var msgs []storeMsg
	for i, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		f := strings.Split(l, "\t")
		if i == 0 || len(f) != 3 {
			continue // the header line
		}
		n, _ := strconv.ParseUint(f[0], 10, 32)
		m := storeMsg{Mailbox: mailbox, UID: uint32(n), Subject: f[2]}
		for _, fl := range strings.Fields(f[1]) {
			if fl != `\Recent` {
				m.Flags = append(m.Flags, fl)
			}
		}
		msgs = append(msgs, m)
	}
	st := d.adm("-f", "flow", "mailbox", "status", "uidvalidity uidnext", mailbox)
	var uv, next uint64
	for _, f := range strings.Fields(st) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "uidvalidity":
			uv, _ = strconv.ParseUint(v, 10, 32)
		case "uidnext":
			next, _ = strconv.ParseUint(v, 10, 32)
		}
	}
	return msgs, uint32(uv), uint32(next)
}

func msgLines(ms []storeMsg) string {
	var lines []string
	for _, m := range ms {
		fl := append([]string(nil), m.Flags...)
		sort.Strings(fl)
		lines = append(lines, fmt.Sprintf("%d %s [%s]", m.UID, m.Subject, strings.Join(fl, " ")))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// sameAsDovecot compares every listed mailbox as both sides see it.
func sameAsDovecot(t *testing.T, ours *storeSide, dc *dovecotSide, mailboxes ...string) {
	t.Helper()
	for _, mb := range mailboxes {
		r := ours.do("dump", mb)
		theirs, uv, next := dc.fetch(mb)
		if r.UV != uv || r.Next != next {
			t.Errorf("%s: UIDVALIDITY %d UIDNEXT %d here, %d %d for Dovecot", mb, r.UV, r.Next, uv, next)
		}
		if a, b := msgLines(r.Msgs), msgLines(theirs); a != b {
			t.Errorf("%s differs.\nours:\n%s\nDovecot's:\n%s", mb, a, b)
		}
	}
}

// TestInteropMailstoreDovecotReadsOurs: a Maildir our storage wrote
// (folders with non-ASCII names, flags, keywords, copies, moves,
// expunges, subscriptions, special-use folders) is what Dovecot reports.
func TestInteropMailstoreDovecotReadsOurs(t *testing.T) {
	dc, dir := newDovecotSide(t)
	ours := startStoreSide(t, dir, dc.as, dc.md)
	ours.do("ensure")
	ours.do("create", "Ünïcode & more.sub")
	ours.do("create", "Projects", `\Archive`)
	ours.do("subscribe", "Ünïcode & more.sub")
	for i, fl := range [][]string{{`\Seen`, "$Label1"}, {`\Flagged`, "work", `\Deleted`}, nil, {`\Answered`, `\Draft`, "later"}, {"$Label1", "work"}} {
		ours.do(append([]string{"append", "INBOX", fmt.Sprintf("m%d", i+1)}, fl...)...)
	}
	ours.do("expunge", "INBOX", "")
	ours.do("copy", "INBOX", "1,4", "Sent")
	ours.do("move", "INBOX", "3", "Ünïcode & more.sub")
	ours.do("store", "INBOX", "5", `\Seen`, "extra")
	sameAsDovecot(t, ours, dc, "INBOX", "Sent", "Ünïcode & more.sub", "Trash")
	list := dc.adm("mailbox", "list")
	for _, want := range []string{"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive", "Projects", "Ünïcode & more", "Ünïcode & more.sub"} {
		if !strings.Contains("\n"+list, "\n"+want+"\n") {
			t.Errorf("Dovecot does not list %q:\n%s", want, list)
		}
	}
	subs := dc.adm("mailbox", "list", "-s")
	for _, want := range []string{"Sent", "Drafts", "Trash", "Junk", "Archive", "Ünïcode & more.sub"} {
		if !strings.Contains("\n"+subs, "\n"+want+"\n") {
			t.Errorf("Dovecot does not see %q subscribed:\n%s", want, subs)
		}
	}
}

// TestInteropMailstoreOursReadsDovecot: a Maildir Dovecot wrote
// (dovecot-lda deliveries, doveadm flags, keywords, copies, moves,
// expunges, folders) is what we report, and after we used it (new/ taken
// into cur/, more mail, flags) Dovecot still agrees: switching back and
// forth keeps every UID, flag, keyword and folder.
func TestInteropMailstoreOursReadsDovecot(t *testing.T) {
	dc, dir := newDovecotSide(t)
	for i := 1; i <= 6; i++ {
		dc.lda(fmt.Sprintf("d%d", i))
	}
	dc.adm("mailbox", "create", "-s", "Sent", "Work.Proj", "Ünïcode & more")
	dc.adm("flags", "add", `\Seen $Label1`, "mailbox", "INBOX", "uid", "1")
	dc.adm("flags", "add", `\Flagged work`, "mailbox", "INBOX", "uid", "2")
	dc.adm("flags", "add", `\Deleted`, "mailbox", "INBOX", "uid", "5")
	dc.adm("expunge", "mailbox", "INBOX", "uid", "5")
	dc.adm("copy", "Sent", "mailbox", "INBOX", "uid", "1:2")
	dc.adm("move", "Work.Proj", "mailbox", "INBOX", "uid", "6")
	ours := startStoreSide(t, dir, dc.as, dc.md)
	boxes := []string{"INBOX", "Sent", "Work.Proj", "Ünïcode & more"}
	sameAsDovecot(t, ours, dc, boxes...)
	// Our turn, then Dovecot's, then ours again.
	ours.do("append", "INBOX", "o1", `\Seen`, "work", "newkw")
	ours.do("store", "INBOX", "3", `\Answered`, "$Label1")
	ours.do("move", "Sent", "1", "Work.Proj")
	sameAsDovecot(t, ours, dc, boxes...)
	dc.lda("d7")
	dc.adm("flags", "add", `\Seen`, "mailbox", "INBOX", "all")
	dc.adm("flags", "remove", "work", "mailbox", "INBOX", "uid", "2")
	sameAsDovecot(t, ours, dc, boxes...)
	names := map[string]bool{}
	for _, i := range ours.do("list").Info {
		names[i.Name] = i.Subscribed
	}
	for _, n := range []string{"Sent", "Work.Proj", "Ünïcode & more"} {
		if sub, ok := names[n]; !ok || !sub {
			t.Errorf("%q listed %v, subscribed %v", n, ok, sub)
		}
	}
}

// TestInteropMailstoreConcurrent: Dovecot (dovecot-lda delivering,
// doveadm numbering and flagging) and our storage (APPEND, SELECT) on one
// Maildir at the same time: every message ends with one UID both agree
// on, none twice, and the UIDs we answered APPEND with are Dovecot's too.
func TestInteropMailstoreConcurrent(t *testing.T) {
	dc, dir := newDovecotSide(t)
	dc.lda("start") // Dovecot makes the uidlist
	ours := startStoreSide(t, dir, dc.as, dc.md)
	const n = 30
	appended := map[string]uint32{}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			r := ours.do("append", "INBOX", fmt.Sprintf("ours-%d", i), "$Label1")
			appended[fmt.Sprintf("ours-%d", i)] = r.UID
			if i%5 == 0 {
				ours.do("store", "INBOX", strconv.Itoa(i+1), `\Flagged`)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			dc.lda(fmt.Sprintf("theirs-%d", i))
			if i%5 == 0 {
				dc.adm("mailbox", "status", "messages", "INBOX")
			}
		}
	}()
	wg.Wait()
	theirs, _, _ := dc.fetch("INBOX")
	sameAsDovecot(t, ours, dc, "INBOX")
	seen := map[string]uint32{}
	uids := map[uint32]bool{}
	for _, m := range theirs {
		if _, dup := seen[m.Subject]; dup {
			t.Errorf("%s twice", m.Subject)
		}
		if uids[m.UID] {
			t.Errorf("UID %d twice", m.UID)
		}
		seen[m.Subject], uids[m.UID] = m.UID, true
	}
	if len(theirs) != 2*n+1 {
		t.Errorf("Dovecot sees %d messages, want %d", len(theirs), 2*n+1)
	}
	for subj, uid := range appended {
		if seen[subj] != uid {
			t.Errorf("%s: APPENDUID %d, Dovecot says %d", subj, uid, seen[subj])
		}
	}
}
