package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// openBarrier opens the spool directory for barrier.
func openBarrier(dir string) (*os.File, bool) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, false
	}
	return f, true
}

// barrier makes every write and rename on the spool's file system so far
// durable: one syncfs(2) for a whole batch of messages, which since Linux
// 5.8 also reports write-back errors.
func barrier(fs *os.File) error {
	if err := unix.Syncfs(int(fs.Fd())); err != nil {
		return &os.PathError{Op: "syncfs", Path: fs.Name(), Err: err}
	}
	return nil
}
