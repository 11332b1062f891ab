package pop3

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// A session runs as the maildrop's owner, yet the maildrop holds what the
// owner (or, for a mailbox served by root or by the mail user, anyone who
// can write there) put in it. So no path in it is followed through a
// symlink, and only regular files are read: a symlink to another user's
// message or to a root-only file is never served, a FIFO never hangs the
// session, and a file made by name (a cache, a lock) never lands through
// a planted symlink elsewhere.

// errNotRegular: the path names something other than a regular file.
var errNotRegular = errors.New("not a regular file")

// openRegular opens path read-only without following a symlink at its
// last component, and only when it is a regular file.
func openRegular(path string) (*os.File, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nofollowErr(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: errNotRegular}
	}
	return f, nil
}

// createExclusive creates path, which must not exist in any form (not even
// as a symlink), for writing, mode 0600.
func createExclusive(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	return f, nofollowErr(err)
}

// nofollowErr names a refused symlink (ELOOP from O_NOFOLLOW) as not a
// regular file.
func nofollowErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) && errors.Is(pe.Err, syscall.ELOOP) {
		return &os.PathError{Op: pe.Op, Path: pe.Path, Err: fmt.Errorf("%w (a symlink)", errNotRegular)}
	}
	return err
}
