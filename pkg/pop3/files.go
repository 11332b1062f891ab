package pop3

import (
	"errors"
	"fmt"
	"io"
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
func openRegular(path string) (*regularFile, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nofollowErr(&os.PathError{Op: "open", Path: path, Err: err})
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		syscall.Close(fd)
		return nil, &os.PathError{Op: "open", Path: path, Err: errNotRegular}
	}
	return &regularFile{fd: fd, path: path}, nil
}

// regularFile is a file openRegular opened, read with read(2) itself: an
// *os.File opened by path tries to register with the runtime's poller
// (four fcntl calls and an epoll_ctl that fails for a regular file), which
// cost every RETR five system calls.
type regularFile struct {
	fd   int
	path string
}

func (f *regularFile) Read(p []byte) (int, error) {
	if f.fd < 0 {
		return 0, os.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := syscall.Read(f.fd, p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: f.path, Err: err}
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f *regularFile) Close() error {
	if f.fd < 0 {
		return os.ErrClosed
	}
	err := syscall.Close(f.fd)
	f.fd = -1
	return err
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
