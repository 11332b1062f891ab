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
)

// StaleAfter is the age after which a dotlock whose holder can't be shown
// dead is taken to be stale and removed (procmail and Dovecot do the same,
// with their own timeouts).
var StaleAfter = 5 * time.Minute

// Lock is a held mbox lock (fcntl on the file and path.lock).
//
// The dotlock file holds "<pid>@<host>\n", and "<pid>@<host> <size>\n"
// while an Append is writing: a locker that finds the dotlock of a dead
// holder with a size truncates the mbox back to it, so a delivery killed
// half-way never leaves a partial message behind for the next reader or
// writer. Whether the holder is dead is asked of this host's kernel only
// for a dotlock of this host (several hosts may share the mbox over NFS;
// another host's lock goes stale by age alone). The dotlock is made the
// NFS-safe way: a unique file linked to path.lock, a link that reports an
// error checked by the file's link count (a retransmitted NFS LINK can
// fail after it succeeded).
type Lock struct {
	path    string
	f       *os.File
	dotlock string      // "" when the directory doesn't allow one
	dotInfo os.FileInfo // our dotlock, to never remove someone else's
}

// ErrLocked is returned (wrapped) by LockFile when another process holds
// the lock past the timeout.
var ErrLocked = errors.New("locked by another process")

// Touch refreshes the dotlock's time, so that a holder for longer than
// StaleAfter (a POP3 session) is not taken for stale.
func (l *Lock) Touch() error {
	if l.dotlock == "" {
		return nil
	}
	now := time.Now()
	return os.Chtimes(l.dotlock, now, now)
}

// File returns the locked mbox file, open for reading and writing.
func (l *Lock) File() *os.File { return l.f }

// Path returns the mbox path.
func (l *Lock) Path() string { return l.path }

// LockFile takes both locks on path, waiting up to timeout. The mbox is
// created (0600) when missing.
func LockFile(path string, timeout time.Duration) (*Lock, error) {
	deadline := time.Now().Add(timeout)
	l := &Lock{path: path}
	recoverTo, err := l.dotLock(deadline)
	if err != nil {
		return nil, err
	}
	if err := l.fcntlLock(deadline); err != nil {
		l.removeDotlock()
		return nil, err
	}
	if recoverTo >= 0 {
		if fi, err := l.f.Stat(); err == nil && fi.Size() > recoverTo {
			// The previous holder died while appending: drop its partial
			// record. We hold the fcntl lock, so it is really gone.
			if err := l.f.Truncate(recoverTo); err != nil {
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

// linkFile is os.Link; tests replace it.
var linkFile = os.Link

// createDotlock makes lock holding content, or fails with os.ErrExist.
func createDotlock(lock string, content []byte) error {
	tmp := fmt.Sprintf("%s.%s.%d.%d", lock, lockHost(), os.Getpid(), time.Now().UnixNano())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	_, err = f.Write(content)
	if err == nil {
		// Published only once durable: a crash must not leave a lock
		// without its holder.
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	err = linkFile(tmp, lock)
	if err != nil {
		if fi, serr := os.Stat(tmp); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink == 2 {
				return nil // the link was made; its reply was lost
			}
		}
	}
	return err
}

// dotLock creates path.lock. It returns the size a dead holder's
// unfinished append started at (or -1).
func (l *Lock) dotLock(deadline time.Time) (int64, error) {
	lock := l.path + ".lock"
	content := []byte(holderID() + "\n")
	recoverTo := int64(-1)
	wait := time.Millisecond
	for {
		err := createDotlock(lock, content)
		if err == nil {
			l.dotlock = lock
			l.dotInfo, _ = os.Stat(lock)
			return recoverTo, nil
		}
		if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) {
			// A directory we can't write to (a shared /var/mail without
			// the mail group): rely on the fcntl lock alone, as Postfix
			// does when dotlocking fails that way.
			return -1, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return -1, fmt.Errorf("mbox: dotlock %s: %w", lock, err)
		}
		if size, stale, fi := staleLock(lock); stale {
			// Move it aside rather than remove it, so two lockers that both
			// judged it stale can't remove each other's fresh lock.
			aside := fmt.Sprintf("%s.stale.%d", lock, os.Getpid())
			if os.Rename(lock, aside) == nil {
				if fi2, err := os.Stat(aside); err == nil && os.SameFile(fi, fi2) {
					os.Remove(aside)
					if size >= 0 {
						recoverTo = size
					}
				} else {
					// Someone's fresh lock: put it back.
					os.Rename(aside, lock)
				}
			}
			continue
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("mbox: %s: %w (dotlock)", l.path, ErrLocked)
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}

// staleLock reads a dotlock: stale when it names a process of this host
// that doesn't exist, or is older than StaleAfter. size is the start of an
// unfinished append it records, or -1.
func staleLock(lock string) (size int64, stale bool, fi os.FileInfo) {
	size = -1
	f, err := os.Open(lock)
	if err != nil {
		return -1, false, nil
	}
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return -1, false, nil
	}
	buf := make([]byte, 64)
	n, _ := io.ReadFull(f, buf)
	fields := strings.Fields(string(buf[:n]))
	if len(fields) >= 2 {
		if s, err := strconv.ParseInt(fields[1], 10, 64); err == nil && s >= 0 {
			size = s
		}
	}
	if len(fields) >= 1 {
		p, host, remote := strings.Cut(fields[0], "@")
		if remote && host == lockHost() {
			remote = false
		}
		if pid, err := strconv.Atoi(p); err == nil && pid > 0 && !remote {
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				return size, true, fi
			}
		}
	}
	return size, time.Since(fi.ModTime()) > StaleAfter, fi
}

// fcntlLock opens the mbox and takes a write lock on it, retrying until
// deadline. It makes sure the locked file is still the one at path: a
// Rewrite renames a new file into place, and a lock on the old one would
// protect nothing.
func (l *Lock) fcntlLock(deadline time.Time) error {
	wait := time.Millisecond
	for {
		f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("mbox: %w", err)
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
		if sameFile(f, l.path) {
			l.f = f
			return nil
		}
		f.Close() // renamed meanwhile: lock the new one
	}
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// markAppend records in the dotlock that an append starts at size, durably,
// so that a crash or kill during the append can be undone by the next
// locker.
func (l *Lock) markAppend(size int64) error {
	if l.dotlock == "" {
		return nil
	}
	f, err := os.OpenFile(l.dotlock, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("mbox: dotlock: %w", err)
	}
	_, err = fmt.Fprintf(f, "%s %d\n", holderID(), size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(l.dotlock))
	}
	if err != nil {
		return fmt.Errorf("mbox: dotlock: %w", err)
	}
	return nil
}

func (l *Lock) removeDotlock() error {
	if l.dotlock == "" {
		return nil
	}
	// Taken for stale and replaced by another locker meanwhile: that one
	// is not ours to remove.
	// (Inode numbers are reused, so the pid inside is checked too.)
	if fi, err := os.Stat(l.dotlock); err == nil && l.dotInfo != nil {
		b, _ := os.ReadFile(l.dotlock)
		f := strings.Fields(string(b))
		if !os.SameFile(fi, l.dotInfo) || len(f) == 0 || f[0] != holderID() {
			l.dotlock = ""
			return nil
		}
	}
	err := os.Remove(l.dotlock)
	l.dotlock = ""
	return err
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
	if derr := l.removeDotlock(); err == nil && derr != nil && !errors.Is(derr, os.ErrNotExist) {
		err = derr
	}
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
		dir := filepath.Dir(l.dotlock)
		if err := l.removeDotlock(); err != nil {
			l.Unlock()
			return fmt.Errorf("mbox: unlock %s: %w", l.path, err)
		}
		if err := syncDir(dir); err != nil {
			l.Unlock()
			return fmt.Errorf("mbox: unlock %s: %w", l.path, err)
		}
	}
	return l.Unlock()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}
