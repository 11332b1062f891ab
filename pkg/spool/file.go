package spool

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// createFile creates path exclusively (mode perm), copies r into it, sets
// its mtime unless mtime is zero, and, if sync, fsyncs it (covering the
// mtime). It works on the bare descriptor: an *os.File for a regular file
// costs four fcntl(2) calls and a failing epoll_ctl(2) while the runtime
// finds out that the file cannot be polled — about ten system calls per
// message for the data and envelope files, measurable at a thousand
// messages a second. And it fills a whole buffer before each write(2), so
// that a message of up to 32 KB, Received header included, is one write,
// from a buffer reused from message to message (io.Copy allocates 32 KB
// per call).
func createFile(path string, perm uint32, r io.Reader, mtime time.Time, sync bool) (int64, error) {
	fd, err := retryEINTR(func() (int, error) {
		return syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, perm)
	})
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	bp := copyBufs.Get().(*[]byte)
	n, err := copyFull(fd, r, *bp)
	copyBufs.Put(bp)
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

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyFull copies r to fd a full buffer at a time. A read error (a client
// gone, a checker's verdict) is returned as it is.
func copyFull(fd int, r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		m := 0
		var rerr error
		for m < len(buf) && rerr == nil {
			var k int
			k, rerr = r.Read(buf[m:])
			m += k
		}
		if m > 0 {
			if _, err := fdWriter(fd).Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// openRead opens a regular file for reading. os.Open would try the file on
// the runtime's poller first (four fcntl(2) and a failing epoll_ctl(2));
// os.NewFile on a blocking descriptor costs one fcntl.
func openRead(path string) (*os.File, error) {
	fd, err := retryEINTR(func() (int, error) {
		return syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
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
