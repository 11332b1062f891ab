package pop3

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"letterbox/pkg/mbox"

	"letterbox/pkg/maildir"
)

type mboxDrop struct {
	path string
	lock *mbox.Lock
	msgs []mbox.Message
	info []MessageInfo
	stop chan struct{}
	done chan struct{}
}

// touchEvery keeps the dotlock of a long session fresh: other lockers take
// a dotlock older than mbox.StaleAfter (5 minutes) for stale, and a POP3
// session may last as long as the idle timeout (10 minutes) and more.
var touchEvery = time.Minute

func (d *mboxDrop) keepFresh() {
	defer close(d.done)
	t := time.NewTicker(touchEvery)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.lock.Touch()
		}
	}
}

// OpenMbox locks the mbox at path (fcntl + dotlock, as deliver does) for the
// whole session and scans it. A lock still held by a live process after
// timeout means another session (or a long delivery): ErrInUse. A dead
// holder's dotlock is recovered by pkg/mbox.
//
// The mbox must be a regular file with one link, owned by owner (the
// mailbox owner's uid): not a symlink to another mbox (/var/mail/root), not
// a hard link to someone else's file.
func OpenMbox(path string, owner uint32, timeout time.Duration) (Maildrop, error) {
	// mbox.LockFile reaches the mbox from its directory without following a
	// symlink, and creates nothing through one (ErrUnsafe).
	lock, err := mbox.LockFile(path, timeout)
	if err != nil {
		switch {
		case errors.Is(err, mbox.ErrLocked):
			return nil, ErrInUse
		case errors.Is(err, mbox.ErrUnsafe):
			return nil, &PermError{fmt.Errorf("pop3: %w", err)}
		}
		return nil, fmt.Errorf("pop3: mbox %s: %w", path, err)
	}
	if err := checkMbox(path, lock.File(), owner); err != nil {
		lock.Unlock()
		return nil, err
	}
	d := &mboxDrop{path: path, lock: lock}
	msgs, err := mbox.Scan(lock.File())
	if err != nil {
		lock.Unlock()
		if errors.Is(err, mbox.ErrNotMbox) {
			return nil, &PermError{fmt.Errorf("pop3: %s: %w", path, err)}
		}
		return nil, fmt.Errorf("pop3: mbox %s: %w", path, err)
	}
	d.msgs = msgs
	d.info = make([]MessageInfo, len(msgs))
	seen := make(map[string]int, len(msgs))
	for i, m := range msgs {
		uid, err := mboxUID(mbox.Open(lock.File(), m))
		if err != nil {
			lock.Unlock()
			return nil, fmt.Errorf("pop3: mbox %s: %w", path, err)
		}
		// Two identical messages hash alike: the later ones get a suffix.
		if n := seen[uid]; n > 0 {
			seen[uid] = n + 1
			uid = uid + "-" + strconv.Itoa(n+1)
		} else {
			seen[uid] = 1
		}
		d.info[i] = MessageInfo{UID: uid, Size: m.Size + m.Lines}
	}
	// A file that doesn't end in a line feed leaves its last message's last
	// line unterminated: Lines doesn't count it, and RETR adds its CRLF.
	if n := len(msgs); n > 0 {
		var last [1]byte
		if fi, err := lock.File().Stat(); err == nil && fi.Size() > 0 {
			if _, err := lock.File().ReadAt(last[:], fi.Size()-1); err == nil && last[0] != '\n' {
				d.info[n-1].Size += 2
				if last[0] == '\r' {
					d.info[n-1].Size-- // a trailing CR becomes CRLF
				}
			}
		}
	}
	d.stop, d.done = make(chan struct{}), make(chan struct{})
	go d.keepFresh()
	return d, nil
}

// checkMbox checks the locked file f, opened at path: still what path
// names (no symlink swapped in), a regular file with one link, owned by
// owner.
func checkMbox(path string, f *os.File, owner uint32) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("pop3: mbox %s: %w", path, err)
	}
	li, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("pop3: mbox %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !li.Mode().IsRegular() || !fi.Mode().IsRegular():
		return &PermError{fmt.Errorf("pop3: mbox %s: %w", path, maildir.ErrNotRegular)}
	case !os.SameFile(fi, li):
		return fmt.Errorf("pop3: mbox %s: replaced while being locked", path)
	case !ok:
		return fmt.Errorf("pop3: mbox %s: no owner", path)
	case st.Nlink != 1:
		return &PermError{fmt.Errorf("pop3: mbox %s: %d links, want 1", path, st.Nlink)}
	case st.Uid != owner:
		return &PermError{fmt.Errorf("pop3: mbox %s: owned by uid %d, not by the mailbox owner (uid %d)", path, st.Uid, owner)}
	}
	return nil
}

// volatile are header fields that mail readers rewrite in place in an mbox
// (mutt's and pine's status, Dovecot's and c-client's bookkeeping); they
// are left out of the hash so the UIDL survives them.
var volatile = map[string]bool{
	"status": true, "x-status": true, "x-keywords": true, "x-uid": true,
	"x-imap": true, "x-imapbase": true, "content-length": true, "lines": true,
}

// mboxUID is an mbox message's UIDL: its X-UIDL header when present and
// valid (as written by fetchmail, qpopper, Dovecot), else the SHA-1 of its
// header without the volatile fields. Both are the same in every session as
// long as the message is not edited.
func mboxUID(r io.Reader) (string, error) {
	br := bufio.NewReaderSize(r, 4096)
	h := sha1.New()
	var field []byte // the current field, unfolded lines included
	var xuidl string
	flush := func() {
		if len(field) == 0 {
			return
		}
		name, value, _ := bytes.Cut(field, []byte(":"))
		lname := strings.ToLower(strings.TrimSpace(string(name)))
		if lname == "x-uidl" && xuidl == "" {
			xuidl = strings.TrimSpace(string(value))
		}
		if !volatile[lname] {
			h.Write(field)
		}
		field = field[:0]
	}
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// An absurdly long header line: hash it in pieces.
			field = append(field, line...)
			continue
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			break // end of header
		}
		if trimmed[0] == ' ' || trimmed[0] == '\t' {
			field = append(field, trimmed...)
		} else {
			flush()
			field = append(field, trimmed...)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	flush()
	if validUID(xuidl) {
		return xuidl, nil
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func validUID(s string) bool {
	if len(s) == 0 || len(s) > 70 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func (d *mboxDrop) Messages() []MessageInfo { return d.info }

func (d *mboxDrop) Open(i int) (io.ReadCloser, error) {
	return io.NopCloser(mbox.Open(d.lock.File(), d.msgs[i])), nil
}

// Commit rewrites the mbox without the deleted messages, atomically (a new
// file renamed over the old), so a crash leaves the old or the new mbox,
// never a damaged one. Seen flags are not recorded in mboxes.
func (d *mboxDrop) Commit(retrieved, deleted []int) error {
	if len(deleted) == 0 {
		return nil
	}
	del := make(map[int]bool, len(deleted))
	for _, i := range deleted {
		del[i] = true
	}
	keep := make([]mbox.Message, 0, len(d.msgs)-len(deleted))
	for i, m := range d.msgs {
		if !del[i] {
			keep = append(keep, m)
		}
	}
	if err := mbox.Rewrite(d.path, keep, d.lock); err != nil {
		return fmt.Errorf("pop3: %w", err)
	}
	return nil
}

func (d *mboxDrop) Close() error {
	if d.lock == nil {
		return nil
	}
	close(d.stop)
	<-d.done
	err := d.lock.Unlock()
	d.lock = nil
	if err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
