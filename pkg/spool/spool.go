// Package spool is the queue directory that smtpd and sendmail write and
// queue-runner reads. See man/letterbox-spool.5; the commit protocol is in
// this file, top to bottom.
//
// Layout of the spool directory:
//
//	tmp/      files being written (never read by anyone but their writer)
//	data/ID   message data, written once, never changed; the lock file
//	env/ID    the envelope (text, see envelope.go); its appearance is the
//	          commit point, and its mtime is the time the message is next due
//	drop/     sticky (1733) directory where unprivileged sendmail leaves
//	          messages for queue-runner to validate and take in (drop.go)
//	trigger   FIFO poked by writers to wake a waiting queue-runner
//
// CONTRACT: exported names below are used by smtpd, sendmail and
// queue-runner; add to them, don't change them.
package spool

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// State of one recipient.
type State string

const (
	Pending   State = "pending"
	Delivered State = "delivered"
	Bounced   State = "bounced"
)

// Recipient is one recipient of a queued message with its own state.
type Recipient struct {
	Address     string
	Original    string // ORCPT, when it differs
	State       State
	Attempts    int
	NextAttempt time.Time
	LastError   string
}

// Envelope is a queued message's metadata.
type Envelope struct {
	ID         string
	From       string // "" is the null sender
	Arrived    time.Time
	Size       int64
	AuthUser   string // who submitted it, if authenticated
	Recipients []*Recipient

	// Warned is when a delay warning was sent (zero: not yet); one only.
	Warned time.Time
	// Notice marks mail that queue-runner generated itself: NoticeDSN for
	// a delivery status notification to a sender, NoticePostmaster for a
	// failed bounce handed to the postmaster (which is never bounced again).
	Notice string

	// Relay marks mail from a client in relay-networks (or RELAYCLIENT):
	// one of our own hosts, whose mail is DKIM-signed on the way out like
	// an authenticated user's.
	Relay bool
	// Junk says why the message goes to its local recipients' Junk
	// folder (DMARC p=quarantine, a milter's quarantine); "" when not.
	Junk string
}

// Values of Envelope.Notice.
const (
	NoticeDSN        = "dsn"
	NoticePostmaster = "postmaster"
)

// Due is when the message next needs work: the earliest NextAttempt of a
// pending recipient (a zero NextAttempt counts as Arrived). A message with
// no pending recipient is due at once (so it gets removed).
func (e *Envelope) Due() time.Time {
	var due time.Time
	for _, r := range e.Recipients {
		if r.State != Pending {
			continue
		}
		t := r.NextAttempt
		if t.IsZero() {
			t = e.Arrived
		}
		if due.IsZero() || t.Before(due) {
			due = t
		}
	}
	if due.IsZero() {
		return e.Arrived
	}
	return due
}

// Spool is an opened queue directory.
type Spool struct {
	Dir string

	once      sync.Once
	reqs      chan *commitReq
	fs        *os.File // the spool directory, for the barrier
	batchSync bool     // the barrier (syncfs) covers the writers' files
	envDir    *os.File // env/, kept open for the rounds' fsyncs
	envDirErr error

	rounds     atomic.Int64       // barriers the committer ran (benchmarks)
	commitHook func(event string) // tests: told as each flush of a round starts and ends
}

// Subdirectories and files of the spool.
const (
	tmpDir      = "tmp"
	dataDir     = "data"
	envDir      = "env"
	dropDir     = "drop"
	triggerName = "trigger"
)

// Errors; test with errors.Is.
var (
	ErrNotFound = errors.New("no such message")
	ErrLocked   = errors.New("message is locked by another process")
)

// Open opens (creating if needed) the spool at dir. A user who may not
// write the spool still gets a *Spool: Submit then fails with a permission
// error and Drop is the way in.
func Open(dir string) (*Spool, error) {
	if dir == "" {
		return nil, errors.New("spool: no directory given")
	}
	// The top directory is traversable by all (0711) so that local users
	// reach drop/ and trigger; the rest is the spool owner's alone.
	if err := mkdir(dir, 0o711); err != nil {
		return nil, err
	}
	for _, d := range []string{tmpDir, dataDir, envDir} {
		if err := mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := mkdir(filepath.Join(dir, dropDir), 0o1733|os.ModeSticky); err != nil {
		return nil, err
	}
	trig := filepath.Join(dir, triggerName)
	if _, err := os.Lstat(trig); errors.Is(err, os.ErrNotExist) {
		// Everyone may poke: sendmail runs as any user.
		if err := syscall.Mkfifo(trig, 0o622); err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("spool: mkfifo %s: %w", trig, err)
		}
		os.Chmod(trig, 0o622) // umask
	}
	return &Spool{Dir: dir}, nil
}

// mkdir creates dir with exactly mode (not masked by the umask) if it does
// not exist. An existing directory is left alone: it may belong to someone
// else (sendmail run by a user opens root's spool).
func mkdir(dir string, mode os.FileMode) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("spool: %s is not a directory", dir)
		}
		return nil
	}
	if err := os.MkdirAll(dir, mode.Perm()); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	m := mode.Perm()
	if mode&os.ModeSticky != 0 {
		m |= os.ModeSticky
	}
	if err := os.Chmod(dir, m); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// NewID returns a new queue id: base32 (extended hex alphabet, so ids sort
// like their creation times) of the time in nanoseconds and 40 random bits.
// It is safe in file names and unique without coordination.
func NewID() string {
	var b [13]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixNano()))
	if _, err := rand.Read(b[8:]); err != nil {
		panic("spool: no randomness: " + err.Error())
	}
	return idEncoding.EncodeToString(b[:])
}

var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// ValidID reports whether id could be a queue id (and so a safe file name).
func ValidID(id string) bool {
	if len(id) < 8 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'V') {
			return false
		}
	}
	return true
}

func (s *Spool) path(sub, id string) string { return filepath.Join(s.Dir, sub, id) }

// Submit stores data and env durably and returns the queue id; the
// envelope's appearance is the commit point. The committer pokes the
// trigger FIFO before it releases the Submits of a round.
//
// The protocol, for a crash at any instant:
//
//  1. write the data to tmp/ID.data and rename it to data/ID at once (a
//     data file without an envelope is not a message);
//  2. write the envelope to tmp/ID.env, its mtime set to the time the
//     message is due;
//  3. hand the envelope to the committer, whose next barrier makes steps
//     1–2 durable for every Submit waiting (syncfs(2) of the spool's file
//     system on Linux; elsewhere the writers fsynced both files in steps
//     1–2 and the barrier is an fsync of data/); it then renames each of
//     those envelopes into env/;
//  4. return after an fsync of env/ that began after the rename.
//
// The committer works in rounds; in each, two flushes run at once:
//
//	round n:  barrier (syncfs)  → batch n's files and data/ entries durable;
//	                              then rename batch n's envelopes into env/
//	          fsync of env/     → batch n-1's renames durable (they were
//	                              made in round n-1); release batch n-1
//	round n+1 begins when both have ended
//
// So every message waits for its barrier and then its env/ fsync, in that
// order (its contents before its envelope's appearance), but a round lasts
// as long as the slower of the two, not both: under load the disk sees the
// two flushes together, and a Submit arriving while a round runs waits for
// at most that round before its own barrier begins (with the barrier and
// the env/ fsync one after the other, a synchronised burst of sessions —
// all released at once, all back at once — was split into a batch of the
// first one and a batch of the rest that waited for both flushes of the
// first). A round starts at once whenever something waits: a lone message
// is not kept waiting for company.
//
// Flushes per round, not per message: with per-file fsyncs every message
// cost the disk two cache flushes of its own (measured: 2.2 device flushes
// per message with ten writers, 0.45 with the batch barrier), and the
// flush is what bounds a durable spool's rate.
//
// A crash before the envelope rename leaves garbage (tmp files or a data
// file without an envelope) that Clean removes after an age; the caller got
// no id, so the sender still owns the message.
func (s *Spool) Submit(env *Envelope, data io.Reader) (string, error) {
	// A caller may take its id from NewID beforehand, so that what it wrote
	// into the message (smtpd's Received header) names the queue id.
	id := env.ID
	if !ValidID(id) {
		id = NewID()
		env.ID = id
	}
	s.once.Do(s.startCommitter)
	tmpData := s.path(tmpDir, id+".data")
	n, err := createFile(tmpData, 0o600, data, time.Time{}, !s.batchSync)
	if err == nil {
		err = rename(tmpData, s.path(dataDir, id))
	}
	if err != nil {
		os.Remove(tmpData)
		return "", fmt.Errorf("spool: submit: %w", err)
	}
	env.Size = n
	tmpEnv := s.path(tmpDir, id+".env")
	if err := s.writeEnvelope(tmpEnv, env, !s.batchSync); err != nil {
		os.Remove(s.path(dataDir, id))
		os.Remove(tmpEnv)
		return "", fmt.Errorf("spool: submit: %w", err)
	}
	if err := s.commit(id, tmpEnv); err != nil {
		return "", fmt.Errorf("spool: commit %s: %w", id, err)
	}
	return id, nil
}

// writeEnvelope writes env to the new file path, sets its mtime to
// env.Due() — which lets a pass skip messages not yet due with one stat
// each, without reading them (Postfix does the same in its deferred queue)
// — and, if sync, fsyncs it.
func (s *Spool) writeEnvelope(path string, env *Envelope, sync bool) error {
	bp := envBufs.Get().(*[]byte)
	*bp = env.appendFormat((*bp)[:0])
	_, err := createFile(path, 0o600, bytes.NewReader(*bp), env.Due(), sync)
	envBufs.Put(bp)
	return err
}

var envBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

type commitReq struct {
	id, tmpEnv string
	done       chan error
}

// maxBatch bounds a round's batch; more waiting Submits go to the next.
const maxBatch = 1024

// startCommitter opens what the flushes need and starts the committer
// goroutine. The descriptors stay open for the life of the process: syncfs
// and fsync report a write-back error only to descriptors opened before it
// happened, so a descriptor opened per round could miss an error in the
// data its own writers wrote.
func (s *Spool) startCommitter() {
	s.reqs = make(chan *commitReq, maxBatch)
	if fs, ok := openBarrier(s.Dir); ok {
		s.fs, s.batchSync = fs, true
	}
	s.envDir, s.envDirErr = os.Open(filepath.Join(s.Dir, envDir))
	go s.committer()
}

// commitDone recycles the channels commit waits on.
var commitDone = sync.Pool{New: func() any { return make(chan error, 1) }}

// commit passes one Submit's envelope to the committer goroutine and waits
// until its contents and its appearance in env/ are durable.
func (s *Spool) commit(id, tmpEnv string) error {
	r := &commitReq{id: id, tmpEnv: tmpEnv, done: commitDone.Get().(chan error)}
	s.reqs <- r
	err := <-r.done
	commitDone.Put(r.done)
	return err
}

// committer runs the rounds described at Submit.
func (s *Spool) committer() {
	var renamed, batch []*commitReq // renamed: in env/, not yet fsynced
	released := make(chan struct{})
	for {
		batch = batch[:0]
		if len(renamed) == 0 {
			batch = append(batch, <-s.reqs) // idle: wait for work
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}

		// The previous round's renames: fsynced and released beside this
		// round's barrier.
		if len(renamed) > 0 {
			go func(renamed []*commitReq) {
				s.hook("env fsync")
				err := s.syncEnvDir()
				s.hook("env fsync done")
				s.release(renamed, err)
				released <- struct{}{}
			}(renamed)
		}

		// The data and the envelopes' contents must be durable before
		// any envelope naming them may appear. (A round with nothing new
		// only fsyncs env/.)
		var err error
		if len(batch) > 0 {
			s.hook("barrier")
			if s.batchSync {
				err = barrier(s.fs)
			} else {
				err = syncDir(filepath.Join(s.Dir, dataDir))
			}
			s.rounds.Add(1)
			s.hook("barrier done")
		}
		next := make([]*commitReq, 0, len(batch))
		for _, r := range batch {
			rerr := err
			if rerr == nil {
				rerr = rename(r.tmpEnv, s.path(envDir, r.id))
			}
			if rerr != nil {
				os.Remove(r.tmpEnv)
				os.Remove(s.path(dataDir, r.id))
				r.done <- rerr
				continue
			}
			next = append(next, r)
		}

		if len(renamed) > 0 {
			<-released
		}
		renamed = next
	}
}

func (s *Spool) hook(event string) {
	if s.commitHook != nil {
		s.commitHook(event)
	}
}

// release answers the Submits whose renames into env/ the fsync that
// returned err covered.
func (s *Spool) release(renamed []*commitReq, err error) {
	if err == nil {
		// Poked before any Submit returns: a sendmail that exits the
		// moment its Submit returns would otherwise exit before the poke,
		// and the message would wait for the daemon's next timer.
		s.Poke()
	}
	for _, r := range renamed {
		if err != nil {
			// The envelope may or may not survive a crash: the caller
			// must not take it as committed, and must not see it
			// delivered twice, so it is withdrawn.
			os.Remove(s.path(envDir, r.id))
			os.Remove(s.path(dataDir, r.id))
		}
		r.done <- err
	}
}

// syncEnvDir fsyncs env/ through the descriptor kept open for it.
func (s *Spool) syncEnvDir() error {
	if s.envDirErr != nil {
		return s.envDirErr
	}
	return s.envDir.Sync()
}

// syncDir fsyncs a directory, making the renames into it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// replaceEnvelope atomically replaces env/ID with env: tmp file, fsync,
// rename over the old one, fsync env/. A crash leaves the old or the new
// envelope, never a mix.
func (s *Spool) replaceEnvelope(env *Envelope) error {
	tmp := s.path(tmpDir, env.ID+".env."+NewID())
	if err := s.writeEnvelope(tmp, env, true); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, s.path(envDir, env.ID)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Join(s.Dir, envDir))
}

// remove takes a message out of the spool: the data first, then the
// envelope. A crash in between leaves an envelope without data, which no
// writer ever makes otherwise (Submit renames the data into place first),
// so Clean removes it at once: the spool really ends empty. The caller
// holds the message's lock, so nobody else is reading the data. With
// sync, the removal is durable when it returns (else see SyncRemovals).
func (s *Spool) remove(id string, sync bool) error {
	if err := os.Remove(s.path(dataDir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	if err := os.Remove(s.path(envDir, id)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spool: remove %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	if !sync {
		return nil
	}
	if err := s.SyncRemovals(); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	return nil
}

// SyncRemovals makes the removals made before it (Locked.RemoveUnsynced)
// durable: one fsync of env/ for all of them. (The data files' removals
// need no flush of their own: a message is in the spool while its
// envelope is, and a data file left without one is garbage for Clean.)
func (s *Spool) SyncRemovals() error {
	if err := syncDir(filepath.Join(s.Dir, envDir)); err != nil {
		return fmt.Errorf("spool: fsync of env/ after removals: %w", err)
	}
	return nil
}
