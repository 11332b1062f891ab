package tests

// The durability tests watch the real binaries' system calls with strace(1)
// and replay them against a model of what a power loss would keep: a SIGKILL
// loses nothing the kernel already has, so only the order of writes,
// renames and flushes shows whether a message survives a crash of the
// machine. This file is the one strace reader and model the tests share.
//
// The model (fsModel) knows, for every path touched during the run, whether
// its directory entry (creation, rename, link, removal) and its content are
// durable: a write, truncate, chmod or chown makes the content dirty, fsync or
// fdatasync of the file makes it clean; a directory change is dirty until
// the directory itself is fsynced; syncfs (or sync) makes everything clean.
// Paths that existed before the run and that the run never touched count
// as durable. A path is durable when its entry, its content and the
// entries of the directories created on the way to it are.
//
// Order: strace stops a thread at each system call's entry and exit, and
// the call runs between the two stops, so "A ended before B began" holds
// when strace printed A's exit before B's entry. Changes count from their
// call's entry, flushes from their exit; a check looks at the state just
// before its call begins.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// straceCalls are the system calls the model needs: everything that
// creates, changes, moves or removes a file or directory entry, every
// flush, every write (to files and to sockets: a server's reply is a
// write), and the process's exit.
const straceCalls = "clone,clone3,fork,vfork,open,openat,creat,mkdir,mkdirat,write,pwrite64,writev,pwritev,pwritev2,sendto,sendmsg," +
	"truncate,ftruncate,fallocate,chmod,fchmod,fchmodat,chown,fchown,lchown,fchownat,rename,renameat,renameat2,link,linkat,unlink,unlinkat,rmdir," +
	"fsync,fdatasync,syncfs,sync,exit_group"

// straceArgs are strace's options: follow children and threads, stop only
// at the calls above (seccomp), print file paths of descriptors (-y), and
// enough of each write to see a protocol reply.
func straceArgs(out string) []string {
	return []string{"-f", "--seccomp-bpf", "-qq", "-e", "signal=none", "-e", "trace=" + straceCalls,
		"-y", "-s", "200", "-o", out, "--"}
}

// straceNeeded fails the test when strace is missing: a durability test
// that cannot look is not a pass.
func straceNeeded(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is not installed (Debian package strace): the durability tests need it")
	}
	return p
}

// sysCall is one system call of the trace.
type sysCall struct {
	Entry, Exit int // positions of its entry and exit in the trace
	PID         int
	Name        string
	Args        []string // raw, as strace printed them
	Ret         string   // raw return value and its annotations ("0", "-1 ENOENT (…)", "5</path>", "?")
	Text        string   // the whole call, for messages
}

// ok reports whether the call succeeded (exit_group always "succeeds").
func (c *sysCall) ok() bool {
	return c.Name == "exit_group" || c.Ret != "" && !strings.HasPrefix(c.Ret, "-1") && c.Ret != "?"
}

// String is the call as strace printed it, with its position.
func (c *sysCall) String() string { return fmt.Sprintf("#%d [pid %d] %s", c.Entry, c.PID, c.Text) }

// strace -y prints a descriptor as 3</path>, and one whose name was
// removed as 3</path>(deleted).
var fdAnnot = regexp.MustCompile(`^(-?\d+|AT_FDCWD)<(.*)>(\(deleted\))?$`)

// fdPath returns the path strace printed for descriptor argument i (-y), or
// "" when it is not a file ("socket:[…]", "pipe:[…]") or was deleted.
func (c *sysCall) fdPath(i int) string {
	if i >= len(c.Args) {
		return ""
	}
	m := fdAnnot.FindStringSubmatch(c.Args[i])
	if m == nil || !strings.HasPrefix(m[2], "/") || m[3] != "" || strings.HasSuffix(m[2], " (deleted)") {
		return ""
	}
	return m[2]
}

// fdTarget returns what descriptor argument i refers to, as strace printed
// it ("socket:[123]", "/path", "pipe:[4]").
func (c *sysCall) fdTarget(i int) string {
	if i >= len(c.Args) {
		return ""
	}
	if m := fdAnnot.FindStringSubmatch(c.Args[i]); m != nil {
		if m[3] != "" {
			return m[2] + " (deleted)"
		}
		return m[2]
	}
	return ""
}

// str returns string argument i unquoted (a truncated string ends where
// strace cut it).
func (c *sysCall) str(i int) string {
	if i >= len(c.Args) {
		return ""
	}
	s, _ := unquoteStrace(c.Args[i])
	return s
}

// pathAt returns the path of string argument i, resolved against the
// directory descriptor in argument dirfd (-1: the call has none; relative
// paths are then resolved against the process's directory, which the
// traced programs never change from the test's).
func (c *sysCall) pathAt(dirfd, i int) string {
	p := c.str(i)
	if p == "" || filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	dir := ""
	if dirfd >= 0 {
		if m := fdAnnot.FindStringSubmatch(c.Args[dirfd]); m != nil {
			dir = m[2]
		}
	}
	if dir == "" {
		dir, _ = os.Getwd()
	}
	return filepath.Join(dir, p)
}

// writeData returns the data of a write-like call (what a server sent), as
// far as strace printed it.
func (c *sysCall) writeData() string {
	switch c.Name {
	case "write", "sendto", "pwrite64":
		return c.str(1)
	case "writev", "sendmsg":
		// Vectors print as [{iov_base="…", iov_len=N}, …]: join the bases.
		var b strings.Builder
		for _, m := range iovBase.FindAllStringSubmatch(strings.Join(c.Args[1:], ", "), -1) {
			s, _ := unquoteStrace(m[1])
			b.WriteString(s)
		}
		return b.String()
	}
	return ""
}

var iovBase = regexp.MustCompile(`iov_base=("(?:[^"\\]|\\.)*"(?:\.\.\.)?)`)

// sentOnSocket reports whether c writes data to a network socket that
// contains want.
func (c *sysCall) sentOnSocket(want string) bool {
	if !c.ok() || !strings.HasPrefix(c.fdTarget(0), "socket:") {
		return false
	}
	return strings.Contains(c.writeData(), want)
}

// exitStatus returns the status of an exit_group call, or -1.
func (c *sysCall) exitStatus() int {
	if c.Name != "exit_group" || len(c.Args) == 0 {
		return -1
	}
	n, err := strconv.Atoi(c.Args[0])
	if err != nil {
		return -1
	}
	return n
}

// sysTrace is a parsed strace output.
type sysTrace struct {
	Calls []*sysCall
	PID   int             // the traced command's own process
	proc  map[int]int     // thread id → its process's id
	seed  map[string]bool // paths that existed before the run
	raw   string
}

// unquoteStrace reads a C string as strace prints it ("…" with \n, \t, \",
// \\, \xNN and octal escapes, maybe followed by "..." when cut short).
func unquoteStrace(s string) (string, bool) {
	if !strings.HasPrefix(s, `"`) {
		return s, false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		ch := s[i]
		if ch == '"' {
			return b.String(), true
		}
		if ch != '\\' || i+1 >= len(s) {
			b.WriteByte(ch)
			continue
		}
		i++
		switch e := s[i]; e {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'v':
			b.WriteByte('\v')
		case 'f':
			b.WriteByte('\f')
		case 'x':
			if i+2 < len(s) {
				if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
					b.WriteByte(byte(v))
					i += 2
					continue
				}
			}
			b.WriteByte(e)
		default:
			if e >= '0' && e <= '7' {
				j := i
				for j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '7' {
					j++
				}
				v, _ := strconv.ParseUint(s[i:j], 8, 8)
				b.WriteByte(byte(v))
				i = j - 1
				continue
			}
			b.WriteByte(e)
		}
	}
	return b.String(), false
}

// splitArgs splits strace's argument text at top-level commas, keeping
// quoted strings, <path> annotations and {…}/[…]/(…) groups whole.
func splitArgs(s string) []string {
	var args []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		case '<':
			// A descriptor's path: up to the '>' that ends the argument.
			if i > 0 && (s[i-1] >= '0' && s[i-1] <= '9' || strings.HasSuffix(s[:i], "AT_FDCWD")) {
				end := strings.Index(s[i:], ">, ")
				if end < 0 {
					end = strings.LastIndex(s[i:], ">")
				}
				if end > 0 {
					i += end
				}
			}
		case '{', '[', '(':
			depth++
		case '}', ']', ')':
			depth--
		case ',':
			if depth == 0 {
				args = append(args, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if rest := strings.TrimSpace(s[start:]); rest != "" || len(args) > 0 {
		args = append(args, rest)
	}
	return args
}

var (
	straceLine    = regexp.MustCompile(`^(\d+)\s+(.*)$`)
	straceResumed = regexp.MustCompile(`^<\.\.\. (\w+) resumed>(.*)$`)
	straceCall    = regexp.MustCompile(`^(\w+)\((.*)$`)
)

// splitRet splits "args) = ret" at the last ")", padding, "= " (strace
// pads short calls so that return values line up).
func splitRet(s string) (args, ret string, ok bool) {
	m := retSep.FindAllStringIndex(s, -1)
	if m == nil {
		return s, "", false
	}
	last := m[len(m)-1]
	return s[:last[0]], strings.TrimSpace(s[last[1]:]), true
}

var retSep = regexp.MustCompile(`\)\s+= `)

// parseStrace reads strace -f output. Calls interrupted by another thread's
// (printed "<unfinished ...>" and later "<... NAME resumed>") are joined,
// keeping both positions.
func parseStrace(text string) (*sysTrace, error) {
	tr := &sysTrace{raw: text}
	open := map[int]*sysCall{} // pid → its unfinished call
	pending := map[int]string{}
	firstSeen := map[int]int{} // pid → the line of its first call
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 0; sc.Scan(); n++ {
		m := straceLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		body := m[2]
		if _, ok := firstSeen[pid]; !ok {
			firstSeen[pid] = n
		}
		if tr.PID == 0 {
			tr.PID = pid
		}
		if strings.HasPrefix(body, "+++") || strings.HasPrefix(body, "---") {
			continue
		}
		if r := straceResumed.FindStringSubmatch(body); r != nil {
			c := open[pid]
			if c == nil || c.Name != r[1] {
				return nil, fmt.Errorf("strace line %d: resumed %s without its start", n+1, r[1])
			}
			delete(open, pid)
			whole := pending[pid] + r[2]
			delete(pending, pid)
			args, ret, _ := splitRet(whole)
			c.Args, c.Ret, c.Exit = splitArgs(args), ret, n
			c.Text = c.Name + "(" + whole
			continue
		}
		cm := straceCall.FindStringSubmatch(body)
		if cm == nil {
			continue
		}
		c := &sysCall{Entry: n, Exit: n, PID: pid, Name: cm[1]}
		tr.Calls = append(tr.Calls, c)
		if rest, ok := strings.CutSuffix(cm[2], " <unfinished ...>"); ok {
			open[pid], pending[pid] = c, rest
			c.Text = c.Name + "(" + rest + " <unfinished …>"
			continue
		}
		args, ret, _ := splitRet(cm[2])
		c.Args, c.Ret, c.Text = splitArgs(args), ret, body
	}
	// Threads (clone with CLONE_THREAD) belong to their creator's process;
	// other clones and forks are processes of their own.
	tr.proc = map[int]int{}
	var unreturned []*sysCall // thread clones whose result the trace lacks
	for _, c := range tr.Calls {
		switch c.Name {
		case "clone", "clone3", "fork", "vfork":
			thread := strings.Contains(c.Text, "CLONE_THREAD")
			child, err := strconv.Atoi(strings.Fields(c.Ret + " x")[0])
			if err != nil || child <= 0 {
				if thread {
					unreturned = append(unreturned, c)
				}
				continue
			}
			if thread {
				tr.proc[child] = tr.process(c.PID)
			} else {
				tr.proc[child] = child
			}
		}
	}
	// A new thread runs before its clone returns to its creator; when a
	// thread's exit_group ends the process in between, strace never
	// prints that clone's result, though the new thread has made calls
	// (exit_group itself, found by CI). A thread no clone names belongs to
	// the process of the last such clone begun before its first call.
	for pid, n := range firstSeen {
		if _, known := tr.proc[pid]; known || pid == tr.PID {
			continue
		}
		var creator *sysCall
		for _, c := range unreturned {
			if c.Entry < n {
				creator = c
			}
		}
		if creator != nil {
			tr.proc[pid] = tr.process(creator.PID)
		}
	}
	// A call still unfinished when the trace ended (exit_group, or a call
	// cut short by the process's death) did not return.
	for _, c := range open {
		c.Exit = 1 << 30
		c.Args = splitArgs(pending[c.PID])
		if c.Name == "exit_group" {
			c.Ret = "?"
		}
	}
	return tr, sc.Err()
}

// tracedCmd wraps c to run under strace writing to a file in dir; the
// returned function reads and parses the trace once c has ended.
func tracedCmd(t testing.TB, c *exec.Cmd, seedRoot string) func() *sysTrace {
	t.Helper()
	st := straceNeeded(t)
	out, err := os.CreateTemp("", "letterbox-strace-*.txt")
	must(t, err)
	out.Close()
	t.Cleanup(func() { os.Remove(out.Name()) })
	seed := snapshotPaths(t, seedRoot)
	c.Args = append(append([]string{st}, straceArgs(out.Name())...), c.Args...)
	c.Path = st
	return func() *sysTrace {
		t.Helper()
		b, err := os.ReadFile(out.Name())
		must(t, err)
		tr, err := parseStrace(string(b))
		if err != nil {
			t.Fatalf("reading the strace output: %v", err)
		}
		if len(tr.Calls) == 0 {
			t.Fatalf("strace recorded no system calls")
		}
		tr.seed = seed
		return tr
	}
}

// snapshotPaths lists every path under root (root itself included).
func snapshotPaths(t testing.TB, root string) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	if root == "" {
		return seen
	}
	filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			seen[p] = true
		}
		return nil
	})
	return seen
}

// runTraced runs a letterbox command like run, under strace; the trace's
// model knows which files under the env's directory existed before.
func (e *env) runTraced(stdin, name string, args ...string) (string, string, int, *sysTrace) {
	e.t.Helper()
	return e.runTracedCmd(e.cmd(name, args...), stdin)
}

// runTracedCmd runs c (made by e.cmd, maybe adjusted) under strace.
func (e *env) runTracedCmd(c *exec.Cmd, stdin string) (string, string, int, *sysTrace) {
	e.t.Helper()
	read := tracedCmd(e.t, c, e.Dir)
	c = bounded(e.t, c)
	c.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("%s under strace: %v\n%s", c.Args, err, errb.String())
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code, read()
}

// tracedServer is a server running under strace.
type tracedServer struct {
	*server
	e    *env
	read func() *sysTrace
	done chan struct{}
}

// startTraced is start under strace. Stop it with stop, which returns the
// trace.
func (e *env) startTraced(name, mode string, args ...string) *tracedServer {
	e.t.Helper()
	addr := freeAddr(e.t, "127.0.0.1")
	spec := addr
	if mode != "" {
		spec = mode + "=" + addr
	}
	c := e.cmd(name, append([]string{"--listen", spec}, args...)...)
	ts := &tracedServer{server: &server{Cmd: c, Addr: addr, stderr: &syncBuffer{}}, e: e, done: make(chan struct{})}
	ts.read = tracedCmd(e.t, c, e.Dir)
	c.Stderr = ts.stderr
	must(e.t, c.Start())
	go func() { c.Wait(); close(ts.done) }()
	e.t.Cleanup(func() {
		c.Process.Kill() // strace kills its tracees when killed
		<-ts.done
		if e.t.Failed() {
			e.t.Logf("%s stderr:\n%s", name, ts.stderr.String())
		}
	})
	waitListening(e.t, addr)
	return ts
}

// stop ends the server with SIGTERM (sent to the server, not to strace)
// and returns its trace.
func (ts *tracedServer) stop() *sysTrace {
	t := ts.e.t
	t.Helper()
	pid := tracedPID(t, ts.Cmd.Process.Pid)
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-ts.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("traced server (pid %d) still running 20s after SIGTERM", pid)
	}
	return ts.read()
}

// tracedPID returns the pid of strace's child (the traced command).
func tracedPID(t testing.TB, stracePID int) int {
	t.Helper()
	var pid int
	waitFor(t, 10*time.Second, "strace to start its command", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", stracePID, stracePID))
		if err != nil {
			return false
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return false
		}
		pid, _ = strconv.Atoi(f[0])
		return pid > 0
	})
	return pid
}

// The model.

// inode is a file's content; hard links share it.
type inode struct {
	dirty bool
	last  *sysCall // the last call that changed or flushed it
}

// dirent is one path's directory entry.
type dirent struct {
	present bool
	dirty   bool
	ino     *inode
	last    *sysCall
}

// fsModel is what a power loss would keep at one point of the trace.
type fsModel struct {
	ents map[string]*dirent
	seed map[string]bool
	// gone keeps the content of a path removed while a descriptor may
	// still be open on it: strace then prints the descriptor as
	// "path (deleted)", and what is written or flushed through it is still
	// that content, which another link (a dotlock made by linking a
	// unique file, then removing that name) may publish.
	gone map[string]*inode
}

func newModel(seed map[string]bool) *fsModel {
	return &fsModel{ents: map[string]*dirent{}, seed: seed, gone: map[string]*inode{}}
}

// fdInode returns the content descriptor argument i refers to: its path's,
// or a removed path's (nil when neither is a file the model knows).
func (m *fsModel) fdInode(c *sysCall, i int) *inode {
	if p := c.fdPath(i); p != "" {
		if systemPath(p) {
			return nil
		}
		return m.inodeOf(p)
	}
	if p, ok := strings.CutSuffix(c.fdTarget(i), " (deleted)"); ok && strings.HasPrefix(p, "/") {
		return m.gone[p]
	}
	return nil
}

// remove records that p's entry is gone, keeping its content for the
// descriptors still open on it.
func (m *fsModel) remove(p string, c *sysCall) {
	if d := m.ents[p]; d != nil && d.ino != nil {
		m.gone[p] = d.ino
	}
	m.setEntry(p, false, nil, c)
}

func (m *fsModel) ent(p string) *dirent { return m.ents[p] }

// existed reports whether p exists at this point of the run, as far as
// the model knows.
func (m *fsModel) existed(p string) bool {
	if d := m.ents[p]; d != nil {
		return d.present
	}
	return m.seed[p]
}

// inodeOf returns p's content, creating a clean one for a path the run
// has not touched yet (it existed before, durably).
func (m *fsModel) inodeOf(p string) *inode {
	d := m.ents[p]
	if d == nil {
		d = &dirent{present: true, ino: &inode{}}
		m.ents[p] = d
	}
	if d.ino == nil {
		d.ino = &inode{}
	}
	return d.ino
}

func (m *fsModel) touch(p string, c *sysCall) {
	ino := m.inodeOf(p)
	ino.dirty, ino.last = true, c
}

func (m *fsModel) setEntry(p string, present bool, ino *inode, c *sysCall) {
	m.ents[p] = &dirent{present: present, dirty: true, ino: ino, last: c}
}

// apply records a call's change to the file system (at its entry).
func (m *fsModel) apply(c *sysCall) {
	if !c.ok() {
		return
	}
	switch c.Name {
	case "write", "pwrite64", "writev", "pwritev", "pwritev2", "ftruncate", "fallocate", "fchmod", "fchown":
		if ino := m.fdInode(c, 0); ino != nil {
			ino.dirty, ino.last = true, c
		}
	case "truncate", "chmod", "chown", "lchown":
		m.touch(c.pathAt(-1, 0), c)
	case "fchmodat", "fchownat":
		m.touch(c.pathAt(0, 1), c)
	case "open", "openat", "creat":
		if len(c.Args) < 2 || c.Name == "openat" && len(c.Args) < 3 {
			return
		}
		var p, flags string
		switch c.Name {
		case "open":
			p, flags = c.pathAt(-1, 0), c.Args[1]
		case "creat":
			p, flags = c.pathAt(-1, 0), "O_CREAT|O_TRUNC"
		default:
			p, flags = c.pathAt(0, 1), c.Args[2]
		}
		if systemPath(p) {
			return
		}
		switch {
		case strings.Contains(flags, "O_CREAT") && !m.existed(p):
			m.setEntry(p, true, &inode{}, c)
		case strings.Contains(flags, "O_TRUNC"):
			m.touch(p, c)
		}
	case "mkdir":
		m.setEntry(c.pathAt(-1, 0), true, &inode{}, c)
	case "mkdirat":
		m.setEntry(c.pathAt(0, 1), true, &inode{}, c)
	case "rename", "renameat", "renameat2":
		from, to := c.pathAt(-1, 0), c.pathAt(-1, 1)
		if c.Name != "rename" {
			from, to = c.pathAt(0, 1), c.pathAt(2, 3)
		}
		ino := m.inodeOf(from)
		// A directory moves with everything under it.
		for p, d := range m.ents {
			if rest, ok := strings.CutPrefix(p, from+"/"); ok {
				delete(m.ents, p)
				m.ents[to+"/"+rest] = d
			}
		}
		m.setEntry(from, false, nil, c)
		m.setEntry(to, true, ino, c)
	case "link", "linkat":
		from, to := c.pathAt(-1, 0), c.pathAt(-1, 1)
		if c.Name == "linkat" {
			from, to = c.pathAt(0, 1), c.pathAt(2, 3)
		}
		m.setEntry(to, true, m.inodeOf(from), c)
	case "unlink", "rmdir":
		m.remove(c.pathAt(-1, 0), c)
	case "unlinkat":
		m.remove(c.pathAt(0, 1), c)
	}
}

// flush records a flush (at its exit).
func (m *fsModel) flush(c *sysCall) {
	if !c.ok() {
		return
	}
	switch c.Name {
	case "fsync", "fdatasync":
		p := c.fdPath(0)
		if p == "" {
			if ino := m.fdInode(c, 0); ino != nil {
				ino.dirty, ino.last = false, c
			}
			return
		}
		ino := m.inodeOf(p)
		ino.dirty, ino.last = false, c
		for q, d := range m.ents {
			if filepath.Dir(q) == p && q != p {
				d.dirty, d.last = false, c
			}
		}
	case "syncfs", "sync":
		for _, d := range m.ents {
			d.dirty, d.last = false, c
			if d.ino != nil {
				d.ino.dirty, d.ino.last = false, c
			}
		}
	}
}

func systemPath(p string) bool {
	for _, pre := range []string{"/dev/", "/proc/", "/sys/", "/etc/localtime"} {
		if strings.HasPrefix(p, pre) {
			return true
		}
	}
	return false
}

// why explains what is not durable about p ("" when it is), as a power
// loss at this point would leave it: present with its content, or absent.
func (m *fsModel) why(p string, wantPresent bool) string {
	p = filepath.Clean(p)
	d := m.ents[p]
	switch {
	case d == nil && wantPresent != m.seed[p]:
		return fmt.Sprintf("%s: never %s during the run", p, map[bool]string{true: "created", false: "removed"}[wantPresent])
	case d == nil:
	case d.present != wantPresent:
		return fmt.Sprintf("%s: %s at this point", p, map[bool]string{true: "missing", false: "still there"}[wantPresent])
	case d.dirty:
		return fmt.Sprintf("%s: its directory entry is not flushed (%s since %s)", p, map[bool]string{true: "created", false: "removed"}[wantPresent], d.last)
	case wantPresent && d.ino != nil && d.ino.dirty:
		return fmt.Sprintf("%s: its content is not flushed (last changed by %s)", p, d.ino.last)
	}
	if wantPresent {
		for dir := filepath.Dir(p); dir != "/" && dir != "."; dir = filepath.Dir(dir) {
			if a := m.ents[dir]; a != nil && a.dirty {
				return fmt.Sprintf("%s: its directory %s is not flushed into its parent (%s)", p, dir, a.last)
			}
		}
	}
	return ""
}

// contentWhy explains why p's content is not durable ("" when it is).
func (m *fsModel) contentWhy(p string) string {
	d := m.ents[filepath.Clean(p)]
	if d != nil && d.ino != nil && d.ino.dirty {
		return fmt.Sprintf("%s: its content is not flushed (last changed by %s)", p, d.ino.last)
	}
	return ""
}

// allWhy lists what is not durable under dir (changed entries, changed
// contents), skipping paths for which skip is true. A directory not
// flushed into its parent is reported once, not for each path under it.
func (m *fsModel) allWhy(dir string, skip func(string) bool) []string {
	var out []string
	if w := m.why(dir, m.existed(dir)); w != "" {
		out = append(out, w)
	}
	for p, d := range m.ents {
		if !strings.HasPrefix(p, dir+"/") || skip != nil && skip(p) {
			continue
		}
		switch {
		case d.dirty:
			out = append(out, fmt.Sprintf("%s: its directory entry is not flushed (%s since %s)", p,
				map[bool]string{true: "created", false: "removed"}[d.present], d.last))
		case d.present && d.ino != nil && d.ino.dirty:
			out = append(out, fmt.Sprintf("%s: its content is not flushed (last changed by %s)", p, d.ino.last))
		}
	}
	sort.Strings(out)
	return out
}

// replay walks the trace in order, calling check at each call's entry with
// the model as it stands just before that call.
func (tr *sysTrace) replay(check func(c *sysCall, m *fsModel)) {
	type point struct {
		pos  int
		exit bool
		c    *sysCall
	}
	var pts []point
	for _, c := range tr.Calls {
		pts = append(pts, point{c.Entry, false, c}, point{c.Exit, true, c})
	}
	sort.SliceStable(pts, func(i, j int) bool {
		if pts[i].pos != pts[j].pos {
			return pts[i].pos < pts[j].pos
		}
		return !pts[i].exit && pts[j].exit
	})
	m := newModel(tr.seed)
	for _, pt := range pts {
		if pt.exit {
			m.flush(pt.c)
			continue
		}
		if check != nil {
			check(pt.c, m)
		}
		m.apply(pt.c)
	}
}

// durability is one test's set of promises, checked against a trace.
type durability struct {
	t  testing.TB
	tr *sysTrace
	// Each rule is named for the failure message; it is given every call
	// and returns what is wrong at that call (nil: nothing, or the call is
	// not its concern) and whether the call was one it checks.
	rules []durabilityRule
}

type durabilityRule struct {
	name  string
	check func(c *sysCall, m *fsModel) (problems []string, matched bool)
	seen  int
	min   int
}

func (tr *sysTrace) promises(t testing.TB) *durability { return &durability{t: t, tr: tr} }

// rule adds a promise checked at every call that match selects, which
// must select at least one call (a promise never checked proves nothing).
func (d *durability) rule(name string, match func(*sysCall) bool, problems func(c *sysCall, m *fsModel) []string) *durability {
	d.rules = append(d.rules, durabilityRule{name: name, min: 1, check: func(c *sysCall, m *fsModel) ([]string, bool) {
		if !match(c) {
			return nil, false
		}
		return problems(c, m), true
	}})
	return d
}

// published: every rename or link that puts a file into one of dirs (the
// directories whose entries are the commit points) finds the file's
// content already durable, so no crash shows a name for partial data.
func (d *durability) published(dirs ...string) *durability {
	return d.publishedExcept(nil, dirs...)
}

// publishedExcept is published for the names in dirs that skip does not
// select (files the design lets a crash lose: caches rebuilt when missing).
func (d *durability) publishedExcept(skip func(name string) bool, dirs ...string) *durability {
	for _, dir := range dirs {
		dir := filepath.Clean(dir)
		d.rule("content flushed before it is published in "+dir, func(c *sysCall) bool {
			return c.ok() && isPublish(c) && filepath.Dir(publishTarget(c)) == dir &&
				(skip == nil || !skip(filepath.Base(publishTarget(c))))
		}, func(c *sysCall, m *fsModel) []string {
			if w := m.contentWhy(publishSource(c)); w != "" {
				return []string{w}
			}
			return nil
		})
	}
	return d
}

func isPublish(c *sysCall) bool {
	switch c.Name {
	case "rename", "renameat", "renameat2", "link", "linkat":
		return true
	}
	return false
}

func publishSource(c *sysCall) string {
	if c.Name == "rename" || c.Name == "link" {
		return c.pathAt(-1, 0)
	}
	return c.pathAt(0, 1)
}

func publishTarget(c *sysCall) string {
	if c.Name == "rename" || c.Name == "link" {
		return c.pathAt(-1, 1)
	}
	return c.pathAt(2, 3)
}

// durableAt: at every call match selects (a reply, an exit, a commit
// point), each path of present (a function of the call, so a rule can
// name what the call refers to) is durably there and each of absent is
// durably gone.
func (d *durability) durableAt(what string, match func(*sysCall) bool, present, absent func(*sysCall) []string) *durability {
	return d.rule(what, match, func(c *sysCall, m *fsModel) []string {
		var out []string
		if present != nil {
			for _, p := range present(c) {
				if w := m.why(p, true); w != "" {
					out = append(out, w)
				}
			}
		}
		if absent != nil {
			for _, p := range absent(c) {
				if w := m.why(p, false); w != "" {
					out = append(out, w)
				}
			}
		}
		return out
	})
}

// allDurableAt: at every call match selects, every change under dir
// (except paths skip selects) is durable.
func (d *durability) allDurableAt(what string, match func(*sysCall) bool, dir string, skip func(string) bool) *durability {
	dir = filepath.Clean(dir)
	return d.rule(what, match, func(c *sysCall, m *fsModel) []string { return m.allWhy(dir, skip) })
}

// check replays the trace and fails the test for each broken promise, and
// for each promise whose moment never came.
func (d *durability) check() {
	d.t.Helper()
	var failures []string
	d.tr.replay(func(c *sysCall, m *fsModel) {
		for i := range d.rules {
			r := &d.rules[i]
			probs, matched := r.check(c, m)
			if !matched {
				continue
			}
			r.seen++
			for _, p := range probs {
				failures = append(failures, fmt.Sprintf("%s — broken at %s:\n    %s", r.name, c, p))
			}
		}
	})
	for _, r := range d.rules {
		if r.seen < r.min {
			failures = append(failures, fmt.Sprintf("%s — its moment never came in the trace (the check proved nothing)", r.name))
		}
	}
	if len(failures) > 0 {
		if len(failures) > 20 {
			failures = append(failures[:20], fmt.Sprintf("… and %d more", len(failures)-20))
		}
		d.t.Errorf("durability order broken:\n  %s", strings.Join(failures, "\n  "))
		d.t.Logf("trace (%d calls) kept in the log below:\n%s", len(d.tr.Calls), tailLines(d.tr.raw, 400))
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("… %d lines before", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// Matchers of report moments.

// exitOK selects the traced command's own successful exit (any of its
// threads may make the call).
func (tr *sysTrace) exitOK() func(*sysCall) bool {
	return func(c *sysCall) bool { return tr.process(c.PID) == tr.PID && c.exitStatus() == 0 }
}

// process returns the process a thread belongs to.
func (tr *sysTrace) process(tid int) int {
	if p, ok := tr.proc[tid]; ok {
		return p
	}
	return tid
}

// sent selects writes to a socket that contain s.
func sent(s string) func(*sysCall) bool {
	return func(c *sysCall) bool { return c.sentOnSocket(s) }
}

// paths returns a constant path list for durableAt.
func paths(ps ...string) func(*sysCall) []string { return func(*sysCall) []string { return ps } }

// inTmp selects files in a Maildir's or the spool's tmp/: nobody reads
// them after a crash.
func inTmp(p string) bool { return filepath.Base(filepath.Dir(p)) == "tmp" }
