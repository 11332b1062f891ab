package mailstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"letterbox/pkg/maildir"
)

// View is one session's open folder.
type View struct {
	f        *folder
	s        *Store
	readOnly bool
	closed   bool
	stops    []func() // of Watch

	// Guarded by f.mu:
	recent   []uidRange // UIDs this view saw first (\Recent)
	seenNext uint32     // UIDs below this were in a snapshot of this view
	snapVer  uint64
	snapRec  int // len(recent) when snap was built
	snap     Snapshot
}

type uidRange struct{ lo, hi uint32 }

// syncLocked syncs the folder for this view and notes its \Recent
// messages (f.mu held).
func (v *View) syncLocked() error {
	f := v.f
	lo, hi, err := f.sync(syncOpt{moveNew: !v.readOnly, claim: !v.readOnly})
	if err != nil {
		return err
	}
	if v.readOnly {
		// EXAMINE sees as \Recent what no session has taken, and takes
		// nothing.
		lo = max(v.seenNext, f.s.recentFrom)
		hi = 0
		if n := len(f.s.msgs); n > 0 {
			hi = f.s.msgs[n-1].uid
		}
	}
	if lo <= hi {
		if n := len(v.recent); n > 0 && v.recent[n-1].hi+1 >= lo {
			v.recent[n-1].hi = max(v.recent[n-1].hi, hi)
		} else {
			v.recent = append(v.recent, uidRange{lo, hi})
		}
	}
	if n := len(f.s.msgs); n > 0 && f.s.msgs[n-1].uid >= v.seenNext {
		v.seenNext = f.s.msgs[n-1].uid + 1
	}
	return nil
}

// Sync looks for changes (new messages, moved into cur/ and given UIDs;
// expunges; flag changes by anyone, each of which raises that message's
// MODSEQ) and returns the current state. The protocol compares it with
// what its client was told. Cheap when nothing changed.
func (v *View) Sync() (Snapshot, error) {
	if v.closed {
		return Snapshot{}, errors.New("mailstore: view closed")
	}
	f := v.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := v.syncLocked(); err != nil {
		return Snapshot{}, err
	}
	return v.snapshot(), nil
}

// snapshot returns the view's snapshot of the folder's current version
// (f.mu held): the folder's shared one, or a copy with \Recent set while
// this view has \Recent messages.
func (v *View) snapshot() Snapshot {
	f := v.f
	if v.snapVer == f.version && v.snapRec == len(v.recent) && v.snap.UIDValidity != 0 {
		return v.snap
	}
	if f.sharedVer != f.version || f.shared == nil {
		msgs := make([]Msg, len(f.s.msgs))
		prefaultSlice(msgs)
		f.checkFlagMemo()
		// Neighbours mostly carry the same letters: the memo's map is
		// asked only when they change.
		var lastMask uint64
		var lastFlags []string
		for i := range f.s.msgs {
			m := &f.s.msgs[i]
			if m.mask != lastMask || i == 0 {
				lastMask, lastFlags = m.mask, f.memoFlags(m.mask)
			}
			msgs[i] = Msg{UID: m.uid, Flags: lastFlags, ModSeq: m.modseq, Size: m.size, InternalDate: m.internalDate()}
		}
		f.shared, f.sharedVer = msgs, f.version
	}
	msgs := f.shared
	// Keep only ranges that still hold messages.
	live := v.recent[:0]
	copied := false
	for _, r := range v.recent {
		i := sort.Search(len(msgs), func(i int) bool { return msgs[i].UID >= r.lo })
		if i == len(msgs) || msgs[i].UID > r.hi {
			if r.hi < msgs0(msgs) {
				continue // all expunged
			}
			live = append(live, r)
			continue
		}
		live = append(live, r)
		if !copied {
			msgs = slices.Clone(msgs)
			copied = true
		}
		for ; i < len(msgs) && msgs[i].UID <= r.hi; i++ {
			msgs[i].Recent = true
		}
	}
	v.recent = live
	kw := f.s.kw.list()
	v.snap = Snapshot{Msgs: msgs, UIDValidity: f.s.uidValidity, UIDNext: f.s.uidNext,
		HighestModSeq: f.s.highest, Keywords: kw, NoNewKeywords: f.s.kw.free() < 0}
	v.snapVer, v.snapRec = f.version, len(v.recent)
	return v.snap
}

// msgs0 is the lowest UID of msgs (0: none); a \Recent range wholly
// below it can hold no message again.
func msgs0(msgs []Msg) uint32 {
	if len(msgs) == 0 {
		return ^uint32(0)
	}
	return msgs[0].UID
}

// internalDate is Msg.InternalDate: zero while not read (dateUnknown).
func (m *msg) internalDate() time.Time {
	if m.date == dateUnknown {
		return time.Time{}
	}
	return time.Unix(m.date, 0)
}

// datesWriteMin: InternalDates that read at least this many dates writes
// them to the cache at once; fewer wait for the cache's next write.
const datesWriteMin = 256

// InternalDates returns the internal dates (the files' modification
// times) of the messages with the given UIDs, in the order given, for the
// messages whose snapshot InternalDate is zero: a first SELECT leaves the
// dates of new mail to be read when a command needs them. A message
// expunged meanwhile (not in the folder, or its file gone for good) has
// the zero time. A file renamed meanwhile (taken into cur/, flags changed
// by another program) is found again after a look at the Maildir.
func (v *View) InternalDates(uids []uint32) ([]time.Time, error) {
	if v.closed {
		return nil, errors.New("mailstore: view closed")
	}
	f := v.f
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]time.Time, len(uids))
	todo := make([]int, 0, len(uids))
	for k, uid := range uids {
		if i := f.find(uid); i >= 0 {
			if m := &f.s.msgs[i]; m.date != dateUnknown {
				out[k] = time.Unix(m.date, 0)
			} else {
				todo = append(todo, k)
			}
		}
	}
	if len(todo) == 0 {
		return out, nil
	}
	if err := f.namesRead(); err != nil {
		return nil, err
	}
	read := 0
	for try := 0; len(todo) > 0; try++ {
		gone, err := f.readDates(uids, todo, out, &read)
		if err != nil {
			return nil, err
		}
		if len(gone) == 0 || try == 1 {
			break
		}
		// Not under the names we knew: renamed or expunged by someone
		// else. Read the Maildir again and look once more.
		if _, _, err := f.sync(syncOpt{}); err != nil {
			return nil, err
		}
		if err := f.namesRead(); err != nil {
			return nil, err
		}
		todo = gone
	}
	if read >= datesWriteMin && f.lock.lock() == nil {
		// Only over the version the state came from: another process's
		// newer cache is not ours to replace.
		if k, ok := statKey(f.path(cacheName)); ok && k == f.cacheKey {
			f.writeCache()
		}
		f.lock.unlock()
	}
	return out, nil
}

// readDates stats the files of uids[k] for k in todo, sets their dates in
// the state and in out, and returns the k whose file was not found (f.mu
// held, names read).
func (f *folder) readDates(uids []uint32, todo []int, out []time.Time, read *int) (gone []int, err error) {
	dfd, err := f.openCurNew()
	defer closeDirs(dfd)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	for _, k := range todo {
		i := f.find(uids[k])
		if i < 0 {
			continue // expunged
		}
		m := &f.s.msgs[i]
		if m.date != dateUnknown {
			out[k] = time.Unix(m.date, 0)
			continue
		}
		d := dfd[0]
		if m.inNew {
			d = dfd[1]
		}
		var err error = unix.ENOENT
		if d >= 0 {
			err = unix.Fstatat(d, m.name, &st, unix.AT_SYMLINK_NOFOLLOW)
		}
		switch {
		case err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG:
			m.date = mtimeDate(&st)
			out[k] = time.Unix(m.date, 0)
			*read++
		case err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
			gone = append(gone, k)
		default:
			return nil, fmt.Errorf("mailstore: date of UID %d: %w", uids[k], err)
		}
	}
	return gone, nil
}

// ReadOnly reports whether the view came from EXAMINE.
func (v *View) ReadOnly() bool { return v.readOnly }

// Open returns a message's content as stored (LF or CRLF line ends; the
// protocol sends CRLF). A message expunged meanwhile is ErrExpunged.
func (v *View) Open(uid uint32) (io.ReadSeekCloser, error) {
	f := v.f
	for try := 0; ; try++ {
		f.mu.Lock()
		if err := f.namesRead(); err != nil {
			f.mu.Unlock()
			return nil, err
		}
		i := f.find(uid)
		if i < 0 {
			f.mu.Unlock()
			return nil, fmt.Errorf("%w: UID %d", ErrExpunged, uid)
		}
		path := f.msgPath(&f.s.msgs[i])
		f.mu.Unlock()
		fd, err := maildir.OpenRegular(path)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, os.ErrNotExist) || try == 1 {
			return nil, fmt.Errorf("mailstore: open UID %d: %w", uid, err)
		}
		// Renamed (flags changed) or expunged by someone else: look again.
		f.mu.Lock()
		_, _, err = f.sync(syncOpt{})
		f.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// namesRead is needNames for a caller without the flock (f.mu held): the
// first body fetched from a folder read from its cache reads the names.
func (f *folder) namesRead() error {
	if f.s.names.len == 0 {
		return nil
	}
	if err := f.lock.lock(); err != nil {
		return err
	}
	defer f.lock.unlock()
	if _, _, err := f.syncLocked(syncOpt{}); err != nil {
		return err
	}
	return f.needNames()
}

func (f *folder) msgPath(m *msg) string {
	if m.inNew {
		return f.path("new/" + m.name)
	}
	return f.path("cur/" + m.name)
}

// Store changes flags of the given UIDs (missing UIDs are skipped). With
// unchangedSince > 0 (CONDSTORE UNCHANGEDSINCE) a message whose MODSEQ is
// higher is left alone and listed in failed. changed lists the messages
// whose flags changed, with their new MODSEQ.
func (v *View) Store(uids []uint32, op StoreOp, flags []string, unchangedSince uint64) (changed []Msg, failed []uint32, err error) {
	if v.readOnly {
		return nil, nil, ErrReadOnly
	}
	p, err := parseFlags(flags)
	if err != nil {
		return nil, nil, err
	}
	f := v.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lock.lock(); err != nil {
		return nil, nil, err
	}
	defer f.lock.unlock()
	if _, _, err := f.syncLocked(syncOpt{}); err != nil {
		return nil, nil, err
	}
	if err := f.needNames(); err != nil {
		return nil, nil, err
	}
	given, err := f.lettersLocked(p)
	if err != nil {
		return nil, nil, err
	}
	var ms uint64
	var retry []uint32
	done := map[uint32]bool{}
	for pass := 0; pass < 2; pass++ {
		for _, uid := range uids {
			i := f.find(uid)
			if i < 0 || done[uid] {
				continue
			}
			m := &f.s.msgs[i]
			if unchangedSince > 0 && m.modseq > unchangedSince {
				if pass == 0 {
					failed = append(failed, uid)
				}
				done[uid] = true
				continue
			}
			cur := m.letters()
			nl := combineLetters(op, cur, given)
			if nl == cur {
				continue
			}
			name := m.key() + ":2," + nl
			if err := os.Rename(f.msgPath(m), f.path("cur/"+name)); err != nil {
				if errors.Is(err, os.ErrNotExist) && pass == 0 {
					retry = append(retry, uid)
					continue
				}
				if errors.Is(err, os.ErrNotExist) {
					continue // expunged meanwhile
				}
				err = fmt.Errorf("mailstore: store flags of UID %d: %w", uid, err)
				f.storeDone(changed, ms)
				return changed, failed, err
			}
			if ms == 0 {
				f.s.highest++
				ms = f.s.highest
			}
			m.setName(name)
			m.inNew, m.modseq = false, ms
			done[uid] = true
			changed = append(changed, Msg{UID: uid, Flags: f.flagsOf(m.mask), ModSeq: ms, Size: m.size, InternalDate: m.internalDate()})
		}
		if len(retry) == 0 {
			break
		}
		// Renamed by someone else meanwhile: read the new names and
		// apply the change to them.
		uids, retry = retry, nil
		if _, _, err := f.syncLocked(syncOpt{}); err != nil {
			f.storeDone(changed, ms)
			return changed, failed, err
		}
	}
	f.storeDone(changed, ms)
	return changed, failed, nil
}

// storeDone records a STORE's changes (f.mu and flock held).
func (f *folder) storeDone(changed []Msg, ms uint64) {
	if len(changed) == 0 {
		return
	}
	f.version++
	f.writeCache()
	f.notify()
}

// Expunge removes the messages flagged \Deleted, only those among uids
// when uids is not nil (UID EXPUNGE), and returns the UIDs removed.
func (v *View) Expunge(uids []uint32) ([]uint32, error) {
	if v.readOnly {
		return nil, ErrReadOnly
	}
	f := v.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lock.lock(); err != nil {
		return nil, err
	}
	defer f.lock.unlock()
	if _, _, err := f.syncLocked(syncOpt{}); err != nil {
		return nil, err
	}
	if err := f.needNames(); err != nil {
		return nil, err
	}
	var want map[uint32]bool
	if uids != nil {
		want = make(map[uint32]bool, len(uids))
		for _, u := range uids {
			want[u] = true
		}
	}
	var removed []uint32
	var gone []int
	var firstErr error
	for pass := 0; pass < 2; pass++ {
		retry := false
		gone = gone[:0]
		for i := range f.s.msgs {
			m := &f.s.msgs[i]
			if !m.has('T') || (want != nil && !want[m.uid]) {
				continue
			}
			err := os.Remove(f.msgPath(m))
			if err == nil {
				gone = append(gone, i)
				removed = append(removed, m.uid)
				continue
			}
			if errors.Is(err, os.ErrNotExist) {
				retry = true // renamed by someone else: its flags may have changed
				continue
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("mailstore: expunge UID %d: %w", m.uid, err)
			}
		}
		if len(gone) > 0 {
			f.remove(gone)
		}
		if !retry || pass == 1 {
			break
		}
		if _, _, err := f.syncLocked(syncOpt{}); err != nil {
			return removed, err
		}
	}
	if len(removed) > 0 {
		f.version++
		f.writeCache()
		f.notify()
	}
	slices.Sort(removed)
	return removed, firstErr
}

// remove takes the messages at the given (ascending) indices out of the
// state as expunged, with one new MODSEQ, logged for VANISHED.
func (f *folder) remove(gone []int) {
	f.s.highest++
	x := f.s.highest
	for k := 0; k < len(gone); {
		j := k
		for j+1 < len(gone) && gone[j+1] == gone[j]+1 {
			j++
		}
		f.s.expunged = append(f.s.expunged, expRange{f.s.msgs[gone[k]].uid, f.s.msgs[gone[j]].uid, x})
		k = j + 1
	}
	f.trimExpunged()
	out := f.s.msgs[:0]
	g := 0
	for i := range f.s.msgs {
		if g < len(gone) && gone[g] == i {
			g++
			continue
		}
		out = append(out, f.s.msgs[i])
	}
	clear(f.s.msgs[len(out):])
	f.s.msgs = out
}

// source is a message to copy or move, as found in the state.
type source struct {
	uid     uint32
	path    string
	letters string
	size    int64 // on disk
	vsize   int64
}

// sources returns the messages of uids (those still there), current names.
func (v *View) sources(uids []uint32) ([]source, error) {
	f := v.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, _, err := f.sync(syncOpt{}); err != nil {
		return nil, err
	}
	if err := f.namesRead(); err != nil {
		return nil, err
	}
	out := make([]source, 0, len(uids))
	seen := map[uint32]bool{}
	for _, uid := range uids {
		i := f.find(uid)
		if i < 0 || seen[uid] {
			continue
		}
		seen[uid] = true
		m := &f.s.msgs[i]
		size, _ := maildir.NameSizes(m.name)
		if size < 0 {
			fi, err := os.Lstat(f.msgPath(m))
			if err != nil {
				continue
			}
			size = fi.Size()
		}
		out = append(out, source{uid: uid, path: f.msgPath(m), letters: m.letters(), size: size, vsize: m.size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].uid < out[j].uid })
	return out, nil
}

// translate maps source letters to the destination folder's (keywords are
// per folder).
func (v *View) translate(src []source, dst *folder) ([]string, error) {
	f := v.f
	f.mu.Lock()
	kw := f.s.kw
	f.mu.Unlock()
	out := make([]string, len(src))
	memo := map[string]string{}
	for i, s := range src {
		if l, ok := memo[s.letters]; ok {
			out[i] = l
			continue
		}
		var p parsedFlags
		var sys []byte
		for j := 0; j < len(s.letters); j++ {
			c := s.letters[j]
			switch {
			case c >= 'A' && c <= 'Z':
				sys = append(sys, c) // P and others too: they mean the same everywhere
			case c >= 'a' && c <= 'z' && kw[c-'a'] != "":
				p.keywords = append(p.keywords, kw[c-'a'])
			}
		}
		p.system = string(sys)
		l, err := dst.letters(p)
		if err != nil {
			return nil, err
		}
		memo[s.letters], out[i] = l, l
	}
	return out, nil
}

// Copy copies messages (with their flags) to another folder durably.
func (v *View) Copy(uids []uint32, dest string) (CopyResult, error) {
	return v.transfer(uids, dest, false)
}

// Move moves messages to another folder durably (RFC 6851): they are in
// dest before they leave this folder.
func (v *View) Move(uids []uint32, dest string) (CopyResult, error) {
	if v.readOnly {
		return CopyResult{}, ErrReadOnly
	}
	return v.transfer(uids, dest, true)
}

// transfer is Copy and Move. A copy is a hard link (Dovecot's way); a
// move a rename, so that the message is in one folder or the other at
// every instant; both under a new name, so that a message moved back
// never meets its old uidlist record. UIDs are given in dest once every
// file is there.
func (v *View) transfer(uids []uint32, dest string, move bool) (CopyResult, error) {
	dst, err := v.s.existing(dest)
	if err != nil {
		return CopyResult{}, err
	}
	if err := dst.ensureDirs(); err != nil {
		return CopyResult{}, err
	}
	src, err := v.sources(uids)
	if err != nil {
		return CopyResult{}, err
	}
	letters, err := v.translate(src, dst)
	if err != nil {
		return CopyResult{}, err
	}
	if testHookTransfer != nil {
		testHookTransfer()
	}
	var res CopyResult
	var keys, made []string
	var ferr error
	put := func(s source, l string) (maildir.Saved, error) {
		if move {
			return maildir.Move(s.path, dst.dir, s.size, s.vsize, maildir.SaveOptions{Flags: l, Host: v.s.opts.Hostname})
		}
		return maildir.Link(s.path, dst.dir, s.size, s.vsize, maildir.SaveOptions{Flags: l, Host: v.s.opts.Hostname})
	}
	for i, s := range src {
		saved, err := put(s, letters[i])
		if errors.Is(err, os.ErrNotExist) {
			// Renamed meanwhile (flags changed), or expunged: look again.
			again, err2 := v.sources([]uint32{s.uid})
			if err2 != nil {
				ferr = err2
				break
			}
			if len(again) == 1 {
				l, err2 := v.translate(again, dst)
				if err2 != nil {
					ferr = err2
					break
				}
				saved, err = put(again[0], l[0])
			}
			if len(again) == 0 || errors.Is(err, os.ErrNotExist) {
				if move {
					continue // someone else expunged it: nothing to move
				}
				ferr = fmt.Errorf("%w: UID %d", ErrExpunged, s.uid)
				break
			}
		}
		if err != nil {
			verb := "copy"
			if move {
				verb = "move"
			}
			ferr = fmt.Errorf("mailstore: %s to %s: %w", verb, dst.name, err)
			break
		}
		keys = append(keys, saved.Key)
		made = append(made, saved.Name)
		res.SrcUIDs = append(res.SrcUIDs, s.uid)
	}
	// One fsync of each directory makes the batch durable before the
	// destination numbers it (and before the answer).
	if len(made) > 0 {
		if err := maildir.SyncDir(dst.path("cur")); err != nil && ferr == nil {
			ferr = fmt.Errorf("mailstore: %s: %w", dst.name, err)
		}
		if move {
			synced := map[string]bool{}
			for _, s := range src {
				d := filepath.Dir(s.path)
				if synced[d] {
					continue
				}
				synced[d] = true
				if err := maildir.SyncDir(d); err != nil && ferr == nil {
					ferr = fmt.Errorf("mailstore: %s: %w", v.f.name, err)
				}
			}
		}
	}
	if ferr != nil && !move {
		// A COPY is all or nothing.
		for _, n := range made {
			os.Remove(dst.path("cur/" + n))
		}
		return CopyResult{}, ferr
	}
	if len(keys) > 0 {
		dstUIDs, uv, err := dst.assign(keys)
		if err != nil {
			return CopyResult{}, err
		}
		res.UIDValidity, res.DstUIDs = uv, dstUIDs
		dst.notify()
	} else {
		dst.mu.Lock()
		_, _, err := dst.sync(syncOpt{})
		res.UIDValidity = dst.s.uidValidity
		dst.mu.Unlock()
		if err != nil && ferr == nil {
			ferr = err
		}
	}
	if move {
		f := v.f
		f.mu.Lock()
		_, _, err := f.sync(syncOpt{})
		f.mu.Unlock()
		if err != nil && ferr == nil {
			ferr = err
		}
		f.notify()
	}
	return res, ferr
}

// testHookTransfer runs between finding a COPY's or MOVE's files and
// copying them (tests: another program removes one).
var testHookTransfer func()

// Vanished returns the UIDs expunged after modseq (QRESYNC VANISHED
// (EARLIER)); exact is false when the store no longer knows that far back,
// and then the protocol reports every UID it cannot find.
func (v *View) Vanished(modseq uint64) (uids []uint32, exact bool) {
	f := v.f
	f.mu.Lock()
	defer f.mu.Unlock()
	i := sort.Search(len(f.s.expunged), func(i int) bool { return f.s.expunged[i].modseq > modseq })
	for _, x := range f.s.expunged[i:] {
		for u := x.lo; u <= x.hi && u != 0; u++ {
			uids = append(uids, u)
		}
	}
	slices.Sort(uids)
	uids = slices.Compact(uids)
	return uids, modseq >= f.s.vanishedFrom
}

// Close ends the view.
func (v *View) Close() error {
	if v.closed {
		return nil
	}
	v.closed = true
	for _, stop := range v.stops {
		stop()
	}
	v.s.acc.release()
	return nil
}
