package pop3

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	gomaildir "github.com/emersion/go-maildir"
	"golang.org/x/sys/unix"

	"letterbox/pkg/maildir"
	"letterbox/pkg/maildir/cur"
)

// LockName is the lock file in the Maildir root that one POP3 session at a
// time holds with flock(2). The kernel drops the lock when the holder dies,
// so a crashed session never blocks the user.
const LockName = "letterbox-pop3.lock"

// SizeCacheName caches the CRLF sizes of messages whose names carry no
// ,W= field (Courier's and other programs' files), so that only the first
// session reads them. Maildir files never change, so an entry never goes
// stale; entries for messages gone from the Maildir are dropped.
const SizeCacheName = "letterbox-pop3.sizes"

type maildirDrop struct {
	dir         string
	lock        *os.File
	msgs        []maildir.Message
	info        []MessageInfo
	flagUpdates bool
	cacheDirty  bool
	skipped     []string // entries that are not regular files or not readable
}

// OpenMaildir locks the Maildir dir (created when missing) and takes its
// snapshot. With flagUpdates, messages retrieved are marked seen (S) and
// moved to cur/ at QUIT, as Dovecot does.
func OpenMaildir(dir string, flagUpdates bool) (Maildrop, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := maildir.Create(dir); err != nil {
			return nil, fmt.Errorf("pop3: maildrop %s: %w", dir, err)
		}
	}
	lf, err := openLock(filepath.Join(dir, LockName))
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrInUse
		}
		return nil, fmt.Errorf("pop3: maildrop %s: lock: %w", dir, err)
	}
	d := &maildirDrop{dir: dir, lock: lf, flagUpdates: flagUpdates}
	if err := d.load(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// openLock opens (creating) the lock file, never through a symlink: a
// symlink planted there would have the session create or open a file
// anywhere its process may write. Such a lock is a permanent error until
// the owner removes it; removing it here would race with another session
// taking the real lock.
func openLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		err = nofollowErr(err)
		if errors.Is(err, maildir.ErrNotRegular) {
			return nil, &PermError{fmt.Errorf("pop3: lock: %w", err)}
		}
		return nil, fmt.Errorf("pop3: lock: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, &PermError{fmt.Errorf("pop3: lock %s: %w", path, maildir.ErrNotRegular)}
	}
	return f, nil
}

func (d *maildirDrop) load() error {
	msgs, err := maildir.List(d.dir)
	if err != nil {
		return fmt.Errorf("pop3: maildrop %s: %w", d.dir, err)
	}
	cache := d.readCache()
	cached, hits := len(cache), 0
	d.msgs = msgs[:0]
	d.info = make([]MessageInfo, 0, len(msgs))
	maildir.PrefaultSlice(d.info[:cap(d.info)])
	// The same unique name in new/ and cur/ (a copy, not a move) is shown
	// once. Two files with one UID have one delivery time (it is part of
	// the unique name), and List sorts by it: a UID is looked for among
	// the messages of its time only, not in a map of all of them (a map of
	// 10,000 UIDs was a tenth of a login's memory, each page of which a
	// fresh session process pays for in a page fault).
	dup := dupFinder{}
	for _, m := range msgs {
		uid := uidOf(m.Key)
		sec, usec := maildir.DeliveryStamp(m.Key)
		if dup.seen(d.info, uid, [2]int64{sec, usec}) {
			continue
		}
		if !m.Type.IsRegular() {
			// A symlink (to another user's message, to a file only root
			// may read), a FIFO, a device: never a message. The type is
			// the listing's (d_type), not an lstat per message: at 10,000
			// messages the lstats were most of a login's time (and why the
			// listing is maildir.List, not go-maildir's Walk, which gives
			// names only: see pkg/maildir). A file
			// swapped for a symlink after the listing is refused when
			// opened (O_NOFOLLOW, openRegular).
			d.skipped = append(d.skipped, m.Name)
			continue
		}
		size := m.VSize
		if size < 0 {
			if n, ok := cache[m.Key]; ok {
				size = n
				hits++
			} else {
				f, err := maildir.OpenRegular(m.Path)
				if err != nil {
					if !errors.Is(err, os.ErrNotExist) {
						// Swapped for a symlink since, or not the
						// owner's to read: the others are still served.
						d.skipped = append(d.skipped, m.Name)
					}
					continue
				}
				size, err = CRLFSize(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("pop3: maildrop %s: read %s: %w", d.dir, m.Name, err)
				}
				d.cacheDirty = true
			}
		}
		dup.add(uid)
		d.msgs = append(d.msgs, m)
		d.info = append(d.info, MessageInfo{UID: uid, Size: size})
	}
	if hits < cached {
		// Entries of messages that are gone: drop them.
		d.cacheDirty = true
	}
	return nil
}

// dupFinder finds a UID among those of the current run of messages with
// one delivery time (the listing is sorted by it): by a scan of the run's
// entries in info, or, in a long run (a mailbox imported with one time for
// all), in a map of the run's UIDs.
type dupFinder struct {
	stamp   [2]int64
	start   int // the run's first index in info
	started bool
	long    map[string]bool // the run's UIDs, once it is longer than maxScan
}

const dupMaxScan = 16

// seen starts a new run when stamp differs from the run's, then reports
// whether uid is one of the run's (info holds the messages kept so far).
func (f *dupFinder) seen(info []MessageInfo, uid string, stamp [2]int64) bool {
	if !f.started || stamp != f.stamp {
		f.stamp, f.start, f.started, f.long = stamp, len(info), true, nil
		return false
	}
	run := info[f.start:]
	if f.long == nil && len(run) > dupMaxScan {
		f.long = make(map[string]bool, 2*len(run))
		for _, mi := range run {
			f.long[mi.UID] = true
		}
	}
	if f.long != nil {
		return f.long[uid]
	}
	for _, mi := range run {
		if mi.UID == uid {
			return true
		}
	}
	return false
}

// add records uid, kept, in a long run's map (a short run scans info).
func (f *dupFinder) add(uid string) {
	if f.long != nil {
		f.long[uid] = true
	}
}

// uidOf is a message's UIDL: the Maildir unique name (the key without
// Dovecot's and Courier's ,S=/,W= fields), which never changes and is never
// reused. A name longer than 70 octets or with characters UIDL can't carry
// is replaced by its SHA-1, which is just as stable.
func uidOf(key string) string {
	base, _, _ := strings.Cut(key, ",")
	ok := len(base) > 0 && len(base) <= 70
	for i := 0; ok && i < len(base); i++ {
		ok = base[i] >= 0x21 && base[i] <= 0x7e
	}
	if ok {
		return base
	}
	sum := sha1.Sum([]byte(base))
	return hex.EncodeToString(sum[:])
}

func (d *maildirDrop) readCache() map[string]int64 {
	cache := map[string]int64{}
	f, err := maildir.OpenRegular(filepath.Join(d.dir, SizeCacheName))
	if err != nil {
		return cache
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if n, err := strconv.ParseInt(v, 10, 64); ok && err == nil && n >= 0 {
			cache[k] = n
		}
	}
	return cache
}

// writeCache replaces the size cache atomically; failing to write it only
// costs the next session a re-read.
func (d *maildirDrop) writeCache() {
	if !d.cacheDirty {
		return
	}
	d.cacheDirty = false
	path := filepath.Join(d.dir, SizeCacheName)
	tmp := path + ".tmp"
	f, err := createExclusive(tmp)
	if errors.Is(err, os.ErrExist) || errors.Is(err, maildir.ErrNotRegular) {
		// Left by a session that died, or planted: we hold the lock, so
		// it is no writer's. Remove removes a symlink, never its target.
		os.Remove(tmp)
		f, err = createExclusive(tmp)
	}
	if err != nil {
		return
	}
	w := bufio.NewWriter(f)
	for i, m := range d.msgs {
		if m.VSize < 0 && m.Key != "" {
			fmt.Fprintf(w, "%s %d\n", m.Key, d.info[i].Size)
		}
	}
	if w.Flush() != nil || f.Close() != nil {
		os.Remove(tmp)
		return
	}
	if os.Rename(tmp, path) != nil {
		os.Remove(tmp)
	}
}

func (d *maildirDrop) Messages() []MessageInfo { return d.info }

// Skipped names the entries of new/ and cur/ left out of the snapshot:
// not regular files, or not readable.
func (d *maildirDrop) Skipped() []string { return d.skipped }

func (d *maildirDrop) Open(i int) (io.ReadCloser, error) {
	f, err := maildir.OpenRegular(d.msgs[i].Path)
	if errors.Is(err, os.ErrNotExist) {
		// Another program (an IMAP client) changed its flags: same key,
		// new name in cur/. Opened as regular only, whoever found it. The
		// flags it has now are the ones QUIT adds S to.
		if gm, p, ok := cur.FindKey(d.dir, d.msgs[i].Key); ok {
			m := &d.msgs[i]
			m.Path, m.Name, m.New = p, filepath.Base(p), false
			if gm != nil {
				m.Flags = maildir.SortFlags(string(gm.Flags()))
			} else {
				_, _, m.Flags, _ = maildir.ParseName(m.Name)
			}
			f, err = maildir.OpenRegular(p)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("pop3: maildrop %s: %w", d.dir, err)
	}
	return f, nil
}

func (d *maildirDrop) Commit(retrieved, deleted []int) error {
	var errs []error
	for _, i := range deleted {
		if err := d.remove(d.msgs[i]); err != nil {
			errs = append(errs, fmt.Errorf("pop3: maildrop %s: delete: %w", d.dir, err))
		}
	}
	if d.flagUpdates && len(retrieved) > 0 {
		dirs := d.openSubdirs()
		for _, i := range retrieved {
			m := d.msgs[i]
			if !m.New && strings.ContainsRune(m.Flags, 'S') {
				continue
			}
			// Not worth failing QUIT over: the message is intact.
			d.markSeen(m, dirs)
		}
		dirs.close()
	}
	if len(deleted) > 0 {
		// The removals are the commit: make them durable before +OK.
		for _, sub := range []string{"cur", "new"} {
			if err := fsyncDir(filepath.Join(d.dir, sub)); err != nil {
				errs = append(errs, fmt.Errorf("pop3: maildrop %s: %w", d.dir, err))
			}
		}
	}
	return errors.Join(errs...)
}

// remove deletes the message's file where the listing saw it or, when
// another program renamed it since (new flags, or taken into cur/), where
// it is now. A message already gone is what the client asked for.
func (d *maildirDrop) remove(m maildir.Message) error {
	err := os.Remove(m.Path)
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	gm, p, ok := cur.FindKey(d.dir, m.Key)
	switch {
	case gm != nil:
		err = gm.Remove()
	case ok:
		err = os.Remove(p)
	default:
		return nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// markSeen adds the seen flag (S) to a retrieved message and moves it to
// cur/, as Dovecot does. The rename is of the file the listing saw; one
// that another program renamed since keeps the flags it has now (an IMAP
// client's \Flagged, keywords) and gains S, through go-maildir's SetFlags
// when its parser takes the name.
func (d *maildirDrop) markSeen(m maildir.Message, dirs subdirs) error {
	err := dirs.rename(m, maildir.InfoName(m.Key, m.Flags+"S"))
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	gm, p, ok := cur.FindKey(d.dir, m.Key)
	switch {
	case gm != nil:
		return gm.SetFlags(append(gm.Flags(), gomaildir.FlagSeen))
	case ok:
		_, _, flags, _ := maildir.ParseName(filepath.Base(p))
		_, err := cur.SetFlags(d.dir, maildir.Message{Key: m.Key, Path: p}, flags+"S")
		return err
	}
	return nil // gone: deleted by another session
}

// subdirs are descriptors of the Maildir's new/ and cur/ (-1: not open),
// opened once for QUIT's renames: renameat(2) on them is one system call
// per message with two short names, where os.Rename walked both full paths
// and first lstat'ed the target (to refuse replacing a directory, which
// rename(2) refuses for a file anyway) — the lstat was 40 % of the
// renames' CPU in the first session on 10,000 messages (bench/NOTES-perf.md).
type subdirs struct {
	new, cur         int
	newPath, curPath string
}

func (d *maildirDrop) openSubdirs() subdirs {
	s := subdirs{newPath: filepath.Join(d.dir, "new"), curPath: filepath.Join(d.dir, "cur")}
	open := func(path string) int {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1
		}
		return fd
	}
	s.new, s.cur = open(s.newPath), open(s.curPath)
	return s
}

func (s subdirs) close() {
	for _, fd := range []int{s.new, s.cur} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// rename moves message m, where the listing (or a later FindKey) saw it,
// to cur/name: through the descriptors when m is directly in new/ or
// cur/ and they are open, else by path.
func (s subdirs) rename(m maildir.Message, name string) error {
	src := -1
	switch {
	case s.cur < 0:
	case isEntry(s.newPath, m):
		src = s.new
	case isEntry(s.curPath, m):
		src = s.cur
	}
	if src < 0 {
		return os.Rename(m.Path, filepath.Join(s.curPath, name))
	}
	if err := unix.Renameat(src, m.Name, s.cur, name); err != nil {
		return &os.LinkError{Op: "rename", Old: m.Path, New: filepath.Join(s.curPath, name), Err: err}
	}
	return nil
}

// isEntry reports whether m.Path is dir/m.Name.
func isEntry(dir string, m maildir.Message) bool {
	p := m.Path
	return len(p) == len(dir)+1+len(m.Name) && strings.HasPrefix(p, dir) && p[len(dir)] == '/' && strings.HasSuffix(p, m.Name)
}

func fsyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

func (d *maildirDrop) Close() error {
	d.writeCache()
	if d.lock == nil {
		return nil
	}
	// Closing the descriptor releases the flock.
	err := d.lock.Close()
	d.lock = nil
	return err
}
