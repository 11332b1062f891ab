package check

import (
	"io"
	"os"
	"sync"
)

// staged is a message being written to its staging file, an unlinked
// temporary file: readers (the DKIM verifier) follow it while it grows,
// and it disappears with its descriptor, whatever happens to the process.
type staged struct {
	f *os.File

	mu   sync.Mutex
	cond *sync.Cond
	size int64
	done bool
	err  error // the writer failed: readers stop with it
}

func newStaged(dir string) (*staged, error) {
	f, err := os.CreateTemp(dir, "check-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	s := &staged{f: f}
	s.cond = sync.NewCond(&s.mu)
	return s, nil
}

func (s *staged) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.mu.Lock()
	s.size += int64(n)
	s.cond.Broadcast()
	s.mu.Unlock()
	return n, err
}

// finish ends the writing: err nil is the end of the message, else
// readers get err.
func (s *staged) finish(err error) {
	s.mu.Lock()
	s.done, s.err = true, err
	s.cond.Broadcast()
	s.mu.Unlock()
}

// follow returns a reader of the file from its start that waits for the
// writer at the end of what is written.
func (s *staged) follow() io.Reader { return &follower{s: s} }

type follower struct {
	s   *staged
	off int64
}

func (r *follower) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	for r.off >= s.size && !s.done {
		s.cond.Wait()
	}
	size, err := s.size, s.err
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if r.off >= size {
		return 0, io.EOF
	}
	if rest := size - r.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := s.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// section returns a reader of the file from off to its end.
func (s *staged) section(off int64) io.Reader {
	return io.NewSectionReader(s.f, off, s.size-off)
}

func (s *staged) close() { s.f.Close() }
