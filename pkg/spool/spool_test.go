package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/internal/testwait"
)

func testEnv() *Envelope {
	return &Envelope{
		From:     "alice@example.org",
		Arrived:  time.Date(2026, 11, 23, 12, 0, 0, 123456789, time.UTC),
		AuthUser: "alice",
		Recipients: []*Recipient{
			{Address: "bob@example.test", State: Pending},
			{Address: "carol@example.test", Original: "Carol@Example.test", State: Pending},
		},
	}
}

func open(t testing.TB) *Spool {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpenLayout(t *testing.T) {
	s := open(t)
	for name, want := range map[string]os.FileMode{
		"": 0o711 | os.ModeDir, "tmp": 0o700 | os.ModeDir, "data": 0o700 | os.ModeDir,
		"env": 0o700 | os.ModeDir, "drop": 0o733 | os.ModeDir | os.ModeSticky,
		"trigger": 0o622 | os.ModeNamedPipe,
	} {
		fi, err := os.Lstat(filepath.Join(s.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	// Opening again is harmless.
	if _, err := Open(s.Dir); err != nil {
		t.Fatal(err)
	}
}

func TestSubmitLoadData(t *testing.T) {
	s := open(t)
	msg := "Subject: hi\r\n\r\nbody\r\n"
	id, err := s.Submit(testEnv(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if !ValidID(id) {
		t.Fatalf("bad id %q", id)
	}
	env, err := s.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if env.ID != id || env.Size != int64(len(msg)) || env.From != "alice@example.org" ||
		len(env.Recipients) != 2 || env.Recipients[1].Original != "Carol@Example.test" {
		t.Fatalf("loaded %+v", env)
	}
	f, err := s.OpenData(id)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != msg {
		t.Fatalf("data %q", b)
	}
	// Nothing left in tmp/, files private.
	if ents, _ := os.ReadDir(filepath.Join(s.Dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp not empty: %v", ents)
	}
	for _, sub := range []string{"env", "data"} {
		fi, _ := os.Stat(filepath.Join(s.Dir, sub, id))
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", sub, fi.Mode())
		}
	}
	ents, err := s.Scan()
	if err != nil || len(ents) != 1 || !ents[0].Due.Equal(env.Arrived) {
		t.Fatalf("scan %v %v", ents, err)
	}
	if _, err := s.Load("0000000000NOPE"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("load missing: %v", err)
	}
	if _, err := s.Load("../../etc/passwd"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("load bad id: %v", err)
	}
}

func TestIDsUniqueAndSorted(t *testing.T) {
	prev := ""
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := NewID()
		if seen[id] || !ValidID(id) {
			t.Fatalf("id %q repeated or invalid", id)
		}
		seen[id] = true
		if id < prev && i > 0 {
			// Same nanosecond is possible, not going backwards by much.
			if id[:12] < prev[:12] {
				t.Fatalf("ids not sorted: %s after %s", id, prev)
			}
		}
		prev = id
	}
}

func TestConcurrentSubmit(t *testing.T) {
	s := open(t)
	var wg sync.WaitGroup
	ids := make(chan string, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id, err := s.Submit(testEnv(), strings.NewReader(fmt.Sprintf("Subject: %d\r\n\r\n", i)))
			if err != nil {
				t.Error(err)
				return
			}
			ids <- id
		}(i)
	}
	testwait.Group(t, &wg, 30*time.Second, "the concurrent submissions")
	close(ids)
	list, err := s.List()
	if err != nil || len(list) != 200 || len(ids) != 200 {
		t.Fatalf("list %d, ids %d, %v", len(list), len(ids), err)
	}
}

func TestUpdateLockRemove(t *testing.T) {
	s := open(t)
	id, err := s.Submit(testEnv(), strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(id); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	env := l.Envelope
	next := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	env.Recipients[0].State = Delivered
	env.Recipients[1].Attempts = 1
	env.Recipients[1].NextAttempt = next
	env.Recipients[1].LastError = "4.2.2 mailbox \"full\"\nreally"
	if err := l.Update(env); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(l.Data())
	if string(b) != "x\r\n" {
		t.Fatalf("data %q", b)
	}
	l.Unlock()
	got, err := s.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Recipients[0].State != Delivered || got.Recipients[1].LastError != env.Recipients[1].LastError ||
		!got.Recipients[1].NextAttempt.Equal(next) {
		t.Fatalf("reloaded %+v", got.Recipients[1])
	}
	ents, _ := s.Scan()
	if !ents[0].Due.Equal(next) {
		t.Fatalf("due %v, want %v", ents[0].Due, next)
	}
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lock removed: %v", err)
	}
	for _, sub := range []string{"env", "data", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(s.Dir, sub)); len(ents) != 0 {
			t.Errorf("%s not empty: %v", sub, ents)
		}
	}
}

// TestLockAcrossProcesses holds a message's lock in a child process (this
// test binary re-run) and checks that this process cannot take it.
func TestLockAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("SPOOL_LOCK_CHILD"); dir != "" {
		s := &Spool{Dir: dir}
		l, err := s.Lock(os.Getenv("SPOOL_LOCK_ID"))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("LOCKED")
		io.ReadAll(os.Stdin) // hold until the parent closes stdin
		l.Unlock()
		os.Exit(0)
	}
	s := open(t)
	id, _ := s.Submit(testEnv(), strings.NewReader("x\r\n"))
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockAcrossProcesses$")
	cmd.Env = append(os.Environ(), "SPOOL_LOCK_CHILD="+s.Dir, "SPOOL_LOCK_ID="+id)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child must not outlive its deadline, however the test goes.
	killed := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer killed.Stop()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "LOCKED" {
		t.Fatalf("child: %q %v (killed after 20s if it hung)", buf, err)
	}
	if _, err := s.Lock(id); !errors.Is(err, ErrLocked) {
		t.Fatalf("lock held by child: got %v", err)
	}
	stdin.Close()
	cmd.Wait()
	l, err := s.Lock(id)
	if err != nil {
		t.Fatalf("after child exit: %v", err)
	}
	l.Unlock()
}

func TestClean(t *testing.T) {
	s := open(t)
	keep, _ := s.Submit(testEnv(), strings.NewReader("x\r\n"))
	old := time.Now().Add(-2 * time.Hour)
	write := func(sub, name string) string {
		p := filepath.Join(s.Dir, sub, name)
		os.WriteFile(p, []byte("junk"), 0o600)
		os.Chtimes(p, old, old)
		return p
	}
	garbage := []string{
		write("tmp", NewID()+".data"),
		write("data", NewID()), // data without envelope: crash before commit
		write("env", NewID()),  // envelope without data
	}
	fresh := write("data", NewID())
	os.Chtimes(fresh, time.Now(), time.Now()) // a Submit in progress
	n, err := s.Clean(time.Hour)
	if err != nil || n != 3 {
		t.Fatalf("clean removed %d, %v", n, err)
	}
	for _, p := range garbage {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s not removed", p)
		}
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("fresh data removed")
	}
	if _, err := s.Load(keep); err != nil {
		t.Error("committed message removed:", err)
	}
}

func TestPokeAndListen(t *testing.T) {
	s := open(t)
	s.Poke() // no reader: must not block or fail
	tr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i := 0; i < 3; i++ {
		s.Poke()
	}
	select {
	case <-tr.C:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up")
	}
	if _, err := s.Submit(testEnv(), strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	// Drain coalesced pokes; at least one arrives for the Submit.
	select {
	case <-tr.C:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up after Submit")
	}
}

// TestPokedBeforeSubmitReturns: the FIFO holds the poke by the time
// Submit returns, so a sendmail that exits right after it still wakes the
// daemon (the poke used to come after the Submit was released).
func TestPokedBeforeSubmitReturns(t *testing.T) {
	s := open(t)
	for i := 0; i < 20; i++ {
		fd, err := syscall.Open(filepath.Join(s.Dir, "trigger"), syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Submit(testEnv(), strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, err := syscall.Read(fd, buf)
		syscall.Close(fd)
		if n != 1 || buf[0] != '!' {
			t.Fatalf("submission %d: the FIFO held %q (%v) when Submit returned, want the poke", i, buf[:max(n, 0)], err)
		}
	}
}

func TestDrop(t *testing.T) {
	s := open(t)
	msg := "Subject: dropped\n\nhello\n"
	env := testEnv()
	env.AuthUser = "forged"
	env.Notice = NoticePostmaster
	env.Recipients[0].State = Delivered
	name, err := s.Drop(env, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(s.Dir, "drop", name))
	if fi.Mode().Perm() != 0o744 {
		t.Fatalf("drop mode %v", fi.Mode())
	}
	// An unfinished file, a symlink, a hard link and a malformed file.
	os.WriteFile(filepath.Join(s.Dir, "drop", "UNFINISHED"), []byte("x"), 0o600)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(testEnv().Format()+".\nsecret\n"), 0o744)
	os.Symlink(secret, filepath.Join(s.Dir, "drop", "SYMLINK"))
	os.Link(secret, filepath.Join(s.Dir, "drop", "HARDLINK"))
	os.WriteFile(filepath.Join(s.Dir, "drop", "BAD"), []byte("garbage\n.\nx"), 0o744)
	os.WriteFile(filepath.Join(s.Dir, "drop", "BADRCPT"), []byte(strings.Replace(testEnv().Format(), "bob@example.test", "bob@x>\\r\\nRCPT", 1)+".\nx"), 0o744)

	taken := s.TakeDrops(nil)
	byName := map[string]Taken{}
	for _, tk := range taken {
		byName[tk.Drop] = tk
	}
	if tk := byName[name]; tk.Err != nil || tk.ID == "" {
		t.Fatalf("good drop: %+v", tk)
	}
	for _, bad := range []string{"SYMLINK", "HARDLINK", "BAD", "BADRCPT"} {
		if tk, ok := byName[bad]; !ok || tk.Err == nil {
			t.Errorf("%s: %+v, want refused", bad, tk)
		}
		if _, err := os.Lstat(filepath.Join(s.Dir, "drop", bad)); err == nil {
			t.Errorf("%s left in drop/", bad)
		}
	}
	if _, ok := byName["UNFINISHED"]; ok {
		t.Error("unfinished drop taken")
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "drop", "UNFINISHED")); err != nil {
		t.Error("unfinished drop removed")
	}
	got, err := s.Load(byName[name].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.AuthUser == "forged" || got.AuthUser == "" || got.Notice != "" || got.Recipients[0].State != Pending {
		t.Fatalf("drop envelope trusted user input: %+v", got)
	}
	f, _ := s.OpenData(got.ID)
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != msg || got.Size != int64(len(msg)) {
		t.Fatalf("data %q size %d", b, got.Size)
	}
	if _, err := os.Stat(secret); err != nil {
		t.Fatal("the link target must survive")
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	env := testEnv()
	env.ID = NewID()
	env.Size = 42
	env.Warned = time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	env.Notice = NoticeDSN
	env.Recipients[0].LastError = "550 5.1.1 <bob>: \"no\" such\x00user\n"
	env.Recipients[0].Attempts = 3
	env.Recipients[0].NextAttempt = time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	env.Recipients[1].State = Bounced
	text := env.Format()
	got, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if got.Format() != text {
		t.Fatalf("round trip:\n%s\n%s", text, got.Format())
	}
	if !strings.HasPrefix(text, "letterbox-envelope 1\n") || strings.Count(text, "\n") != 10 {
		t.Fatalf("format:\n%s", text)
	}
	for _, bad := range []string{
		"", "letterbox-envelope 2\nfrom \"\"\n", strings.Replace(text, "from ", "from x", 1),
		strings.Replace(text, "state=bounced", "state=gone", 1),
		strings.Replace(text, "attempts=3", "attempts=-3", 1),
		"letterbox-envelope 1\nfrom \"a\"\narrived 2026-11-23T12:00:00Z\n",
		text + "from \"x\"\n",
	} {
		if _, err := Parse(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("Parse(%q) = %v, want ErrFormat", bad, err)
		}
	}
}

// FuzzParseEnvelope: Parse never panics, and whatever it accepts formats
// to a text that parses to the same envelope.
func FuzzParseEnvelope(f *testing.F) {
	ents, _ := os.ReadDir("../../testdata/spool")
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join("../../testdata/spool", e.Name())); err == nil {
			f.Add(string(b))
		}
	}
	f.Add(testEnv().Format())
	f.Fuzz(func(t *testing.T, text string) {
		env, err := Parse(text)
		if err != nil {
			return
		}
		out := env.Format()
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("reparse of %q: %v", out, err)
		}
		if again.Format() != out {
			t.Fatalf("not stable:\n%s\n%s", out, again.Format())
		}
	})
}

func TestSubmitKeepsCallerID(t *testing.T) {
	s := open(t)
	want := NewID()
	env := &Envelope{ID: want, From: "a@example.test", Recipients: []*Recipient{{Address: "b@example.test", State: Pending}}}
	id, err := s.Submit(env, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if id != want || env.ID != want {
		t.Fatalf("Submit chose %s (env %s), want the caller's %s", id, env.ID, want)
	}
	if _, err := s.Load(want); err != nil {
		t.Fatal(err)
	}
	env2 := &Envelope{ID: "../evil", From: "", Recipients: []*Recipient{{Address: "b@example.test", State: Pending}}}
	id2, err := s.Submit(env2, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if id2 == "../evil" || !ValidID(id2) {
		t.Fatalf("an invalid caller id must be replaced, got %q", id2)
	}
}

// The pickup hook's fields go before the message; what is taken in is
// what fstat measured, however the file grows while it is read (the cap is
// on the bytes read, not on a size seen earlier).
func TestDropPickupAndLimit(t *testing.T) {
	s := open(t)
	defer func(m int64) { MaxDrop = m }(MaxDrop)
	msg := "Subject: big\n\n" + strings.Repeat("0123456789abcdef\n", 8<<10) // 136 KiB, beyond bufio's buffer
	name, err := s.Drop(testEnv(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.Dir, "drop", name)
	fi, _ := os.Stat(p)
	MaxDrop = fi.Size()
	var got DropFile
	taken := s.TakeDrops(func(d DropFile) (string, error) {
		got = d
		// The user appends after queue-runner's fstat.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(strings.Repeat("APPENDED\n", 64<<10))
		f.Close()
		return "Received: (from joe uid 1000)\r\n", nil
	})
	if len(taken) != 1 || taken[0].Err != nil {
		t.Fatalf("%+v", taken)
	}
	if got.UID != uint32(os.Geteuid()) || got.Login == "" || got.Name != name || got.Env.From != testEnv().From {
		t.Fatalf("pickup saw %+v", got)
	}
	f, _ := s.OpenData(taken[0].ID)
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "Received: (from joe uid 1000)\r\n"+msg {
		t.Fatalf("data: %d bytes, appended data taken in: %v", len(b), strings.Contains(string(b), "APPENDED"))
	}

	// A pickup error refuses (and removes) the file.
	name, _ = s.Drop(testEnv(), strings.NewReader("x\n"))
	taken = s.TakeDrops(func(DropFile) (string, error) { return "", errors.New("no") })
	if len(taken) != 1 || taken[0].Err == nil || taken[0].ID != "" {
		t.Fatalf("%+v", taken)
	}
	if _, err := os.Lstat(filepath.Join(s.Dir, "drop", name)); err == nil {
		t.Fatal("refused drop left in drop/")
	}
}

// Clean removes what drop/ holds that will never be taken in, by change
// time, which a user cannot set back: an unfinished file whose mtime says
// the past is still fresh, one whose mtime says the future is old all the
// same; dot-files and directories go too, complete files stay for
// TakeDrops.
func TestCleanDropsByCtime(t *testing.T) {
	s := open(t)
	drop := filepath.Join(s.Dir, "drop")
	past, future := time.Now().Add(-48*time.Hour), time.Now().Add(365*24*time.Hour)
	write := func(name string, mode os.FileMode, mtime time.Time) string {
		p := filepath.Join(drop, name)
		os.WriteFile(p, []byte("x"), 0o600)
		os.Chmod(p, mode)
		os.Chtimes(p, mtime, mtime)
		return p
	}
	unfinishedPast := write("UNFINISHED1", 0o600, past)
	unfinishedFuture := write("UNFINISHED2", 0o600, future)
	dot := write(".hidden", 0o744, future)
	ready := write("READY", 0o744, past)
	dir := filepath.Join(drop, "DIR")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o700)
	if n, _ := s.Clean(time.Hour); n != 0 {
		t.Fatalf("fresh change times, yet Clean removed %d", n)
	}
	// An hour from now, all of them are old by their change time.
	s.cleanDrops(time.Now().Add(time.Hour))
	for _, p := range []string{unfinishedPast, unfinishedFuture, dot, dir} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s not removed", filepath.Base(p))
		}
	}
	if _, err := os.Lstat(ready); err != nil {
		t.Error("a complete drop file was removed by Clean")
	}
}
