package maildir

import (
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// DirSyncer shares the fsyncs of new/ between the Maildir deliveries one
// process makes at once (a group commit, like the spool's committer):
// a delivery whose link into new/ is made while an fsync of that directory
// runs does not start one of its own beside it, it waits for the next one,
// which begins when the running one ends and covers every delivery that
// came meanwhile. Each delivery still returns only after an fsync of its
// directory that began after its link had ended, so a delivery reported
// done is on disk exactly as with an fsync of its own. queue-runner
// delivers many messages into one Maildir at once: there it turns one
// directory flush per message into one per group. Directories are told
// apart by device and inode (the path a delivery took does not matter).
//
// The zero value is ready to use; a nil *DirSyncer makes each delivery
// fsync on its own (deliver(8): one delivery per process).
type DirSyncer struct {
	// Hook, when set, is told as each shared flush starts ("flush"), ends
	// ("flush done": before its waiters return) and when a caller waits
	// for the next flush ("join"). Tests watch, and hold, flushes with it.
	Hook func(event string)

	mu   sync.Mutex
	dirs map[dirKey]*dirFlushes
}

type dirKey struct{ dev, ino uint64 }

// dirFlushes is one directory's state: the flush under way, and the one
// the callers that came during it wait for.
type dirFlushes struct {
	running *dirFlush
	next    *dirFlush
}

type dirFlush struct {
	started bool
	done    chan struct{} // closed when the flush has ended; err is set then
	err     error
}

// DeliverFolder is the package's DeliverFolder with new/'s fsync shared
// through s.
func (s *DirSyncer) DeliverFolder(root, name string, r io.Reader) (string, error) {
	return deliverFolder(root, name, r, s)
}

// SyncDir fsyncs the directory open as d, or waits for another caller's
// fsync of the same directory that began after this call; either way,
// what was linked into d before the call is on disk when it returns nil.
func (s *DirSyncer) SyncDir(d *os.File) error {
	if s == nil {
		return syncFile(d)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return &os.PathError{Op: "fstat", Path: d.Name(), Err: err}
	}
	k := dirKey{dev: uint64(st.Dev), ino: st.Ino}
	s.mu.Lock()
	if s.dirs == nil {
		s.dirs = map[dirKey]*dirFlushes{}
	}
	df := s.dirs[k]
	if df == nil {
		df = &dirFlushes{}
		s.dirs[k] = df
	}
	if df.next == nil {
		df.next = &dirFlush{done: make(chan struct{})}
	}
	// Never the running flush: it may have begun before this caller's
	// link, and would not cover it.
	f := df.next
	for df.running != nil && !f.started {
		cur := df.running
		s.mu.Unlock()
		s.hook("join")
		<-cur.done
		s.mu.Lock()
	}
	if f.started {
		// Another caller that waited with this one leads it.
		s.mu.Unlock()
		<-f.done
		return f.err
	}
	f.started = true
	df.next, df.running = nil, f
	s.mu.Unlock()

	s.hook("flush")
	f.err = syncFile(d)
	s.hook("flush done")

	s.mu.Lock()
	df.running = nil
	if df.next == nil {
		delete(s.dirs, k)
	}
	s.mu.Unlock()
	close(f.done)
	return f.err
}

func (s *DirSyncer) hook(event string) {
	if s.Hook != nil {
		s.Hook(event)
	}
}
