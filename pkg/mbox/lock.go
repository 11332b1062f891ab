package mbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StaleAfter is the age after which a dotlock whose holder can't be shown
// dead is taken to be stale and removed (procmail and Dovecot do the same,
// with their own timeouts).
var StaleAfter = 5 * time.Minute

// ErrUnsafe is returned (wrapped, errors.Is) when the mbox is not a file
// this process may write: a symlink, not a regular file, more than one
// link, or owned by another uid than the process's effective one. The
// delivery is deferred; nothing was written.
var ErrUnsafe = errors.New("unsafe mailbox")

// unsafeError says why path is refused; it is ErrUnsafe.
type unsafeError struct{ path, why string }

func (e *unsafeError) Error() string        { return "mbox: " + e.path + ": " + e.why }
func (e *unsafeError) Is(target error) bool { return target == ErrUnsafe }

// Lock is a held mbox lock (fcntl on the file and path.lock).
//
// The dotlock file holds "<pid>@<host>\n", and "<pid>@<host> <size> <dev>
// <ino>\n" while an Append is writing: a locker that finds the dotlock of
// a dead holder truncates the mbox back to size, so a delivery killed
// half-way never leaves a partial message behind for the next reader or
// writer. It does so only when the record can be trusted to describe the
// file it locked: the dotlock a regular file with one link owned by this
// process's euid, and the mbox the very file the record names (device and
// inode) and longer than size. A record without device and inode (an older
// letterbox's, or forged) cuts nothing. Whether the holder is dead is
// asked of this host's kernel only for a dotlock of this host (several
// hosts may share the mbox over NFS; another host's lock goes stale by age
// alone). The dotlock is made the NFS-safe way: a unique file linked to
// path.lock, a link that reports an error checked by the file's link count
// (a retransmitted NFS LINK can fail after it succeeded).
//
// Everything is reached from a descriptor of the mbox's directory, opened
// once: the mbox, the dotlock, their temporary files, never through a
// symlink inside that directory.
type Lock struct {
	path    string
	dir     *os.File // the mbox's directory
	name    string   // the mbox's name in dir
	f       *os.File
	dotlock string   // path.lock, "" when the directory doesn't allow one
	dotName string   // its name in dir
	dotFile *os.File // our dotlock, held open: its inode can't be reused for another's
	dotID   fileID
}

// fileID names a file: device and inode.
type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{dev: uint64(st.Dev), ino: st.Ino} }

// ErrLocked is returned (wrapped) by LockFile when another process holds
// the lock past the timeout.
var ErrLocked = errors.New("locked by another process")

// Touch refreshes the dotlock's time, so that a holder for longer than
// StaleAfter (a POP3 session) is not taken for stale. It changes our own
// dotlock's inode only, through the descriptor we hold.
func (l *Lock) Touch() error {
	if l.dotFile == nil {
		return nil
	}
	// futimens(fd, NULL): both times to now.
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, l.dotFile.Fd(), 0, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("mbox: touch %s: %w", l.dotlock, errno)
	}
	return nil
}

// File returns the locked mbox file, open for reading and writing.
func (l *Lock) File() *os.File { return l.f }

// Path returns the mbox path.
func (l *Lock) Path() string { return l.path }

// dirFd is the descriptor of the mbox's directory.
func (l *Lock) dirFd() int { return int(l.dir.Fd()) }

// LockFile takes both locks on path, waiting up to timeout. The mbox is
// created (0600) when missing. It fails with ErrUnsafe when path is not a
// regular file with one link owned by the process's effective uid.
func LockFile(path string, timeout time.Duration) (*Lock, error) {
	deadline := time.Now().Add(timeout)
	l, err := openLock(path)
	if err != nil {
		return nil, err
	}
	rec, err := l.dotLock(deadline)
	if err != nil {
		l.dir.Close()
		return nil, err
	}
	if err := l.fcntlLock(deadline); err != nil {
		l.removeDotlock()
		l.dir.Close()
		return nil, err
	}
	if rec.size >= 0 {
		var st unix.Stat_t
		if err := unix.Fstat(int(l.f.Fd()), &st); err == nil && idOf(&st) == rec.id && st.Size > rec.size {
			// The previous holder died while appending: drop its partial
			// record. We hold the fcntl lock, so it is really gone.
			if err := l.f.Truncate(rec.size); err != nil {
				l.Unlock()
				return nil, fmt.Errorf("mbox: %s: truncate partial message: %w", path, err)
			}
			if err := l.f.Sync(); err != nil {
				l.Unlock()
				return nil, fmt.Errorf("mbox: %s: %w", path, err)
			}
		}
	}
	return l, nil
}

// openLock opens the directory of path (following symlinks: the path to
// the directory is the administrator's).
func openLock(path string) (*Lock, error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if name == "" || name == "." || name == ".." {
		return nil, fmt.Errorf("mbox: %s: not a file name", path)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mbox: %w", &os.PathError{Op: "open", Path: dir, Err: err})
	}
	return &Lock{path: path, dir: os.NewFile(uintptr(fd), dir), name: name}, nil
}

// holderID names this process in dotlocks: pid@host.
func holderID() string { return strconv.Itoa(os.Getpid()) + "@" + lockHost() }

// lockHost is this host's name as dotlocks record it (one word).
func lockHost() string {
	h, _ := os.Hostname()
	if h == "" {
		return "localhost"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == '/' || r == 0x7f {
			return '_'
		}
		return r
	}, h)
}

// linkAt links old to new, both in the directory dirfd, never following
// a symlink; tests replace it.
var linkAt = func(dirfd int, old, new string) error {
	if err := unix.Linkat(dirfd, old, dirfd, new, 0); err != nil {
		return &os.LinkError{Op: "link", Old: old, New: new, Err: err}
	}
	return nil
}

// createDotlock makes name in dirfd holding content, or fails with
// os.ErrExist. It returns our dotlock, open.
func createDotlock(dirfd int, name string, content []byte) (*os.File, fileID, error) {
	tmp := fmt.Sprintf("%s.%s.%d.%d", name, lockHost(), os.Getpid(), time.Now().UnixNano())
	fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fileID{}, &os.PathError{Op: "open", Path: tmp, Err: err}
	}
	f := os.NewFile(uintptr(fd), tmp)
	defer unix.Unlinkat(dirfd, tmp, 0)
	var st unix.Stat_t
	_, err = f.Write(content)
	if err == nil {
		// Published only once durable: a crash must not leave a lock
		// without its holder.
		err = f.Sync()
	}
	if err == nil {
		err = unix.Fstat(fd, &st)
	}
	if err != nil {
		f.Close()
		return nil, fileID{}, err
	}
	id := idOf(&st)
	err = linkAt(dirfd, tmp, name)
	if err != nil {
		var lst unix.Stat_t
		if unix.Fstatat(dirfd, tmp, &lst, unix.AT_SYMLINK_NOFOLLOW) == nil && idOf(&lst) == id && lst.Nlink == 2 {
			err = nil // the link was made; its reply was lost
		}
	}
	if err != nil {
		f.Close()
		return nil, fileID{}, err
	}
	return f, id, nil
}

// appendRecord is a dead holder's unfinished append, from its dotlock:
// the mbox id and the size it started at (-1: none, or not trusted).
type appendRecord struct {
	size int64
	id   fileID
}

// dotLock creates path.lock. It returns the trusted record of a dead
// holder's unfinished append (size -1 when none).
func (l *Lock) dotLock(deadline time.Time) (appendRecord, error) {
	dirfd := l.dirFd()
	l.dotName = l.name + ".lock"
	lock := l.path + ".lock"
	content := []byte(holderID() + "\n")
	rec := appendRecord{size: -1}
	wait := time.Millisecond
	for {
		f, id, err := createDotlock(dirfd, l.dotName, content)
		if err == nil {
			l.dotlock, l.dotFile, l.dotID = lock, f, id
			return rec, nil
		}
		if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) {
			// A directory we can't write to (a shared /var/mail without
			// the mail group): rely on the fcntl lock alone, as Postfix
			// does when dotlocking fails that way.
			return appendRecord{size: -1}, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return appendRecord{size: -1}, fmt.Errorf("mbox: dotlock %s: %w", lock, err)
		}
		if found, stale, id := staleLock(dirfd, l.dotName); stale {
			// Move it aside rather than remove it, so two lockers that both
			// judged it stale can't remove each other's fresh lock.
			aside := fmt.Sprintf("%s.stale.%d", l.dotName, os.Getpid())
			if unix.Renameat(dirfd, l.dotName, dirfd, aside) == nil {
				var st unix.Stat_t
				if unix.Fstatat(dirfd, aside, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && idOf(&st) == id {
					unix.Unlinkat(dirfd, aside, 0)
					if found.size >= 0 {
						rec = found
					}
					continue
				}
				// Someone's fresh lock: put it back.
				unix.Renameat(dirfd, aside, dirfd, l.dotName)
			}
			// Not moved (a sticky directory, another's lock): wait, as
			// for a live holder.
		}
		if time.Now().After(deadline) {
			return appendRecord{size: -1}, fmt.Errorf("mbox: %s: %w (dotlock)", l.path, ErrLocked)
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}

// staleLock reads the dotlock name in dirfd, never through a symlink:
// stale when it names a process of this host that doesn't exist, or is
// older than StaleAfter. rec is the unfinished append it records, only
// when the dotlock is a regular file with one link owned by our euid and
// the record names the mbox's device and inode (size -1 otherwise). id is
// the dotlock's own.
func staleLock(dirfd int, name string) (rec appendRecord, stale bool, id fileID) {
	rec.size = -1
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return rec, false, fileID{}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		// No locker makes a dotlock a symlink (every one creates a file):
		// it is a trap, stale at once. Moving it aside and removing it
		// touch the link, never what it points to.
		return rec, true, idOf(&st)
	}
	byAge := func(st *unix.Stat_t) (appendRecord, bool, fileID) {
		mtime := time.Unix(st.Mtim.Unix())
		return rec, time.Since(mtime) > StaleAfter, idOf(st)
	}
	// A FIFO is not waited for: only its age counts.
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return byAge(&st)
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return rec, false, fileID{}
	}
	buf := make([]byte, 128)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil || n < 0 {
		n = 0
	}
	fields := strings.Fields(string(buf[:n]))
	// The record is the writer's word about a file it could have swapped:
	// only a dotlock we could have written ourselves is believed.
	regular := st.Mode&unix.S_IFMT == unix.S_IFREG
	trusted := regular && st.Uid == uint32(os.Geteuid()) && st.Nlink == 1
	if trusted && len(fields) >= 4 {
		size, err1 := strconv.ParseInt(fields[1], 10, 64)
		dev, err2 := strconv.ParseUint(fields[2], 10, 64)
		ino, err3 := strconv.ParseUint(fields[3], 10, 64)
		if err1 == nil && err2 == nil && err3 == nil && size >= 0 {
			rec = appendRecord{size: size, id: fileID{dev: dev, ino: ino}}
		}
	}
	if len(fields) >= 1 {
		p, host, remote := strings.Cut(fields[0], "@")
		if remote && host == lockHost() {
			remote = false
		}
		if pid, err := strconv.Atoi(p); err == nil && pid > 0 && !remote {
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				return rec, true, idOf(&st)
			}
		}
	}
	return byAge(&st)
}

// openMbox opens the mbox in the directory, never through a symlink,
// creating it (0600) when missing, and checks it (checkMbox).
func (l *Lock) openMbox(deadline time.Time) (*os.File, error) {
	dirfd := l.dirFd()
	const flags = unix.O_RDWR | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	for {
		fd, err := unix.Openat(dirfd, l.name, flags, 0)
		if errors.Is(err, unix.ENOENT) {
			fd, err = unix.Openat(dirfd, l.name, flags|unix.O_CREAT|unix.O_EXCL, 0o600)
			if errors.Is(err, unix.EEXIST) && time.Now().Before(deadline) {
				continue // made meanwhile: open that one
			}
		}
		switch {
		case errors.Is(err, unix.ELOOP):
			return nil, &unsafeError{l.path, "a symbolic link, not a regular file"}
		case errors.Is(err, unix.ENXIO), errors.Is(err, unix.EISDIR):
			return nil, &unsafeError{l.path, "not a regular file"}
		case err != nil:
			return nil, fmt.Errorf("mbox: %w", &os.PathError{Op: "open", Path: l.path, Err: err})
		}
		// O_NONBLOCK only kept the open of a FIFO from waiting.
		unix.SetNonblock(fd, false)
		f := os.NewFile(uintptr(fd), l.path)
		if _, err := checkMbox(l.path, f); err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}
}

// checkMbox refuses f (the mbox at path) unless it is a regular file with
// one link owned by the process's effective uid: a hard link to another
// file, a device or FIFO, or someone else's file is not ours to write.
// Root is no exception: it never writes a user's file (deliveries run as
// the mailbox's owner).
func checkMbox(path string, f *os.File) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return st, fmt.Errorf("mbox: %w", &os.PathError{Op: "stat", Path: path, Err: err})
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return st, &unsafeError{path, "not a regular file"}
	case st.Nlink != 1:
		return st, &unsafeError{path, fmt.Sprintf("has %d links", st.Nlink)}
	case st.Uid != euid:
		return st, &unsafeError{path, fmt.Sprintf("owned by uid %d, not %d", st.Uid, euid)}
	}
	return st, nil
}

// fcntlLock opens the mbox and takes a write lock on it, retrying until
// deadline. It makes sure the locked file is still the one at path: a
// Rewrite renames a new file into place, and a lock on the old one would
// protect nothing.
func (l *Lock) fcntlLock(deadline time.Time) error {
	wait := time.Millisecond
	for {
		f, err := l.openMbox(deadline)
		if err != nil {
			return err
		}
		flk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart}
		for {
			err = syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &flk)
			if err == nil || !(errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EINTR)) {
				break
			}
			if time.Now().After(deadline) {
				f.Close()
				return fmt.Errorf("mbox: %s: %w (fcntl)", l.path, ErrLocked)
			}
			time.Sleep(wait)
			if wait < 100*time.Millisecond {
				wait *= 2
			}
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("mbox: lock %s: %w", l.path, err)
		}
		// Checked again, locked: what we write to is what we checked.
		st, err := checkMbox(l.path, f)
		if err != nil {
			f.Close()
			return err
		}
		var now unix.Stat_t
		if unix.Fstatat(l.dirFd(), l.name, &now, unix.AT_SYMLINK_NOFOLLOW) == nil && idOf(&now) == idOf(&st) {
			l.f = f
			return nil
		}
		f.Close() // renamed meanwhile: lock the new one
		if time.Now().After(deadline) {
			return fmt.Errorf("mbox: %s: replaced again and again while being locked", l.path)
		}
	}
}

// markAppend records in the dotlock that an append to the locked file
// starts at size, durably, so that a crash or kill during the append can
// be undone by the next locker. It writes through the descriptor of the
// dotlock we created, so it reaches our own dotlock only, nor anything a
// symlink put there points to; and it fails when the name no longer holds
// our dotlock (taken for stale and replaced): the lock is lost, and the
// append must not go on.
func (l *Lock) markAppend(size int64) error {
	if l.dotFile == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstatat(l.dirFd(), l.dotName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || idOf(&st) != l.dotID {
		return fmt.Errorf("mbox: dotlock %s: not ours any more", l.dotlock)
	}
	var mst unix.Stat_t
	if err := unix.Fstat(int(l.f.Fd()), &mst); err != nil {
		return fmt.Errorf("mbox: %s: %w", l.path, err)
	}
	rec := []byte(fmt.Sprintf("%s %d %d %d\n", holderID(), size, uint64(mst.Dev), mst.Ino))
	err := l.dotFile.Truncate(0)
	if err == nil {
		_, err = l.dotFile.WriteAt(rec, 0)
	}
	if err == nil {
		err = l.dotFile.Sync()
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		return fmt.Errorf("mbox: dotlock: %w", err)
	}
	return nil
}

// removeDotlock removes our dotlock, unless it was taken for stale and
// replaced by another locker's meanwhile: that one is not ours to remove.
// (We hold our dotlock's inode open, so its number names no other file.)
func (l *Lock) removeDotlock() error {
	if l.dotlock == "" {
		return nil
	}
	defer func() {
		l.dotFile.Close()
		l.dotlock, l.dotFile = "", nil
	}()
	var st unix.Stat_t
	if err := unix.Fstatat(l.dirFd(), l.dotName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "stat", Path: l.dotlock, Err: err}
	}
	if idOf(&st) != l.dotID {
		return nil
	}
	if err := unix.Unlinkat(l.dirFd(), l.dotName, 0); err != nil {
		return &os.PathError{Op: "remove", Path: l.dotlock, Err: err}
	}
	return nil
}

// Unlock releases both locks.
func (l *Lock) Unlock() error {
	if l == nil {
		return nil
	}
	var err error
	if l.f != nil {
		// Closing the file drops the fcntl lock.
		err = l.f.Close()
		l.f = nil
	}
	if l.dir == nil {
		if err != nil {
			return fmt.Errorf("mbox: unlock %s: %w", l.path, err)
		}
		return nil
	}
	if derr := l.removeDotlock(); err == nil && derr != nil && !errors.Is(derr, os.ErrNotExist) {
		err = derr
	}
	l.dir.Close()
	l.dir = nil
	if err != nil {
		return fmt.Errorf("mbox: unlock %s: %w", l.path, err)
	}
	return nil
}

// unlockCommitted releases the locks after an append, making the dotlock's
// removal durable first: a dotlock still naming an append start after a
// crash would otherwise undo a delivery already reported as done.
func (l *Lock) unlockCommitted() error {
	if l.dotlock != "" {
		if err := l.removeDotlock(); err != nil {
			l.Unlock()
			return fmt.Errorf("mbox: unlock %s: %w", l.path, err)
		}
		if err := syncDir(l.dir); err != nil {
			l.Unlock()
			return fmt.Errorf("mbox: unlock %s: %w", l.path, err)
		}
	}
	return l.Unlock()
}

// syncDir flushes the directory d.
func syncDir(d *os.File) error {
	err := d.Sync()
	if errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}
