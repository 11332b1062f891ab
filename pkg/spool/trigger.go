package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Poke wakes a queue-runner waiting on the trigger FIFO. It never blocks
// and never fails: with no reader (ENXIO), a full pipe (EAGAIN, a wake-up
// is pending anyway) or no FIFO, there is nobody to wake and the next
// pass finds the message.
func (s *Spool) Poke() {
	fd, err := syscall.Open(filepath.Join(s.Dir, triggerName), syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	syscall.Write(fd, []byte{'!'})
	syscall.Close(fd)
}

// Trigger is the reading end of the trigger FIFO.
type Trigger struct {
	// C receives a value (coalesced) whenever some writer poked.
	C chan struct{}
	f *os.File
}

// Listen opens the trigger FIFO for reading. It is opened read-write, so
// the FIFO always has a writer (no EOF when the last poker closes) and the
// open does not block.
func (s *Spool) Listen() (*Trigger, error) {
	p := filepath.Join(s.Dir, triggerName)
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, fmt.Errorf("spool: trigger: %w", err)
	}
	if fi.Mode()&os.ModeNamedPipe == 0 {
		return nil, fmt.Errorf("spool: trigger %s is not a FIFO", p)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("spool: trigger: %w", err)
	}
	t := &Trigger{C: make(chan struct{}, 1), f: f}
	go t.read()
	return t, nil
}

func (t *Trigger) read() {
	buf := make([]byte, 512)
	for {
		_, err := t.f.Read(buf)
		if err != nil && !errors.Is(err, syscall.EINTR) && !errors.Is(err, syscall.EAGAIN) {
			close(t.C)
			return
		}
		select {
		case t.C <- struct{}{}:
		default:
		}
	}
}

// Close stops listening; C is closed.
func (t *Trigger) Close() error { return t.f.Close() }
