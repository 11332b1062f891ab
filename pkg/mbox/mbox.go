// Package mbox appends to and reads mbox files: mboxrd From_ quoting (as
// mutt, Dovecot and getmail), fcntl + dotlock locking (as Postfix local and
// procmail), and never a file left truncated or half-written on error.
//
// Format: each message is a From_ line "From <sender> <asctime date>", the
// message with LF line ends and every line matching ^>*From  given one more
// '>', and a blank line. A From_ line starts a message only at the start of
// the file or after a blank line.
//
// Whole files are also read as a stream (NewStream, stream.go: mailuser
// import): mboxo through github.com/emersion/go-mbox, the project's library
// for it; mboxrd here, beside it, because go-mbox unquotes only ">From "
// (mboxo) and drops the From_ line whose date an import keeps, and neither
// honours the Content-Length that mutt and Dovecot write instead of
// quoting.
//
// Safety: LockFile, Append and Rewrite open the mbox's directory once
// (following the path to it, which is the administrator's) and reach
// everything inside it from that descriptor, never through a symlink: the
// mbox (created O_EXCL 0600 when missing), the dotlock and its temporary
// file, a stale lock moved aside, Rewrite's temporary file. The mbox must be
// a regular file with one link owned by the process's effective uid, else
// ErrUnsafe: root is no exception and never writes a user's file (a
// delivery to a user's mbox runs as that user). A dotlock's record of an
// unfinished append cuts the mbox back only when it names the very file
// locked (see Lock).
//
// CONTRACT: exported names below are used by delivery and pop3; add to them,
// don't change them.
package mbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LockTimeout is how long Append waits for the mbox locks.
var LockTimeout = 30 * time.Second

// FromLine returns the From_ line (without its newline) for sender and date:
// "From sender asctime", MAILER-DAEMON for the null sender, white space in
// the address replaced so the line stays parsable.
func FromLine(sender string, date time.Time) string {
	if sender == "" {
		sender = "MAILER-DAEMON"
	}
	sender = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return '_'
		}
		return r
	}, sender)
	return "From " + sender + " " + date.Format(time.ANSIC)
}

// Append adds one message to path under lock: a From_ line with sender
// (MAILER-DAEMON when empty) and date, the message with mboxrd quoting and
// LF line ends, a blank line; fsynced; on any error the file is truncated back
// to its old length.
//
// The append's start is first recorded (durably) in the dotlock, so that if
// this process is killed or the machine crashes half-way, the next locker
// (LockFile: the next Append, pop3d) truncates the partial message away
// before anyone reads or appends.
func Append(path, sender string, date time.Time, r io.Reader) error {
	l, err := LockFile(path, LockTimeout)
	if err != nil {
		return err
	}
	f := l.f
	fi, err := f.Stat()
	if err != nil {
		l.Unlock()
		return fmt.Errorf("mbox: append %s: %w", path, err)
	}
	old := fi.Size()
	fail := func(err error) error {
		if terr := f.Truncate(old); terr == nil {
			f.Sync()
		}
		l.Unlock()
		return fmt.Errorf("mbox: append %s: %w", path, err)
	}
	// The From_ line must follow a blank line; another writer may have left
	// the file without one.
	sep, err := separatorNeeded(f, old)
	if err != nil {
		return fail(err)
	}
	if err := l.markAppend(old); err != nil {
		return fail(err)
	}
	if _, err := f.Seek(old, io.SeekStart); err != nil {
		return fail(err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	bw.WriteString(sep)
	if err := WriteMessage(bw, sender, date, r); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	return l.unlockCommitted()
}

// separatorNeeded returns what must precede a From_ line appended at size.
func separatorNeeded(f io.ReaderAt, size int64) (string, error) {
	if size == 0 {
		return "", nil
	}
	n := int64(2)
	if size < n {
		n = size
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, size-n); err != nil {
		return "", err
	}
	switch {
	case bytes.HasSuffix(b, []byte("\n\n")) || (size == 1 && b[0] == '\n'):
		return "", nil
	case b[len(b)-1] == '\n':
		return "\n", nil
	}
	return "\n\n", nil
}

// xform is the mboxrd transformation, streamed: CRLF becomes LF, and a line
// matching ^>*From  gets delta (+1 quoting, -1 unquoting) '>' characters.
// The run of '>' is counted, not buffered, so lines of any length stream.
type xform struct {
	w     io.Writer // nil: count only
	delta int
	n     int64 // bytes out
	lines int64 // line feeds out
	err   error

	inHead    bool  // still within a possible ^>*From  prefix
	gt        int64 // '>' seen in the prefix
	match     int   // bytes of "From " matched after the run
	pendingCR int64 // CRs held back: dropped when a LF follows (CRLF → LF)
	crEOL     bool  // at the end, held-back CRs are a line end (the writer)
	started   bool
	endsNL    bool // the last byte out was '\n' (or nothing out yet)
}

const fromPrefix = "From "

func (x *xform) emit(b []byte) {
	if len(b) == 0 {
		return
	}
	x.n += int64(len(b))
	x.lines += int64(bytes.Count(b, []byte{'\n'}))
	x.endsNL = b[len(b)-1] == '\n'
	if x.w != nil && x.err == nil {
		_, x.err = x.w.Write(b)
	}
}

var (
	gts = bytes.Repeat([]byte{'>'}, 256)
	crs = bytes.Repeat([]byte{'\r'}, 256)
)

func (x *xform) emitGT(n int64) { x.emitRun('>', n) }

// emitRun writes n times c ('>' or '\r').
func (x *xform) emitRun(c byte, n int64) {
	run := gts
	if c == '\r' {
		run = crs
	}
	for n > 0 {
		k := n
		if k > int64(len(run)) {
			k = int64(len(run))
		}
		x.emit(run[:k])
		n -= k
	}
}

func (x *xform) Write(p []byte) (int, error) {
	if !x.started {
		x.started, x.inHead, x.endsNL = true, true, true
	}
	total := len(p)
	for len(p) > 0 {
		if x.inHead {
			c := p[0]
			if x.match == 0 && c == '>' {
				x.gt++
				p = p[1:]
				continue
			}
			if c == fromPrefix[x.match] {
				x.match++
				p = p[1:]
				if x.match == len(fromPrefix) {
					q := x.gt + int64(x.delta)
					if q < 0 {
						q = 0
					}
					x.emitGT(q)
					x.emit([]byte(fromPrefix))
					x.inHead = false
				}
				continue
			}
			x.emitGT(x.gt)
			x.emit([]byte(fromPrefix[:x.match]))
			x.inHead = false
		}
		if x.pendingCR > 0 {
			// A run of CRs before a LF is one line end: dropping the
			// whole run keeps what we write a fixed point of what we read.
			switch p[0] {
			case '\r':
				x.pendingCR++
				p = p[1:]
				continue
			case '\n':
				x.pendingCR = 0
			default:
				x.emitRun('\r', x.pendingCR)
				x.pendingCR = 0
			}
		}
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			x.emit(p)
			p = nil
			break
		}
		x.emit(p[:i])
		if p[i] == '\r' {
			x.pendingCR = 1
			p = p[i+1:]
			continue
		}
		x.emit(p[i : i+1])
		p = p[i+1:]
		x.inHead, x.gt, x.match = true, 0, 0
	}
	if x.err != nil {
		return total, x.err
	}
	return total, nil
}

// flush ends the input: a pending prefix is written as it was, pending
// CRs too (or as a line end, for the writer).
func (x *xform) flush() {
	if x.inHead {
		x.emitGT(x.gt)
		x.emit([]byte(fromPrefix[:x.match]))
		x.inHead, x.gt, x.match = false, 0, 0
	}
	if x.pendingCR > 0 {
		if x.crEOL {
			x.emit([]byte{'\n'})
		} else {
			x.emitRun('\r', x.pendingCR)
		}
		x.pendingCR = 0
	}
}

// Message is one message of an mbox file.
type Message struct {
	Offset, Length int64  // of the whole raw record incl. From_ line and the blank line after it
	From           string // the From_ line, without its line end
	// Size is the length of what Open yields (unquoted, LF line ends) and
	// Lines the number of line feeds in it: Size+Lines is the size with CRLF
	// line ends, as POP3 and IMAP count.
	Size, Lines int64
}

// ErrNotMbox is returned by Scan for a non-empty file that doesn't start
// with a From_ line.
var ErrNotMbox = errors.New("mbox: not an mbox file (no From_ line at the start)")

// Scan returns the messages of the mbox f, in file order.
func Scan(f io.ReaderAt) ([]Message, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 64<<10)
	var (
		out       []Message
		cur       *Message
		x         *xform
		off       int64
		lineStart = true
		prevBlank = false
		pending   []byte // a blank line held back: the separator, if a From_ line follows
		fromBuf   []byte
		inFrom    bool
	)
	finish := func(end int64) {
		if cur == nil {
			return
		}
		x.flush()
		cur.Length = end - cur.Offset
		cur.Size, cur.Lines = x.n, x.lines
		out = append(out, *cur)
	}
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			full := chunk[len(chunk)-1] == '\n'
			if lineStart {
				isFrom := bytes.HasPrefix(chunk, []byte(fromPrefix)) && (off == 0 || prevBlank)
				blank := full && (len(chunk) == 1 || (len(chunk) == 2 && chunk[0] == '\r'))
				if isFrom {
					finish(off)
					pending = nil
					cur = &Message{Offset: off}
					x = &xform{delta: -1}
					inFrom = true
					fromBuf = fromBuf[:0]
				} else if cur == nil {
					return nil, ErrNotMbox
				} else if pending != nil {
					x.Write(pending)
					pending = nil
				}
				if blank && !inFrom {
					pending = append([]byte(nil), chunk...)
				} else if !inFrom {
					x.Write(chunk)
				}
				prevBlank = blank
			} else if !inFrom {
				x.Write(chunk)
			}
			if inFrom {
				if len(fromBuf) < 1024 {
					fromBuf = append(fromBuf, chunk...)
				}
				if full {
					inFrom = false
					cur.From = strings.TrimRight(string(fromBuf), "\r\n")
				}
			}
			if !full {
				prevBlank = false
			}
			off += int64(len(chunk))
			lineStart = full
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("mbox: scan: %w", err)
		}
	}
	if inFrom && cur != nil {
		cur.From = strings.TrimRight(string(fromBuf), "\r\n")
	}
	finish(off)
	return out, nil
}

// Open returns a reader of message m of the mbox f: the message without
// its From_ line and separator, with mboxrd unquoting (one '>' removed from
// lines matching ^>+From ) and LF line ends.
func Open(f io.ReaderAt, m Message) io.Reader {
	return &msgReader{f: f, m: m}
}

type msgReader struct {
	f     io.ReaderAt
	m     Message
	init  bool
	src   io.Reader
	out   bytes.Buffer
	x     *xform
	buf   []byte
	done  bool
	error error
}

func (r *msgReader) setup() error {
	r.init = true
	sec := io.NewSectionReader(r.f, r.m.Offset, r.m.Length)
	// Skip the From_ line.
	br := bufio.NewReaderSize(sec, 4096)
	var skip int64
	for {
		chunk, err := br.ReadSlice('\n')
		skip += int64(len(chunk))
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		break
	}
	start, end := r.m.Offset+skip, r.m.Offset+r.m.Length
	// Drop the separator: a last line that is blank.
	if n := end - start; n > 0 {
		k := n
		if k > 3 {
			k = 3
		}
		tail := make([]byte, k)
		if _, err := r.f.ReadAt(tail, end-k); err != nil && err != io.EOF {
			return err
		}
		switch {
		case tail[k-1] == '\n' && (n == 1 || tail[k-2] == '\n'):
			end--
		case k >= 2 && tail[k-2] == '\r' && tail[k-1] == '\n' && (n == 2 || tail[k-3] == '\n'):
			end -= 2
		}
	}
	r.src = io.NewSectionReader(r.f, start, end-start)
	r.x = &xform{w: &r.out, delta: -1}
	r.buf = make([]byte, 32<<10)
	return nil
}

func (r *msgReader) Read(p []byte) (int, error) {
	if !r.init {
		if err := r.setup(); err != nil {
			r.error = fmt.Errorf("mbox: read: %w", err)
		}
	}
	for r.out.Len() == 0 {
		if r.error != nil {
			return 0, r.error
		}
		if r.done {
			return 0, io.EOF
		}
		n, err := r.src.Read(r.buf)
		if n > 0 {
			r.x.Write(r.buf[:n])
		}
		if err == io.EOF {
			r.x.flush()
			r.done = true
		} else if err != nil {
			r.error = fmt.Errorf("mbox: read: %w", err)
		}
	}
	return r.out.Read(p)
}

// Rewrite replaces the mbox at path with one holding only the messages keep
// (from a Scan of the current file, under lock), atomically: a temporary
// file in the same directory, fsynced, renamed over path, the directory
// fsynced; mode and (when permitted) owner are preserved. lock is the held
// lock on path (nil: Rewrite takes and releases one); it stays held, now on
// the new file. The temporary file is created, and renamed, from the
// lock's directory descriptor, never through a symlink.
func Rewrite(path string, keep []Message, lock *Lock) (err error) {
	if lock == nil {
		l, err := LockFile(path, LockTimeout)
		if err != nil {
			return err
		}
		defer l.Unlock()
		lock = l
	}
	if lock.f == nil || lock.dir == nil {
		return fmt.Errorf("mbox: rewrite %s: lock not held", path)
	}
	src := lock.f
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("mbox: rewrite %s: %w", path, err)
	}
	dirfd := lock.dirFd()
	var tmpName string
	var fd int
	for i := 0; ; i++ {
		tmpName = fmt.Sprintf(".%s.rewrite-%d-%d", lock.name, os.Getpid(), time.Now().UnixNano())
		fd, err = unix.Openat(dirfd, tmpName, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil || !errors.Is(err, unix.EEXIST) || i == 100 {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("mbox: rewrite %s: %w", path, &os.PathError{Op: "open", Path: tmpName, Err: err})
	}
	tmp := os.NewFile(uintptr(fd), filepath.Join(filepath.Dir(path), tmpName))
	renamed := false
	defer func() {
		if err != nil && !renamed {
			tmp.Close()
			unix.Unlinkat(dirfd, tmpName, 0)
		}
	}()
	// Lock the new file before it appears, so the lock passes to it without
	// a gap.
	flk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart}
	if err := syscall.FcntlFlock(tmp.Fd(), syscall.F_SETLK, &flk); err != nil {
		return fmt.Errorf("mbox: rewrite %s: lock: %w", path, err)
	}
	bw := bufio.NewWriterSize(tmp, 64<<10)
	for _, m := range keep {
		if m.Offset < 0 || m.Length <= 0 || m.Offset+m.Length > fi.Size() {
			return fmt.Errorf("mbox: rewrite %s: message at %d+%d is outside the file", path, m.Offset, m.Length)
		}
		if _, err := io.Copy(bw, io.NewSectionReader(src, m.Offset, m.Length)); err != nil {
			return fmt.Errorf("mbox: rewrite %s: %w", path, err)
		}
		// The last record of a file may lack its blank line; the next one
		// needs it to start a message.
		sep, err := separatorNeeded(src, m.Offset+m.Length)
		if err != nil {
			return fmt.Errorf("mbox: rewrite %s: %w", path, err)
		}
		bw.WriteString(sep)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("mbox: rewrite %s: %w", path, err)
	}
	if err := tmp.Chmod(fi.Mode().Perm()); err != nil {
		return fmt.Errorf("mbox: rewrite %s: %w", path, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		// The locked file is ours (LockFile checked its owner); its group
		// is kept when permitted.
		tmp.Chown(int(st.Uid), int(st.Gid))
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("mbox: rewrite %s: %w", path, err)
	}
	if err := unix.Renameat(dirfd, tmpName, dirfd, lock.name); err != nil {
		return fmt.Errorf("mbox: rewrite %s: %w", path, &os.LinkError{Op: "rename", Old: tmpName, New: lock.name, Err: err})
	}
	renamed = true
	lock.f = tmp
	src.Close()
	if err := syncDir(lock.dir); err != nil {
		return fmt.Errorf("mbox: rewrite %s: %w", path, err)
	}
	return nil
}
