package check

import (
	"io"
	"os"
	"sync"
)

// memoryLimit is how much of a message is staged in memory; a larger
// message moves to a file. Most mail is smaller, and a file costs the
// spool's batch barrier (syncfs) its pages and its creation.
const memoryLimit = 256 << 10

// staged is a message being staged while it arrives: in memory up to
// memoryLimit, then in an unlinked temporary file, which disappears with
// its descriptor whatever happens to the process. Readers (the DKIM
// verifier) follow it while it grows.
type staged struct {
	dir string

	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte   // the message while it fits in memory
	f    *os.File // the message once it did not
	size int64
	done bool
	err  error // the writer failed: readers stop with it
	// waiting counts followers asleep at the end of what is written: a
	// write wakes them only when there is one (most messages have none).
	waiting int
}

// Staging buffers start at stageStart octets and double as a message
// needs, up to memoryLimit; those up to stageKeep go back to buffers for
// the next message. A buffer is live while its message is checked, and
// the collector's next cycle comes when the heap has grown by what is
// live: with ten sessions receiving 10 KB messages, 64 KiB buffers (and
// the 32 KiB read buffer each message had) were most of smtpd's live heap
// and tripled its collections. Allocating anew for each message costs the
// collector too.
const (
	stageStart = 16 << 10
	stageKeep  = 64 << 10
	// minSpare is the least free room a read into the buffer gets
	// before the buffer grows.
	minSpare = 4 << 10
)

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, stageStart); return &b }}

func putBuffer(b []byte) {
	if b != nil && cap(b) <= stageKeep {
		b = b[:0]
		buffers.Put(&b)
	}
}

func newStaged(dir string) *staged {
	s := &staged{dir: dir, buf: (*buffers.Get().(*[]byte))[:0]}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *staged) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.f == nil && len(s.buf)+len(p) <= memoryLimit {
		s.buf = append(s.buf, p...)
		s.size += int64(len(p))
		s.wake()
		s.mu.Unlock()
		return len(p), nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "check-*")
		if err != nil {
			s.mu.Unlock()
			return 0, err
		}
		os.Remove(f.Name())
		if _, err := f.Write(s.buf); err != nil {
			f.Close()
			s.mu.Unlock()
			return 0, err
		}
		s.f, s.buf = f, nil // not back to the pool: a reader may hold it
	}
	f := s.f
	s.mu.Unlock()
	// Only this writer appends; readers read what size says is there.
	n, err := f.Write(p)
	s.mu.Lock()
	s.size += int64(n)
	s.wake()
	s.mu.Unlock()
	return n, err
}

// wake wakes the followers waiting for more; s.mu is held.
func (s *staged) wake() {
	if s.waiting > 0 {
		s.cond.Broadcast()
	}
}

// spare returns the free end of the memory buffer, grown first when less
// than minSpare of it is free, for the writer to read the message's next
// octets into and then call wrote: one copy fewer than Write. It returns
// nil once the message is on disk or fills memoryLimit (then the writer
// writes with Write). Only the writer's goroutine may call it.
func (s *staged) spare() []byte {
	if s.f != nil {
		return nil
	}
	if cap(s.buf)-len(s.buf) < minSpare && cap(s.buf) < memoryLimit {
		nb := make([]byte, len(s.buf), min(max(2*cap(s.buf), stageStart), memoryLimit))
		copy(nb, s.buf)
		s.mu.Lock()
		old := s.buf
		s.buf = nb
		s.mu.Unlock()
		putBuffer(old) // no reader holds it: followers start on disk
	}
	if len(s.buf) == cap(s.buf) {
		return nil
	}
	return s.buf[len(s.buf):cap(s.buf)]
}

// wrote adds the n octets read into spare's slice to the message.
func (s *staged) wrote(n int) {
	s.mu.Lock()
	s.buf = s.buf[:len(s.buf)+n]
	s.size += int64(n)
	s.wake()
	s.mu.Unlock()
}

// onDisk reports whether the message has moved to a file (it grew
// beyond memoryLimit). Only the writer's goroutine may ask.
func (s *staged) onDisk() bool { return s.f != nil }

// inMemory returns the whole message when it is finished and was staged
// in memory; ok is false otherwise. The slice is valid until close.
func (s *staged) inMemory() (b []byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done || s.err != nil || s.f != nil {
		return nil, false
	}
	return s.buf[:s.size], true
}

// finish ends the writing: err nil is the end of the message, else
// readers get err.
func (s *staged) finish(err error) {
	s.mu.Lock()
	s.done, s.err = true, err
	s.cond.Broadcast()
	s.mu.Unlock()
}

// ReadAt reads what is written already.
func (s *staged) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	if off >= s.size {
		s.mu.Unlock()
		return 0, io.EOF
	}
	if rest := s.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	if s.f == nil {
		n := copy(p, s.buf[off:])
		s.mu.Unlock()
		return n, nil
	}
	f := s.f
	s.mu.Unlock()
	n, err := f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}

// follow returns a reader of the message from its start that waits for
// the writer at the end of what is written.
func (s *staged) follow() io.Reader { return &follower{s: s} }

type follower struct {
	s   *staged
	off int64
}

func (r *follower) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	for r.off >= s.size && !s.done {
		s.waiting++
		s.cond.Wait()
		s.waiting--
	}
	size, err := s.size, s.err
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if r.off >= size {
		return 0, io.EOF
	}
	n, err := s.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// section returns a reader of the message from off to its end (once it is
// finished).
func (s *staged) section(off int64) io.Reader {
	return io.NewSectionReader(s, off, s.size-off)
}

// close frees the message.
func (s *staged) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A reader still running (a verifier being stopped) finds nothing.
	s.size, s.done = 0, true
	if s.err == nil {
		s.err = io.ErrClosedPipe
	}
	s.cond.Broadcast()
	if s.f != nil {
		s.f.Close()
	}
	putBuffer(s.buf)
	s.buf = nil
}
