package maildir

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotRegular: a path in a Maildir names something other than a regular
// file (a symlink, a directory, a FIFO...).
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens a message file (or another file a reader keeps in a
// Maildir) read-only, without following a symlink at its last component,
// and only when it is a regular file: whoever can write the Maildir could
// have swapped the file for a link to another user's mail or a FIFO.
//
// The file is read with plain system calls, not through an *os.File:
// os.OpenFile costs four fcntl calls and a failing epoll_ctl besides the
// open, which pop3d's RETR and imapd's FETCH of every body paid per
// message, and a regular file gains nothing from the runtime's poller.
func OpenRegular(path string) (*RegularFile, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ELOOP {
			return nil, &os.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (a symlink)", ErrNotRegular)}
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: path, Err: ErrNotRegular}
	}
	return &RegularFile{fd: fd, path: path, size: st.Size}, nil
}

// RegularFile is a file OpenRegular opened: an io.ReadSeekCloser on its
// descriptor.
type RegularFile struct {
	fd   int
	path string
	size int64
}

// Size is the file's size when it was opened (from the fstat that checked
// its type): a reader that knows it can stop there, without the read(2)
// that returns end-of-file (pop3d's RETR: one system call of seven per
// message). A message file never changes once in new/ or cur/.
func (f *RegularFile) Size() int64 { return f.size }

func (f *RegularFile) Read(p []byte) (int, error) {
	if f.fd < 0 {
		return 0, os.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(f.fd, p)
		if err == unix.EINTR {
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

func (f *RegularFile) Seek(offset int64, whence int) (int64, error) {
	if f.fd < 0 {
		return 0, os.ErrClosed
	}
	n, err := unix.Seek(f.fd, offset, whence)
	if err != nil {
		return 0, &os.PathError{Op: "seek", Path: f.path, Err: err}
	}
	return n, nil
}

func (f *RegularFile) Close() error {
	if f.fd < 0 {
		return os.ErrClosed
	}
	err := unix.Close(f.fd)
	f.fd = -1
	return err
}
