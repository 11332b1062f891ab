package queue

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"letterbox/pkg/spool"
)

// The schedule index (<spool>/schedule) lets a pass over a large queue
// learn every message's due time without a stat per envelope. It holds
// (id, inode, due) for every envelope a scan saw. Envelopes are replaced
// by rename, never changed in place, so an envelope whose due time
// changed has a new inode: a pass reads env/ with getdents (inodes come
// free with the names), takes the due time from the index for every
// (id, inode) it knows and stats only the others (spool.ScanKnown).
//
// It is a cache, never the truth. Missing, unparsable, of another version,
// truncated (the entry count and checksum at the end don't match), or older
// than ScanEvery since its last full scan: the pass stats every envelope
// and writes a fresh one. Inode numbers are reused by file systems, but
// the key is (id, inode) and ids are never reused (spool.NewID: time and
// random bits), so only the same message coming back to an inode it had
// before, between two scans, with another due time, could fool it; the
// periodic full scan bounds that rare case.
//
// Writers: every pass that saw a change writes it, as a temporary file
// renamed into place (a pass killed while writing leaves the old index
// whole), under an flock of <spool>/schedule.lock, and only when no index
// from a later scan is already in place (a slow pass must not put back
// what it saw before a faster one).
type schedule struct {
	cleaned  int64 // ns, runner clock: when crash leftovers were last removed
	verified int64 // ns, wall clock: the last scan that stat'ed every envelope
	scanned  int64 // ns, wall clock: when the scan recorded here began
	ents     map[string]stamp
}

type stamp struct {
	ino uint64
	due int64 // ns
}

const scheduleMagic = "letterbox-schedule 2"

// DefaultScanEvery is how long an index is trusted before a full scan.
const DefaultScanEvery = time.Hour

func (r *Runner) schedulePath() string { return filepath.Join(r.Spool.Dir, "schedule") }

// fileKey identifies one version of the index file, so that the daemon can
// keep the index it wrote in memory instead of reading it back each pass.
type fileKey struct {
	ino, size uint64
	mtime     int64
}

func statKey(path string) (fileKey, bool) {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return fileKey{}, false
	}
	return fileKey{uint64(st.Ino), uint64(st.Size), st.Mtim.Nano()}, true
}

// readSchedule returns the index, or one with nil ents when there is none
// to trust (the pass then stats everything).
func (r *Runner) readSchedule() schedule {
	r.schedMu.Lock()
	defer r.schedMu.Unlock()
	key, ok := statKey(r.schedulePath())
	if !ok {
		return schedule{}
	}
	if r.sched != nil && key == r.schedKey {
		return *r.sched
	}
	b, err := os.ReadFile(r.schedulePath())
	if err != nil {
		return schedule{}
	}
	s, err := parseSchedule(b)
	if err != nil {
		r.log().Warn("schedule index ignored, scanning every envelope", "err", err)
		return schedule{cleaned: s.cleaned}
	}
	r.sched, r.schedKey = &s, key
	return s
}

// parseSchedule reads the index format of formatSchedule. On an error it
// still returns the header fields it read (cleaned is worth keeping).
func parseSchedule(b []byte) (schedule, error) {
	var s schedule
	end := bytes.LastIndex(b, []byte("\nend "))
	if end < 0 || b[len(b)-1] != '\n' {
		return s, errors.New("queue: schedule index: no end line (truncated?)")
	}
	sum, err := strconv.ParseUint(string(b[end+5:len(b)-1]), 16, 32)
	if err != nil {
		return s, fmt.Errorf("queue: schedule index: end line: %w", err)
	}
	if uint32(sum) != crc32.ChecksumIEEE(b[:end+1]) {
		return s, errors.New("queue: schedule index: checksum mismatch")
	}
	// One string for the whole index, which the ids are cut from: one
	// allocation instead of one per entry.
	body := string(b[:end+1])
	line := func() string {
		i := strings.IndexByte(body, '\n')
		l := body[:i]
		body = body[i+1:]
		return l
	}
	if line() != scheduleMagic {
		return s, errors.New("queue: schedule index: not " + scheduleMagic)
	}
	var n int64
	for _, f := range []struct {
		name string
		v    *int64
	}{{"cleaned", &s.cleaned}, {"verified", &s.verified}, {"scanned", &s.scanned}, {"entries", &n}} {
		if len(body) == 0 {
			return s, fmt.Errorf("queue: schedule index: %s missing", f.name)
		}
		k, v, _ := strings.Cut(line(), " ")
		if k != f.name {
			return s, fmt.Errorf("queue: schedule index: want %s, got %q", f.name, k)
		}
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil || x < 0 {
			return s, fmt.Errorf("queue: schedule index: %s %q", f.name, v)
		}
		*f.v = x
	}
	if n > int64(len(body)/10+1) {
		return s, fmt.Errorf("queue: schedule index: %d entries cannot fit", n)
	}
	ents := make(map[string]stamp, n)
	for len(body) > 0 {
		l := line()
		id, rest, ok1 := strings.Cut(l, " ")
		ino, due, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 || !spool.ValidID(id) {
			return s, fmt.Errorf("queue: schedule index: bad entry %q", l)
		}
		i, err1 := strconv.ParseUint(ino, 10, 64)
		d, err2 := strconv.ParseInt(due, 10, 64)
		if err1 != nil || err2 != nil || i == 0 || d <= 0 {
			return s, fmt.Errorf("queue: schedule index: bad entry %q", l)
		}
		ents[id] = stamp{ino: i, due: d}
	}
	if int64(len(ents)) != n {
		return s, fmt.Errorf("queue: schedule index: %d entries, header says %d", len(ents), n)
	}
	s.ents = ents
	return s, nil
}

// formatSchedule is the index as text: a header, one "ID INODE DUE" line
// per envelope (DUE in Unix nanoseconds), and an end line with the CRC-32
// of everything before it (man/letterbox-spool.5).
func formatSchedule(s *schedule) []byte {
	b := make([]byte, 0, 128+len(s.ents)*48)
	b = append(b, scheduleMagic+"\ncleaned "...)
	b = strconv.AppendInt(b, s.cleaned, 10)
	b = append(b, "\nverified "...)
	b = strconv.AppendInt(b, s.verified, 10)
	b = append(b, "\nscanned "...)
	b = strconv.AppendInt(b, s.scanned, 10)
	b = append(b, "\nentries "...)
	b = strconv.AppendInt(b, int64(len(s.ents)), 10)
	b = append(b, '\n')
	for id, e := range s.ents {
		b = append(b, id...)
		b = append(b, ' ')
		b = strconv.AppendUint(b, e.ino, 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, e.due, 10)
		b = append(b, '\n')
	}
	sum := crc32.ChecksumIEEE(b)
	b = append(b, "end "...)
	b = strconv.AppendUint(b, uint64(sum), 16)
	return append(b, '\n')
}

// writeSchedule puts s in place unless an index from a later scan is
// already there. Failing to write is no error for the pass: the next one
// scans more.
func (r *Runner) writeSchedule(s schedule) {
	r.schedMu.Lock()
	defer r.schedMu.Unlock()
	lf, err := os.OpenFile(filepath.Join(r.Spool.Dir, "schedule.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		r.log().Warn("schedule index not written", "err", err)
		return
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		r.log().Warn("schedule index not written", "err", err)
		return
	}
	// An index from the future is not a later scan but a clock that
	// stepped back: keeping it would keep every pass from writing.
	if cur, ok := readScheduleHeader(r.schedulePath()); ok && cur.scanned > s.scanned && cur.scanned < time.Now().Add(time.Minute).UnixNano() {
		r.log().Debug("schedule index from a later scan kept")
		return
	}
	tmp := filepath.Join(r.Spool.Dir, "tmp", "schedule."+strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(tmp, formatSchedule(&s), 0o600); err != nil {
		os.Remove(tmp)
		r.log().Warn("schedule index not written", "err", err)
		return
	}
	if err := os.Rename(tmp, r.schedulePath()); err != nil {
		os.Remove(tmp)
		r.log().Warn("schedule index not written", "err", err)
		return
	}
	if key, ok := statKey(r.schedulePath()); ok {
		r.sched, r.schedKey = &s, key
	}
}

// readScheduleHeader reads the header fields of the index at path.
func readScheduleHeader(path string) (schedule, bool) {
	f, err := os.Open(path)
	if err != nil {
		return schedule{}, false
	}
	defer f.Close()
	buf := make([]byte, 256)
	n, _ := io.ReadFull(f, buf)
	buf = buf[:n]
	var s schedule
	lines := bytes.SplitN(buf, []byte{'\n'}, 5)
	if len(lines) < 5 || string(lines[0]) != scheduleMagic {
		return s, false
	}
	for i, v := range []*int64{&s.cleaned, &s.verified, &s.scanned} {
		_, val, _ := bytes.Cut(lines[i+1], []byte{' '})
		x, err := strconv.ParseInt(string(val), 10, 64)
		if err != nil {
			return s, false
		}
		*v = x
	}
	return s, true
}
