package mailstore

import (
	"bufio"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash tests run this test binary again as a helper that works on a
// Maildir in a loop and prints what each operation was acknowledged with
// (as imapd would answer OK); the test kills it with SIGKILL at random
// moments, then opens the Maildir as a new process would and checks that
// nothing acknowledged is lost, nothing is shown twice, the uidlist parses
// and UIDs never went back. It counts the kills that caught a write in
// progress (a dot-lock or a temporary file left behind) and fails if none
// did.
const crashEnv = "LETTERBOX_MAILSTORE_CRASH"

func TestMain(m *testing.M) {
	if v := os.Getenv(crashEnv); v != "" {
		mode, root, _ := strings.Cut(v, ":")
		crashHelper(mode, root)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// msgID is the identity written into each test message.
func msgID(b []byte) string {
	s := string(b)
	if i := strings.Index(s, "X-Id: "); i >= 0 {
		s = s[i+6:]
		if j := strings.IndexByte(s, '\n'); j >= 0 {
			return s[:j]
		}
	}
	return ""
}

func crashMessage(id string, size int) string {
	return "X-Id: " + id + "\nSubject: crash test\n\n" + strings.Repeat("crash test body line\n", size/21)
}

func crashHelper(mode, root string) {
	s, err := Open(Options{Root: root})
	if err != nil {
		fmt.Println("error", err)
		return
	}
	out := bufio.NewWriter(os.Stdout)
	ack := func(format string, a ...any) {
		fmt.Fprintf(out, format+"\n", a...)
		out.Flush()
	}
	ack("ready")
	rnd := rand.New(rand.NewSource(int64(os.Getpid())))
	switch mode {
	case "append", "uidlist":
		size := 64 << 10
		if mode == "uidlist" {
			size = 100 // the uidlist rewrite is the bulk of the work
		}
		for i := 0; ; i++ {
			id := fmt.Sprintf("%d-%d", os.Getpid(), i)
			r, err := s.Append("INBOX", []string{`\Seen`, "kw" + strconv.Itoa(i%3)}, time.Time{}, strings.NewReader(crashMessage(id, size)))
			if err != nil {
				ack("error %v", err)
				return
			}
			ack("append %s %d %d", id, r.UIDValidity, r.UID)
			ack("op")
		}
	case "move":
		for {
			from, to := "INBOX", "Dest"
			if rnd.Intn(2) == 0 {
				from, to = to, from
			}
			v, err := s.Select(from, false)
			if err != nil {
				ack("error %v", err)
				return
			}
			snap, err := v.Sync()
			if err != nil {
				ack("error %v", err)
				return
			}
			var uids []uint32
			for _, m := range snap.Msgs {
				if rnd.Intn(20) == 0 {
					uids = append(uids, m.UID)
				}
			}
			res, err := v.Move(uids, to)
			if err != nil {
				ack("error %v", err)
				return
			}
			ack("move %s %d", to, len(res.DstUIDs))
			v.Close()
			ack("op")
		}
	case "expunge":
		v, err := s.Select("INBOX", false)
		if err != nil {
			ack("error %v", err)
			return
		}
		for {
			snap, err := v.Sync()
			if err != nil {
				ack("error %v", err)
				return
			}
			var uids []uint32
			for _, m := range snap.Msgs {
				if rnd.Intn(200) == 0 {
					uids = append(uids, m.UID)
				}
			}
			for _, uid := range uids {
				ack("flag %d", uid)
			}
			if _, _, err := v.Store(uids, StoreAdd, []string{`\Deleted`}, 0); err != nil {
				ack("error %v", err)
				return
			}
			gone, err := v.Expunge(nil)
			if err != nil {
				ack("error %v", err)
				return
			}
			for _, uid := range gone {
				ack("expunged %d", uid)
			}
			// More mail keeps the folder from running dry.
			for i := 0; i < len(gone); i++ {
				id := fmt.Sprintf("%d-%d", os.Getpid(), rnd.Int63())
				r, err := s.Append("INBOX", nil, time.Time{}, strings.NewReader(crashMessage(id, 2000)))
				if err != nil {
					ack("error %v", err)
					return
				}
				ack("append %s %d %d", id, r.UIDValidity, r.UID)
			}
			ack("op")
		}
	}
}

// crashRun is one helper process, killed after a random delay.
type crashRun struct {
	acks []string
}

func runAndKill(t *testing.T, mode, root string) crashRun {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+mode+":"+root)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var run crashRun
	select {
	case l, ok := <-lines:
		if !ok || l != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper did not start: %q", l)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("helper did not say ready in 30 s")
	}
	// Time two whole operations, then kill it at a random moment of the
	// next one or two, so that kills spread over every phase of an
	// operation.
	var ends []time.Time
	for len(ends) < 2 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("helper ended")
			}
			if strings.HasPrefix(l, "error") {
				cmd.Process.Kill()
				t.Fatalf("helper: %s", l)
			}
			if l == "op" {
				ends = append(ends, time.Now())
			} else {
				run.acks = append(run.acks, l)
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatal("helper did not finish an operation in 60 s")
		}
	}
	op := max(ends[1].Sub(ends[0]), time.Millisecond)
	time.Sleep(time.Duration(rand.Int63n(int64(2 * op))))
	cmd.Process.Signal(syscall.SIGKILL)
	for l := range lines {
		if strings.HasPrefix(l, "error") {
			t.Fatalf("helper: %s", l)
		}
		if l != "op" {
			run.acks = append(run.acks, l)
		}
	}
	cmd.Wait()
	return run
}

// midWrite reports whether the kill left work in progress behind (a
// dot-lock, a temporary file of a message, a lock or a cache), and
// removes those temporary files as a later cleaner would.
func midWrite(dirs ...string) bool {
	found := false
	for _, d := range dirs {
		for _, n := range []string{uidlistName + ".lock", keywordsName + ".lock"} {
			if _, err := os.Lstat(filepath.Join(d, n)); err == nil {
				found = true
			}
		}
		ents, _ := os.ReadDir(filepath.Join(d, "tmp"))
		for _, e := range ents {
			found = true
			os.Remove(filepath.Join(d, "tmp", e.Name()))
		}
	}
	return found
}

// crashCheck opens root as a new process and returns each folder's
// messages by id (id → UIDs), failing on a uidlist that does not parse or
// a UIDNEXT below the last one seen.
func crashCheck(t *testing.T, root string, folders []string, lastNext map[string]uint32) map[string]map[string][]uint32 {
	t.Helper()
	s := openAlone(t, root, nil)
	defer s.Close()
	out := map[string]map[string][]uint32{}
	for _, name := range folders {
		v, err := s.Select(name, false)
		if err != nil {
			t.Fatalf("select %s after a kill: %v", name, err)
		}
		snap := mustSync(t, v)
		dir := v.f.dir
		ul, err := parseUIDList(readFile(t, filepath.Join(dir, uidlistName)))
		if err != nil || ul.bad > 0 {
			t.Fatalf("%s: uidlist after a kill: %v, %d bad records", name, err, ul.bad)
		}
		if snap.UIDNext < lastNext[name] || ul.nextUID < lastNext[name] {
			t.Fatalf("%s: UIDNEXT went back from %d to %d (uidlist %d)", name, lastNext[name], snap.UIDNext, ul.nextUID)
		}
		lastNext[name] = snap.UIDNext
		ids := map[string][]uint32{}
		for i, m := range snap.Msgs {
			if i > 0 && m.UID <= snap.Msgs[i-1].UID {
				t.Fatalf("%s: UIDs out of order", name)
			}
			r, err := v.Open(m.UID)
			if err != nil {
				t.Fatalf("%s: open UID %d: %v", name, m.UID, err)
			}
			head := make([]byte, 64)
			n, _ := io.ReadFull(r, head)
			r.Close()
			id := msgID(head[:n])
			ids[id] = append(ids[id], m.UID)
		}
		out[name] = ids
		v.Close()
	}
	return out
}

// crashMore says whether to kill once more: at least 10 kills, then until
// 3 of them caught a write in progress, at most 200. A kill lands mid-write
// by chance (on an idle machine a MOVE's writes fill as little as one kill
// in 13): 40 kills without one happened now and then, and failed make
// test; 200 without one would take a broken test, not bad luck.
func crashMore(kills, landed int) bool {
	return kills < 10 || (landed < 3 && kills < 200)
}

func TestCrashAppend(t *testing.T) {
	_, root := testStore(t)
	acked := map[string]uint32{}
	lastNext := map[string]uint32{}
	landed := 0
	kills := 0
	for ; crashMore(kills, landed); kills++ {
		i := kills
		run := runAndKill(t, "append", root)
		if midWrite(root) {
			landed++
		}
		for _, a := range run.acks {
			f := strings.Fields(a)
			uid, _ := strconv.ParseUint(f[3], 10, 32)
			acked[f[1]] = uint32(uid)
		}
		got := crashCheck(t, root, []string{"INBOX"}, lastNext)["INBOX"]
		for id, uids := range got {
			if len(uids) > 1 {
				t.Fatalf("message %s shown %d times: UIDs %v", id, len(uids), uids)
			}
		}
		for id, uid := range acked {
			if u := got[id]; len(u) != 1 || u[0] != uid {
				t.Fatalf("kill %d: acknowledged message %s (UID %d) is now %v", i, id, uid, u)
			}
		}
	}
	t.Logf("%d kills, %d mid-write, %d messages acknowledged", kills, landed, len(acked))
	if landed == 0 {
		t.Error("no kill landed in the middle of a write")
	}
}

func TestCrashUIDListRewrite(t *testing.T) {
	_, root := testStore(t)
	// A large folder makes rewriting dovecot-uidlist most of the work.
	body := []byte(crashMessage("old", 100))
	for i := 0; i < 4000; i++ {
		must(t, os.WriteFile(filepath.Join(root, "cur", fmt.Sprintf("1600000000.M%dP1.big:2,S", i)), body, 0o600))
	}
	s := openAlone(t, root, nil)
	_, err := s.Status("INBOX")
	must(t, err)
	s.Close()
	acked := map[string]uint32{}
	lastNext := map[string]uint32{}
	landed := 0
	kills := 0
	for ; crashMore(kills, landed); kills++ {
		i := kills
		run := runAndKill(t, "uidlist", root)
		if _, err := os.Lstat(filepath.Join(root, uidlistName+".lock")); err == nil {
			landed++
		}
		midWrite(root)
		for _, a := range run.acks {
			f := strings.Fields(a)
			uid, _ := strconv.ParseUint(f[3], 10, 32)
			acked[f[1]] = uint32(uid)
		}
		// Cheaper than reading 4,000 messages: the uidlist and the state.
		st := openAlone(t, root, nil)
		v, err := st.Select("INBOX", false)
		must(t, err)
		snap := mustSync(t, v)
		ul, err := parseUIDList(readFile(t, filepath.Join(root, uidlistName)))
		if err != nil || ul.bad > 0 {
			t.Fatalf("uidlist after kill %d: %v, %d bad records", i, err, ul.bad)
		}
		if snap.UIDNext < lastNext["INBOX"] {
			t.Fatalf("UIDNEXT went back from %d to %d", lastNext["INBOX"], snap.UIDNext)
		}
		lastNext["INBOX"] = snap.UIDNext
		if len(snap.Msgs) < 4000+len(acked) {
			t.Fatalf("%d messages, want at least %d", len(snap.Msgs), 4000+len(acked))
		}
		keys := map[string]bool{}
		for _, r := range ul.recs {
			if keys[r.name] {
				t.Fatalf("%s twice in the uidlist", r.name)
			}
			keys[r.name] = true
		}
		for id, uid := range acked {
			r, err := v.Open(uid)
			if err != nil {
				t.Fatalf("acknowledged %s UID %d: %v", id, uid, err)
			}
			head := make([]byte, 64)
			n, _ := io.ReadFull(r, head)
			r.Close()
			if msgID(head[:n]) != id {
				t.Fatalf("UID %d holds %q, acknowledged as %s", uid, msgID(head[:n]), id)
			}
		}
		v.Close()
		st.Close()
	}
	t.Logf("%d kills, %d while the uidlist lock was held, %d appends acknowledged", kills, landed, len(acked))
	if landed == 0 {
		t.Error("no kill landed while dovecot-uidlist was being rewritten")
	}
}

// crashSeed puts n messages with ids in INBOX (written directly: fast),
// numbered, so that every operation rewrites a uidlist and a cache of
// some size, which kills may catch.
func crashSeed(t *testing.T, root string, n int) []string {
	var ids []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("seed-%d", i)
		must(t, os.WriteFile(filepath.Join(root, "cur", fmt.Sprintf("1600000000.M%dP2.seed:2,", i)), []byte(crashMessage(id, 200)), 0o600))
		ids = append(ids, id)
	}
	s := openAlone(t, root, nil)
	_, err := s.Status("INBOX")
	must(t, err)
	s.Close()
	return ids
}

func TestCrashMove(t *testing.T) {
	s, root := testStore(t)
	must(t, s.Create("Dest", ""))
	s.Close()
	ids := crashSeed(t, root, 1000)
	lastNext := map[string]uint32{}
	landed := 0
	moves := 0
	kills := 0
	for ; crashMore(kills, landed); kills++ {
		i := kills
		run := runAndKill(t, "move", root)
		moves += len(run.acks)
		if midWrite(root, filepath.Join(root, ".Dest")) {
			landed++
		}
		got := crashCheck(t, root, []string{"INBOX", "Dest"}, lastNext)
		for _, id := range ids {
			n := len(got["INBOX"][id]) + len(got["Dest"][id])
			if n != 1 {
				t.Fatalf("kill %d: message %s is in INBOX %v and Dest %v", i, id, got["INBOX"][id], got["Dest"][id])
			}
		}
		if len(got["INBOX"])+len(got["Dest"]) != len(ids) {
			t.Fatalf("kill %d: %d + %d messages, want %d", i, len(got["INBOX"]), len(got["Dest"]), len(ids))
		}
	}
	t.Logf("%d kills, %d mid-write, %d moves acknowledged", kills, landed, moves)
	if landed == 0 {
		t.Error("no kill landed in the middle of a write")
	}
}

func TestCrashExpunge(t *testing.T) {
	s, root := testStore(t)
	s.Close()
	crashSeed(t, root, 1000)
	lastNext := map[string]uint32{}
	landed := 0
	flagged := map[uint32]bool{}    // UIDs the helper set \Deleted on (announced first)
	appended := map[string]uint32{} // acknowledged appends
	var prev map[string][]uint32
	kills := 0
	for ; crashMore(kills, landed); kills++ {
		i := kills
		run := runAndKill(t, "expunge", root)
		if midWrite(root) {
			landed++
		}
		var expunged []uint32
		for _, a := range run.acks {
			f := strings.Fields(a)
			uid, _ := strconv.ParseUint(f[len(f)-1], 10, 32)
			switch f[0] {
			case "flag":
				flagged[uint32(uid)] = true
			case "expunged":
				expunged = append(expunged, uint32(uid))
			case "append":
				appended[f[1]] = uint32(uid)
			}
		}
		got := crashCheck(t, root, []string{"INBOX"}, lastNext)["INBOX"]
		for id, uids := range got {
			if len(uids) > 1 {
				t.Fatalf("message %s shown %d times", id, len(uids))
			}
			// UIDs the helper was told were expunged stay gone.
			if slices.Contains(expunged, uids[0]) {
				t.Fatalf("UID %d (%s) acknowledged as expunged is back", uids[0], id)
			}
		}
		// Only \Deleted messages go; the others keep their UIDs.
		lost := func(id string, uid uint32) {
			now, ok := got[id]
			if !ok && !flagged[uid] {
				t.Fatalf("kill %d: message %s (UID %d) lost without \\Deleted", i, id, uid)
			}
			if ok && now[0] != uid {
				t.Fatalf("kill %d: message %s moved from UID %d to %d", i, id, uid, now[0])
			}
		}
		for id, uids := range prev {
			lost(id, uids[0])
		}
		for id, uid := range appended {
			lost(id, uid)
		}
		prev = got
	}
	t.Logf("%d kills, %d mid-write", kills, landed)
	if landed == 0 {
		t.Error("no kill landed in the middle of a write")
	}
}
