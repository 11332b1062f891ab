package mailstore

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
// truncated or damaged (the CRC-32 at the end does not match), or for
// another UIDVALIDITY, it is rebuilt from the Maildir; the MODSEQs of a
// rebuilt folder then start above any given before (they count from the
// time in microseconds), and VANISHED from before the rebuild is inexact.
//
//	letterbox-imap-cache 1
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
//	head CRC                 (of the lines above, so STATUS may read only them)
//	m UID MODSEQ VSIZE DATE n|c NAME   (DATE: Unix seconds; n: in new/)
//	x FIRSTUID LASTUID MODSEQ          (UIDs expunged at MODSEQ)
//	end CRC                  (of everything above)
const (
	cacheName  = "letterbox-imap.cache"
	cacheMagic = "letterbox-imap-cache 1"
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
	return fileKey{uint64(st.Ino), uint64(st.Size), st.Mtim.Nano()}, true
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
	date   int64 // Unix seconds
	name   string
}

func (m *msg) key() string { return baseKey(m.name) }

// letters returns the flag letters of the name (after ":2,").
func (m *msg) letters() string { return nameLetters(m.name) }

func nameLetters(name string) string {
	i := strings.IndexByte(name, ':')
	if i < 0 || !strings.HasPrefix(name[i+1:], "2,") {
		return ""
	}
	return name[i+3:]
}

func hasLetter(letters string, c byte) bool { return strings.IndexByte(letters, c) >= 0 }

func countsOf(msgs []msg, recentFrom uint32) counts {
	var c counts
	c.messages = uint32(len(msgs))
	for i := range msgs {
		if msgs[i].uid >= recentFrom {
			c.recent++
		}
		l := msgs[i].letters()
		if !hasLetter(l, 'S') {
			c.unseen++
		}
		if hasLetter(l, 'T') {
			c.deleted++
		}
		c.size += msgs[i].size
	}
	return c
}

func formatCache(s *cacheState) []byte {
	b := make([]byte, 0, 512+len(s.msgs)*96+len(s.expunged)*32)
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
	head := crc32.ChecksumIEEE(b)
	b = append(b, "head "...)
	b = strconv.AppendUint(b, uint64(head), 16)
	b = append(b, '\n')
	for i := range s.msgs {
		m := &s.msgs[i]
		b = append(b, "m "...)
		b = strconv.AppendUint(b, uint64(m.uid), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, m.modseq, 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, m.size, 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, m.date, 10)
		if m.inNew {
			b = append(b, " n "...)
		} else {
			b = append(b, " c "...)
		}
		b = append(b, m.name...)
		b = append(b, '\n')
	}
	for _, x := range s.expunged {
		b = append(b, "x "...)
		b = strconv.AppendUint(b, uint64(x.lo), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(x.hi), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, x.modseq, 10)
		b = append(b, '\n')
	}
	sum := crc32.ChecksumIEEE(b)
	b = append(b, "end "...)
	b = strconv.AppendUint(b, uint64(sum), 16)
	return append(b, '\n')
}

var errCache = errors.New("mailstore: cache")

func cacheErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCache}, a...)...)
}

// parseCacheHeader reads the header (through its "head" line) and returns
// the rest of text.
func parseCacheHeader(text string) (cacheState, int, int, string, error) {
	var s cacheState
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
		return s, 0, 0, "", cacheErr("not %s", cacheMagic)
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
		return s, 0, 0, "", err
	}
	for _, k := range []struct {
		name string
		key  *fileKey
	}{{"uidlist", &s.uidlistKey}, {"keywords", &s.kwKey}} {
		if v, err = ints(k.name, 3); err != nil {
			return s, 0, 0, "", err
		}
		*k.key = fileKey{uint64(v[0]), uint64(v[1]), v[2]}
	}
	if v, err = ints("counts", 5); err != nil {
		return s, 0, 0, "", err
	}
	s.counts = counts{uint32(v[0]), uint32(v[1]), uint32(v[2]), v[3], uint32(v[4])}
	for strings.HasPrefix(rest, "k ") {
		l, _ := line()
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 {
			return s, 0, 0, "", cacheErr("bad keyword %q", l)
		}
		i, err := strconv.Atoi(f[1])
		if err != nil || i < 0 || i >= maxKeywords || f[2] == "" || s.kw[i] != "" {
			return s, 0, 0, "", cacheErr("bad keyword %q", l)
		}
		s.kw[i] = f[2]
	}
	nm := one("messages", u32)
	nx := one("expunged", u32)
	if err != nil {
		return s, 0, 0, "", err
	}
	head := text[:len(text)-len(rest)]
	l, ok := line()
	k, v2, _ := strings.Cut(l, " ")
	if !ok || k != "head" {
		return s, 0, 0, "", cacheErr("want head, got %q", l)
	}
	if sum, err := strconv.ParseUint(v2, 16, 32); err != nil || uint32(sum) != crc32.ChecksumIEEE([]byte(head)) {
		return s, 0, 0, "", cacheErr("header checksum mismatch")
	}
	if s.uidValidity == 0 || s.uidNext == 0 {
		return s, 0, 0, "", cacheErr("no UIDVALIDITY or UIDNEXT")
	}
	return s, int(nm), int(nx), rest, nil
}

// parseCache reads a whole cache file. The state's names point into b,
// which the caller must not change afterwards.
func parseCache(b []byte) (cacheState, error) {
	end := bytes.LastIndex(b, []byte("\nend "))
	if end < 0 || b[len(b)-1] != '\n' {
		return cacheState{}, cacheErr("no end line (truncated?)")
	}
	sum, err := strconv.ParseUint(string(b[end+5:len(b)-1]), 16, 32)
	if err != nil || uint32(sum) != crc32.ChecksumIEEE(b[:end+1]) {
		return cacheState{}, cacheErr("checksum mismatch")
	}
	// One string for the whole file, sharing b's memory (a copy would be
	// as big as the file again in a process that reads it once); names
	// are cut from it.
	s, nm, nx, body, err := parseCacheHeader(unsafe.String(&b[0], end+1))
	if err != nil {
		return s, err
	}
	if nm+nx > len(body)/8+1 {
		return s, cacheErr("%d entries cannot fit", nm+nx)
	}
	s.msgs = make([]msg, 0, nm)
	prefaultSlice(s.msgs[:nm])
	s.expunged = make([]expRange, 0, nx)
	var lastUID uint32
	var lastMod uint64
	for body != "" {
		i := strings.IndexByte(body, '\n')
		l := body[:i]
		body = body[i+1:]
		switch {
		case strings.HasPrefix(l, "m "):
			m, ok := parseMsgLine(l[2:])
			if !ok || m.uid <= lastUID || m.uid >= s.uidNext || m.modseq > s.highest || len(s.expunged) > 0 {
				return s, cacheErr("bad message line %q", l)
			}
			lastUID = m.uid
			s.msgs = append(s.msgs, m)
		case strings.HasPrefix(l, "x "):
			f := strings.Split(l[2:], " ")
			if len(f) != 3 {
				return s, cacheErr("bad expunge line %q", l)
			}
			lo, e1 := strconv.ParseUint(f[0], 10, 32)
			hi, e2 := strconv.ParseUint(f[1], 10, 32)
			ms, e3 := strconv.ParseUint(f[2], 10, 63)
			if e1 != nil || e2 != nil || e3 != nil || lo == 0 || hi < lo || hi >= uint64(s.uidNext) || ms < lastMod || ms > s.highest {
				return s, cacheErr("bad expunge line %q", l)
			}
			lastMod = ms
			s.expunged = append(s.expunged, expRange{uint32(lo), uint32(hi), ms})
		default:
			return s, cacheErr("bad line %q", l)
		}
	}
	if len(s.msgs) != nm || len(s.expunged) != nx {
		return s, cacheErr("%d messages and %d expunges, header says %d and %d", len(s.msgs), len(s.expunged), nm, nx)
	}
	if countsOf(s.msgs, s.recentFrom) != s.counts {
		return s, cacheErr("counts do not match")
	}
	return s, nil
}

func parseMsgLine(l string) (msg, bool) {
	// A SELECT of a large folder parses one such line per message: the
	// numbers are read in place, not through strconv's general parsers.
	var m msg
	var v [4]uint64
	limits := [4]uint64{1<<32 - 1, 1<<63 - 1, 1<<63 - 1, 1<<63 - 1}
	for i := range v {
		n, rest, ok := cutDecimal(l, limits[i])
		if !ok || rest == "" || rest[0] != ' ' {
			return m, false
		}
		v[i], l = n, rest[1:]
	}
	if len(l) < 2 || (l[0] != 'n' && l[0] != 'c') || l[1] != ' ' {
		return m, false
	}
	inNew := l[0] == 'n'
	l = l[2:]
	if v[0] == 0 || l == "" || l[0] == '.' || strings.IndexByte(l, '/') >= 0 || strings.IndexByte(l, 0) >= 0 || baseKey(l) == "" {
		return m, false
	}
	return msg{uid: uint32(v[0]), modseq: v[1], size: int64(v[2]), date: int64(v[3]), name: l, inNew: inNew}, true
}

// cutDecimal reads the unsigned decimal number at the start of s, at most
// max, and returns what follows it.
func cutDecimal(s string, max uint64) (uint64, string, bool) {
	var n uint64
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		d := uint64(s[i] - '0')
		if n > (max-d)/10 {
			return 0, s, false
		}
		n = n*10 + d
	}
	return n, s[i:], i > 0
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
	return b, fileKey{uint64(st.Ino), uint64(st.Size), st.Mtim.Nano()}, true
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
	s, _, _, _, err := parseCacheHeader(string(buf[:n]))
	return s, fileKey{uint64(st.Ino), uint64(st.Size), st.Mtim.Nano()}, err == nil
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
	return fileKey{uint64(st.Ino), uint64(st.Size), st.Mtim.Nano()}, nil
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
