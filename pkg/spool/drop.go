package spool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The drop directory (Postfix's maildrop design): <spool>/drop is mode
// 1733, so any local user may create files in it but nobody but the spool
// owner may list it or remove others' files. sendmail, run by a user who
// may not write the spool, creates drop/ID mode 0600, writes the envelope,
// a line ".", and the message, then marks it complete by turning on the
// owner-execute bit and read for all (0744: queue-runner, not root, must
// read it) and fsyncs it. queue-runner takes complete files in with
// TakeDrops after checking them, and trusts nothing in them that a user
// could forge: the submitting user is the file's owner, as fstat says,
// and the trace field naming them is written by queue-runner (Pickup),
// never taken from the file.
const dropReady os.FileMode = 0o100

// MaxDrop bounds the size of a drop file queue-runner takes in.
var MaxDrop int64 = 64 << 20

// MaySubmit reports whether this process may commit messages to the spool
// itself (Submit); a user who may not leaves them in drop/ (Drop). It asks
// the kernel with this process's effective ids.
func (s *Spool) MaySubmit() bool {
	for _, d := range []string{tmpDir, dataDir, envDir} {
		if unix.Faccessat(unix.AT_FDCWD, filepath.Join(s.Dir, d), unix.W_OK|unix.X_OK, unix.AT_EACCESS) != nil {
			return false
		}
	}
	return true
}

// Drop leaves a message in the drop directory, for users who may not write
// the spool (see MaySubmit). It returns the drop file's name, which is not
// the queue id the message gets when taken in.
func (s *Spool) Drop(env *Envelope, data io.Reader) (string, error) {
	id := NewID()
	p := s.path(dropDir, id)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", fmt.Errorf("spool: drop: %w", err)
	}
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(p)
		return "", fmt.Errorf("spool: drop %s: %w", id, err)
	}
	w := bufio.NewWriter(f)
	e := *env
	e.ID = ""
	w.WriteString(e.Format())
	w.WriteString(".\n")
	if _, err := io.Copy(w, data); err != nil {
		return fail(err)
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	// The content reaches the disk before the mark that makes the file
	// complete (queue-runner takes complete files in): a crash must never
	// show a complete file with partial data. The second fsync covers the
	// mode; on journaling file systems it also commits the file's
	// creation. The directory is not readable by its writers, so
	// fsyncing it is best effort.
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o744); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(p)
		return "", fmt.Errorf("spool: drop %s: %w", id, err)
	}
	syncDir(filepath.Join(s.Dir, dropDir))
	s.Poke()
	return id, nil
}

// DropFile is a complete drop file being taken in: what may be trusted
// about it.
type DropFile struct {
	Name  string    // its name in drop/
	UID   uint32    // its owner, who submitted it (fstat of the open file)
	Login string    // the owner's login name; the uid in decimal when it has none
	Env   *Envelope // the envelope as the user wrote it: only From and the recipients are kept
}

// Pickup decides how a drop file is taken in: it returns the header
// fields to put before its message (the trace field naming the user),
// or an error that refuses the file.
type Pickup func(DropFile) (string, error)

// Taken is the outcome for one drop file.
type Taken struct {
	Drop string // the drop file's name
	ID   string // the queue id, when taken in
	User string // its owner
	Err  error  // why it was refused (and removed), or a temporary error (kept)
}

// TakeDrops takes complete drop files into the spool: each is checked
// (a regular file with one link, complete, not too large, a valid
// envelope), given pickup's header fields (none when pickup is nil),
// submitted with its owner as AuthUser, then removed. Invalid files are
// removed and reported; incomplete ones are left (Clean removes them
// after an age).
func (s *Spool) TakeDrops(pickup Pickup) []Taken {
	dir := filepath.Join(s.Dir, dropDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return []Taken{{Err: fmt.Errorf("spool: drop: %w", err)}}
	}
	var out []Taken
	for _, de := range ents {
		name := de.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		t, keep := s.takeDrop(name, pickup)
		if t.Err == nil && t.ID == "" {
			continue // not complete yet
		}
		if !keep {
			os.Remove(filepath.Join(dir, name))
		}
		out = append(out, t)
	}
	if len(out) > 0 {
		syncDir(dir)
	}
	return out
}

func (s *Spool) takeDrop(name string, pickup Pickup) (t Taken, keep bool) {
	t.Drop = name
	p := s.path(dropDir, name)
	// O_NOFOLLOW: a symlink planted here must not make us read (and mail
	// out) a file the user may not read. O_NONBLOCK: a FIFO must not hang
	// the pass.
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return t, true
		}
		t.Err = fmt.Errorf("spool: drop %s: %w", name, err)
		return t, errors.Is(err, syscall.EACCES)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Err = fmt.Errorf("spool: drop %s: %w", name, err)
		return t, true
	}
	uid, nlink, _ := fileInfoUID(fi)
	t.User = loginOf(uid)
	switch {
	case !fi.Mode().IsRegular():
		t.Err = fmt.Errorf("spool: drop %s: not a regular file", name)
		return t, false
	case nlink != 1:
		// A hard link to someone else's file would mail it out as theirs.
		t.Err = fmt.Errorf("spool: drop %s: %d links", name, nlink)
		return t, false
	case fi.Mode()&dropReady == 0:
		return t, true // still being written
	case fi.Size() > MaxDrop:
		t.Err = fmt.Errorf("spool: drop %s: %d bytes, more than %d", name, fi.Size(), MaxDrop)
		return t, false
	}
	// What is read is what fstat measured, however the file grows since:
	// the cap holds for the bytes taken in, not for a size seen earlier.
	br := bufio.NewReader(io.LimitReader(f, fi.Size()))
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Err = fmt.Errorf("spool: drop %s: no end of envelope", name)
			return t, false
		}
		if line == ".\n" {
			break
		}
		head.WriteString(line)
		if head.Len() > maxEnvelope {
			t.Err = fmt.Errorf("spool: drop %s: envelope too large", name)
			return t, false
		}
	}
	env, err := Parse(head.String())
	if err != nil {
		t.Err = fmt.Errorf("spool: drop %s: %w", name, err)
		return t, false
	}
	if err := validDropEnvelope(env); err != nil {
		t.Err = fmt.Errorf("spool: drop %s: %w", name, err)
		return t, false
	}
	// Only what the user may choose is kept.
	clean := &Envelope{From: env.From, Arrived: time.Now(), AuthUser: t.User}
	for _, r := range env.Recipients {
		clean.Recipients = append(clean.Recipients, &Recipient{Address: r.Address, Original: r.Original, State: Pending})
	}
	var data io.Reader = br
	if pickup != nil {
		prefix, err := pickup(DropFile{Name: name, UID: uid, Login: t.User, Env: clean})
		if err != nil {
			t.Err = fmt.Errorf("spool: drop %s: %w", name, err)
			return t, false
		}
		data = io.MultiReader(strings.NewReader(prefix), br)
	}
	id, err := s.Submit(clean, data)
	if err != nil {
		t.Err = fmt.Errorf("spool: drop %s: %w", name, err)
		return t, true
	}
	t.ID = id
	return t, false
}

func validDropEnvelope(env *Envelope) error {
	check := func(what, a string) error {
		if len(a) > 512 {
			return fmt.Errorf("%s too long", what)
		}
		for _, c := range a {
			if c < 0x20 || c == 0x7f || c == '<' || c == '>' {
				return fmt.Errorf("%s %q: forbidden character", what, a)
			}
		}
		return nil
	}
	if err := check("sender", env.From); err != nil {
		return err
	}
	if len(env.Recipients) > 10000 {
		return errors.New("too many recipients")
	}
	for _, r := range env.Recipients {
		if r.Address == "" || !strings.Contains(r.Address, "@") && !strings.EqualFold(r.Address, "postmaster") {
			return fmt.Errorf("recipient %q: not an address", r.Address)
		}
		if err := check("recipient", r.Address); err != nil {
			return err
		}
		if err := check("original recipient", r.Original); err != nil {
			return err
		}
	}
	return nil
}

// loginOf returns uid's login name, or the uid in decimal when the system
// does not know it.
func loginOf(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// cleanDrops removes what sits in drop/ since before cutoff and will
// never be taken in: unfinished files (the writer died), dot-files,
// anything that is not a regular file, and complete files this process
// cannot read. Age is the change time, which the file's owner cannot set
// back (touch sets the modification time, even into the future).
func (s *Spool) cleanDrops(cutoff time.Time) int {
	dir := filepath.Join(s.Dir, dropDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || !time.Unix(st.Ctim.Unix()).Before(cutoff) {
			continue
		}
		takeable := fi.Mode().IsRegular() && fi.Mode()&dropReady != 0 && !strings.HasPrefix(e.Name(), ".") &&
			unix.Access(p, unix.R_OK) == nil
		if takeable {
			continue // TakeDrops' to take or refuse
		}
		if os.RemoveAll(p) == nil {
			n++
		}
	}
	return n
}
