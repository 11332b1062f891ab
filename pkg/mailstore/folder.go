package mailstore

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	gomaildir "github.com/emersion/go-maildir"
	"golang.org/x/sys/unix"

	"letterbox/pkg/maildir"
)

// A folder is the state of one mailbox shared by every session of this
// process (views, STATUS, APPEND): the messages with their UIDs, flags and
// MODSEQs as last synced, kept equal to the cache file under the folder's
// flock. Sync brings it up to date with the Maildir:
//
//  1. Fast path, no lock: the cache file, new/, cur/, the uidlist and the
//     keywords file have the versions the state was built from (and the
//     directories' mtimes were at least dirSlack old then, so that a later
//     change cannot share their timestamp): nothing to do. Five lstat calls.
//  2. Under the flock: a cache another letterbox process wrote is read in;
//     new/ and cur/ are read (again, while they changed during the read:
//     a file renamed during readdir may be missed); each file is matched to
//     its uidlist record by base name. Changed flag letters raise that
//     message's MODSEQ; files without a UID get one under the uidlist's
//     dot-lock (with a rescan under the lock, so that no UID another
//     program gave meanwhile is skipped); a message whose file is gone
//     (confirmed by lstat of its last name) is expunged and logged for
//     VANISHED; a file whose UID is below what sessions may have seen and
//     that is not in the state (an expunged message that came back) gets a
//     new UID, as Dovecot does. The cache is rewritten when anything changed.
type folder struct {
	acc  *account
	name string
	dir  string

	mu   sync.Mutex // held for every read and change of what follows
	lock dirLock

	loaded   bool
	s        cacheState
	cacheKey fileKey  // the cache file version s was read from or written as
	ul       *uidlist // the uidlist as last read, nil when there was none
	ulKey    fileKey  // its version
	ulIdx    map[string]uint32

	version   uint64 // raised by every change a snapshot shows
	shared    []Msg  // snapshot of sharedVer without \Recent, shared by views
	sharedVer uint64
	flagMemo  map[uint64][]string
	memoKW    keywords

	pending    map[string]bool // keys of appended files waiting for a UID (under acc.mu)
	assigned   map[string]uint32
	assignedUV uint32        // the UIDVALIDITY of the assigned UIDs
	moved      int           // files the last rescan moved from new/ to cur/
	wantMove   bool          // the last scan left many files in new/ for moveInBackground
	moving     bool          // moveInBackground runs
	moveDone   chan struct{} // closed when that mover stops
	draining   bool          // a Close waits for the mover: no one to let in between chunks
	closed     bool          // the account let the folder go
	rescans    int           // how many times the directories were read (tests)
	scans      int           // how many times scan read new/ and cur/ (tests)

	watchers map[chan struct{}]struct{}
	stopPoll chan struct{}
}

// A directory mtime at least this old when read cannot be shared by a
// later change: file systems stamp with a clock that lags by up to a tick
// (a jiffy, ≤ 10 ms, on Linux), and some keep whole seconds only (an mtime
// without nanoseconds: dirSlackCoarse).
const (
	dirSlack       = 200 * time.Millisecond
	dirSlackCoarse = 2 * time.Second
)

// settled reports whether a directory mtime read at now can be trusted to
// change with the next change of the directory.
func settled(mtime, now int64) bool {
	slack := dirSlack
	if mtime%int64(time.Second) == 0 {
		slack = dirSlackCoarse
	}
	return mtime != 0 && now-mtime > int64(slack)
}

// maxExpunges bounds the expunge log (ranges); older ranges are dropped
// and VANISHED before them becomes inexact.
const maxExpunges = 20000

func nanotime() int64 { return time.Now().UnixNano() }

func (f *folder) path(sub string) string { return filepath.Join(f.dir, sub) }

// exists reports whether the folder's directory is there (a real one).
func (f *folder) exists() bool {
	fi, err := os.Lstat(f.dir)
	return err == nil && fi.IsDir()
}

// ensureDirs creates tmp/, new/ and cur/ when missing (Dovecot makes a
// folder's directory first and these when it first stores into it).
func (f *folder) ensureDirs() error {
	for _, sub := range []string{"cur", "new", "tmp"} {
		fi, err := os.Lstat(f.path(sub))
		if err == nil && fi.IsDir() {
			continue
		}
		if err == nil {
			return fmt.Errorf("mailstore: %s: not a directory", f.path(sub))
		}
		return maildir.Create(f.dir)
	}
	return nil
}

type syncOpt struct {
	moveNew bool // take new/ into cur/ (a writable view)
	claim   bool // take every unclaimed message as \Recent
}

// quick tells whether the state is up to date without taking the flock.
func (f *folder) quick(o syncOpt) bool {
	if !f.loaded || f.s.newMtime == 0 || f.s.curMtime == 0 {
		return false
	}
	if k, ok := statKey(f.path(cacheName)); !ok || k != f.cacheKey {
		return false
	}
	if k, _ := statKey(f.path("cur")); k.mtime != f.s.curMtime {
		return false
	}
	if k, _ := statKey(f.path("new")); k.mtime != f.s.newMtime {
		return false
	}
	if k, _ := statKey(f.path(uidlistName)); k != f.s.uidlistKey {
		return false
	}
	if k, _ := statKey(f.path(keywordsName)); k != f.s.kwKey {
		return false
	}
	if o.claim && f.unclaimed() {
		return false
	}
	if o.moveNew && !f.moving {
		for i := range f.s.msgs {
			if f.s.msgs[i].inNew {
				return false
			}
		}
	}
	return true
}

func (f *folder) unclaimed() bool {
	n := len(f.s.msgs)
	return n > 0 && f.s.msgs[n-1].uid >= f.s.recentFrom
}

// sync brings the state up to date; f.mu must be held. It returns the UID
// range claimed as \Recent (lo > hi: none).
func (f *folder) sync(o syncOpt) (lo, hi uint32, err error) {
	if f.quick(o) {
		return 1, 0, nil
	}
	if !f.exists() {
		return 1, 0, ErrNoMailbox
	}
	if err := f.lock.lock(); err != nil {
		return 1, 0, err
	}
	defer f.lock.unlock()
	return f.syncLocked(o)
}

// syncLocked is sync's slow path, with the flock held.
func (f *folder) syncLocked(o syncOpt) (lo, hi uint32, err error) {
	lo, hi = 1, 0
	dirty := f.reloadCache()
	if o.moveNew {
		if err := f.ensureDirs(); err != nil {
			return lo, hi, err
		}
	}
	if f.reloadKeywords() {
		dirty = true
	}
	// The uidlist is read only when the directories must be: a state up
	// to date needs its version alone.
	ulKey, _ := statKey(f.path(uidlistName))
	newSt, _ := statKey(f.path("new"))
	curSt, _ := statKey(f.path("cur"))
	needScan := !f.loaded || f.s.newMtime == 0 || f.s.curMtime == 0 ||
		newSt.mtime != f.s.newMtime || curSt.mtime != f.s.curMtime || ulKey != f.s.uidlistKey
	if o.moveNew && !needScan && !f.moving {
		for i := range f.s.msgs {
			if f.s.msgs[i].inNew {
				needScan = true
				break
			}
		}
	}
	if needScan {
		if err := f.needNames(); err != nil {
			return lo, hi, err
		}
		ul, ulKey, err := f.readUIDList()
		if err != nil {
			return lo, hi, err
		}
		changed, err := f.rescan(o.moveNew, ul, ulKey, newSt, curSt)
		if err != nil {
			return lo, hi, err
		}
		dirty = dirty || changed
	}
	if o.claim && f.unclaimed() {
		lo, hi = f.s.recentFrom, f.s.msgs[len(f.s.msgs)-1].uid
		f.s.recentFrom = hi + 1
		dirty = true
	}
	f.loaded = true
	if dirty {
		f.writeCache()
	}
	if o.moveNew && f.wantMove && !f.moving {
		f.moveInBackground()
	}
	f.wantMove = false
	return lo, hi, nil
}

// bulkNew: more files than this in new/ are taken into cur/ after the
// SELECT that found them has its answer, a chunk at a time (a first SELECT
// of a large folder delivered to new/ would otherwise wait for every
// rename). Their UIDs are theirs already.
const bulkNew = 256

// moveInBackground takes the state's messages in new/ into cur/, a chunk
// at a time with the locks held, and lets go between chunks (f.mu held).
func (f *folder) moveInBackground() {
	f.moving = true
	f.moveDone = make(chan struct{})
	stopped := f.moveDone
	next := uint32(0) // the chunks go up the UIDs: each message is tried once
	moved := false    // renames not in the cache file yet
	go func() {
		for {
			f.mu.Lock()
			chunk := moveChunkSize
			if f.draining {
				chunk = math.MaxInt
			}
			done := f.closed || f.moveChunk(chunk, &next, &moved)
			if done {
				f.moving, f.draining = false, false
				f.mu.Unlock()
				close(stopped)
				return
			}
			f.mu.Unlock()
			if testHookMoved != nil {
				testHookMoved()
			}
		}
	}()
}

// testHookMoved runs between the mover's chunks, no lock held (tests).
var testHookMoved func()

// moveChunkSize is how many renames a chunk makes with f.mu held: about
// 5 ms here, the longest a session's command waits for the mover.
const moveChunkSize = 256

// moveChunk renames up to n messages of new/ into cur/, from the first
// UID at or above *next, and reports whether none is left to try (f.mu
// held). The cache file is written when the last chunk is done: until
// then it has the directories' versions from before the renames, so that
// any reader of it, in this process or another, reads them again.
func (f *folder) moveChunk(n int, next *uint32, moved *bool) bool {
	if !f.exists() || f.lock.lock() != nil {
		return true
	}
	defer f.lock.unlock()
	// Another process may have changed the state: take its version first.
	if f.reloadCache() || f.needNames() != nil {
		return true
	}
	newfd, err := unix.Open(f.path("new"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return true
	}
	defer unix.Close(newfd)
	curfd, err := unix.Open(f.path("cur"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return true
	}
	defer unix.Close(curfd)
	tries := 0
	i, _ := slices.BinarySearchFunc(f.s.msgs, *next, func(m msg, u uint32) int { return cmp.Compare(m.uid, u) })
	for ; i < len(f.s.msgs) && tries < n; i++ {
		m := &f.s.msgs[i]
		*next = m.uid + 1
		if !m.inNew {
			continue
		}
		tries++
		target := m.name
		if !strings.Contains(target, ":") {
			target += ":2,"
		}
		// A failure (moved or expunged meanwhile) is the next rescan's.
		if unix.Renameat(newfd, m.name, curfd, target) == nil {
			m.setName(target)
			m.inNew = false
		}
	}
	last := i == len(f.s.msgs)
	if tries > 0 {
		// Both directories changed under the state: the next sync reads
		// them (and finds these names).
		f.s.newMtime, f.s.curMtime = 0, 0
		*moved = true
	}
	if last && *moved {
		f.writeCache()
	}
	return last
}

// reloadCache reads the cache file when another process changed it, and
// reports whether ours must be written (none, or a damaged one).
func (f *folder) reloadCache() bool {
	k, ok := statKey(f.path(cacheName))
	if ok && f.loaded && k == f.cacheKey {
		return false
	}
	if ok {
		s, key, ok, err := readCacheRecords(f.dir)
		if ok {
			if err == nil {
				if s.highest < f.s.highest {
					// Never let MODSEQs go back (a cache put back from a copy).
					f.acc.log.Warn("cache older than this process's state ignored", "folder", f.name)
				} else {
					f.s, f.cacheKey, f.loaded = s, key, true
					f.version++
					return false
				}
			} else {
				f.acc.log.Warn("cache rebuilt", "folder", f.name, "err", err)
			}
		}
	}
	if !f.loaded {
		// Start afresh: MODSEQs from the time in µs, above any a previous
		// cache of this folder gave.
		base := uint64(time.Now().UnixMicro())
		if base <= f.s.highest {
			base = f.s.highest + 1
		}
		f.s = cacheState{highest: base, vanishedFrom: base}
		f.version++
	}
	return true
}

// needNames reads the names of the state's messages when they are not read
// yet (flock held): from the cache file version the state was read from.
// A names section that does not read (damaged, or the file replaced in a
// way that loses the version) is a damaged cache: the file is removed and
// the state rebuilt from the Maildir.
func (f *folder) needNames() error {
	if f.s.names.len == 0 {
		return nil
	}
	b, err := readCacheNames(f.dir, f.cacheKey, f.s.names)
	if err == nil {
		err = parseNames(&f.s, b)
	}
	if err == nil {
		return nil
	}
	f.acc.log.Warn("cache rebuilt", "folder", f.name, "err", err)
	if rerr := os.Remove(f.path(cacheName)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return fmt.Errorf("mailstore: %w", rerr)
	}
	// reloadCache starts afresh (MODSEQs above all given) with no file.
	f.loaded, f.cacheKey = false, fileKey{}
	f.s.msgs, f.s.names = nil, nameSection{}
	_, _, err = f.syncLocked(syncOpt{})
	return err
}

// reloadKeywords reads dovecot-keywords when it changed. A letter that now
// names another keyword raises the MODSEQ of the messages that carry it.
func (f *folder) reloadKeywords() bool {
	k, _ := statKey(f.path(keywordsName))
	if f.loaded && k == f.s.kwKey {
		return false
	}
	var kw keywords
	if b, err := readSmall(f.path(keywordsName)); err == nil {
		kw = parseKeywords(string(b))
	}
	var moved []byte
	for i := range kw {
		if f.s.kw[i] != "" && f.s.kw[i] != kw[i] {
			moved = append(moved, byte('a'+i))
		}
	}
	changed := k != f.s.kwKey || kw != f.s.kw
	if len(moved) > 0 {
		ms := f.s.highest + 1
		bumped := false
		movedMask := letterMask(string(moved))
		for i := range f.s.msgs {
			if f.s.msgs[i].mask&movedMask != 0 {
				f.s.msgs[i].modseq, bumped = ms, true
			}
		}
		if bumped {
			f.s.highest = ms
		}
	}
	f.s.kw, f.s.kwKey = kw, k
	if changed {
		f.version++
	}
	return changed
}

// readSmall reads a small file without following a symlink.
func readSmall(path string) ([]byte, error) {
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	b := make([]byte, 0, fi.Size()+512)
	for {
		n, err := fd.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		if len(b) == cap(b) {
			if len(b) >= 64<<20 {
				return nil, fmt.Errorf("%s: too large", path)
			}
			b = slices.Grow(b, len(b))
		}
	}
}

// readUIDList returns the uidlist (re-read when its version changed; nil
// when there is none) and its version.
func (f *folder) readUIDList() (*uidlist, fileKey, error) {
	k, ok := statKey(f.path(uidlistName))
	if !ok {
		f.ul, f.ulKey, f.ulIdx = nil, fileKey{}, nil
		return nil, fileKey{}, nil
	}
	if f.ul != nil && k == f.ulKey {
		return f.ul, k, nil
	}
	b, err := readSmall(f.path(uidlistName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fileKey{}, nil
		}
		return nil, k, fmt.Errorf("mailstore: %s: %w", f.path(uidlistName), err)
	}
	ul, err := parseUIDList(string(b))
	if err != nil {
		// Not a uidlist we can read: rewriting it would lose Dovecot's UIDs.
		return nil, k, fmt.Errorf("mailstore: %s: %w", f.path(uidlistName), err)
	}
	if ul.bad > 0 {
		f.acc.log.Warn("dovecot-uidlist: unreadable records skipped", "folder", f.name, "records", ul.bad)
	}
	f.ul, f.ulKey, f.ulIdx = ul, k, nil
	return ul, k, nil
}

func (f *folder) uidIndex() map[string]uint32 {
	if f.ulIdx == nil && f.ul != nil {
		f.ulIdx = f.ul.index()
	}
	return f.ulIdx
}

// fileEntry is a message file found by a scan.
type fileEntry struct {
	name  string
	inNew bool
	// regular: readdir said a regular file (new/ is read with the
	// entries' types, cur/ through go-maildir with names only).
	regular bool
}

// scan reads new/ (moving its files to cur/ when moveNew) and then cur/,
// and reports whether cur/ kept its mtime while it was read. (A file
// leaving new/ while new/ is read is in cur/, read after; a file renamed
// in cur/ while cur/ is read may be missed under both names.)
func (f *folder) scan(moveNew bool) (map[string]fileEntry, bool, error) {
	f.scans++
	hint := len(f.s.msgs)
	if f.ul != nil {
		hint = max(hint, len(f.ul.recs))
	}
	files := make(map[string]fileEntry, hint+16)
	moved, err := f.scanNew(files, moveNew)
	if err != nil {
		return nil, false, err
	}
	f.moved += moved
	before, _ := statKey(f.path("cur"))
	if err := f.scanCur(files); err != nil {
		return nil, false, err
	}
	after, _ := statKey(f.path("cur"))
	return files, before.mtime == after.mtime, nil
}

func (f *folder) scanNew(files map[string]fileEntry, moveNew bool) (moved int, err error) {
	d, err := os.Open(f.path("new"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mailstore: %w", err)
	}
	defer d.Close()
	ents, err := d.ReadDir(-1)
	if err != nil {
		return 0, fmt.Errorf("mailstore: %w", err)
	}
	// Renames relative to the two directories: no path lookups, no lstat
	// (os.Rename's) per file.
	curfd := -1
	if moveNew && len(ents) > 0 {
		if curfd, err = unix.Open(f.path("cur"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0); err != nil {
			return 0, fmt.Errorf("mailstore: %s: %w", f.path("cur"), err)
		}
		defer unix.Close(curfd)
	}
	if moveNew && len(ents) > bulkNew {
		moveNew, f.wantMove = false, true
	}
	newfd := int(d.Fd())
	for _, e := range ents {
		name := e.Name()
		if name[0] == '.' || !e.Type().IsRegular() || strings.ContainsRune(name, 0) {
			continue
		}
		key := baseKey(name)
		if key == "" {
			continue
		}
		if moveNew {
			// Into cur/ keeping any flags (Dovecot names files in new/
			// with flags too), as Dovecot does when a session opens the
			// folder for writing.
			target := name
			if !strings.Contains(name, ":") {
				target += ":2,"
			}
			err := unix.Renameat(newfd, name, curfd, target)
			if err == nil {
				files[key] = fileEntry{name: target, regular: true}
				moved++
				continue
			}
			if errors.Is(err, unix.ENOENT) {
				continue // moved by someone else: cur/ has it
			}
			f.acc.log.Warn("new/ to cur/ failed", "folder", f.name, "file", name, "err", err)
		}
		files[key] = fileEntry{name: name, inNew: true, regular: true}
	}
	return moved, nil
}

// scanCur lists cur/ with go-maildir's Walk. Names it refuses are taken
// from its errors (a name without ":2," is a message without flags, as for
// Dovecot); an info section it cannot parse makes us read cur/ ourselves.
func (f *folder) scanCur(files map[string]fileEntry) error {
	dir := f.path("cur")
	prefix := len(dir) + 1
	put := func(name string) {
		key := baseKey(name)
		if key == "" || strings.ContainsRune(name, 0) {
			return
		}
		if old, ok := files[key]; ok && !old.inNew {
			if old.name == name {
				return // moved from new/ by this scan, its type known
			}
			// Two names with one key: keep the one still there.
			if _, err := os.Lstat(filepath.Join(dir, old.name)); err == nil {
				return
			}
		}
		files[key] = fileEntry{name: name}
	}
	err := gomaildir.Dir(f.dir).Walk(func(m *gomaildir.Message) error {
		put(m.Filename()[prefix:])
		return nil
	})
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var mf *gomaildir.MailfileError
		if errors.As(e, &mf) {
			put(mf.Name)
			continue
		}
		var fe *gomaildir.FlagError
		if errors.As(e, &fe) {
			return f.readCur(put)
		}
		return fmt.Errorf("mailstore: %s: %w", dir, e)
	}
	return nil
}

func (f *folder) readCur(put func(string)) error {
	d, err := os.Open(f.path("cur"))
	if err != nil {
		return fmt.Errorf("mailstore: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("mailstore: %w", err)
	}
	for _, n := range names {
		if n[0] != '.' {
			put(n)
		}
	}
	return nil
}

// stableScan scans until the directories held still during a scan (at
// most three times).
func (f *folder) stableScan(moveNew bool) (map[string]fileEntry, error) {
	for try := 0; ; try++ {
		files, stable, err := f.scan(moveNew)
		if err != nil || stable || try == 2 {
			return files, err
		}
		moveNew = false
	}
}

// plan is what a scan means for the state.
type plan struct {
	cur     []fileEntry // by index of f.s.msgs; name "" = not found
	add     []uint32    // UIDs the uidlist gave to files not in the state
	addFile []fileEntry
	fresh   []fileEntry // files needing a (new) UID
	oldUID  []uint32    // the record each fresh file had (0: none)
	records bool        // state messages the uidlist lacks (or no uidlist)
	holes   bool        // records above the state's UIDNEXT whose files were not seen
	// unmatched are the files not matched to a message of the state (plan
	// takes the matched ones out of the scan's map).
	unmatched map[string]fileEntry
}

func (f *folder) plan(files map[string]fileEntry, ul *uidlist) plan {
	idx := map[string]uint32{}
	if ul != nil {
		idx = f.uidIndex()
	}
	p := plan{cur: make([]fileEntry, len(f.s.msgs)), records: ul == nil}
	for i := range f.s.msgs {
		m := &f.s.msgs[i]
		key := m.key()
		fe, ok := files[key]
		if !ok {
			continue
		}
		uid, rec := idx[key]
		if rec && uid != m.uid {
			continue // the uidlist gives this file another UID now: m is gone
		}
		if !rec {
			p.records = true
		}
		p.cur[i] = fe
		delete(files, key)
	}
	p.unmatched = files
	if len(files) == 0 && !p.records && (ul == nil || ul.nextUID <= f.s.uidNext) {
		return p
	}
	if ul != nil && len(files) == 0 && !p.records {
		// Only records ahead of the state: are their files unseen?
		p.holes = len(ul.recs) > 0 && ul.recs[len(ul.recs)-1].uid >= f.s.uidNext
		return p
	}
	var seen map[uint32]bool
	p.add = make([]uint32, 0, len(files))
	p.addFile = make([]fileEntry, 0, len(files))
	for key, fe := range files {
		uid, ok := idx[key]
		if ok && uid >= f.s.uidNext {
			p.add = append(p.add, uid)
			p.addFile = append(p.addFile, fe)
			if seen == nil {
				seen = map[uint32]bool{}
			}
			seen[uid] = true
			continue
		}
		p.fresh = append(p.fresh, fe)
		p.oldUID = append(p.oldUID, uid)
	}
	if ul != nil {
		// Records the state has not seen whose files the scan did not
		// find: numbered by another program after (or while) we read the
		// directories. Look again under the uidlist's lock, or their
		// files, found later below UIDNEXT, would need new UIDs.
		i := sort.Search(len(ul.recs), func(i int) bool { return ul.recs[i].uid >= f.s.uidNext })
		for ; i < len(ul.recs); i++ {
			if !seen[ul.recs[i].uid] && idx[ul.recs[i].name] == ul.recs[i].uid {
				p.holes = true
				break
			}
		}
	}
	return p
}

// rescan reads the directories and merges them into the state. It reports
// whether the state changed.
func (f *folder) rescan(moveNew bool, ul *uidlist, ulKey, newSt, curSt fileKey) (bool, error) {
	f.moved = 0
	f.rescans++
	files, err := f.stableScan(moveNew)
	if err != nil {
		return false, err
	}
	changed := false
	if ul != nil && f.loaded && f.s.uidValidity != 0 && ul.uidValidity != f.s.uidValidity {
		// Another UIDVALIDITY: every UID we knew means nothing now.
		f.acc.log.Warn("UIDVALIDITY changed", "folder", f.name, "was", f.s.uidValidity, "now", ul.uidValidity)
		f.s.msgs, f.s.expunged = nil, nil
		f.s.uidValidity, f.s.uidNext = 0, 0
		f.s.vanishedFrom = f.s.highest + 1
		changed = true
	}
	freshBuild := f.s.uidValidity == 0
	p := f.plan(files, ul)
	if len(p.fresh) > 0 || p.records || p.holes {
		// Give UIDs under the uidlist's lock, from a scan made under it,
		// so that nothing another program numbered meanwhile is skipped.
		scannedKey := ulKey // the uidlist's version, read before the scan
		if testHookScanned != nil {
			testHookScanned(f.dir)
		}
		dl, err := f.lock.dotlock(uidlistName)
		if err != nil {
			return false, err
		}
		ul, ulKey, err = f.readUIDList()
		if err != nil {
			dl.release()
			return false, err
		}
		if ul != nil && f.s.uidValidity != 0 && ul.uidValidity != f.s.uidValidity {
			dl.release()
			return f.rescan(false, ul, ulKey, newSt, curSt)
		}
		if ulKey == scannedKey {
			// The uidlist has the version it had before the scan (or is
			// still missing): no one numbered a file since, the scan
			// stands. Its map, from which plan took the files it
			// matched, is made whole again. (Dovecot rewrites the file
			// by rename or appends to it: either changes the version.)
			for i, fe := range p.cur {
				if fe.name != "" {
					files[f.s.msgs[i].key()] = fe
				}
			}
		} else if files, err = f.stableScan(false); err != nil {
			dl.release()
			return false, err
		}
		if freshBuild && ul != nil {
			f.s.recentFrom = ul.nextUID
		}
		created := ul == nil
		if created {
			ul = f.recreateUIDList()
			if freshBuild {
				f.s.recentFrom = 1
			}
		}
		f.ul, f.ulIdx = ul, nil
		p = f.plan(files, ul)
		if len(p.fresh) > 0 || p.records || created {
			f.number(ul, &p, files)
			ul.dedupe()
			written, err := dl.replace(ul.format())
			if err != nil {
				f.ul, f.ulIdx = nil, nil
				return false, err
			}
			ulKey = written
			f.ulKey = ulKey
			changed = true
		} else {
			dl.release()
		}
	} else if freshBuild && ul != nil {
		f.s.recentFrom = ul.nextUID
	}
	if ul != nil {
		if f.s.uidValidity != ul.uidValidity {
			f.s.uidValidity = ul.uidValidity
			changed = true
		}
		if ul.nextUID > f.s.uidNext {
			f.s.uidNext = ul.nextUID
			changed = true
		}
	}
	if f.apply(p, ul) {
		changed = true
	}
	if f.s.uidlistKey != ulKey {
		f.s.uidlistKey = ulKey
		changed = true
	}
	// Record the directories' versions from before the scan, when old
	// enough to trust.
	now := nanotime()
	rec := func(k fileKey) int64 {
		if settled(k.mtime, now) {
			return k.mtime
		}
		return 0
	}
	nm, cm := rec(newSt), rec(curSt)
	if f.moved > 0 {
		// Our moves changed both; the next sync looks again.
		nm, cm = 0, 0
	}
	if nm != f.s.newMtime || cm != f.s.curMtime {
		f.s.newMtime, f.s.curMtime = nm, cm
		changed = true
	}
	if changed {
		f.version++
	}
	return changed, nil
}

// testHookScanned runs in rescan between the scan and the uidlist's lock
// (tests: another program numbering files meanwhile).
var testHookScanned func(dir string)

// recreateUIDList makes a uidlist when there is none: from the state when
// it knows UIDs (so that no UID changes), else a new UIDVALIDITY.
func (f *folder) recreateUIDList() *uidlist {
	if f.s.uidValidity != 0 {
		ul := newUIDList(f.s.uidValidity)
		ul.nextUID = max(f.s.uidNext, 1)
		return ul
	}
	return newUIDList(f.acc.nextUIDValidity())
}

// number gives UIDs to the plan's fresh files (in delivery order), adds
// records for state messages the uidlist lacks, and drops records below
// the state's UIDNEXT that name neither a message of the state nor a file
// of this scan (made under the uidlist's lock: they are expunged). The
// uidlist's next UID never goes below the state's.
func (f *folder) number(ul *uidlist, p *plan, files map[string]fileEntry) {
	if ul.nextUID < f.s.uidNext {
		ul.nextUID = f.s.uidNext
	}
	idx := ul.index()
	var extra []uidRec
	for i := range f.s.msgs {
		if p.cur[i].name == "" {
			continue
		}
		key := f.s.msgs[i].key()
		if _, ok := idx[key]; !ok {
			extra = append(extra, uidRec{uid: f.s.msgs[i].uid, name: key})
		}
	}
	order := deliveryOrder(p.fresh)
	drop := map[string]bool{}
	fresh := make([]fileEntry, 0, len(order))
	for _, i := range order {
		fe := p.fresh[i]
		key := baseKey(fe.name)
		if _, ok := idx[key]; ok {
			drop[key] = true
		}
		uid := ul.nextUID
		ul.nextUID++
		extra = append(extra, uidRec{uid: uid, name: key})
		p.add = append(p.add, uid)
		p.addFile = append(p.addFile, fe)
		fresh = append(fresh, fe)
	}
	p.fresh, p.oldUID = nil, nil
	out := ul.recs[:0:0]
	for _, r := range ul.recs {
		if drop[r.name] {
			continue
		}
		if _, ok := files[r.name]; !ok && r.uid < f.s.uidNext && f.find(r.uid) < 0 {
			continue
		}
		out = append(out, r)
	}
	out = append(out, extra...)
	sort.Slice(out, func(a, b int) bool { return out[a].uid < out[b].uid })
	ul.recs = out
	f.ulIdx = nil
}

// deliveryOrder returns the indices of files in the order their names'
// delivery times give (maildir.DeliveryOrder), each name parsed once.
func deliveryOrder(files []fileEntry) []int {
	type item struct {
		sec, usec int64
		key       string
		i         int
	}
	items := make([]item, len(files))
	for i, fe := range files {
		k := baseKey(fe.name)
		sec, usec := maildir.DeliveryStamp(k)
		items[i] = item{sec, usec, k, i}
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := cmp.Compare(a.sec, b.sec); c != 0 {
			return c
		}
		if c := cmp.Compare(a.usec, b.usec); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	order := make([]int, len(items))
	for i, it := range items {
		order[i] = it.i
	}
	return order
}

// find returns the index of uid in the state, or -1.
func (f *folder) find(uid uint32) int {
	i, ok := slices.BinarySearchFunc(f.s.msgs, uid, func(m msg, u uint32) int {
		switch {
		case m.uid < u:
			return -1
		case m.uid > u:
			return 1
		}
		return 0
	})
	if !ok {
		return -1
	}
	return i
}

// apply merges a plan into the state: flag changes, new messages,
// expunges. It reports whether anything changed.
func (f *folder) apply(p plan, ul *uidlist) bool {
	var ms uint64
	modseq := func() uint64 {
		if ms == 0 {
			f.s.highest++
			ms = f.s.highest
		}
		return ms
	}
	changed := false
	var gone []int
	for i := range f.s.msgs {
		m := &f.s.msgs[i]
		fe := p.cur[i]
		if fe.name == "" {
			// Not seen: gone, unless its last name is still there (a
			// rename during readdir) and the file is not another UID's now.
			if _, ok := p.unmatched[m.key()]; ok {
				gone = append(gone, i)
				continue
			}
			sub := "cur/"
			if m.inNew {
				sub = "new/"
			}
			if _, err := os.Lstat(f.path(sub + m.name)); err == nil {
				continue
			}
			gone = append(gone, i)
			continue
		}
		if fe.name != m.name || fe.inNew != m.inNew {
			old := m.mask
			m.setName(fe.name)
			m.inNew = fe.inNew
			if m.mask != old {
				m.modseq = modseq()
			}
			changed = true
		}
	}
	infos := f.newInfos(p.add, p.addFile, ul)
	added := make([]msg, 0, len(p.add))
	for i, uid := range p.add {
		if in := infos[i]; in.ok {
			m := msg{uid: uid, modseq: modseq(), size: in.vsize, date: in.date, inNew: p.addFile[i].inNew}
			m.setName(p.addFile[i].name)
			added = append(added, m)
		}
	}
	if len(gone) > 0 {
		f.remove(gone)
		changed = true
	}
	if len(added) > 0 {
		// Every UID added is at or above the state's UIDNEXT, above all
		// the state holds.
		slices.SortFunc(added, func(a, b msg) int { return cmp.Compare(a.uid, b.uid) })
		if len(f.s.msgs) == 0 {
			f.s.msgs = added
		} else {
			f.s.msgs = append(f.s.msgs, added...)
		}
		changed = true
	}
	return changed
}

func (f *folder) trimExpunged() {
	if n := len(f.s.expunged) - maxExpunges; n > 0 {
		f.s.vanishedFrom = f.s.expunged[n-1].modseq
		f.s.expunged = append(f.s.expunged[:0:0], f.s.expunged[n:]...)
	}
}

// newInfo is what a message first seen needs from its file.
type newInfo struct {
	ok    bool // a regular file, still there
	vsize int64
	date  int64
}

// openCurNew opens cur/ and new/ as directory descriptors, -1 for one
// that could not be opened; the error tells of a failure other than a
// missing directory (a folder another program made may lack new/). Close
// what it returns with closeDirs, error or not.
func (f *folder) openCurNew() ([2]int, error) {
	dfd := [2]int{-1, -1}
	var first error
	for k, sub := range []string{"cur", "new"} {
		fd, err := unix.Open(f.path(sub), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			dfd[k] = fd
		} else if first == nil && !errors.Is(err, unix.ENOENT) {
			first = fmt.Errorf("mailstore: %s: %w", f.path(sub), err)
		}
	}
	return dfd, first
}

// closeDirs closes what openCurNew opened.
func closeDirs(dfd [2]int) {
	for _, fd := range dfd {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// newInfos finds the size with CRLF line ends of messages first seen:
// from ,W= in the name, else the uidlist's W extension, else by reading
// the file. A file readdir said is regular and whose size is so known is
// not touched: its internal date (the modification time) is read when
// asked (dateUnknown, View.InternalDates). The others are stat'ed (the
// date, and whether it is a regular file still there), relative to
// directory descriptors, without following symlinks, in chunks of 256 on
// up to 32 goroutines when there are many: with a cold page cache each
// inode waits on the disk, and many requests in flight let the disk serve
// them together.
func (f *folder) newInfos(uids []uint32, files []fileEntry, ul *uidlist) []newInfo {
	infos := make([]newInfo, len(uids))
	var stat []int // the files to stat
	for i, fe := range files {
		_, vsize := maildir.NameSizes(fe.name)
		if vsize < 0 && ul != nil {
			vsize = ul.vsize(uids[i])
		}
		if vsize >= 0 && fe.regular {
			infos[i] = newInfo{ok: true, vsize: vsize, date: dateUnknown}
			continue
		}
		stat = append(stat, i)
	}
	work := func(lo, hi int) {
		// A directory that cannot be opened leaves its files unread
		// (not ok), as a file gone meanwhile.
		dfd, _ := f.openCurNew()
		defer closeDirs(dfd)
		var st unix.Stat_t
		for _, i := range stat[lo:hi] {
			fe := files[i]
			d := dfd[0]
			if fe.inNew {
				d = dfd[1]
			}
			if d < 0 || unix.Fstatat(d, fe.name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
				continue
			}
			_, vsize := maildir.NameSizes(fe.name)
			if vsize < 0 && ul != nil {
				vsize = ul.vsize(uids[i])
			}
			if vsize < 0 {
				if vsize = fileCRLFSizeAt(d, fe.name); vsize < 0 {
					continue
				}
			}
			infos[i] = newInfo{ok: true, vsize: vsize, date: mtimeDate(&st)}
		}
	}
	const chunk = 256
	if len(stat) <= chunk {
		work(0, len(stat))
		return infos
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for lo := 0; lo < len(stat); lo += chunk {
		hi := min(lo+chunk, len(stat))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			work(lo, hi)
			<-sem
		}()
	}
	wg.Wait()
	return infos
}

// mtimeDate is a message's internal date from its file's status: the
// modification time in Unix seconds, none before 1970 (dateUnknown is
// negative, and a cache with a negative date is damaged).
func mtimeDate(st *unix.Stat_t) int64 {
	return max(st.Mtim.Sec, 0)
}

// fileCRLFSizeAt is fileCRLFSize of name in the directory dfd.
func fileCRLFSizeAt(dfd int, name string) int64 {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	file := os.NewFile(uintptr(fd), name)
	defer file.Close()
	if fi, err := file.Stat(); err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	n, err := maildir.CRLFSize(file)
	if err != nil {
		return -1
	}
	return n
}

// fileCRLFSize reads a message file to count its size with CRLF line
// ends; -1 when it cannot be read or is not a regular file.
func fileCRLFSize(path string) int64 {
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	defer fd.Close()
	if fi, err := fd.Stat(); err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	n, err := maildir.CRLFSize(fd)
	if err != nil {
		return -1
	}
	return n
}

// writeCache writes the state as the cache file (flock held). A failure
// is logged: the next sync rebuilds what it must.
func (f *folder) writeCache() {
	if err := f.needNames(); err != nil || !f.loaded {
		// A rebuild (which wrote its own) or an error: nothing to write.
		return
	}
	if err := f.ensureTmp(); err != nil {
		f.acc.log.Warn("cache not written", "folder", f.name, "err", err)
		f.cacheKey = fileKey{}
		return
	}
	k, err := writeCacheFile(f.dir, formatCache(&f.s))
	if err != nil {
		f.acc.log.Warn("cache not written", "folder", f.name, "err", err)
		f.cacheKey = fileKey{}
		return
	}
	f.cacheKey = k
}

func (f *folder) ensureTmp() error {
	if fi, err := os.Lstat(f.path("tmp")); err == nil && fi.IsDir() {
		return nil
	}
	return maildir.Create(f.dir)
}

// notify wakes every watcher of the folder.
func (f *folder) notify() {
	f.acc.watchMu.Lock()
	defer f.acc.watchMu.Unlock()
	for c := range f.watchers {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// flagsOf returns the IMAP flags of a letter mask (shared slices).
func (f *folder) flagsOf(mask uint64) []string {
	f.checkFlagMemo()
	return f.memoFlags(mask)
}

// checkFlagMemo empties the memo when the keywords changed.
func (f *folder) checkFlagMemo() {
	if f.flagMemo == nil || f.memoKW != f.s.kw {
		f.flagMemo, f.memoKW = map[uint64][]string{}, f.s.kw
	}
}

// memoFlags is flagsOf with the memo checked already (checkFlagMemo): a
// snapshot of 10,000 messages compares the 26 keywords once, not 10,000
// times.
func (f *folder) memoFlags(mask uint64) []string {
	if fl, ok := f.flagMemo[mask]; ok {
		return fl
	}
	fl := lettersToFlags(maskLetters(mask), &f.s.kw)
	f.flagMemo[mask] = fl
	return fl
}

var systemLetters = []struct {
	c    byte
	flag string
}{{'R', FlagAnswered}, {'F', FlagFlagged}, {'T', FlagDeleted}, {'S', FlagSeen}, {'D', FlagDraft}}

func lettersToFlags(letters string, kw *keywords) []string {
	out := make([]string, 0, len(letters))
	for _, s := range systemLetters {
		if hasLetter(letters, s.c) {
			out = append(out, s.flag)
		}
	}
	for i := 0; i < len(letters); i++ {
		if c := letters[i]; c >= 'a' && c <= 'z' && kw[c-'a'] != "" {
			out = append(out, kw[c-'a'])
		}
	}
	return out
}
