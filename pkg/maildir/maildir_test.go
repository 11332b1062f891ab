package maildir

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/internal/testwait"
)

func TestUniqueNames(t *testing.T) {
	re := regexp.MustCompile(`^[0-9]+\.M[0-9]+P[0-9]+Q[0-9]+R[0-9a-f]{16}\.[^/:]+$`)
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		n := uniqueName()
		if !re.MatchString(n) {
			t.Fatalf("name %q does not follow time.M<usec>P<pid>Q<n>R<rand>.<host>", n)
		}
		if seen[n] {
			t.Fatalf("duplicate name %q", n)
		}
		seen[n] = true
	}
}

func TestHostEscaped(t *testing.T) {
	h := host()
	if strings.ContainsAny(h, "/:,") {
		t.Fatalf("host part %q contains / : or ,", h)
	}
}

func TestEscapeHost(t *testing.T) {
	for in, want := range map[string]string{
		"mx.example.test": "mx.example.test",
		"a/b:c,d":         `a\057b\072c\054d`,
		"::":              `\072\072`,
	} {
		if got := escapeHost(in); got != want {
			t.Errorf("escapeHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCreatePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "Maildir")
	if err := Create(dir); err != nil {
		t.Fatal(err)
	}
	if err := Create(dir); err != nil {
		t.Fatalf("second Create: %v", err)
	}
	for _, sub := range []string{"", "tmp", "new", "cur"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want dir 0700", sub, fi.Mode())
		}
	}
	// A path under a regular file can't be created.
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if err := Create(filepath.Join(f, "Maildir")); err == nil {
		t.Fatal("Create under a regular file succeeded")
	}
}

// watchReader fails the test if anything shows up in new/ while the message
// is still being read: a file may appear there only once it's complete.
type watchReader struct {
	t   *testing.T
	r   io.Reader
	dir string
}

func (w *watchReader) Read(p []byte) (int, error) {
	if ents, _ := os.ReadDir(filepath.Join(w.dir, "new")); len(ents) != 0 {
		w.t.Errorf("%s appeared in new/ before the message was complete", ents[0].Name())
	}
	if len(p) > 1000 {
		p = p[:1000]
	}
	return w.r.Read(p)
}

func TestDeliverComplete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	if err := Create(dir); err != nil {
		t.Fatal(err)
	}
	msg := strings.Repeat("Subject: x\r\n\r\nline\n", 2000)
	path, err := Deliver(dir, &watchReader{t: t, r: strings.NewReader(msg), dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(path) != filepath.Join(dir, "new") {
		t.Fatalf("delivered to %s, want new/", path)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != msg {
		t.Fatalf("content differs (err %v, %d bytes, want %d)", err, len(got), len(msg))
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode())
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ not empty after delivery: %v", ents)
	}
	key, size, flags, ok := ParseName(filepath.Base(path))
	if !ok || size != int64(len(msg)) || flags != "" || key == "" {
		t.Fatalf("ParseName(%s) = %q %d %q %v", filepath.Base(path), key, size, flags, ok)
	}
	// W= is the size with CRLF line ends: each bare LF counts twice.
	want := int64(len(msg) + strings.Count(msg, "\n") - strings.Count(msg, "\r\n"))
	if w := field(key, 'W'); w != want {
		t.Fatalf("W=%d, want %d", w, want)
	}
}

type failReader struct{ n int }

func (f *failReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("boom")
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	for i := range p {
		p[i] = 'x'
	}
	f.n -= len(p)
	return len(p), nil
}

func TestDeliverFailingReaderLeavesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	Create(dir)
	if _, err := Deliver(dir, &failReader{n: 100000}); err == nil {
		t.Fatal("Deliver succeeded with a failing reader")
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if ents, _ := os.ReadDir(filepath.Join(dir, sub)); len(ents) != 0 {
			t.Errorf("%s/ holds %d files after a failed delivery", sub, len(ents))
		}
	}
	// A missing Maildir is an error, not a silent success.
	if _, err := Deliver(filepath.Join(dir, "nope"), strings.NewReader("x")); err == nil {
		t.Fatal("Deliver into a missing Maildir succeeded")
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	Create(dir)
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				body := fmt.Sprintf("Subject: %d-%d\n\nbody %d %d\n", w, i, w, i)
				if _, err := Deliver(dir, strings.NewReader(body)); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	testwait.Group(t, &wg, 30*time.Second, "the concurrent deliveries")
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	msgs, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != workers*each {
		t.Fatalf("%d messages, want %d", len(msgs), workers*each)
	}
	bodies := map[string]bool{}
	for _, m := range msgs {
		b, err := os.ReadFile(m.Path)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != m.Size {
			t.Errorf("%s: size %d, name says %d", m.Name, len(b), m.Size)
		}
		bodies[string(b)] = true
	}
	if len(bodies) != workers*each {
		t.Fatalf("%d distinct bodies, want %d", len(bodies), workers*each)
	}
}

func loadNames(t testing.TB) [][]string {
	f, err := os.Open("../../testdata/maildir/names.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		out = append(out, strings.Split(l, "\t"))
	}
	return out
}

func TestParseNameCorpus(t *testing.T) {
	cases := loadNames(t)
	if len(cases) < 10 {
		t.Fatalf("only %d cases in testdata/maildir/names.txt", len(cases))
	}
	for _, c := range cases {
		if len(c) != 4 {
			t.Fatalf("bad line %q", c)
		}
		size, _ := strconv.ParseInt(c[2], 10, 64)
		key, sz, flags, ok := ParseName(c[0])
		if !ok || key != c[1] || sz != size || flags != c[3] {
			t.Errorf("ParseName(%q) = %q %d %q %v, want %q %d %q", c[0], key, sz, flags, ok, c[1], size, c[3])
		}
	}
}

func TestParseNameRejects(t *testing.T) {
	for _, n := range []string{"", ".", "..", ".hidden", "a/b", ":2,S", "x\x00y"} {
		if _, _, _, ok := ParseName(n); ok {
			t.Errorf("ParseName(%q) ok", n)
		}
	}
}

// TestList: other programs' names, in delivery order, with their sizes
// and flags (pkg/maildir/cur's TestSetFlags moves them on).
func TestList(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	Create(dir)
	// Other programs' names, out of order, one with the microseconds that
	// make name order differ from delivery order.
	files := map[string]string{
		"new/1000000002.M5P1.host,S=3":                       "abc",
		"cur/1000000001.M999P1.host:2,S":                     "first",
		"cur/1000000002.M10P1.host,S=5,W=6:2,RSa":            "12345",
		"cur/1000000000.mutt.example:2,":                     "zero!",
		"cur/.hidden":                                        "skip",
		"new/1000000003.M1P1.dovecot,S=99,W=100:2,garbage%%": "size from S=",
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%s|%d|%s|%v", m.Key, m.Size, m.Flags, m.New))
	}
	want := []string{
		"1000000000.mutt.example|5||false",
		"1000000001.M999P1.host|5|S|false",
		"1000000002.M5P1.host,S=3|3||true",
		"1000000002.M10P1.host,S=5,W=6|5|RSa|false",
		"1000000003.M1P1.dovecot,S=99,W=100|99|abegr|true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("List:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if msgs[4].VSize != 100 || msgs[0].VSize != -1 {
		t.Errorf("VSize %d %d, want 100 -1", msgs[4].VSize, msgs[0].VSize)
	}
}

func TestFolders(t *testing.T) {
	root := filepath.Join(t.TempDir(), "Maildir")
	for _, bad := range []string{"../x", "a/b", ".x", "x.", "a..b", "a\\b", "a\nb"} {
		if _, err := FolderPath(root, bad); err == nil {
			t.Errorf("FolderPath(%q) accepted", bad)
		}
	}
	for name, want := range map[string]string{"Lists.go": ".Lists.go", "INBOX": "", "": "", "Sent": ".Sent"} {
		p, err := FolderPath(root, name)
		if err != nil || p != filepath.Join(root, want) {
			t.Errorf("FolderPath(%q) = %q, %v", name, p, err)
		}
	}
	for _, n := range []string{"Sent", "Lists.go", "Drafts"} {
		p, err := CreateFolder(root, n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(p, "maildirfolder")); err != nil {
			t.Errorf("%s: no maildirfolder file", n)
		}
	}
}

func FuzzParseName(f *testing.F) {
	for _, c := range loadNames(f) {
		f.Add(c[0])
	}
	f.Fuzz(func(t *testing.T, name string) {
		key, size, flags, ok := ParseName(name)
		if !ok {
			return
		}
		if key == "" || strings.Contains(key, ":") || !strings.HasPrefix(name, key) {
			t.Fatalf("key %q of %q", key, name)
		}
		if size < -1 {
			t.Fatalf("size %d", size)
		}
		if SortFlags(flags) != flags {
			t.Fatalf("flags %q not sorted/unique", flags)
		}
		// The name SetFlags would give parses back to the same key and flags.
		k2, s2, f2, ok2 := ParseName(key + ":2," + flags)
		if !ok2 || k2 != key || s2 != size || f2 != flags {
			t.Fatalf("re-parse of %q: %q %d %q %v", key+":2,"+flags, k2, s2, f2, ok2)
		}
	})
}

// TestListTypes: List gives each entry the type the directory listing
// says, as os.Lstat would (readers skip what is not a regular file: a
// symlink planted in cur/ must not read as one), and skips directories.
func TestListTypes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	if err := Create(dir); err != nil {
		t.Fatal(err)
	}
	cur := filepath.Join(dir, "cur")
	if err := os.WriteFile(filepath.Join(cur, "1.M1P1.h,S=1:2,S"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(cur, "2.M1P1.h,S=1:2,S")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(cur, "3.M1P1.h,S=1:2,S"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(cur, "4.M1P1.h:2,S"), 0o700); err != nil {
		t.Fatal(err)
	}
	// No ,S=: the size comes from an lstat, the link's own.
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "new", "5.M1P1.h")); err != nil {
		t.Fatal(err)
	}
	ms, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 4 {
		t.Fatalf("listed %d entries, want 4 (the directory skipped): %+v", len(ms), ms)
	}
	for _, m := range ms {
		fi, err := os.Lstat(m.Path)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type != fi.Mode().Type() {
			t.Errorf("%s: type %v, want %v", m.Name, m.Type, fi.Mode().Type())
		}
		if m.Name != filepath.Base(m.Path) || filepath.Dir(m.Path) != filepath.Join(dir, map[bool]string{true: "new", false: "cur"}[m.New]) {
			t.Errorf("name %q, path %q", m.Name, m.Path)
		}
		if m.Key == "5.M1P1.h" && m.Size != fi.Size() {
			t.Errorf("%s: size %d, want the link's %d", m.Name, m.Size, fi.Size())
		}
	}
	for _, mode := range []uint32{syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK} {
		dt := map[uint32]byte{syscall.S_IFREG: syscall.DT_REG, syscall.S_IFDIR: syscall.DT_DIR, syscall.S_IFLNK: syscall.DT_LNK,
			syscall.S_IFIFO: syscall.DT_FIFO, syscall.S_IFSOCK: syscall.DT_SOCK, syscall.S_IFCHR: syscall.DT_CHR, syscall.S_IFBLK: syscall.DT_BLK}[mode]
		if typ, ok := direntType(dt); !ok || typ != statType(mode) {
			t.Errorf("d_type %d: %v, %v; stat mode %o: %v", dt, typ, ok, mode, statType(mode))
		}
	}
	if _, ok := direntType(syscall.DT_UNKNOWN); ok {
		t.Error("DT_UNKNOWN taken as known")
	}
	if statType(syscall.S_IFLNK).IsRegular() || statType(syscall.S_IFIFO).IsRegular() || !statType(syscall.S_IFREG).IsRegular() {
		t.Error("statType: regular files misjudged")
	}
}

// TestListMany: a listing longer than List's 64 KiB steps (the path chunks
// and the populated []Message array) gives every message its own path,
// name and key, in delivery order.
func TestListMany(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	if err := Create(dir); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := 0; i < n; i++ {
		sub := "cur"
		name := fmt.Sprintf("%d.M%dP1Q%d.%s,S=1,W=1:2,S", 1700000000+i, i, i, strings.Repeat("h", 40))
		if i%3 == 0 {
			sub, name = "new", strings.TrimSuffix(name, ":2,S")
		}
		if err := os.WriteFile(filepath.Join(dir, sub, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != n {
		t.Fatalf("listed %d, want %d", len(ms), n)
	}
	for i, m := range ms {
		sub := "cur"
		if m.New {
			sub = "new"
		}
		if want := fmt.Sprintf("%d.M%dP1Q%d.", 1700000000+i, i, i); !strings.HasPrefix(m.Key, want) {
			t.Fatalf("message %d: key %q, want %s...", i, m.Key, want)
		}
		if m.Path != filepath.Join(dir, sub, m.Name) || !strings.HasPrefix(m.Name, m.Key) || m.Size != 1 || m.New != (i%3 == 0) {
			t.Fatalf("message %d: %+v", i, m)
		}
		if _, err := os.Lstat(m.Path); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}

// TestCreateRacingCreator: two creators of one Maildir at once (deliver
// and queue-runner's first messages for a new mailbox, in two processes).
// The first is held after making new/ and cur/, before any fsync: no
// delivery can begin then (tmp/ is made last), and the second, finding
// both made, fsyncs them, the Maildir and every level above before it makes
// tmp/, so the delivery it lets through does not wait on the first's fsyncs.
func TestCreateRacingCreator(t *testing.T) {
	top := t.TempDir()
	dir := filepath.Join(top, "example.test", "bob")
	held, release := make(chan struct{}), make(chan struct{})
	var calls int
	beforeTmp = func(*os.File) {
		calls++
		if calls == 1 {
			close(held)
			<-release
		}
	}
	var mu sync.Mutex
	var synced []string // while tmp/ was missing
	tmpAtLastSync := false
	onSync = func(p string) {
		mu.Lock()
		defer mu.Unlock()
		_, err := os.Stat(filepath.Join(dir, "tmp"))
		if err != nil {
			synced = append(synced, p)
		}
		if p == dir {
			tmpAtLastSync = err == nil
		}
	}
	t.Cleanup(func() { beforeTmp, onSync = nil, nil })

	first := make(chan error, 1)
	go func() { first <- Create(dir) }()
	<-held
	mu.Lock()
	if len(synced) != 0 {
		t.Errorf("fsyncs before the first creator's new/ and cur/ were made: %q", synced)
	}
	mu.Unlock()
	if _, err := Deliver(dir, strings.NewReader("Subject: early\n\nx\n")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("delivery into a Maildir whose creator has fsynced nothing: %v, want it refused for want of tmp/", err)
	}

	if err := Create(dir); err != nil {
		t.Fatalf("second creator: %v", err)
	}
	mu.Lock()
	got := map[string]bool{}
	for _, p := range synced {
		got[p] = true
	}
	for p := dir; ; p = filepath.Dir(p) {
		if !got[p] {
			t.Errorf("second creator did not fsync %s before making tmp/ (fsynced: %q)", p, synced)
		}
		if filepath.Dir(p) == p {
			break
		}
	}
	if !tmpAtLastSync {
		t.Errorf("the Maildir was not fsynced after tmp/ was made in it")
	}
	mu.Unlock()
	if _, err := Deliver(dir, strings.NewReader("Subject: after\n\nx\n")); err != nil {
		t.Fatalf("delivery after the second creator: %v", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first creator: %v", err)
	}
}
