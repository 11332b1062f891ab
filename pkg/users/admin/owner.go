package admin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"letterbox/pkg/maildir"
	"letterbox/pkg/privsep"
)

// createMaildir creates the Maildir at path (with tmp/, new/ and cur/)
// owned by owner, mode 0700, without ever following a symbolic link as
// root into a place the owner controls:
//
//   - no existing level of path may be a symbolic link;
//   - when only root may write the deepest existing directory and the
//     directories above it (rootOnly), root creates the missing levels (no one else can put
//     anything in their way), then gives the Maildir and tmp/, new/, cur/
//     to the owner through descriptors opened with O_NOFOLLOW, the
//     Maildir itself last (until then the owner cannot touch what is in
//     it); directories made above the Maildir stay root's, mode 0711, so
//     the owner can reach its Maildir but not list the others;
//   - otherwise (a home directory, a mail root that is the mail user's)
//     the owner creates it, with its own rights.
//
// Not as root, the Maildir can only be this process's: any other owner is
// an error.
func createMaildir(path string, owner privsep.Cred) error {
	path = filepath.Clean(path)
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s: not an absolute path", path)
	}
	self := privsep.Self()
	if !privsep.IsRoot() {
		if !owner.Same(self) {
			return fmt.Errorf("%s belongs to %s: run as root to create it (%w)", path, owner, privsep.ErrNotRoot)
		}
		return maildir.Create(path)
	}
	existing, missing, err := levels(path)
	if err != nil {
		return err
	}
	if owner.UID == 0 {
		return maildir.Create(path)
	}
	if !rootOnly(existing) {
		return asOwner(owner, func() error { return maildir.Create(path) })
	}
	if err := maildir.Create(path); err != nil {
		return err
	}
	return giveAway(path, missing, owner)
}

// rootOnly reports whether only root can change what dir holds: dir is
// root's and writable by no one else, and so is every directory above it,
// or it has the sticky bit (/tmp: others cannot rename root's entries).
func rootOnly(dir string) bool {
	for d, top := dir, true; ; d, top = filepath.Dir(d), false {
		fi, err := os.Lstat(d)
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Uid != 0 || !fi.IsDir() {
			return false
		}
		if fi.Mode().Perm()&0o022 != 0 && (top || fi.Mode()&os.ModeSticky == 0) {
			return false
		}
		if d == "/" {
			return true
		}
	}
}

// levels returns the deepest existing directory of path and the levels
// below it that are missing, top down. An existing level that is a
// symbolic link, or not a directory, is an error.
func levels(path string) (existing string, missing []string, err error) {
	p := path
	for {
		fi, err := os.Lstat(p)
		if err == nil {
			if fi.Mode()&os.ModeSymlink != 0 {
				return "", nil, fmt.Errorf("%s is a symbolic link: refusing to create a Maildir through it", p)
			}
			if !fi.IsDir() {
				return "", nil, fmt.Errorf("%s: not a directory", p)
			}
			existing = p
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", nil, err
		}
		missing = append([]string{p}, missing...)
		p = filepath.Dir(p)
	}
	for q := filepath.Dir(existing); ; q = filepath.Dir(q) {
		fi, err := os.Lstat(q)
		if err != nil {
			return "", nil, err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return "", nil, fmt.Errorf("%s is a symbolic link: refusing to create a Maildir through it", q)
		}
		if q == "/" {
			break
		}
	}
	return existing, missing, nil
}

// giveAway chowns the Maildir root made (and its tmp/, new/, cur/) to
// owner, mode 0700; the levels above it that root made get mode 0711.
// Every directory is opened from / down with O_NOFOLLOW.
func giveAway(path string, made []string, owner privsep.Cred) error {
	fd, err := openNoFollow(path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, sub := range []string{"tmp", "new", "cur"} {
		sfd, err := unix.Openat(fd, sub, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", path, sub, err)
		}
		err = own(sfd, owner)
		unix.Close(sfd)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", path, sub, err)
		}
	}
	if err := own(fd, owner); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range made {
		if p == path {
			continue
		}
		pfd, err := openNoFollow(p)
		if err != nil {
			return err
		}
		err = unix.Fchmod(pfd, 0o711)
		unix.Close(pfd)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func own(fd int, owner privsep.Cred) error {
	if err := unix.Fchown(fd, int(owner.UID), int(owner.GID)); err != nil {
		return err
	}
	return unix.Fchmod(fd, 0o700)
}

// openNoFollow opens the directory path, no level of it a symbolic link.
func openNoFollow(path string) (int, error) {
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, name := range strings.Split(strings.TrimPrefix(filepath.Clean(path), "/"), "/") {
		if name == "" {
			continue
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("%s: %s: %w", path, name, err)
		}
		fd = next
	}
	return fd, nil
}

// asOwner runs fn with owner's effective uid, gid and groups, then
// becomes root again (the saved uid stays 0). Go applies set*id to every
// thread of the process; mailuser runs nothing else meanwhile.
func asOwner(owner privsep.Cred, fn func() error) (err error) {
	groups, err := syscall.Getgroups()
	if err != nil {
		return err
	}
	egid := syscall.Getegid()
	gids := []int{int(owner.GID)}
	for _, g := range owner.Groups {
		if g != owner.GID {
			gids = append(gids, int(g))
		}
	}
	defer func() {
		// Back to root: a failure here leaves the process someone else's,
		// and it must not go on.
		if e := syscall.Setresuid(-1, 0, -1); e != nil {
			panic(fmt.Sprintf("mailuser: cannot become root again: %v", e))
		}
		if e := syscall.Setresgid(-1, egid, -1); e != nil {
			panic(fmt.Sprintf("mailuser: cannot restore gid %d: %v", egid, e))
		}
		if e := syscall.Setgroups(groups); e != nil {
			panic(fmt.Sprintf("mailuser: cannot restore groups: %v", e))
		}
	}()
	if err := syscall.Setgroups(gids); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(-1, int(owner.GID), -1); err != nil {
		return fmt.Errorf("setresgid %d: %w", owner.GID, err)
	}
	if err := syscall.Setresuid(-1, int(owner.UID), -1); err != nil {
		return fmt.Errorf("setresuid %d: %w", owner.UID, err)
	}
	if err := fn(); err != nil {
		return fmt.Errorf("as %s: %w", owner, err)
	}
	return nil
}
