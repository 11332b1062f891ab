package maildir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A Maildir lies in a directory its owner controls: they can put a symlink
// where tmp/, new/ or a folder should be, or make the Maildir itself one.
// Whoever delivers (the owner, or root for a virtual mailbox) must not be
// led elsewhere by that, so deliveries and creations reach everything from
// the Maildir's parent down through directory descriptors, never following
// a symlink: the Maildir, its folders and tmp/, new/, cur/ must be real
// directories. Only the path to the Maildir's parent is followed: that part
// belongs to the administrator (a home directory, mail-root/domain).

// ErrUnsafe marks a Maildir entry that is not what it must be: a symlink or
// another kind of file where a directory must be. Delivery defers the mail
// (the owner must repair the Maildir) instead of following it.
var ErrUnsafe = errors.New("not a real directory")

// openDir opens dir as a directory without following a symlink in its last
// component.
func openDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, dirError(dir, err, func() (unix.Stat_t, error) {
			var st unix.Stat_t
			return st, unix.Lstat(dir, &st)
		})
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// openSub opens the directory name inside d, not following a symlink.
func openSub(d *os.File, name string) (*os.File, error) {
	p := filepath.Join(d.Name(), name)
	fd, err := unix.Openat(int(d.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, dirError(p, err, func() (unix.Stat_t, error) {
			var st unix.Stat_t
			return st, unix.Fstatat(int(d.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
		})
	}
	return os.NewFile(uintptr(fd), p), nil
}

// dirError explains a failed open of a directory without following
// symlinks: a symlink or another kind of file there is ErrUnsafe; a
// missing one stays os.ErrNotExist (the caller may create it).
func dirError(p string, err error, lstat func() (unix.Stat_t, error)) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		if st, serr := lstat(); serr == nil {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFLNK:
				return fmt.Errorf("maildir: %s: a symlink: %w", p, ErrUnsafe)
			case unix.S_IFDIR:
			default:
				return fmt.Errorf("maildir: %s: not a directory: %w", p, ErrUnsafe)
			}
		}
	}
	return &os.PathError{Op: "open", Path: p, Err: err}
}

// mkdirSub makes the directory name inside d (mode 0700) unless a real
// directory is there already, and opens it; made says whether it was
// created (its entry in d still needs d's fsync).
func mkdirSub(d *os.File, name string) (sub *os.File, made bool, err error) {
	err = unix.Mkdirat(int(d.Fd()), name, 0o700)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, false, &os.PathError{Op: "mkdir", Path: filepath.Join(d.Name(), name), Err: err}
	}
	sub, oerr := openSub(d, name)
	if oerr != nil {
		return nil, false, oerr
	}
	return sub, err == nil, nil
}

// syncFile fsyncs a directory descriptor; file systems that refuse fsync on
// directories make their renames as durable as they can.
func syncFile(d *os.File) error {
	if onSync != nil {
		onSync(d.Name())
	}
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}

// onSync, when set (tests), is told each directory that syncFile or
// syncDir is about to fsync.
var onSync func(path string)
