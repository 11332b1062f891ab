package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Entry is a queued message as seen by Scan: its id and the time it is
// next due (the envelope's mtime), without reading the envelope.
type Entry struct {
	ID  string
	Due time.Time
}

// Scan returns every committed message with its due time, in id order
// (which is arrival order). It costs one readdir and one fstatat per
// message, spread over a few goroutines.
func (s *Spool) Scan() ([]Entry, error) {
	d, names, err := s.readEnv()
	if err != nil {
		return nil, fmt.Errorf("spool: scan: %w", err)
	}
	defer d.Close()
	out := make([]Entry, len(names))
	dfd := int(d.Fd())
	const workers = 4
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var st unix.Stat_t
			for i := w; i < len(names); i += workers {
				if !ValidID(names[i]) {
					continue
				}
				if unix.Fstatat(dfd, names[i], &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
					continue // removed meanwhile
				}
				out[i] = Entry{ID: names[i], Due: time.Unix(st.Mtim.Sec, st.Mtim.Nsec)}
			}
		}(w)
	}
	wg.Wait()
	j := 0
	for _, e := range out {
		if e.ID != "" {
			out[j] = e
			j++
		}
	}
	return out[:j], nil
}

// readEnvelope reads a whole envelope file with open, read until end of
// file and close: os.ReadFile adds an fstat and a poller registration,
// which are half the cost of a listing that reads every envelope.
func readEnvelope(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 1024)
	for {
		if len(b) == cap(b) {
			if len(b) > maxEnvelope {
				return b, nil // Parse says it is too large
			}
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// IDs returns the id of every committed message, in id order (which is
// arrival order), from one read of env/ and no stat.
func (s *Spool) IDs() ([]string, error) {
	d, names, err := s.readEnv()
	if err != nil {
		return nil, fmt.Errorf("spool: ids: %w", err)
	}
	d.Close()
	ids := names[:0]
	for _, n := range names {
		if ValidID(n) {
			ids = append(ids, n)
		}
	}
	return ids, nil
}

// readEnv opens env/ and returns it with its names, sorted.
func (s *Spool) readEnv() (*os.File, []string, error) {
	d, err := os.Open(filepath.Join(s.Dir, envDir))
	if err != nil {
		return nil, nil, err
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	sort.Strings(names)
	return d, names, nil
}

// Load reads the envelope of message id.
func (s *Spool) Load(id string) (*Envelope, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("spool: load %q: %w", id, ErrNotFound)
	}
	b, err := readEnvelope(s.path(envDir, id))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("spool: load %s: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("spool: load %s: %w", id, err)
	}
	env, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("spool: load %s: %w", id, err)
	}
	env.ID = id // the file name is the truth
	return env, nil
}

// List returns every message's envelope in arrival order; envelopes that
// vanish while it reads (delivered meanwhile) are left out.
func (s *Spool) List() ([]*Envelope, error) {
	ents, err := s.Scan()
	if err != nil {
		return nil, err
	}
	envs := make([]*Envelope, len(ents))
	errs := make([]error, len(ents))
	const workers = 4
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(ents); i += workers {
				envs[i], errs[i] = s.Load(ents[i].ID)
			}
		}(w)
	}
	wg.Wait()
	out := make([]*Envelope, 0, len(ents))
	for i, env := range envs {
		if errors.Is(errs[i], ErrNotFound) {
			continue
		}
		if errs[i] != nil {
			return out, errs[i]
		}
		out = append(out, env)
	}
	return out, nil
}

// OpenData opens the message data of id for reading.
func (s *Spool) OpenData(id string) (*os.File, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("spool: data %q: %w", id, ErrNotFound)
	}
	f, err := openRead(s.path(dataDir, id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("spool: data %s: %w", id, ErrNotFound)
	}
	return f, err
}

// Remove takes message id out of the spool, waiting for no lock: use it
// for an operator's removal; queue-runner removes through Locked.Remove.
func (s *Spool) Remove(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: remove %q: %w", id, ErrNotFound)
	}
	l, err := s.Lock(id)
	if err != nil {
		return err
	}
	defer l.Unlock()
	return l.Remove()
}

// Locked is a message held under its advisory lock: an flock(2) on its
// data file, which (unlike the envelope) is never replaced, so the lock
// stays on the one inode for the message's whole life. The lock is the
// process's until Unlock or exit, so a killed queue-runner never leaves
// a message locked.
type Locked struct {
	Envelope *Envelope
	s        *Spool
	f        *os.File
}

// Lock takes message id's lock without waiting (ErrLocked when another
// process or Locked holds it) and loads its envelope under the lock.
func (s *Spool) Lock(id string) (*Locked, error) {
	f, err := s.OpenData(id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			// An envelope without data is a crash leftover (see remove):
			// take it away now rather than at the next Clean.
			if os.Remove(s.path(envDir, id)) == nil {
				syncDir(filepath.Join(s.Dir, envDir))
			}
		}
		return nil, fmt.Errorf("spool: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool: lock %s: %w", id, ErrLocked)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", id, err)
	}
	// Read the envelope only now: whoever held the lock before may have
	// updated or removed it.
	env, err := s.Load(id)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Locked{Envelope: env, s: s, f: f}, nil
}

// Data returns a reader of the message data from its start; several may
// be open at once.
func (l *Locked) Data() io.ReadCloser {
	return io.NopCloser(io.NewSectionReader(l.f, 0, 1<<62))
}

// Update replaces the envelope atomically with env (whose ID must match).
func (l *Locked) Update(env *Envelope) error {
	if env.ID != l.Envelope.ID {
		return fmt.Errorf("spool: update %s: envelope has id %q", l.Envelope.ID, env.ID)
	}
	if err := l.s.replaceEnvelope(env); err != nil {
		return fmt.Errorf("spool: update %s: %w", env.ID, err)
	}
	l.Envelope = env
	return nil
}

// Remove takes the message out of the spool (delivered or given up),
// durably: it returns after an fsync of env/.
func (l *Locked) Remove() error { return l.s.remove(l.Envelope.ID, true) }

// RemoveUnsynced is Remove without the fsync of env/: the caller makes a
// batch of removals durable with one SyncRemovals. Until then a crash may
// bring the message back, to be worked again.
func (l *Locked) RemoveUnsynced() error { return l.s.remove(l.Envelope.ID, false) }

// Unlock releases the lock.
func (l *Locked) Unlock() error { return l.f.Close() }

// Clean removes garbage older than age: files left in tmp/ by writers that
// died, data files whose envelope never appeared (a crash before the
// commit point), envelopes whose data is missing (a crash while removing,
// or before the directory fsyncs; removed whatever their age), and what
// drop/ holds that will never be taken in (cleanDrops). It returns how many
// files it removed.
func (s *Spool) Clean(age time.Duration) (int, error) {
	cutoff := time.Now().Add(-age)
	n := 0
	old := func(path string) bool {
		fi, err := os.Lstat(path)
		return err == nil && fi.ModTime().Before(cutoff)
	}
	names := func(sub string) (map[string]bool, error) {
		ents, err := os.ReadDir(filepath.Join(s.Dir, sub))
		m := map[string]bool{}
		for _, e := range ents {
			m[e.Name()] = true
		}
		return m, err
	}
	tmp, err := names(tmpDir)
	if err != nil {
		return n, fmt.Errorf("spool: clean: %w", err)
	}
	for name := range tmp {
		if p := s.path(tmpDir, name); old(p) && os.Remove(p) == nil {
			n++
		}
	}
	data, err := names(dataDir)
	if err != nil {
		return n, fmt.Errorf("spool: clean: %w", err)
	}
	envs, err := names(envDir)
	if err != nil {
		return n, fmt.Errorf("spool: clean: %w", err)
	}
	for id := range data {
		// Re-check the envelope: it may have appeared since the listing.
		if p := s.path(dataDir, id); !envs[id] && old(p) {
			if _, err := os.Lstat(s.path(envDir, id)); errors.Is(err, os.ErrNotExist) && os.Remove(p) == nil {
				n++
			}
		}
	}
	for id := range envs {
		if p := s.path(envDir, id); !data[id] && ValidID(id) {
			// No age here: its mtime is the due time, and no writer
			// ever makes an envelope without data (data is renamed
			// into place and fsynced first, and removed last).
			if _, err := os.Lstat(s.path(dataDir, id)); errors.Is(err, os.ErrNotExist) && os.Remove(p) == nil {
				n++
			}
		}
	}
	n += s.cleanDrops(cutoff)
	return n, nil
}

// fileInfoUID returns the owner of fi.
func fileInfoUID(fi fs.FileInfo) (uint32, uint64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, uint64(st.Nlink), true
}
