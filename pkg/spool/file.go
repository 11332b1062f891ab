package spool

import (
	"errors"
	"io"
	"os"
	"syscall"
	"time"
)

// createFile creates path exclusively (mode perm), copies r into it, sets
// its mtime unless mtime is zero, and, if sync, fsyncs it (covering the
// mtime). It works on the bare descriptor: an *os.File for a
// regular file costs four fcntl(2) calls and a failing epoll_ctl(2) while
// the runtime finds out that the file cannot be polled — about ten system
// calls per message for the data and envelope files, measurable at a
// thousand messages a second.
func createFile(path string, perm uint32, r io.Reader, mtime time.Time, sync bool) (int64, error) {
	fd, err := retryEINTR(func() (int, error) {
		return syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, perm)
	})
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	n, err := io.Copy(fdWriter(fd), r)
	if err == nil && !mtime.IsZero() {
		ts := syscall.NsecToTimespec(mtime.UnixNano())
		if uerr := syscall.UtimesNano(path, []syscall.Timespec{ts, ts}); uerr != nil {
			err = &os.PathError{Op: "utimes", Path: path, Err: uerr}
		}
	}
	if err == nil && sync {
		if _, serr := retryEINTR(func() (int, error) { return 0, syscall.Fsync(fd) }); serr != nil {
			err = &os.PathError{Op: "fsync", Path: path, Err: serr}
		}
	}
	if cerr := syscall.Close(fd); err == nil && cerr != nil {
		err = &os.PathError{Op: "close", Path: path, Err: cerr}
	}
	return n, err
}

// fdWriter writes to a bare descriptor.
type fdWriter int

func (fd fdWriter) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := syscall.Write(int(fd), p[written:])
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return written, err
		}
		if n == 0 {
			return written, io.ErrShortWrite
		}
		written += n
	}
	return written, nil
}

// retryEINTR repeats a system call interrupted by a signal (the runtime's
// preemption signal among them).
func retryEINTR(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if !errors.Is(err, syscall.EINTR) {
			return n, err
		}
	}
}

// rename is rename(2) itself: os.Rename first stats the new name to refuse
// replacing a directory, which nothing in the spool is.
func rename(from, to string) error {
	if err := syscall.Rename(from, to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
