package maildir

// What imapd's store (pkg/mailstore) needs beyond Deliver: messages saved
// straight into cur/ with their flags and internal date (APPEND), hard-linked
// or renamed from another folder (COPY, MOVE), all durable before returning;
// and the sizes Dovecot puts in names (,S= and ,W=).

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrTooBig is the error of a Save whose content exceeds its MaxSize.
var ErrTooBig = errors.New("maildir: message too big")

// SaveOptions say how Save names and dates a message.
type SaveOptions struct {
	Flags   string    // flag letters after ":2," (sorted by Save)
	Mtime   time.Time // the file's modification time (IMAP INTERNALDATE); zero: now
	MaxSize int64     // content larger than this fails with ErrTooBig; 0: no limit
	// Host is the host part of the new name (several hosts may deliver to
	// one Maildir); "" is this host's name.
	Host string
	// Time is the delivery time the new name carries (its seconds and
	// M<usec>, which order new messages: DeliveryOrder); zero: now. An
	// import keeps a message's old date in its name this way.
	Time time.Time
	// New puts the message into new/ under its key alone, as Deliver names
	// it (no reader has seen it yet; Flags must be empty), instead of cur/.
	New bool
	// NoDirSync leaves the fsync of new/ or cur/ to the caller, who makes
	// a batch durable with one SyncDir afterwards (the file itself is
	// still fsynced before it is linked into place).
	NoDirSync bool
}

// Saved is a message Save, Link or Move put in place.
type Saved struct {
	Name  string // base name in cur/, "<key>:2,<flags>" (in new/: the key)
	Key   string // the unique part, before ':'
	Size  int64  // bytes on disk
	VSize int64  // bytes with CRLF line ends (,W=)
}

// Save writes r durably into dir/cur/ (dir/new/ with o.New) under a new
// unique name carrying ,S=<size>,W=<size with CRLF> and ":2,<flags>":
// under tmp/, fsync, the modification time set, linked into place, the
// directory fsynced. A failure leaves nothing behind (an oversize message
// fails with ErrTooBig).
func Save(dir string, r io.Reader, o SaveOptions) (Saved, error) {
	if o.New && o.Flags != "" {
		return Saved{}, fmt.Errorf("maildir: save: flags %q for new/", o.Flags)
	}
	name := uniqueNameOn(o.Host)
	if !o.Time.IsZero() {
		name = renamedAt(name, o.Time)
	}
	tmp := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return Saved{}, fmt.Errorf("maildir: save: %w", err)
	}
	fail := func(err error) (Saved, error) {
		f.Close()
		os.Remove(tmp)
		return Saved{}, fmt.Errorf("maildir: save %s: %w", tmp, err)
	}
	cw := &countingWriter{w: f}
	if o.MaxSize > 0 {
		n, err := io.Copy(cw, io.LimitReader(r, o.MaxSize+1))
		if err == nil && n > o.MaxSize {
			err = ErrTooBig
		}
		if err != nil {
			return fail(err)
		}
	} else if _, err := io.Copy(cw, r); err != nil {
		return fail(err)
	}
	mtime := o.Mtime
	if mtime.IsZero() {
		mtime = time.Now()
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, tmp, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return Saved{}, fmt.Errorf("maildir: save %s: %w", tmp, err)
	}
	s := namedSaved(name, o.Flags, cw.n, cw.n+cw.bareLFs)
	sub := "cur"
	if o.New {
		sub, s.Name = "new", s.Key
	}
	final := filepath.Join(dir, sub, s.Name)
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, os.ErrExist) {
			os.Remove(tmp)
			return Saved{}, fmt.Errorf("maildir: save %s: %w", final, err)
		}
		if lerr := os.Rename(tmp, final); lerr != nil {
			os.Remove(tmp)
			return Saved{}, fmt.Errorf("maildir: save %s: %w", final, err)
		}
	} else {
		os.Remove(tmp)
	}
	if o.NoDirSync {
		return s, nil
	}
	if err := syncDir(filepath.Join(dir, sub)); err != nil {
		os.Remove(final)
		return Saved{}, fmt.Errorf("maildir: save: fsync %s/%s: %w", dir, sub, err)
	}
	return s, nil
}

// renamedAt gives a unique name (uniqueName's format) the delivery time t
// in place of its own.
func renamedAt(name string, t time.Time) string {
	_, rest, _ := strings.Cut(name, "P")
	return strconv.FormatInt(t.Unix(), 10) + ".M" + strconv.Itoa(t.Nanosecond()/1000) + "P" + rest
}

// Link puts the message file src into dir/cur/ under a new unique name with
// the given flags, as a hard link (the content is shared, as Dovecot's
// copies are). size and vsize are the message's sizes for the ,S= and ,W=
// fields. Where hard links are refused (another file system) the content
// is copied with Save. The caller makes a batch durable with one
// SyncDir(dir/cur) afterwards.
func Link(src, dir string, size, vsize int64, o SaveOptions) (Saved, error) {
	s := newSaved(o, size, vsize)
	final := filepath.Join(dir, "cur", s.Name)
	err := os.Link(src, final)
	if errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK) {
		return copyInto(src, dir, o)
	}
	if err != nil {
		return Saved{}, fmt.Errorf("maildir: link %s: %w", src, err)
	}
	return s, nil
}

// newSaved names a message under a new unique name.
func newSaved(o SaveOptions, size, vsize int64) Saved {
	return namedSaved(uniqueNameOn(o.Host), o.Flags, size, vsize)
}

// uniqueNameOn is uniqueName with another host part ("" keeps this host's),
// escaped as host() escapes it.
func uniqueNameOn(h string) string {
	n := uniqueName()
	if h == "" {
		return n
	}
	return strings.TrimSuffix(n, host()) + escapeHost(h)
}

func namedSaved(unique, flags string, size, vsize int64) Saved {
	s := Saved{Size: size, VSize: vsize}
	s.Key = unique + ",S=" + strconv.FormatInt(size, 10) + ",W=" + strconv.FormatInt(vsize, 10)
	s.Name = s.Key + ":2," + SortFlags(flags)
	return s
}

func copyInto(src, dir string, o SaveOptions) (Saved, error) {
	f, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return Saved{}, fmt.Errorf("maildir: copy %s: %w", src, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Saved{}, fmt.Errorf("maildir: copy %s: %w", src, err)
	}
	if !fi.Mode().IsRegular() {
		return Saved{}, fmt.Errorf("maildir: copy %s: not a regular file", src)
	}
	o.Mtime = fi.ModTime()
	return Save(dir, f, o)
}

// Move renames the message file src into dir/cur/ under a new unique name
// with the given flags: the message is in its new folder at the instant it
// leaves the old one. Across file systems it is copied durably, then src
// removed. The caller makes a batch durable with SyncDir of dir/cur and of
// the sources' directories afterwards.
func Move(src, dir string, size, vsize int64, o SaveOptions) (Saved, error) {
	s := newSaved(o, size, vsize)
	final := filepath.Join(dir, "cur", s.Name)
	err := os.Rename(src, final)
	if errors.Is(err, syscall.EXDEV) {
		s, err := copyInto(src, dir, o)
		if err != nil {
			return Saved{}, err
		}
		if err := os.Remove(src); err != nil {
			return s, fmt.Errorf("maildir: move %s: %w", src, err)
		}
		return s, nil
	}
	if err != nil {
		return Saved{}, fmt.Errorf("maildir: move %s: %w", src, err)
	}
	return s, nil
}

// NameSizes returns the ,S=<size> and ,W=<size with CRLF> fields of a
// message name (or key), -1 for each that is absent.
func NameSizes(name string) (size, vsize int64) {
	key, _, _ := strings.Cut(name, ":")
	return field(key, 'S'), field(key, 'W')
}

// CRLFSize returns the size of r's content with every LF not preceded by
// CR counted as CRLF: what Dovecot writes as ,W= and IMAP reports as
// RFC822.SIZE.
func CRLFSize(r io.Reader) (int64, error) {
	cw := &countingWriter{w: io.Discard}
	_, err := io.Copy(cw, r)
	return cw.n + cw.bareLFs, err
}

// DeliveryOrder compares two message keys by the delivery time in their
// names (seconds, then microseconds of the modern format), then by name:
// the order in which new messages get their UIDs.
func DeliveryOrder(a, b string) int {
	sa, ua := DeliveryStamp(a)
	sb, ub := DeliveryStamp(b)
	switch {
	case sa != sb:
		if sa < sb {
			return -1
		}
		return 1
	case ua != ub:
		if ua < ub {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// DeliveryStamp returns the delivery time in a message key: the leading
// seconds and the microseconds of the modern format (M<usec>), 0 when
// absent.
func DeliveryStamp(key string) (sec, usec int64) { return stamp(key) }

// SyncDir fsyncs a directory, so that the entries renamed or linked into it
// survive a crash.
func SyncDir(dir string) error { return syncDir(dir) }
