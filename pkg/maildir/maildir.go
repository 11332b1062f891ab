// Package maildir is what letterbox needs of Maildir directories that
// github.com/emersion/go-maildir (v0.6.0) lacks. go-maildir does the rest
// where it fits: imapd's store (pkg/mailstore) walks cur/ with Dir.Walk,
// cleans stale tmp/ files with Dir.Clean and maps folder names with
// maildirpp; pkg/maildir/cur finds a message another program renamed
// (FindKey: its Dir.MessageByKey) and gives a message its flags in cur/
// (SetFlags), apart so that deliver(8) does not link go-maildir. Kept
// here, each because go-maildir lacks it:
//
//   - Durable delivery and APPEND/COPY/MOVE: Deliver, DeliverFolder, Save,
//     Link, Move, Create, CreateFolder write under tmp/, fsync, link into
//     new/ or cur/ and fsync the directory, reaching the Maildir without
//     following a symlink (safe.go); names carry ,S=<size>,W=<CRLF size>.
//     go-maildir's Create, CopyTo, NewDelivery and Init never fsync and
//     follow symlinks.
//   - Other programs' name formats: ParseName takes every name the Maildir
//     may hold (no info section, ":1,", flags in any order, IMAP keyword
//     letters) and reads Dovecot's ,S= and ,W= sizes (NameSizes); go-maildir
//     has no exported parser, its Walk refuses names without ":2,"
//     (MailfileError, FlagError) and knows no sizes. SortFlags, InfoName,
//     DeliveryOrder (new messages' order by the time in their names) and the
//     unique names of the spec's modern format have no go-maildir
//     counterpart either.
//   - The typed listing: List gives each entry of new/ and cur/ with its
//     type as the directory listing returned it (d_type), without a stat,
//     so pop3d refuses a symlink or FIFO planted in the Maildir without an
//     lstat per message. go-maildir's Walk reads names only, of cur/ only
//     (new/ it lists only by moving it into cur/: Unseen). Its Walk with an
//     fstatat per entry took 4 times as long as the typed listing of 10,000
//     messages (BenchmarkMaildirListing in pkg/pop3), and made pop3d's
//     login on them 1.6 to 2.8 times as long (bench/pop3.sh, login warm,
//     POP3_BENCH_ALT).
//   - Folder names' safety: CheckFolderName and FolderPath refuse names that
//     would leave the Maildir; maildirpp only splits and joins names.
//
// CONTRACT: exported names below are used by delivery, pop3 and imap; add to
// them, don't change them.
package maildir

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Create makes dir and its tmp/, new/ and cur/ (mode 0700), parents too.
// tmp/ is made last, once the rest of the Maildir is on disk (see
// createIn), so a delivery that finds tmp/ is not lost with its mailbox on
// a crash, whichever process made it. dir and its subdirectories are made
// and checked without following a symlink (an existing symlink there is
// ErrUnsafe); the path to dir's parent is the administrator's and is
// followed.
func Create(dir string) error {
	md, err := createRoot(dir)
	if err != nil {
		return err
	}
	return md.Close()
}

// createRoot is Create, returning the Maildir's descriptor.
func createRoot(dir string) (*os.File, error) {
	if dir == "" {
		return nil, errors.New("maildir: create: empty path")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("maildir: create %s: %w", dir, err)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("maildir: create %s: %w", dir, err)
	}
	pd, err := os.Open(parent)
	if err != nil {
		return nil, fmt.Errorf("maildir: create %s: %w", dir, err)
	}
	defer pd.Close()
	return createIn(pd, filepath.Base(dir), func() error { return syncAncestors(parent) })
}

// syncAncestors fsyncs every directory above dir up to the root: any level
// may be one that MkdirAll made just now, here or in another process
// creating the same Maildir (a first delivery to a domain makes
// <mail-root>/<domain>/), and a level nobody has fsynced into its parent
// would take the Maildir with it on a crash. Creations are rare; a level
// that is on disk already costs little. A level this process may not open
// (mode 0711) it cannot have made.
func syncAncestors(dir string) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if err := syncDir(p); err != nil && !errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("maildir: create: fsync %s: %w", p, err)
		}
		if filepath.Dir(p) == p {
			return nil
		}
	}
}

// beforeTmp, when set (tests), runs in createIn once the Maildir's new/
// and cur/ are made, before anything of it is fsynced.
var beforeTmp func(md *os.File)

// createIn makes the Maildir name inside the directory d, with new/, cur/
// and tmp/, each a real directory (not followed through a symlink), and
// returns the Maildir's descriptor.
//
// A delivery writes its message in tmp/ first, so a Maildir without tmp/
// takes none. createIn makes tmp/ only after new/ and cur/ are on disk in
// the Maildir, the Maildir in d and d in its own parents (syncAncestors):
// then no delivery is reported into a Maildir that a crash could still
// take away. That holds when another process makes the same Maildir at the
// same instant: whoever finds tmp/ missing fsyncs everything first, what
// it made itself and what it found made, since a directory found may be
// another creator's that has not been fsynced yet.
func createIn(d *os.File, name string, syncAbove func() error) (*os.File, error) {
	md, _, err := mkdirSub(d, name)
	if err != nil {
		return nil, fmt.Errorf("maildir: create: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		md.Close()
		return nil, fmt.Errorf("maildir: create %s: %w", md.Name(), err)
	}
	madeSub := false
	for _, sub := range []string{"new", "cur"} {
		s, m, err := mkdirSub(md, sub)
		if err != nil {
			return fail(err)
		}
		s.Close()
		madeSub = madeSub || m
	}
	if beforeTmp != nil {
		beforeTmp(md)
	}
	if tmp, err := openSub(md, "tmp"); err == nil {
		// A whole Maildir: its tmp/ was made after the rest was on disk.
		tmp.Close()
		if madeSub {
			// Someone removed new/ or cur/ from it.
			if err := syncFile(md); err != nil {
				return fail(err)
			}
		}
		return md, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fail(err)
	}
	if err := syncFile(md); err != nil {
		return fail(err)
	}
	if err := syncFile(d); err != nil {
		return fail(err)
	}
	if syncAbove != nil {
		if err := syncAbove(); err != nil {
			return fail(err)
		}
	}
	tmp, _, err := mkdirSub(md, "tmp")
	if err != nil {
		return fail(err)
	}
	tmp.Close()
	if err := syncFile(md); err != nil {
		return fail(err)
	}
	return md, nil
}

func syncDir(dir string) error {
	if onSync != nil {
		onSync(dir)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some file systems refuse fsync on directories; the rename is then as
	// durable as that file system makes it.
	if errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}

var (
	counter  atomic.Uint64
	hostOnce atomic.Pointer[string]
)

// host returns the host part of unique names, with '/' and ':' escaped as
// the Maildir spec says (\057, \072); ',' too (\054), since ',' starts the
// Courier/Dovecot size fields.
func host() string {
	if h := hostOnce.Load(); h != nil {
		return *h
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	h = escapeHost(h)
	hostOnce.Store(&h)
	return h
}

// escapeHost escapes '/', ':' and ',' in a host name as \057, \072 and
// \054 (a loop, not a strings.Replacer: building one costs deliver(8) more
// than the one name it escapes).
func escapeHost(h string) string {
	if !strings.ContainsAny(h, "/:,") {
		return h
	}
	var b strings.Builder
	for i := 0; i < len(h); i++ {
		switch h[i] {
		case '/':
			b.WriteString(`\057`)
		case ':':
			b.WriteString(`\072`)
		case ',':
			b.WriteString(`\054`)
		default:
			b.WriteByte(h[i])
		}
	}
	return b.String()
}

// uniqueName returns a name per the Maildir spec's modern recommendation:
// time.M<usec>P<pid>Q<counter>R<random>.<host>.
func uniqueName() string {
	now := time.Now()
	// The random part guards against another host or pid namespace using
	// the same pid in the same microsecond; it need not be secret (the
	// file is created with O_EXCL, so a guessed name fails a delivery and
	// overwrites nothing). math/rand/v2 draws from the runtime's ChaCha8,
	// seeded by the kernel at exec: no system call. crypto/rand's first
	// Read would set up its generator and a timer that starts the
	// runtime's poller, a noticeable share of deliver(8)'s run per message.
	var rb [8]byte
	binary.LittleEndian.PutUint64(rb[:], rand.Uint64())
	var b strings.Builder
	b.Grow(80)
	b.WriteString(strconv.FormatInt(now.Unix(), 10))
	b.WriteString(".M")
	b.WriteString(strconv.Itoa(now.Nanosecond() / 1000))
	b.WriteString("P")
	b.WriteString(strconv.Itoa(os.Getpid()))
	b.WriteString("Q")
	b.WriteString(strconv.FormatUint(counter.Add(1), 10))
	b.WriteString("R")
	b.WriteString(hex.EncodeToString(rb[:]))
	b.WriteString(".")
	b.WriteString(host())
	return b.String()
}

// countingWriter counts bytes and line feeds, for the ,S= and ,W= fields
// (W: the size with CRLF line ends, what POP3 and IMAP report).
type countingWriter struct {
	w          io.Writer
	n, bareLFs int64
	lastCR     bool
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	for i := 0; i < n; i++ {
		switch p[i] {
		case '\n':
			if !c.lastCR {
				c.bareLFs++
			}
			c.lastCR = false
		case '\r':
			c.lastCR = true
		default:
			c.lastCR = false
		}
	}
	c.n += int64(n)
	return n, err
}

// Deliver writes r into dir/new/ durably and returns the new file's path.
// Success means the file and the new/ directory entry are on disk.
//
// The file is written under tmp/, fsynced, then hard-linked into new/ (a
// rename where links are refused) and new/ is fsynced: a crash at any point
// leaves either nothing or the whole message in new/. The name in new/
// carries ,S=<size>,W=<size with CRLF> as Dovecot's do, so readers know
// sizes without reading. dir, tmp/ and new/ are not followed through a
// symlink (ErrUnsafe), and the file is created 0600 with O_EXCL|O_NOFOLLOW.
func Deliver(dir string, r io.Reader) (string, error) {
	return DeliverFolder(dir, "", r)
}

// DeliverFolder is Deliver into the Maildir++ folder name of the Maildir
// root ("" or INBOX: root itself), the folder reached from root without
// following a symlink.
func DeliverFolder(root, name string, r io.Reader) (string, error) {
	return deliverFolder(root, name, r, nil)
}

// deliverFolder is DeliverFolder, fsyncing new/ through ds (nil: on its
// own).
func deliverFolder(root, name string, r io.Reader, ds *DirSyncer) (string, error) {
	md, err := openDir(root)
	if err != nil {
		return "", fmt.Errorf("maildir: deliver: %w", err)
	}
	defer md.Close()
	if name != "" && !strings.EqualFold(name, "INBOX") {
		if err := CheckFolderName(name); err != nil {
			return "", err
		}
		fd, err := openSub(md, "."+name)
		if err != nil {
			return "", fmt.Errorf("maildir: deliver: %w", err)
		}
		defer fd.Close()
		md = fd
	}
	return deliverIn(md, r, ds)
}

// deliverIn is Deliver into the open Maildir md, fsyncing new/ through ds.
func deliverIn(md *os.File, r io.Reader, ds *DirSyncer) (string, error) {
	tmpd, err := openSub(md, "tmp")
	if err != nil {
		return "", fmt.Errorf("maildir: deliver: %w", err)
	}
	defer tmpd.Close()
	newd, err := openSub(md, "new")
	if err != nil {
		return "", fmt.Errorf("maildir: deliver: %w", err)
	}
	defer newd.Close()
	name := uniqueName()
	tmp := filepath.Join(tmpd.Name(), name)
	fd, err := unix.Openat(int(tmpd.Fd()), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", fmt.Errorf("maildir: deliver %s: %w", tmp, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	removeTmp := func() { unix.Unlinkat(int(tmpd.Fd()), name, 0) }
	fail := func(err error) (string, error) {
		f.Close()
		removeTmp()
		return "", fmt.Errorf("maildir: deliver %s: %w", tmp, err)
	}
	cw := &countingWriter{w: f}
	if _, err := io.Copy(cw, r); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		removeTmp()
		return "", fmt.Errorf("maildir: deliver %s: %w", tmp, err)
	}
	final := name + ",S=" + strconv.FormatInt(cw.n, 10) + ",W=" + strconv.FormatInt(cw.n+cw.bareLFs, 10)
	finalPath := filepath.Join(newd.Name(), final)
	if err := unix.Linkat(int(tmpd.Fd()), name, int(newd.Fd()), final, 0); err != nil {
		// Link is the spec's way (never overwrites); file systems without hard
		// links get a rename, safe too since the name is unique. An existing
		// name is never overwritten.
		if errors.Is(err, unix.EEXIST) {
			removeTmp()
			return "", fmt.Errorf("maildir: deliver %s: %w", finalPath, os.ErrExist)
		}
		if lerr := unix.Renameat(int(tmpd.Fd()), name, int(newd.Fd()), final); lerr != nil {
			removeTmp()
			return "", fmt.Errorf("maildir: deliver %s: %w", finalPath, err)
		}
	} else {
		removeTmp()
	}
	if err := ds.SyncDir(newd); err != nil {
		// The message may or may not survive a crash: report failure so the
		// sender retries (a duplicate beats a loss), and take it back.
		unix.Unlinkat(int(newd.Fd()), final, 0)
		return "", fmt.Errorf("maildir: deliver: fsync %s: %w", newd.Name(), err)
	}
	return finalPath, nil
}

// FolderPath returns the Maildir++ folder name's directory under root
// (root/.name), refusing names that would leave root.
//
// name is a Maildir++ name: components separated by '.', without the leading
// dot ("Lists.go" is root/.Lists.go). "INBOX" (any case) and "" are the root
// itself.
func FolderPath(root, name string) (string, error) {
	if name == "" || strings.EqualFold(name, "INBOX") {
		return root, nil
	}
	if err := CheckFolderName(name); err != nil {
		return "", err
	}
	return filepath.Join(root, "."+name), nil
}

// CheckFolderName reports why name is not a safe Maildir++ folder name.
func CheckFolderName(name string) error {
	bad := func(why string) error { return fmt.Errorf("maildir: folder name %q: %s", name, why) }
	switch {
	case name == "":
		return bad("empty")
	case strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, ".."):
		return bad("empty component")
	case strings.ContainsAny(name, "/\\"):
		return bad("contains a slash")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return bad("control character")
		}
	}
	return nil
}

// CreateFolder creates the Maildir++ folder name under root (and root) with
// the maildirfolder marker file Courier and Dovecot write, and returns its
// path. Nothing below root's parent is followed through a symlink.
func CreateFolder(root, name string) (string, error) {
	p, err := FolderPath(root, name)
	if err != nil {
		return "", err
	}
	md, err := createRoot(root)
	if err != nil {
		return "", err
	}
	defer md.Close()
	if p == root {
		return p, nil
	}
	// root is whole (createRoot): on disk up to the file system's root.
	fd, err := createIn(md, "."+name, nil)
	if err != nil {
		return "", err
	}
	defer fd.Close()
	// The marker is created, never opened through a symlink planted there;
	// one that exists already (of any kind) is left as it is.
	if mf, err := unix.Openat(int(fd.Fd()), "maildirfolder", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600); err == nil {
		unix.Close(mf)
	}
	return p, nil
}

// Message is one message file of a Maildir.
type Message struct {
	Key   string // unique part of the name, before ":2,"
	Path  string
	Name  string
	Size  int64  // from ,S= when present, else stat
	Flags string // sorted flag letters after :2,
	New   bool   // in new/
	// VSize is the size with CRLF line ends (from ,W=), or -1 when the name
	// doesn't say.
	VSize int64
	// Type is the entry's file type as the directory listing gave it,
	// without a stat (0: a regular file): a reader that must not follow a
	// symlink planted in the Maildir skips what is not regular.
	Type fs.FileMode
}

// ParseName splits a Maildir file name into its unique key (before the
// ':'), the size from a ,S=<size> field (-1 when absent) and the flag
// letters after ":2," (sorted, duplicates removed; lower-case letters are
// IMAP keywords as Dovecot writes them). Names with other info kinds (":1,")
// or none parse with no flags. ok is false for names that are not message
// files (dot files, empty, path separators).
func ParseName(name string) (key string, size int64, flags string, ok bool) {
	if name == "" || name[0] == '.' || strings.ContainsAny(name, "/\x00") {
		return "", -1, "", false
	}
	key, info, _ := strings.Cut(name, ":")
	if key == "" {
		return "", -1, "", false
	}
	size = field(key, 'S')
	if strings.HasPrefix(info, "2,") {
		flags = SortFlags(info[2:])
	}
	return key, size, flags, true
}

// field returns the number in a ,<c>=<digits> field of key, or -1.
func field(key string, c byte) int64 {
	_, rest, found := strings.Cut(key, ",")
	for found {
		var f string
		f, rest, found = strings.Cut(rest, ",")
		if len(f) > 2 && f[0] == c && f[1] == '=' {
			if n, err := strconv.ParseInt(f[2:], 10, 64); err == nil && n >= 0 {
				return n
			}
		}
	}
	return -1
}

// SortFlags returns the letters of flags sorted in ASCII order (standard
// upper-case flags before keyword letters, as Dovecot and mutt write them)
// without duplicates; anything but ASCII letters is dropped.
func SortFlags(flags string) string {
	// Names carry their flags sorted already (we and Dovecot write them
	// so): return them as they are, without an allocation per message.
	sorted := true
	for i := 0; i < len(flags) && sorted; i++ {
		c := flags[i]
		sorted = ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) && (i == 0 || flags[i-1] < c)
	}
	if sorted {
		return flags
	}
	var seen [128]bool
	for i := 0; i < len(flags); i++ {
		c := flags[i]
		if (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') {
			seen[c] = true
		}
	}
	var b []byte
	for c := 'A'; c <= 'z'; c++ {
		if seen[c] {
			b = append(b, byte(c))
		}
	}
	return string(b)
}

// List returns the messages in dir's new/ and cur/, oldest first (by the
// delivery time in the name, then the name). Files whose names aren't
// message names are skipped. A missing new/ or cur/ is an empty one.
func List(dir string) ([]Message, error) {
	out := make([]Message, 0, listSizeHint(dir))
	var paths pathArena
	var outPages prefaulter
	for _, sub := range []string{"new", "cur"} {
		d := filepath.Join(dir, sub)
		err := scanDir(d, func(nameb []byte, typ fs.FileMode, dfd int) {
			if typ.IsDir() {
				return
			}
			// One string holds the path and, as its tail, the name: a
			// login on 10,000 messages allocates (and, in a fresh process,
			// faults in) half the memory it did with two.
			path := paths.join(d, nameb)
			name := path[len(d)+1:]
			key, size, flags, ok := ParseName(name)
			if !ok {
				return
			}
			m := Message{Key: key, Name: name, Path: path,
				Size: size, Flags: flags, New: sub == "new", VSize: field(key, 'W'), Type: typ}
			if m.Size < 0 {
				var st unix.Stat_t
				if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					// Gone since the listing: another reader expunged or moved it.
					return
				}
				m.Size = st.Size
			}
			outPages.ahead(out)
			out = append(out, m)
		})
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("maildir: list %s: %w", d, err)
		}
	}
	// Each name's time is parsed once: parsing it in every comparison was
	// two thirds of a 10,000-message listing.
	by := byDelivery{msgs: out, stamps: make([][2]int64, len(out))}
	PrefaultSlice(by.stamps)
	for i := range out {
		by.stamps[i][0], by.stamps[i][1] = stamp(out[i].Key)
	}
	sort.Sort(by)
	return out, nil
}

// direntBufSize is scanDir's buffer for getdents(2): 10,000 Maildir names
// take about 20 calls instead of os.ReadDir's 90 (8 KiB each).
const direntBufSize = 32 << 10

// A session process lists its Maildir in fresh memory, and on a virtual
// machine a page fault costs more than listing the entry that touched the
// page (17 us here, for a 4 KiB page: 25 entries' worth). So List asks the
// kernel for its big buffers' pages in one call per 64 KiB
// (MADV_POPULATE_WRITE, Linux 5.14; older kernels refuse it and the pages
// fault in as before): the []Message array ahead of its use, and the path
// strings, which live in 64 KiB chunks rather than one allocation each.

const prefaultStep = 64 << 10

// prefaultBytes populates b's pages; b starts on a page (a Go allocation of
// 64 KiB or more does).
func prefaultBytes(b []byte) {
	unix.Madvise(b, unix.MADV_POPULATE_WRITE)
}

// PrefaultSlice populates the pages of s's array in one call when it is
// large enough to start on a page of its own (64 KiB or more): for arrays
// a fresh process fills at once (see List).
func PrefaultSlice[T any](s []T) {
	if len(s) == 0 {
		return
	}
	n := uintptr(len(s)) * unsafe.Sizeof(s[0])
	if n < prefaultStep {
		return
	}
	prefaultBytes(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), n))
}

// pathArena makes the strings dir + "/" + name in shared 64 KiB chunks.
type pathArena struct{ buf []byte }

func (a *pathArena) join(dir string, name []byte) string {
	n := len(dir) + 1 + len(name)
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, max(prefaultStep, n))
		prefaultBytes(a.buf[:cap(a.buf)])
	}
	off := len(a.buf)
	a.buf = append(a.buf, dir...)
	a.buf = append(a.buf, '/')
	a.buf = append(a.buf, name...)
	// The chunk's bytes up to len(a.buf) are never written again.
	return unsafe.String(&a.buf[off], n)
}

// prefaulter populates a slice's array ahead of the appends that use it,
// a step at a time.
type prefaulter struct {
	base unsafe.Pointer // the array populated so far, or nil
	done uintptr        // bytes of it populated
}

// ahead populates the next step of s's array when the next element would
// lie beyond what is populated. Arrays under a step are left alone.
func (p *prefaulter) ahead(s []Message) {
	const size = unsafe.Sizeof(Message{})
	total := uintptr(cap(s)) * size
	if total < prefaultStep {
		return
	}
	base := unsafe.Pointer(unsafe.SliceData(s))
	if base != p.base {
		p.base, p.done = base, 0
	}
	if uintptr(len(s)+1)*size <= p.done || p.done >= total {
		return
	}
	end := min(p.done+prefaultStep, total&^(prefaultStep-1))
	if end <= p.done {
		p.done = total // the last, partial step faults in by itself
		return
	}
	prefaultBytes(unsafe.Slice((*byte)(unsafe.Add(base, p.done)), end-p.done))
	p.done = end
}

// listSizeHint guesses how many entries dir's new/ and cur/ hold from the
// directories' sizes: ext4 holds a Maildir name of 60-70 octets in about 80
// octets of directory (tmpfs reports 20 an entry: List's slice grows
// then). A slice grown by appending touches about twice the memory, and
// each page a fresh session process touches is a page fault; capacity
// allocated but never used is not touched.
func listSizeHint(dir string) int {
	var n int64
	for _, sub := range []string{"new", "cur"} {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(dir, sub), &st) == nil && st.Size > 0 {
			n += st.Size / 64
		}
	}
	return int(min(n, 1<<20))
}

// scanDir calls fn for each entry of dir but . and .., in directory order,
// with its name (valid until fn returns), its file type and the
// directory's descriptor (for an fstatat of the entry). The type is the
// listing's d_type, as os.ReadDir gives it; where the file system leaves
// it unknown it comes from an fstatat that does not follow a symlink. It
// is os.ReadDir without a DirEntry, a name string and a sort per entry.
func scanDir(dir string, fn func(name []byte, typ fs.FileMode, dfd int)) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, direntBufSize)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "readdirent", Path: dir, Err: err}
		}
		if n <= 0 {
			return nil
		}
		for b := buf[:n]; len(b) >= 19; {
			// struct linux_dirent64: ino 8, off 8, reclen 2, type 1, name.
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return &os.PathError{Op: "readdirent", Path: dir, Err: unix.EIO}
			}
			rec := b[:reclen]
			b = b[reclen:]
			if binary.NativeEndian.Uint64(rec[0:8]) == 0 {
				continue // a deleted entry
			}
			nameb := rec[19:]
			if i := bytes.IndexByte(nameb, 0); i >= 0 {
				nameb = nameb[:i]
			}
			if len(nameb) == 0 || string(nameb) == "." || string(nameb) == ".." {
				continue
			}
			typ, ok := direntType(rec[18])
			if !ok {
				var st unix.Stat_t
				if err := unix.Fstatat(fd, string(nameb), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					continue // gone since the listing
				}
				typ = statType(st.Mode)
			}
			fn(nameb, typ, fd)
		}
	}
}

// direntType is the fs.FileMode type of a d_type (as os.ReadDir gives it);
// ok is false for DT_UNKNOWN.
func direntType(t byte) (fs.FileMode, bool) {
	switch t {
	case unix.DT_REG:
		return 0, true
	case unix.DT_DIR:
		return fs.ModeDir, true
	case unix.DT_LNK:
		return fs.ModeSymlink, true
	case unix.DT_FIFO:
		return fs.ModeNamedPipe, true
	case unix.DT_SOCK:
		return fs.ModeSocket, true
	case unix.DT_CHR:
		return fs.ModeDevice | fs.ModeCharDevice, true
	case unix.DT_BLK:
		return fs.ModeDevice, true
	case unix.DT_UNKNOWN:
		return 0, false
	}
	return fs.ModeIrregular, true
}

// statType is the fs.FileMode type of a stat mode.
func statType(mode uint32) fs.FileMode {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return 0
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	}
	return fs.ModeIrregular
}

// byDelivery sorts messages by the delivery time in their names (stamps:
// seconds and microseconds of each), then by key; one key's files (copies)
// new/ first, then by name.
type byDelivery struct {
	msgs   []Message
	stamps [][2]int64
}

func (b byDelivery) Len() int { return len(b.msgs) }
func (b byDelivery) Swap(i, j int) {
	b.msgs[i], b.msgs[j] = b.msgs[j], b.msgs[i]
	b.stamps[i], b.stamps[j] = b.stamps[j], b.stamps[i]
}
func (b byDelivery) Less(i, j int) bool {
	if b.stamps[i] != b.stamps[j] {
		if b.stamps[i][0] != b.stamps[j][0] {
			return b.stamps[i][0] < b.stamps[j][0]
		}
		return b.stamps[i][1] < b.stamps[j][1]
	}
	mi, mj := &b.msgs[i], &b.msgs[j]
	if mi.Key != mj.Key {
		return mi.Key < mj.Key
	}
	if mi.New != mj.New {
		return mi.New
	}
	return mi.Name < mj.Name
}

// stamp returns the seconds and microseconds of a name's time: the leading
// digits, and the M<usec> part of the modern format when present.
func stamp(key string) (sec, usec int64) {
	i := 0
	for i < len(key) && key[i] >= '0' && key[i] <= '9' {
		i++
	}
	sec, _ = strconv.ParseInt(key[:i], 10, 64)
	if i < len(key) && key[i] == '.' && i+1 < len(key) && key[i+1] == 'M' {
		j := i + 2
		for j < len(key) && key[j] >= '0' && key[j] <= '9' {
			j++
		}
		usec, _ = strconv.ParseInt(key[i+2:j], 10, 64)
	}
	return sec, usec
}

// InfoName is the name of the message key with the flags (sorted as
// SortFlags sorts them) in cur/: "<key>:2,<flags>".
func InfoName(key, flags string) string { return key + ":2," + SortFlags(flags) }
