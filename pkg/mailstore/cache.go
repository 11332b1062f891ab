package mailstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The cache (letterbox-imap.cache in each folder's directory) holds what
// the Maildir and the uidlist don't: each message's MODSEQ, its size with
// CRLF line ends, its internal date and the last flags seen in its name;
// the folder's HIGHESTMODSEQ, the expunge log QRESYNC's VANISHED reads,
// which UIDs are still \Recent; and the directory and file versions the
// state was taken from, so that a SELECT that finds them unchanged reads
// neither cur/ nor the uidlist. It is shared by every letterbox process on
// the folder (changed under letterbox-imap.lock, replaced by rename).
//
// It is a cache, never the truth about which messages exist and their
// UIDs (the Maildir and dovecot-uidlist are). Missing, of another version,
// truncated or damaged (a CRC-32 does not match), or for another
// UIDVALIDITY, it is rebuilt from the Maildir; the MODSEQs of a rebuilt
// folder then start above any given before (they count from the time in
// microseconds), and VANISHED from before is inexact.
//
// A text header, then fixed-size binary records (little-endian), then the
// file names. A SELECT reads the header and the records only (40 octets a
// message: 400 KB for 10,000 messages, against 900 KB with the names);
// the names are read when first needed (a body fetched, a flag changed,
// the Maildir re-read), from the same file version, under their own CRC.
//
//	letterbox-imap-cache 3
//	uidvalidity V
//	uidnext N
//	highestmodseq H
//	vanished-from M          (VANISHED is exact for MODSEQs >= M)
//	recent-from R            (the first UID no session has taken as \Recent)
//	new MTIME                (new/'s and cur/'s mtimes in ns when scanned, 0: rescan)
//	cur MTIME
//	uidlist INO SIZE MTIME   (the uidlist and keywords files merged)
//	keywords INO SIZE MTIME
//	counts MESSAGES UNSEEN DELETED SIZE RECENT
//	k INDEX NAME             (each keyword of dovecot-keywords, as merged)
//	messages N
//	expunged N
//	names OCTETS CRC         (the names section's length and CRC-32)
//	head CRC                 (of the lines above, so STATUS may read only them)
//	N message records, 40 octets each:
//	  uid u32, bits u32 (1: the file is in new/), modseq u64, vsize u64,
//	  date i64 (Unix seconds; -1: not read yet, see dateUnknown),
//	  letters u64 (the name's flag letters: bit c-'A' for A-Z, 26+c-'a'
//	  for a-z)
//	expunge records, 16 octets each: first UID u32, last UID u32, modseq u64
//	CRC-32 of everything above, u32
//	names section: each message's file name and "\n", in record order
const (
	cacheName  = "letterbox-imap.cache"
	cacheMagic = "letterbox-imap-cache 3"
	msgRecSize = 40
	expRecSize = 16
)

// fileKey identifies one version of a file (or a directory's contents).
type fileKey struct {
	ino, size uint64
	mtime     int64
}

func statKey(path string) (fileKey, bool) {
	var st syscall.Stat_t
	if syscall.Lstat(path, &st) != nil {
		return fileKey{}, false
	}
	return keyOf(&st), true
}

// keyOf is the version a stat reports. A writer takes it from its own
// descriptor before the rename that publishes the file: once published,
// another process may change it, and the version must stay that of what
// the writer holds in memory.
func keyOf(st *syscall.Stat_t) fileKey {
	return fileKey{uint64(st.Ino), uint64(st.Size), st.Mtim.Nano()}
}

type expRange struct {
	lo, hi uint32
	modseq uint64
}

// cacheState is what the cache file holds.
type cacheState struct {
	uidValidity  uint32
	uidNext      uint32
	highest      uint64
	vanishedFrom uint64
	recentFrom   uint32
	newMtime     int64
	curMtime     int64
	uidlistKey   fileKey
	kwKey        fileKey
	counts       counts
	kw           keywords
	msgs         []msg
	expunged     []expRange
	// The names section of the file the state was read from, when its
	// names are not read yet (namesLen > 0: msgs have no names).
	names nameSection
}

// nameSection locates a cache file's names: where, how long, their CRC.
type nameSection struct {
	off, len int64
	crc      uint32
}

type counts struct {
	messages, unseen, deleted uint32
	size                      int64
	recent                    uint32 // messages at or above recentFrom
}

type msg struct {
	uid    uint32
	inNew  bool // (beside uid: a large folder holds one msg per message)
	modseq uint64
	size   int64 // RFC822.SIZE
	date   int64 // Unix seconds, or dateUnknown
	// mask is the set of the name's flag letters (letterMask), known
	// while the name is not read yet.
	mask uint64
	name string
}

// dateUnknown is the date of a message whose file was not stat'ed yet.
// The internal date is the file's mtime; a first SELECT of a folder full
// of new mail reads the sizes from the names (,W=) and leaves the dates
// to be read when a command asks for them (View.InternalDates), as
// Dovecot does: 10,000 fstatat calls were a fifth of a first open's CPU.
// (Format 3 of the cache; format 2 had every date.)
const dateUnknown = -1

func (m *msg) key() string { return baseKey(m.name) }

// letters returns the flag letters of the name (after ":2,"); the name
// must be read (folder.needNames).
func (m *msg) letters() string { return nameLetters(m.name) }

// has reports whether the message carries flag letter c.
func (m *msg) has(c byte) bool { return m.mask&letterBit(c) != 0 }

// setName gives the message a (new) file name.
func (m *msg) setName(name string) {
	m.name, m.mask = name, letterMask(nameLetters(name))
}

func nameLetters(name string) string {
	i := strings.IndexByte(name, ':')
	if i < 0 || !strings.HasPrefix(name[i+1:], "2,") {
		return ""
	}
	return name[i+3:]
}

// letterBit is the bit of letter c in a letter mask (0: not a letter).
func letterBit(c byte) uint64 {
	switch {
	case c >= 'A' && c <= 'Z':
		return 1 << (c - 'A')
	case c >= 'a' && c <= 'z':
		return 1 << (26 + c - 'a')
	}
	return 0
}

// letterMask is the set of letters in flag letters (others are no flag
// and are left out).
func letterMask(letters string) uint64 {
	var m uint64
	for i := 0; i < len(letters); i++ {
		m |= letterBit(letters[i])
	}
	return m
}

// maskLetters spells a letter mask out, in ASCII order.
func maskLetters(m uint64) string {
	var b []byte
	for i := 0; i < 52; i++ {
		if m&(1<<i) == 0 {
			continue
		}
		if i < 26 {
			b = append(b, byte('A'+i))
		} else {
			b = append(b, byte('a'+i-26))
		}
	}
	return string(b)
}

const allLetters = 1<<52 - 1

func hasLetter(letters string, c byte) bool { return strings.IndexByte(letters, c) >= 0 }

func countsOf(msgs []msg, recentFrom uint32) counts {
	var c counts
	c.messages = uint32(len(msgs))
	for i := range msgs {
		if msgs[i].uid >= recentFrom {
			c.recent++
		}
		if !msgs[i].has('S') {
			c.unseen++
		}
		if msgs[i].has('T') {
			c.deleted++
		}
		c.size += msgs[i].size
	}
	return c
}

// formatCache writes the state as a cache file; every name must be read.
func formatCache(s *cacheState) []byte {
	nameLen := 0
	for i := range s.msgs {
		nameLen += len(s.msgs[i].name) + 1
	}
	names := make([]byte, 0, nameLen)
	for i := range s.msgs {
		names = append(names, s.msgs[i].name...)
		names = append(names, '\n')
	}
	b := make([]byte, 0, 512+len(s.msgs)*msgRecSize+len(s.expunged)*expRecSize+4+len(names))
	b = append(b, cacheMagic+"\n"...)
	num := func(name string, vs ...int64) {
		b = append(b, name...)
		for _, v := range vs {
			b = append(b, ' ')
			b = strconv.AppendInt(b, v, 10)
		}
		b = append(b, '\n')
	}
	num("uidvalidity", int64(s.uidValidity))
	num("uidnext", int64(s.uidNext))
	num("highestmodseq", int64(s.highest))
	num("vanished-from", int64(s.vanishedFrom))
	num("recent-from", int64(s.recentFrom))
	num("new", s.newMtime)
	num("cur", s.curMtime)
	num("uidlist", int64(s.uidlistKey.ino), int64(s.uidlistKey.size), s.uidlistKey.mtime)
	num("keywords", int64(s.kwKey.ino), int64(s.kwKey.size), s.kwKey.mtime)
	c := countsOf(s.msgs, s.recentFrom)
	num("counts", int64(c.messages), int64(c.unseen), int64(c.deleted), c.size, int64(c.recent))
	for i, k := range s.kw {
		if k != "" {
			b = append(b, "k "...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, ' ')
			b = append(b, k...)
			b = append(b, '\n')
		}
	}
	num("messages", int64(len(s.msgs)))
	num("expunged", int64(len(s.expunged)))
	b = append(b, "names "...)
	b = strconv.AppendInt(b, int64(len(names)), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(crc32.ChecksumIEEE(names)), 16)
	b = append(b, '\n')
	head := crc32.ChecksumIEEE(b)
	b = append(b, "head "...)
	b = strconv.AppendUint(b, uint64(head), 16)
	b = append(b, '\n')
	le := binary.LittleEndian
	for i := range s.msgs {
		m := &s.msgs[i]
		var bits uint32
		if m.inNew {
			bits = 1
		}
		b = le.AppendUint32(b, m.uid)
		b = le.AppendUint32(b, bits)
		b = le.AppendUint64(b, m.modseq)
		b = le.AppendUint64(b, uint64(m.size))
		b = le.AppendUint64(b, uint64(m.date))
		b = le.AppendUint64(b, m.mask)
	}
	for _, x := range s.expunged {
		b = le.AppendUint32(b, x.lo)
		b = le.AppendUint32(b, x.hi)
		b = le.AppendUint64(b, x.modseq)
	}
	b = le.AppendUint32(b, crc32.ChecksumIEEE(b))
	return append(b, names...)
}

var errCache = errors.New("mailstore: cache")

func cacheErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCache}, a...)...)
}

// cacheHeader is what the header says beside the state.
type cacheHeader struct {
	nm, nx int         // message and expunge records
	names  nameSection // off not set
	size   int         // octets of the header, through its "head" line
}

// parseCacheHeader reads the header (through its "head" line).
func parseCacheHeader(text string) (cacheState, cacheHeader, error) {
	var s cacheState
	var h cacheHeader
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
	if l, _ := line(); l != cacheMagic {
		return s, h, cacheErr("not %s", cacheMagic)
	}
	ints := func(name string, n int) ([]int64, error) {
		l, ok := line()
		k, v, _ := strings.Cut(l, " ")
		if !ok || k != name {
			return nil, cacheErr("want %s, got %q", name, l)
		}
		f := strings.Split(v, " ")
		if len(f) != n {
			return nil, cacheErr("%s: %q", name, l)
		}
		out := make([]int64, n)
		for i, x := range f {
			var err error
			if out[i], err = strconv.ParseInt(x, 10, 64); err != nil || out[i] < 0 {
				return nil, cacheErr("%s: %q", name, l)
			}
		}
		return out, nil
	}
	var err error
	var v []int64
	one := func(name string, max int64) int64 {
		if err != nil {
			return 0
		}
		v, err = ints(name, 1)
		if err == nil && v[0] > max {
			err = cacheErr("%s out of range", name)
		}
		if err != nil {
			return 0
		}
		return v[0]
	}
	const u32, i63 = 1<<32 - 1, 1<<63 - 1
	s.uidValidity = uint32(one("uidvalidity", u32))
	s.uidNext = uint32(one("uidnext", u32))
	s.highest = uint64(one("highestmodseq", i63))
	s.vanishedFrom = uint64(one("vanished-from", i63))
	s.recentFrom = uint32(one("recent-from", u32))
	s.newMtime = one("new", i63)
	s.curMtime = one("cur", i63)
	if err != nil {
		return s, h, err
	}
	for _, k := range []struct {
		name string
		key  *fileKey
	}{{"uidlist", &s.uidlistKey}, {"keywords", &s.kwKey}} {
		if v, err = ints(k.name, 3); err != nil {
			return s, h, err
		}
		*k.key = fileKey{uint64(v[0]), uint64(v[1]), v[2]}
	}
	if v, err = ints("counts", 5); err != nil {
		return s, h, err
	}
	s.counts = counts{uint32(v[0]), uint32(v[1]), uint32(v[2]), v[3], uint32(v[4])}
	for strings.HasPrefix(rest, "k ") {
		l, _ := line()
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 {
			return s, h, cacheErr("bad keyword %q", l)
		}
		i, err := strconv.Atoi(f[1])
		if err != nil || i < 0 || i >= maxKeywords || f[2] == "" || s.kw[i] != "" {
			return s, h, cacheErr("bad keyword %q", l)
		}
		s.kw[i] = f[2]
	}
	nm := one("messages", u32)
	nx := one("expunged", u32)
	if err != nil {
		return s, h, err
	}
	l, ok := line()
	k, v2, _ := strings.Cut(l, " ")
	nl, nc, _ := strings.Cut(v2, " ")
	namesLen, e1 := strconv.ParseInt(nl, 10, 64)
	namesCRC, e2 := strconv.ParseUint(nc, 16, 32)
	if !ok || k != "names" || e1 != nil || e2 != nil || namesLen < 0 {
		return s, h, cacheErr("bad names line %q", l)
	}
	head := text[:len(text)-len(rest)]
	l, ok = line()
	k, v2, _ = strings.Cut(l, " ")
	if !ok || k != "head" {
		return s, h, cacheErr("want head, got %q", l)
	}
	if sum, err := strconv.ParseUint(v2, 16, 32); err != nil || uint32(sum) != crc32.ChecksumIEEE([]byte(head)) {
		return s, h, cacheErr("header checksum mismatch")
	}
	if s.uidValidity == 0 || s.uidNext == 0 {
		return s, h, cacheErr("no UIDVALIDITY or UIDNEXT")
	}
	h = cacheHeader{nm: int(nm), nx: int(nx), names: nameSection{len: namesLen, crc: uint32(namesCRC)}, size: len(text) - len(rest)}
	return s, h, nil
}

// recordsEnd is where a file's records and their CRC end.
func (h *cacheHeader) recordsEnd() int64 {
	return int64(h.size) + int64(h.nm)*msgRecSize + int64(h.nx)*expRecSize + 4
}

// parseCacheRecords reads the header and the records of a cache file of
// fileSize octets; b holds the file's start, at least through the
// records. The names are left for parseNames (s.names says where).
func parseCacheRecords(b []byte, fileSize int64) (cacheState, error) {
	if len(b) == 0 {
		return cacheState{}, cacheErr("empty")
	}
	s, h, err := parseCacheHeader(unsafe.String(&b[0], len(b)))
	if err != nil {
		return s, err
	}
	end := h.recordsEnd()
	if end+h.names.len != fileSize || int64(len(b)) < end {
		return s, cacheErr("%d octets, header says %d (truncated?)", fileSize, end+h.names.len)
	}
	le := binary.LittleEndian
	if le.Uint32(b[end-4:end]) != crc32.ChecksumIEEE(b[:end-4]) {
		return s, cacheErr("checksum mismatch")
	}
	s.msgs = make([]msg, h.nm)
	prefaultSlice(s.msgs)
	r := b[h.size:]
	var lastUID uint32
	for i := range s.msgs {
		rec := r[i*msgRecSize : (i+1)*msgRecSize]
		m := msg{uid: le.Uint32(rec), modseq: le.Uint64(rec[8:]), size: int64(le.Uint64(rec[16:])),
			date: int64(le.Uint64(rec[24:])), mask: le.Uint64(rec[32:])}
		bits := le.Uint32(rec[4:])
		m.inNew = bits == 1
		if m.uid == 0 || m.uid <= lastUID || m.uid >= s.uidNext || m.modseq > s.highest || bits > 1 ||
			m.size < 0 || m.date < dateUnknown || m.mask&^allLetters != 0 {
			return s, cacheErr("bad message record %d", i)
		}
		lastUID = m.uid
		s.msgs[i] = m
	}
	r = r[h.nm*msgRecSize:]
	s.expunged = make([]expRange, h.nx)
	var lastMod uint64
	for i := range s.expunged {
		rec := r[i*expRecSize : (i+1)*expRecSize]
		x := expRange{lo: le.Uint32(rec), hi: le.Uint32(rec[4:]), modseq: le.Uint64(rec[8:])}
		if x.lo == 0 || x.hi < x.lo || x.hi >= s.uidNext || x.modseq < lastMod || x.modseq > s.highest {
			return s, cacheErr("bad expunge record %d", i)
		}
		lastMod = x.modseq
		s.expunged[i] = x
	}
	if countsOf(s.msgs, s.recentFrom) != s.counts {
		return s, cacheErr("counts do not match")
	}
	s.names = h.names
	s.names.off = end
	if h.nm == 0 {
		if h.names.len != 0 {
			return s, cacheErr("names without messages")
		}
		s.names = nameSection{}
	}
	return s, nil
}

// parseNames gives the state's messages their names from the names
// section b (s.names says its length and CRC). The names point into b,
// which the caller must not change afterwards.
func parseNames(s *cacheState, b []byte) error {
	if int64(len(b)) != s.names.len || crc32.ChecksumIEEE(b) != s.names.crc {
		return cacheErr("names checksum mismatch")
	}
	if len(b) == 0 {
		if len(s.msgs) != 0 {
			return cacheErr("no names")
		}
		s.names = nameSection{}
		return nil
	}
	// One string for the section, sharing b's memory; names are cut from it.
	text := unsafe.String(&b[0], len(b))
	for i := range s.msgs {
		j := strings.IndexByte(text, '\n')
		if j < 0 {
			return cacheErr("%d names, %d messages", i, len(s.msgs))
		}
		name := text[:j]
		text = text[j+1:]
		m := &s.msgs[i]
		if name == "" || name[0] == '.' || strings.IndexByte(name, '/') >= 0 || strings.IndexByte(name, 0) >= 0 ||
			baseKey(name) == "" || letterMask(nameLetters(name)) != m.mask {
			return cacheErr("bad name %q", name)
		}
		m.name = name
	}
	if text != "" {
		return cacheErr("names beyond the messages")
	}
	s.names = nameSection{}
	return nil
}

// parseCache reads a whole cache file, names too. The state's names point
// into b, which the caller must not change afterwards.
func parseCache(b []byte) (cacheState, error) {
	s, err := parseCacheRecords(b, int64(len(b)))
	if err != nil {
		return s, err
	}
	if s.names.len > 0 || len(s.msgs) > 0 {
		if err := parseNames(&s, b[s.names.off:]); err != nil {
			return s, err
		}
	}
	return s, nil
}

// readCacheFile reads dir's cache and its key. A missing or unreadable
// file is ok=false.
func readCacheFile(dir string) ([]byte, fileKey, bool) {
	f, err := os.OpenFile(filepath.Join(dir, cacheName), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fileKey{}, false
	}
	defer f.Close()
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, fileKey{}, false
	}
	b := make([]byte, st.Size)
	prefault(b)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fileKey{}, false
	}
	return b, keyOf(&st), true
}

// readCacheHeader reads only the header of dir's cache (for STATUS); the
// header's own CRC vouches for it.
func readCacheHeader(dir string) (cacheState, fileKey, bool) {
	f, err := os.OpenFile(filepath.Join(dir, cacheName), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return cacheState{}, fileKey{}, false
	}
	defer f.Close()
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return cacheState{}, fileKey{}, false
	}
	buf := make([]byte, 4096)
	n, _ := io.ReadFull(f, buf)
	s, _, err := parseCacheHeader(string(buf[:n]))
	return s, keyOf(&st), err == nil
}

// readCacheRecords reads dir's cache without its names (SELECT's read):
// the header, then the records. ok=false: no cache (missing, not a
// regular file, unreadable); err: a damaged one.
func readCacheRecords(dir string) (cacheState, fileKey, bool, error) {
	fd, err := unix.Open(filepath.Join(dir, cacheName), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return cacheState{}, fileKey{}, false, nil
	}
	defer unix.Close(fd)
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return cacheState{}, fileKey{}, false, nil
	}
	key := keyOf(&st)
	head := make([]byte, min(st.Size, 16<<10))
	if err := preadFull(fd, head, 0); err != nil {
		return cacheState{}, key, false, nil
	}
	_, h, err := parseCacheHeader(string(head))
	if err != nil && int64(len(head)) < st.Size {
		// A header longer than the first read (long keywords): all of it.
		head = make([]byte, st.Size)
		if err := preadFull(fd, head, 0); err != nil {
			return cacheState{}, key, false, nil
		}
		_, h, err = parseCacheHeader(string(head))
	}
	if err != nil {
		return cacheState{}, key, true, err
	}
	end := h.recordsEnd()
	if end > st.Size {
		return cacheState{}, key, true, cacheErr("%d octets, records need %d (truncated?)", st.Size, end)
	}
	b := head
	if int64(len(b)) < end {
		b = make([]byte, end)
		prefault(b)
		copy(b, head)
		if err := preadFull(fd, b[len(head):], int64(len(head))); err != nil {
			return cacheState{}, key, false, nil
		}
	}
	s, err := parseCacheRecords(b[:end], st.Size)
	return s, key, true, err
}

// readCacheNames reads the names section sec of dir's cache, which must
// still be the version key.
func readCacheNames(dir string, key fileKey, sec nameSection) ([]byte, error) {
	fd, err := unix.Open(filepath.Join(dir, cacheName), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mailstore: cache names: %w", err)
	}
	defer unix.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("mailstore: cache names: %w", err)
	}
	if keyOf(&st) != key {
		return nil, cacheErr("replaced before its names were read")
	}
	b := make([]byte, sec.len)
	prefault(b)
	if err := preadFull(fd, b, sec.off); err != nil {
		return nil, fmt.Errorf("mailstore: cache names: %w", err)
	}
	return b, nil
}

// preadFull fills b from fd at off.
func preadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// writeCacheFile puts b in place as dir's cache (under tmp/, then rename)
// and returns the new file's key. No fsync: a cache lost in a crash is
// rebuilt.
func writeCacheFile(dir string, b []byte) (fileKey, error) {
	tmp := filepath.Join(dir, "tmp", cacheName+"."+strconv.Itoa(os.Getpid())+"."+strconv.FormatInt(nanotime(), 36))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fileKey{}, fmt.Errorf("mailstore: write cache: %w", err)
	}
	_, err = f.Write(b)
	var st syscall.Stat_t
	if err == nil {
		err = syscall.Fstat(int(f.Fd()), &st)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, cacheName))
	}
	if err != nil {
		os.Remove(tmp)
		return fileKey{}, fmt.Errorf("mailstore: write cache: %w", err)
	}
	return keyOf(&st), nil
}

// prefault asks the kernel to map b's pages now, in one call
// (MADV_POPULATE_WRITE, Linux 5.14; elsewhere a no-op). A fresh process
// reading a large folder's cache touches a few MB of new heap; taking a
// page fault for each 4 KiB page costs more than the parsing on a virtual
// machine (10,000 messages: about 500 faults, several ms). Only large
// allocations are worth it: they are whole pages of their own.
func prefault(b []byte) {
	if len(b) >= 64<<10 {
		unix.Madvise(b, unix.MADV_POPULATE_WRITE)
	}
}

// prefaultSlice is prefault of a slice's memory.
func prefaultSlice[T any](s []T) {
	if len(s) == 0 {
		return
	}
	var zero T
	prefault(unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), uintptr(len(s))*unsafe.Sizeof(zero)))
}
