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
	// envMtime is the modification time of env/ before that scan read
	// it, recorded only when it was already 2 s old then (0 otherwise),
	// so that any later change to env/ has another time even on a file
	// system with coarse timestamps. next is the earliest due time of
	// all entries (0: none). While env/ keeps that time and next has not
	// come, nothing can be due, and a pass need not even read env/.
	envMtime int64
	next     int64
	count    int64 // entries, from the header (ents may be nil)
	ents     map[string]stamp
}

// envSlack is how old env/'s modification time must be before a scan to
// be recorded (see envMtime).
const envSlack = 2 * time.Second

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

// headerFields are the header lines after the magic, in order.
func headerFields(s *schedule) []struct {
	name string
	v    *int64
} {
	return []struct {
		name string
		v    *int64
	}{{"cleaned", &s.cleaned}, {"verified", &s.verified}, {"scanned", &s.scanned},
		{"env-mtime", &s.envMtime}, {"next", &s.next}, {"entries", &s.count}}
}

// parseHeader reads the header of an index, up to and including its
// "head" line (a CRC-32 of the header before it, so that a pass may trust
// the header without reading the entries), and returns the rest.
func parseHeader(text string) (schedule, string, error) {
	var s schedule
	rest := text
	line := func() (string, bool) {
		i := strings.IndexByte(rest, '\n')
		if i < 0 {
			return "", false
		}
		l := rest[:i]
		rest = rest[i+1:]
		return l, true
	}
	if l, _ := line(); l != scheduleMagic {
		return s, "", errors.New("queue: schedule index: not " + scheduleMagic)
	}
	for _, f := range headerFields(&s) {
		l, ok := line()
		k, v, _ := strings.Cut(l, " ")
		if !ok || k != f.name {
			return s, "", fmt.Errorf("queue: schedule index: want %s, got %q", f.name, l)
		}
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil || x < 0 {
			return s, "", fmt.Errorf("queue: schedule index: %s %q", f.name, v)
		}
		*f.v = x
	}
	head := text[:len(text)-len(rest)]
	l, ok := line()
	k, v, _ := strings.Cut(l, " ")
	if !ok || k != "head" {
		return s, "", fmt.Errorf("queue: schedule index: want head, got %q", l)
	}
	if sum, err := strconv.ParseUint(v, 16, 32); err != nil || uint32(sum) != crc32.ChecksumIEEE([]byte(head)) {
		return s, "", errors.New("queue: schedule index: header checksum mismatch")
	}
	return s, rest, nil
}

// parseSchedule reads the index format of formatSchedule. On an error it
// still returns the header fields it read (cleaned is worth keeping).
func parseSchedule(b []byte) (schedule, error) {
	end := bytes.LastIndex(b, []byte("\nend "))
	if end < 0 || b[len(b)-1] != '\n' {
		return schedule{}, errors.New("queue: schedule index: no end line (truncated?)")
	}
	sum, err := strconv.ParseUint(string(b[end+5:len(b)-1]), 16, 32)
	if err != nil {
		return schedule{}, fmt.Errorf("queue: schedule index: end line: %w", err)
	}
	if uint32(sum) != crc32.ChecksumIEEE(b[:end+1]) {
		return schedule{}, errors.New("queue: schedule index: checksum mismatch")
	}
	// One string for the whole index, which the ids are cut from: one
	// allocation instead of one per entry.
	s, body, err := parseHeader(string(b[:end+1]))
	if err != nil {
		return s, err
	}
	if s.count > int64(len(body)/10+1) {
		return s, fmt.Errorf("queue: schedule index: %d entries cannot fit", s.count)
	}
	ents := make(map[string]stamp, s.count)
	for len(body) > 0 {
		i := strings.IndexByte(body, '\n')
		l := body[:i]
		body = body[i+1:]
		id, rest, ok1 := strings.Cut(l, " ")
		ino, due, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 || !spool.ValidID(id) {
			return s, fmt.Errorf("queue: schedule index: bad entry %q", l)
		}
		i1, err1 := strconv.ParseUint(ino, 10, 64)
		d, err2 := strconv.ParseInt(due, 10, 64)
		if err1 != nil || err2 != nil || i1 == 0 || d <= 0 {
			return s, fmt.Errorf("queue: schedule index: bad entry %q", l)
		}
		ents[id] = stamp{ino: i1, due: d}
	}
	if int64(len(ents)) != s.count {
		return s, fmt.Errorf("queue: schedule index: %d entries, header says %d", len(ents), s.count)
	}
	s.ents = ents
	return s, nil
}

// formatSchedule is the index as text: a header, one "ID INODE DUE" line
// per envelope (DUE in Unix nanoseconds), and an end line with the CRC-32
// of everything before it (man/letterbox-spool.5).
func formatSchedule(s *schedule) []byte {
	s.count = int64(len(s.ents))
	b := make([]byte, 0, 256+len(s.ents)*48)
	b = append(b, scheduleMagic+"\n"...)
	for _, f := range headerFields(s) {
		b = append(b, f.name...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, *f.v, 10)
		b = append(b, '\n')
	}
	head := crc32.ChecksumIEEE(b)
	b = append(b, "head "...)
	b = strconv.AppendUint(b, uint64(head), 16)
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

// readScheduleHeader reads the header of the index at path.
func readScheduleHeader(path string) (schedule, bool) {
	f, err := os.Open(path)
	if err != nil {
		return schedule{}, false
	}
	defer f.Close()
	buf := make([]byte, 512)
	n, _ := io.ReadFull(f, buf)
	s, _, err := parseHeader(string(buf[:n]))
	return s, err == nil
}

// envMtime returns the modification time of env/ (0: unknown).
func (r *Runner) envMtime() int64 {
	var st syscall.Stat_t
	if syscall.Stat(filepath.Join(r.Spool.Dir, "env"), &st) != nil {
		return 0
	}
	return st.Mtim.Nano()
}
