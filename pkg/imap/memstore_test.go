package imap

import (
	"bytes"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"letterbox/pkg/mailstore"
	"letterbox/pkg/privsep"
)

// memStore is an in-memory Store with mailstore's contract, for testing
// the protocol without the disk: one user's folders, shared by the views
// of every session opened on it, as one process's Store is.
type memStore struct {
	mu      sync.Mutex
	folders map[string]*memFolder
	subs    map[string]bool
	maxSize int64
	nextVal uint32
	views   int
	closed  bool
	onClose func() // tests: run by Close
	// lazyDates: snapshots carry no internal dates (mailstore's first
	// open of new mail); InternalDates gives them.
	lazyDates bool
}

type memFolder struct {
	name        string
	use         string
	uidValidity uint32
	uidNext     uint32
	modseq      uint64
	msgs        []*memMsg
	expunged    []memExpunge
	watchers    map[chan struct{}]bool
	seen        map[uint32]int // UID -> the view that saw it first (\Recent)
}

type memMsg struct {
	uid    uint32
	flags  []string
	modseq uint64
	data   []byte
	date   time.Time
	// fileGone: its file was removed by another program, which this
	// store has not noticed yet (InternalDates finds no date).
	fileGone bool
}

type memExpunge struct {
	uid    uint32
	modseq uint64
}

func newMemStore() *memStore {
	s := &memStore{folders: map[string]*memFolder{}, subs: map[string]bool{}, nextVal: 1000}
	s.folders["INBOX"] = s.newFolder("INBOX", "")
	return s
}

func (s *memStore) newFolder(name, use string) *memFolder {
	s.nextVal++
	return &memFolder{name: name, use: use, uidValidity: s.nextVal, uidNext: 1, modseq: 1,
		watchers: map[chan struct{}]bool{}, seen: map[uint32]int{}}
}

func crlfSize(b []byte) int64 {
	n := int64(len(b))
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			n++
		}
	}
	return n
}

func (f *memFolder) notify() {
	for c := range f.watchers {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

func memCheckName(name string) error {
	if name == "INBOX" {
		return nil
	}
	return checkName(name)
}

func (s *memStore) folder(name string) (*memFolder, error) {
	f := s.folders[name]
	if f == nil {
		return nil, mailstore.ErrNoMailbox
	}
	return f, nil
}

func (s *memStore) List() ([]mailstore.MailboxInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := map[string]bool{}
	for n := range s.folders {
		names[n] = true
	}
	parents := map[string]bool{}
	for n := range s.folders {
		for i := strings.IndexByte(n, '.'); i >= 0; {
			parents[n[:i]] = true
			j := strings.IndexByte(n[i+1:], '.')
			if j < 0 {
				break
			}
			i += j + 1
		}
	}
	var out []mailstore.MailboxInfo
	add := func(n string) {
		mi := mailstore.MailboxInfo{Name: n, Subscribed: s.subs[n], HasChildren: parents[n], NonExistent: !names[n]}
		if f := s.folders[n]; f != nil {
			mi.SpecialUse = f.use
		}
		out = append(out, mi)
	}
	all := map[string]bool{}
	for n := range names {
		all[n] = true
	}
	for n := range parents {
		all[n] = true
	}
	for n := range s.subs {
		all[n] = true
	}
	var sorted []string
	for n := range all {
		if n != "INBOX" {
			sorted = append(sorted, n)
		}
	}
	sort.Strings(sorted)
	add("INBOX")
	for _, n := range sorted {
		add(n)
	}
	return out, nil
}

func (s *memStore) EnsureSpecialUse() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range []struct{ name, use string }{{"Sent", mailstore.UseSent}, {"Drafts", mailstore.UseDrafts},
		{"Trash", mailstore.UseTrash}, {"Junk", mailstore.UseJunk}, {"Archive", mailstore.UseArchive}} {
		have := false
		for _, f := range s.folders {
			if f.use == u.use {
				have = true
			}
		}
		if !have && s.folders[u.name] == nil {
			s.folders[u.name] = s.newFolder(u.name, u.use)
			s.subs[u.name] = true
		}
	}
	return nil
}

func (s *memStore) Create(name, use string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := memCheckName(name); err != nil {
		return err
	}
	if s.folders[name] != nil {
		return mailstore.ErrExists
	}
	parts := strings.Split(name, ".")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], ".")
		if s.folders[p] == nil {
			s.folders[p] = s.newFolder(p, "")
		}
	}
	s.folders[name] = s.newFolder(name, use)
	return nil
}

func (s *memStore) Delete(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "INBOX" {
		return mailstore.ErrInbox
	}
	f, err := s.folder(name)
	if err != nil {
		return err
	}
	f.msgs = nil
	f.notify()
	delete(s.folders, name)
	return nil
}

func (s *memStore) Rename(oldName, newName string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := memCheckName(newName); err != nil {
		return err
	}
	f, err := s.folder(oldName)
	if err != nil {
		return err
	}
	if s.folders[newName] != nil {
		return mailstore.ErrExists
	}
	if oldName == "INBOX" {
		nf := s.newFolder(newName, "")
		nf.msgs, f.msgs = f.msgs, nil
		nf.uidNext = f.uidNext
		s.folders[newName] = nf
		f.notify()
		return nil
	}
	for n, g := range s.folders {
		if n == oldName || strings.HasPrefix(n, oldName+".") {
			delete(s.folders, n)
			nn := newName + n[len(oldName):]
			g.name = nn
			s.folders[nn] = g
		}
	}
	return nil
}

func (s *memStore) SetSubscribed(name string, on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.subs[name] = true
	} else {
		delete(s.subs, name)
	}
	return nil
}

func (s *memStore) Status(name string) (mailstore.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.folder(name)
	if err != nil {
		return mailstore.Status{}, err
	}
	st := mailstore.Status{UIDNext: f.uidNext, UIDValidity: f.uidValidity, HighestModSeq: f.modseq}
	for _, m := range f.msgs {
		st.Messages++
		if !hasFlag(m.flags, mailstore.FlagSeen) {
			st.Unseen++
		}
		if hasFlag(m.flags, mailstore.FlagDeleted) {
			st.Deleted++
		}
		if _, ok := f.seen[m.uid]; !ok {
			st.Recent++
		}
		st.Size += crlfSize(m.data)
	}
	return st, nil
}

func (s *memStore) Append(name string, flags []string, date time.Time, r io.Reader) (mailstore.AppendResult, error) {
	var buf bytes.Buffer
	limit := s.maxSize
	if limit <= 0 {
		limit = 1 << 40
	}
	n, err := io.Copy(&buf, io.LimitReader(r, limit+1))
	if err != nil {
		return mailstore.AppendResult{}, err
	}
	if n > limit {
		return mailstore.AppendResult{}, mailstore.ErrTooBig
	}
	return s.add(name, flags, date, buf.Bytes())
}

func (s *memStore) add(name string, flags []string, date time.Time, data []byte) (mailstore.AppendResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.folder(name)
	if err != nil {
		return mailstore.AppendResult{}, err
	}
	if date.IsZero() {
		date = time.Now()
	}
	f.modseq++
	m := &memMsg{uid: f.uidNext, flags: append([]string(nil), flags...), modseq: f.modseq, data: data, date: date}
	f.uidNext++
	f.msgs = append(f.msgs, m)
	f.notify()
	return mailstore.AppendResult{UIDValidity: f.uidValidity, UID: m.uid}, nil
}

func (s *memStore) Select(name string, readOnly bool) (View, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.folder(name)
	if err != nil {
		return nil, err
	}
	s.views++
	return &memView{s: s, f: f, readOnly: readOnly, id: s.views}, nil
}

func (s *memStore) Close() error {
	if s.onClose != nil {
		s.onClose()
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

type memView struct {
	s        *memStore
	f        *memFolder
	readOnly bool
	id       int
	closed   bool
}

func (v *memView) msg(m *memMsg) mailstore.Msg {
	first, ok := v.f.seen[m.uid]
	if !ok && !v.readOnly {
		v.f.seen[m.uid] = v.id
		first = v.id
	}
	date := m.date
	if v.s.lazyDates {
		date = time.Time{}
	}
	return mailstore.Msg{UID: m.uid, Flags: append([]string(nil), m.flags...), Recent: first == v.id,
		ModSeq: m.modseq, Size: crlfSize(m.data), InternalDate: date}
}

func (v *memView) Sync() (mailstore.Snapshot, error) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	if v.s.folders[v.f.name] != v.f {
		return mailstore.Snapshot{}, mailstore.ErrNoMailbox
	}
	snap := mailstore.Snapshot{UIDValidity: v.f.uidValidity, UIDNext: v.f.uidNext, HighestModSeq: v.f.modseq}
	for _, m := range v.f.msgs {
		snap.Msgs = append(snap.Msgs, v.msg(m))
	}
	return snap, nil
}

func (v *memView) ReadOnly() bool { return v.readOnly }

type nopSeekCloser struct{ *bytes.Reader }

func (nopSeekCloser) Close() error { return nil }

func (v *memView) find(uid uint32) *memMsg {
	for _, m := range v.f.msgs {
		if m.uid == uid {
			return m
		}
	}
	return nil
}

func (v *memView) InternalDates(uids []uint32) ([]time.Time, error) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	out := make([]time.Time, len(uids))
	for k, u := range uids {
		if m := v.find(u); m != nil && !m.fileGone {
			out[k] = m.date
		}
	}
	return out, nil
}

func (v *memView) Open(uid uint32) (io.ReadSeekCloser, error) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	m := v.find(uid)
	if m == nil {
		return nil, mailstore.ErrExpunged
	}
	return nopSeekCloser{bytes.NewReader(m.data)}, nil
}

func (v *memView) Store(uids []uint32, op mailstore.StoreOp, flags []string, unchangedSince uint64) ([]mailstore.Msg, []uint32, error) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	if v.readOnly {
		return nil, nil, mailstore.ErrReadOnly
	}
	var changed []mailstore.Msg
	var failed []uint32
	for _, u := range uids {
		m := v.find(u)
		if m == nil {
			continue
		}
		if unchangedSince > 0 && m.modseq > unchangedSince {
			failed = append(failed, u)
			continue
		}
		var nf []string
		switch op {
		case mailstore.StoreReplace:
			nf = append([]string(nil), flags...)
		case mailstore.StoreAdd:
			nf = append([]string(nil), m.flags...)
			for _, f := range flags {
				if !hasFlag(nf, f) {
					nf = append(nf, f)
				}
			}
		case mailstore.StoreRemove:
			for _, f := range m.flags {
				if !hasFlag(flags, f) {
					nf = append(nf, f)
				}
			}
		}
		sort.Strings(nf)
		old := append([]string(nil), m.flags...)
		sort.Strings(old)
		if strings.Join(old, " ") == strings.Join(nf, " ") {
			continue
		}
		v.f.modseq++
		m.flags, m.modseq = nf, v.f.modseq
		changed = append(changed, v.msg(m))
	}
	if len(changed) > 0 {
		v.f.notify()
	}
	return changed, failed, nil
}

func (v *memView) Expunge(uids []uint32) ([]uint32, error) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	if v.readOnly {
		return nil, mailstore.ErrReadOnly
	}
	var set numSet
	if uids != nil {
		set = setOf(sortedCopy(uids))
	}
	var removed []uint32
	keep := v.f.msgs[:0]
	for _, m := range v.f.msgs {
		if hasFlag(m.flags, mailstore.FlagDeleted) && (uids == nil || set.contains(m.uid)) {
			removed = append(removed, m.uid)
			v.f.modseq++
			v.f.expunged = append(v.f.expunged, memExpunge{m.uid, v.f.modseq})
			continue
		}
		keep = append(keep, m)
	}
	v.f.msgs = keep
	if len(removed) > 0 {
		v.f.notify()
	}
	return removed, nil
}

func (v *memView) copy(uids []uint32, dest string, move bool) (mailstore.CopyResult, error) {
	v.s.mu.Lock()
	d, err := v.s.folder(dest)
	if err != nil {
		v.s.mu.Unlock()
		return mailstore.CopyResult{}, err
	}
	if move && v.readOnly {
		v.s.mu.Unlock()
		return mailstore.CopyResult{}, mailstore.ErrReadOnly
	}
	res := mailstore.CopyResult{UIDValidity: d.uidValidity}
	var moved []uint32
	for _, u := range uids {
		m := v.find(u)
		if m == nil {
			continue
		}
		d.modseq++
		n := &memMsg{uid: d.uidNext, flags: append([]string(nil), m.flags...), modseq: d.modseq, data: m.data, date: m.date}
		d.uidNext++
		d.msgs = append(d.msgs, n)
		res.SrcUIDs = append(res.SrcUIDs, u)
		res.DstUIDs = append(res.DstUIDs, n.uid)
		moved = append(moved, u)
	}
	d.notify()
	if move {
		set := setOf(sortedCopy(moved))
		keep := v.f.msgs[:0]
		for _, m := range v.f.msgs {
			if set.contains(m.uid) {
				v.f.modseq++
				v.f.expunged = append(v.f.expunged, memExpunge{m.uid, v.f.modseq})
				continue
			}
			keep = append(keep, m)
		}
		v.f.msgs = keep
		v.f.notify()
	}
	v.s.mu.Unlock()
	return res, nil
}

func (v *memView) Copy(uids []uint32, dest string) (mailstore.CopyResult, error) {
	return v.copy(uids, dest, false)
}

func (v *memView) Move(uids []uint32, dest string) (mailstore.CopyResult, error) {
	return v.copy(uids, dest, true)
}

func (v *memView) Vanished(modseq uint64) ([]uint32, bool) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	var out []uint32
	for _, e := range v.f.expunged {
		if e.modseq > modseq {
			out = append(out, e.uid)
		}
	}
	return out, true
}

func (v *memView) Watch() (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	v.s.mu.Lock()
	v.f.watchers[c] = true
	v.s.mu.Unlock()
	return c, func() {
		v.s.mu.Lock()
		delete(v.f.watchers, c)
		v.s.mu.Unlock()
	}
}

func (v *memView) Close() error {
	v.closed = true
	return nil
}

// memBackend authenticates fixed users, each with one memStore.
type memBackend struct {
	mu     sync.Mutex
	users  map[string]string // name -> password
	stores map[string]*memStore
}

func newMemBackend() *memBackend {
	return &memBackend{users: map[string]string{"alice@example.test": "alice pw", "bob@example.test": "bobpw"},
		stores: map[string]*memStore{}}
}

func (b *memBackend) Login(user, password string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for name, pw := range b.users {
		if strings.EqualFold(name, user) && pw == password {
			return name, nil
		}
	}
	return "", ErrAuth
}

func (b *memBackend) store(name string) *memStore {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stores[name]
	if s == nil {
		s = newMemStore()
		s.maxSize = 1 << 20
		b.stores[name] = s
	}
	return s
}

func (b *memBackend) Locate(name string) (Location, error) {
	return Location{User: name, Root: "mem:" + name, Owner: privsep.Self()}, nil
}

func (b *memBackend) Open(loc Location) (Store, error) { return b.store(loc.User), nil }
