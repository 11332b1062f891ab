package mailstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"letterbox/pkg/maildir"
)

// Locking, two layers.
//
// Dovecot changes dovecot-uidlist, dovecot-keywords and subscriptions only
// while it holds a dot-lock: it creates "<file>.lock" exclusively, writes
// the new contents into the lock file and renames it over the file. A lock
// whose modification time is older than two minutes is stale (its holder
// died) and is removed. We take the same locks the same way, so that
// Dovecot and imapd can work on one Maildir at once.
//
// Every letterbox process also holds an flock(2) of letterbox-imap.lock in
// the same directory while it reads or changes the folder's shared state
// (our cache, the uidlist) and while it holds any dot-lock there. The
// kernel releases an flock when its holder dies, so letterbox processes
// never wait for each other's dead. The flock file also records which
// dot-locks its holder has (name, inode, time): a dot-lock found with an
// inode the record names, while we hold the flock, was left by a letterbox
// process that died holding it, and is removed at once instead of after
// Dovecot's two minutes. A dot-lock nobody recorded is Dovecot's (or a dead
// Dovecot's), and is waited for as Dovecot would.
//
// Several hosts may share the folder over NFS. Exclusion between them
// never rests on the flock (an NFS mount with local_lock=flock, or without
// a lock manager, makes it host-local): every change of shared files is
// under its dot-lock, which is created NFS-safely (a unique file under
// tmp/ linked to the lock name; a link that reports an error is checked
// by its link count, since a retransmitted NFS LINK can fail after it
// succeeded), and a record names the host that wrote it: only records of
// this host count as dead, another host's dot-locks are waited for and
// taken as stale after Dovecot's two minutes, as Dovecot's are.
const lockFileName = "letterbox-imap.lock"

// Variables so that tests can shorten them.
var (
	// dotlockStale is Dovecot's stale timeout for dovecot-uidlist.lock,
	// dovecot-keywords.lock and subscriptions.lock (2 min), and
	// dotlockTimeout how long a writer waits before giving up (Dovecot
	// waits the stale timeout + 2 s).
	dotlockStale   = 2 * time.Minute
	dotlockTimeout = dotlockStale + 2*time.Second
	// subscriptions.lock: Dovecot's SUBSCRIPTION_FILE_CHANGE_TIMEOUT.
	subscriptionsStale = 30 * time.Second
)

// ownWindow: a recorded dot-lock counts as ours only if its ctime is this
// close after the record was written (a Dovecot lock that reused the
// inode of one of ours later is not).
const ownWindow = 10 * time.Second

// testHookDotlockWait runs each time a dot-lock waits for another holder.
var testHookDotlockWait func(path string)

// ErrLocked means a lock held by another program did not go away in time.
var ErrLocked = errors.New("mailstore: mailbox is locked by another program")

type lockRec struct {
	ino  uint64
	at   int64  // ns, when the record was written (just before the link)
	host string // who wrote it; "" in records of older versions: this host
}

// dirLock is the flock of one directory's letterbox-imap.lock. Callers
// serialize their own goroutines (folder.mu, account.mu) around it.
type dirLock struct {
	dir  string
	host string // this host's name (Options.Hostname; "" = the system's)
	word string // host as used in records and lock file names
	f    *os.File
	held bool
	recs map[string]lockRec // dot-locks recorded in the file
	dead map[string]lockRec // what the previous holder left recorded: it died holding them
}

func (l *dirLock) lock() error {
	if l.f == nil {
		f, err := os.OpenFile(filepath.Join(l.dir, lockFileName), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("mailstore: lock %s: %w", l.dir, err)
		}
		l.f = f
	}
	deadline := time.Now().Add(dotlockTimeout)
	wait := time.Millisecond
	for {
		err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("mailstore: lock %s: %w", l.dir, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s/%s", ErrLocked, l.dir, lockFileName)
		}
		time.Sleep(wait)
		if wait < 20*time.Millisecond {
			wait *= 2
		}
	}
	l.held = true
	l.recs = nil
	l.dead = l.readRecs()
	if len(l.dead) > 0 {
		// Keep only records of locks still there (the holder died before
		// renaming or removing them): others could name an inode reused.
		for name, r := range l.dead {
			var st syscall.Stat_t
			if syscall.Lstat(filepath.Join(l.dir, name+".lock"), &st) != nil || st.Ino != r.ino {
				delete(l.dead, name)
			}
		}
		l.writeRecs()
	}
	return nil
}

func (l *dirLock) unlock() {
	if !l.held {
		return
	}
	l.held = false
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
}

func (l *dirLock) close() {
	l.unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// readRecs reads what a previous holder recorded and did not clear: it
// died holding those dot-locks.
func (l *dirLock) readRecs() map[string]lockRec {
	var buf [512]byte
	n, _ := l.f.ReadAt(buf[:], 0)
	if n == 0 {
		return nil
	}
	recs := map[string]lockRec{}
	for _, line := range strings.Split(string(buf[:n]), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 && len(f) != 4 {
			continue
		}
		ino, err1 := strconv.ParseUint(f[1], 10, 64)
		at, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 == nil && err2 == nil {
			r := lockRec{ino: ino, at: at}
			if len(f) == 4 {
				r.host = f[3]
			}
			recs[f[0]] = r
		}
	}
	return recs
}

func (l *dirLock) writeRecs() {
	var b bytes.Buffer
	for _, m := range []map[string]lockRec{l.dead, l.recs} {
		for name, r := range m {
			fmt.Fprintf(&b, "%s %d %d %s\n", name, r.ino, r.at, r.host)
		}
	}
	l.f.WriteAt(b.Bytes(), 0)
	l.f.Truncate(int64(b.Len()))
}

func (l *dirLock) setRec(name string, r lockRec) {
	if l.recs == nil {
		l.recs = map[string]lockRec{}
	}
	l.recs[name] = r
	l.writeRecs()
}

func (l *dirLock) clearRec(name string) {
	if _, ok := l.recs[name]; !ok {
		return
	}
	delete(l.recs, name)
	l.writeRecs()
}

// dotlock is a held Dovecot-style lock of dir/name.
type dotlock struct {
	l    *dirLock
	name string // the locked file's name, e.g. dovecot-uidlist
	path string // its .lock
	f    *os.File
	ino  uint64
}

// dotlock takes the dot-lock of file name in l's directory; l must be held.
func (l *dirLock) dotlock(name string) (*dotlock, error) {
	if !l.held {
		panic("mailstore: dotlock without the directory lock")
	}
	lockPath := filepath.Join(l.dir, name+".lock")
	deadline := time.Now().Add(dotlockTimeout)
	wait := time.Millisecond
	for {
		d, err := l.tryDotlock(name, lockPath)
		if d != nil || !errors.Is(err, os.ErrExist) {
			return d, err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(lockPath, &st); err != nil {
			if errors.Is(err, syscall.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("mailstore: lock %s: %w", lockPath, err)
		}
		ctime := time.Unix(st.Ctim.Unix())
		// (ctime comes from the kernel's coarse clock: allow it to lag.)
		if r, ok := l.dead[name]; ok && (r.host == "" || r.host == l.hostName()) && r.ino == st.Ino && !ctime.Before(time.Unix(0, r.at).Add(-time.Second)) && ctime.Before(time.Unix(0, r.at).Add(ownWindow)) {
			// Left by a letterbox process that died holding it.
			os.Remove(lockPath)
			delete(l.dead, name)
			l.writeRecs()
			continue
		}
		stale := dotlockStale
		if name == subscriptionsName {
			stale = subscriptionsStale
		}
		mtime := time.Unix(st.Mtim.Unix())
		if time.Since(mtime) > stale {
			removeIfSame(lockPath, st.Ino)
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, lockPath)
		}
		if testHookDotlockWait != nil {
			testHookDotlockWait(lockPath)
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}

// tryDotlock creates the lock file under tmp/, records its inode, and links
// it to lockPath, so that a crash at any instant leaves either no lock or
// one our record names.
func (l *dirLock) tryDotlock(name, lockPath string) (*dotlock, error) {
	tmp := filepath.Join(l.dir, "tmp", fmt.Sprintf("%s.lock.%s.%d.%d", name, l.hostName(), os.Getpid(), time.Now().UnixNano()))
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		// No tmp/ (a folder Dovecot made without one): make it.
		if err := maildir.Create(l.dir); err != nil {
			return nil, err
		}
		f, err = os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("mailstore: lock %s: %w", lockPath, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("mailstore: lock %s: %w", lockPath, err)
	}
	l.setRec(name, lockRec{ino: st.Ino, at: time.Now().UnixNano(), host: l.hostName()})
	err = linkFile(tmp, lockPath)
	if err != nil {
		// NFS: the server may have made the link and lost its reply.
		var st2 syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &st2) == nil && st2.Nlink == 2 {
			err = nil
		}
	}
	os.Remove(tmp)
	if err != nil {
		f.Close()
		l.clearRec(name)
		if errors.Is(err, os.ErrExist) {
			return nil, os.ErrExist
		}
		return nil, fmt.Errorf("mailstore: lock %s: %w", lockPath, err)
	}
	return &dotlock{l: l, name: name, path: lockPath, f: f, ino: st.Ino}, nil
}

// linkFile is os.Link; tests replace it.
var linkFile = os.Link

// hostName is the host in records and lock file names, as one word.
func (l *dirLock) hostName() string {
	if l.word == "" {
		h := l.host
		if h == "" {
			h, _ = os.Hostname()
		}
		if h == "" {
			h = "localhost"
		}
		l.word = strings.Map(func(r rune) rune {
			if r <= ' ' || r == '/' || r == 0x7f {
				return '_'
			}
			return r
		}, h)
	}
	return l.word
}

func removeIfSame(path string, ino uint64) {
	var st syscall.Stat_t
	if syscall.Lstat(path, &st) == nil && st.Ino == ino {
		os.Remove(path)
	}
}

// afterReplace, when set (tests), runs once a replace's rename is done: the
// moment another process may take the lock and change the file.
var afterReplace func(path string)

// replace writes content as the locked file's new contents and renames the
// lock over it (Dovecot's file_dotlock_replace), durably: the data and the
// directory entry are on disk when it returns. The lock is released either
// way. It returns the version (inode, size, mtime) of what it wrote, taken
// before the rename: once the lock is gone another writer may append to
// the file in place (Dovecot's dovecot-lda does), and a stat after the
// rename could pair that newer version with our older content, which a
// cache keyed by the version would then trust (two messages with one UID).
func (d *dotlock) replace(content []byte) (fileKey, error) {
	defer d.l.clearRec(d.name)
	target := filepath.Join(d.l.dir, d.name)
	var written fileKey
	_, err := d.f.Write(content)
	if err == nil {
		err = d.f.Sync()
	}
	if err == nil {
		var st syscall.Stat_t
		if err = syscall.Fstat(int(d.f.Fd()), &st); err == nil {
			written = keyOf(&st)
		}
	}
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(d.path, target)
	}
	if err == nil && afterReplace != nil {
		afterReplace(target)
	}
	if err != nil {
		removeIfSame(d.path, d.ino)
		return fileKey{}, fmt.Errorf("mailstore: write %s: %w", target, err)
	}
	if err := maildir.SyncDir(d.l.dir); err != nil {
		return fileKey{}, fmt.Errorf("mailstore: write %s: %w", target, err)
	}
	return written, nil
}

// release drops the lock without changing the file.
func (d *dotlock) release() {
	d.f.Close()
	removeIfSame(d.path, d.ino)
	d.l.clearRec(d.name)
}
