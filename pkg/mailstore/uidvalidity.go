package mailstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// New UIDVALIDITY values come from Dovecot's generator at the Maildir
// root, so that a folder deleted and created again (by either program)
// never gets the value it had: the empty file "dovecot-uidvalidity.<hex>"
// holds the last value given, and is renamed to the next one (the rename
// succeeds for one process only); "dovecot-uidvalidity" holds the same
// value as 8 hex digits, a hint of which name to rename. The next value is
// the larger of now (Unix time) and the last + 1.
const uidValidityName = "dovecot-uidvalidity"

func (a *account) nextUIDValidity() uint32 {
	// Folders created side by side (EnsureSpecialUse) would otherwise
	// race for the same reservation and retry.
	a.uvMu.Lock()
	defer a.uvMu.Unlock()
	now := uint32(time.Now().Unix())
	for try := 0; try < 10; try++ {
		cur, ok := a.currentUIDValidity()
		next := now
		if ok && cur >= next {
			next = cur + 1
		}
		nextPath := filepath.Join(a.root, fmt.Sprintf("%s.%08x", uidValidityName, next))
		if !ok {
			f, err := os.OpenFile(nextPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o444)
			if err != nil {
				continue
			}
			f.Close()
		} else if err := os.Rename(filepath.Join(a.root, fmt.Sprintf("%s.%08x", uidValidityName, cur)), nextPath); err != nil {
			continue
		}
		a.writeUIDValidityHint(next)
		return next
	}
	a.log.Warn("dovecot-uidvalidity: no reservation, using the time")
	return now
}

// currentUIDValidity finds the reservation file: the hint's name first,
// else by reading the root.
func (a *account) currentUIDValidity() (uint32, bool) {
	if b, err := readSmall(filepath.Join(a.root, uidValidityName)); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 32); err == nil {
			if _, err := os.Lstat(filepath.Join(a.root, fmt.Sprintf("%s.%08x", uidValidityName, v))); err == nil {
				return uint32(v), true
			}
		}
	}
	d, err := os.Open(a.root)
	if err != nil {
		return 0, false
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, false
	}
	var best uint32
	found := false
	for _, n := range names {
		hex, ok := strings.CutPrefix(n, uidValidityName+".")
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(hex, 16, 32); err == nil && (!found || uint32(v) > best) {
			best, found = uint32(v), true
		}
	}
	return best, found
}

func (a *account) writeUIDValidityHint(v uint32) {
	f, err := os.OpenFile(filepath.Join(a.root, uidValidityName), os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteAt([]byte(fmt.Sprintf("%08x", v)), 0)
	f.Truncate(8)
}
