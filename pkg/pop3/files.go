package pop3

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"letterbox/pkg/maildir"
)

// A session runs as the maildrop's owner, yet the maildrop holds what the
// owner (or, for a mailbox served by root or by the mail user, anyone who
// can write there) put in it. So no path in it is followed through a
// symlink, and only regular files are read: a symlink to another user's
// message or to a root-only file is never served, a FIFO never hangs the
// session, and a file made by name (a cache, a lock) never lands through
// a planted symlink elsewhere.

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
		return &os.PathError{Op: pe.Op, Path: pe.Path, Err: fmt.Errorf("%w (a symlink)", maildir.ErrNotRegular)}
	}
	return err
}
