package mailstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	gomaildir "github.com/emersion/go-maildir"

	"letterbox/pkg/maildir"
)

// An account is one Maildir root as this process shares it between
// sessions: its folders' states, and their watchers.
type account struct {
	root         string
	host         string // Options.Hostname
	log          *slog.Logger
	pollInterval time.Duration
	refs         int // Stores and Views; under accounts.mu

	mu      sync.Mutex
	folders map[string]*folder // by canonical name

	uvMu sync.Mutex // nextUIDValidity: one at a time in this process

	watchMu sync.Mutex // every folder's watchers
}

var accounts = struct {
	sync.Mutex
	m map[string]*account
}{m: map[string]*account{}}

// deletedPrefix names a folder being deleted, moved under the root's tmp/
// first so that the deletion is atomic to readers.
const deletedPrefix = "letterbox-deleted."

// Open opens (creating if needed) the Maildir at opts.Root.
func Open(opts Options) (*Store, error) {
	if opts.Root == "" {
		return nil, errors.New("mailstore: no Maildir")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("mailstore: %w", err)
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		if err := maildir.Create(root); err != nil {
			return nil, fmt.Errorf("mailstore: %w", err)
		}
	} else if err := (&folder{dir: root}).ensureDirs(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	accounts.Lock()
	defer accounts.Unlock()
	a := accounts.m[root]
	if a == nil {
		a = &account{root: root, host: opts.Hostname, log: log, pollInterval: opts.PollInterval, folders: map[string]*folder{}}
		accounts.m[root] = a
		a.clean()
	}
	a.refs++
	return &Store{acc: a, opts: opts}, nil
}

// clean removes what crashes leave at the root: tmp/ files older than the
// Maildir spec's 36 hours (go-maildir's Clean) and folders caught in the
// middle of Delete.
func (a *account) clean() {
	if err := gomaildir.Dir(a.root).Clean(); err != nil {
		a.log.Debug("tmp/ not cleaned", "err", err)
	}
	d, err := os.Open(filepath.Join(a.root, "tmp"))
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, n := range names {
		if strings.HasPrefix(n, deletedPrefix) {
			os.RemoveAll(filepath.Join(a.root, "tmp", n))
		}
	}
}

func (a *account) release() {
	accounts.Lock()
	defer accounts.Unlock()
	a.refs--
	if a.refs > 0 {
		return
	}
	if accounts.m[a.root] == a {
		delete(accounts.m, a.root)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range a.folders {
		f.mu.Lock()
		f.closed = true
		f.lock.close()
		f.mu.Unlock()
	}
	a.folders = nil
}

// closeMoveWait bounds how long Close waits for new/ to be taken into
// cur/; what is left then is the next session's.
const closeMoveWait = 10 * time.Second

// Close releases the store's watches and caches. It first lets the
// folders' background moves from new/ into cur/ finish (at most
// closeMoveWait): a session that ends, as an inetd-started imapd's process
// does, would otherwise leave most of a large new/ to the sessions after
// it, each paying a rescan of the whole folder for its share, where
// Dovecot's first session takes all of new/ at once. The caller has
// answered its client by then (imapd closes the connection first).
func (s *Store) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.acc.waitMoves(closeMoveWait)
	s.acc.release()
	return nil
}

// waitMoves waits for the folders' background moves to stop, at most d.
func (a *account) waitMoves(d time.Duration) {
	a.mu.Lock()
	folders := make([]*folder, 0, len(a.folders))
	for _, f := range a.folders {
		folders = append(folders, f)
	}
	a.mu.Unlock()
	// f.mu is taken without a.mu held: code holding f.mu takes a.mu.
	var running []chan struct{}
	for _, f := range folders {
		f.mu.Lock()
		if f.moving {
			f.draining = true
			running = append(running, f.moveDone)
		}
		f.mu.Unlock()
	}
	if len(running) == 0 {
		return
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for _, c := range running {
		select {
		case <-c:
		case <-deadline.C:
			return
		}
	}
}

// folder returns the shared state of a canonical name.
func (a *account) folder(name string) *folder {
	a.mu.Lock()
	defer a.mu.Unlock()
	if f := a.folders[name]; f != nil {
		return f
	}
	dir := a.root
	if name != "INBOX" {
		dir = filepath.Join(a.root, dirName(name))
	}
	f := &folder{acc: a, name: name, dir: dir, lock: dirLock{dir: dir, host: a.host}}
	a.folders[name] = f
	return f
}

// forget drops the states of name and its children (deleted or renamed).
func (a *account) forget(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for n, f := range a.folders {
		if n == name || strings.HasPrefix(n, name+".") {
			f.mu.Lock()
			f.closed = true
			f.lock.close()
			f.mu.Unlock()
			delete(a.folders, n)
		}
	}
}

// rootLocked runs fn with the root's locks (INBOX's mutex and flock), which
// guard the subscriptions and special-use files and the folder list.
func (a *account) rootLocked(fn func() error) error {
	f := a.folder("INBOX")
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lock.lock(); err != nil {
		return err
	}
	defer f.lock.unlock()
	return fn()
}

// folderNames lists the existing folders (canonical names, INBOX aside),
// sorted.
func (a *account) folderNames() ([]string, error) {
	d, err := os.Open(a.root)
	if err != nil {
		return nil, fmt.Errorf("mailstore: %w", err)
	}
	defer d.Close()
	ents, err := d.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("mailstore: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() { // a symlink is not followed (issue 15)
			continue
		}
		if n, ok := nameOfDir(e.Name()); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (a *account) subscriptions() []string {
	b, err := readSmall(filepath.Join(a.root, subscriptionsName))
	if err != nil {
		return nil
	}
	return parseSubscriptions(string(b))
}

// List returns every mailbox (and subscribed names that no longer exist,
// with NonExistent set), INBOX first, the rest sorted by name.
func (s *Store) List() ([]MailboxInfo, error) {
	a := s.acc
	names, err := a.folderNames()
	if err != nil {
		return nil, err
	}
	uses := useOf(names, a.readSpecialUse())
	subs := map[string]bool{}
	for _, n := range a.subscriptions() {
		subs[n] = true
	}
	infos := map[string]*MailboxInfo{"INBOX": {Name: "INBOX"}}
	for _, n := range names {
		infos[n] = &MailboxInfo{Name: n, SpecialUse: uses[n]}
	}
	// Parents that are not folders themselves.
	for _, n := range names {
		for i := strings.LastIndexByte(n, '.'); i > 0; i = strings.LastIndexByte(n[:i], '.') {
			p := n[:i]
			if infos[p] == nil {
				infos[p] = &MailboxInfo{Name: p, NonExistent: true}
			}
			infos[p].HasChildren = true
		}
	}
	for n := range subs {
		if infos[n] == nil {
			infos[n] = &MailboxInfo{Name: n, NonExistent: true}
		}
		infos[n].Subscribed = true
	}
	out := make([]MailboxInfo, 0, len(infos))
	for _, i := range infos {
		out = append(out, *i)
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Name == "INBOX") != (out[j].Name == "INBOX") {
			return out[i].Name == "INBOX"
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// EnsureSpecialUse creates Sent, Drafts, Trash, Junk and Archive (subscribed,
// with their special-use attributes) when no folder has that use yet.
func (s *Store) EnsureSpecialUse() error {
	a := s.acc
	names, err := a.folderNames()
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, u := range useOf(names, a.readSpecialUse()) {
		have[u] = true
	}
	var missing []string
	for _, u := range specialUses {
		if !have[u] {
			missing = append(missing, u)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return a.rootLocked(func() error {
		// The folders are made side by side, each as durably as by
		// CREATE (its directories, uidlist and cache fsynced before it
		// counts): a first login made them one after another, five
		// rounds of waits for the disk, and then wrote the special-use
		// and subscriptions files once per folder.
		errs := make([]error, len(missing))
		var wg sync.WaitGroup
		for i, u := range missing {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = a.mkFolder(defaultFolder[u])
			}()
		}
		wg.Wait()
		uses := a.readSpecialUse()
		var made, subscribe []string
		var first error
		for i, u := range missing {
			name := defaultFolder[u]
			switch {
			case errs[i] == nil:
				uses[name] = u
				made = append(made, name)
			case errors.Is(errs[i], ErrExists):
				// There already, as CREATE left it (its attribute, if
				// any, is the file's).
			default:
				if first == nil {
					first = errs[i]
				}
				continue
			}
			subscribe = append(subscribe, name)
		}
		if len(made) > 0 {
			if err := a.writeSpecialUse(uses); err != nil {
				return err
			}
		}
		if err := a.subscribeLocked(subscribe, true); err != nil {
			return err
		}
		return first
	})
}

// Create makes a folder (and its missing parents) with an optional
// special-use attribute (CREATE-SPECIAL-USE).
func (s *Store) Create(name, specialUse string) error {
	name, err := canonName(name)
	if err != nil {
		return err
	}
	if name == "INBOX" {
		return fmt.Errorf("%w: INBOX", ErrExists)
	}
	if specialUse != "" {
		u, ok := canonUse(specialUse)
		if !ok {
			return fmt.Errorf("%w: %s", ErrSpecialUse, specialUse)
		}
		specialUse = u
	}
	a := s.acc
	return a.rootLocked(func() error {
		parts := strings.Split(name, ".")
		for i := 1; i < len(parts); i++ {
			p := strings.Join(parts[:i], ".")
			if p == "INBOX" {
				continue
			}
			if err := a.mkFolder(p); err != nil && !errors.Is(err, ErrExists) {
				return err
			}
		}
		if err := a.mkFolder(name); err != nil {
			return err
		}
		if specialUse != "" {
			m := a.readSpecialUse()
			m[name] = specialUse
			return a.writeSpecialUse(m)
		}
		return nil
	})
}

// mkFolder creates one folder's directory as Dovecot does (tmp/, new/,
// cur/, maildirfolder) and its uidlist with a new UIDVALIDITY; ErrExists
// when the directory is there.
func (a *account) mkFolder(name string) error {
	dir := filepath.Join(a.root, dirName(name))
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, name)
		}
		return fmt.Errorf("mailstore: create %s: %w", name, err)
	}
	if _, err := maildir.CreateFolder(a.root, dirName(name)[1:]); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("mailstore: create %s: %w", name, err)
	}
	// CreateFolder found the directory made above and fsynced only what
	// it made inside it: the folder's own entry must reach the disk too,
	// before CREATE's OK (or a COPY into it) is reported.
	if err := maildir.SyncDir(a.root); err != nil {
		return fmt.Errorf("mailstore: create %s: %w", name, err)
	}
	a.forget(name)
	f := a.folder(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lock.lock(); err != nil {
		return err
	}
	defer f.lock.unlock()
	_, _, err := f.syncLocked(syncOpt{})
	return err
}

// Delete removes a folder and its messages; INBOX is ErrInbox. Its
// children stay (a folder may be deleted under them, as Dovecot allows),
// and so does its subscription.
func (s *Store) Delete(name string) error {
	name, err := canonName(name)
	if err != nil {
		return err
	}
	if name == "INBOX" {
		return ErrInbox
	}
	a := s.acc
	return a.rootLocked(func() error {
		dir := filepath.Join(a.root, dirName(name))
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("%w: %s", ErrNoMailbox, name)
		}
		a.forgetOnly(name)
		trash := filepath.Join(a.root, "tmp", deletedPrefix+fmt.Sprint(nanotime()))
		if err := os.Rename(dir, trash); err != nil {
			return fmt.Errorf("mailstore: delete %s: %w", name, err)
		}
		maildir.SyncDir(a.root)
		if err := os.RemoveAll(trash); err != nil {
			a.log.Warn("deleted folder not removed", "dir", trash, "err", err)
		}
		m := a.readSpecialUse()
		if _, ok := m[name]; ok {
			delete(m, name)
			return a.writeSpecialUse(m)
		}
		return nil
	})
}

// forgetOnly drops the state of name alone.
func (a *account) forgetOnly(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if f := a.folders[name]; f != nil {
		f.mu.Lock()
		f.closed = true
		f.lock.close()
		f.mu.Unlock()
		delete(a.folders, name)
	}
}

// Rename renames a folder and its children; renaming INBOX moves its
// messages to a new folder and leaves INBOX empty (RFC 3501 § 6.3.5).
// UIDs and UIDVALIDITY go with the folder (the uidlist moves with it).
// Subscriptions stay as they were, as Dovecot leaves them.
func (s *Store) Rename(oldName, newName string) error {
	oldName, err := canonName(oldName)
	if err != nil {
		return err
	}
	newName, err = canonName(newName)
	if err != nil {
		return err
	}
	if newName == "INBOX" {
		return fmt.Errorf("%w: INBOX", ErrExists)
	}
	if oldName == newName || strings.HasPrefix(newName, oldName+".") {
		return fmt.Errorf("%w: %s into itself", ErrBadName, oldName)
	}
	if oldName == "INBOX" {
		return s.renameInbox(newName)
	}
	a := s.acc
	return a.rootLocked(func() error {
		names, err := a.folderNames()
		if err != nil {
			return err
		}
		var moving []string
		exists := map[string]bool{}
		for _, n := range names {
			exists[n] = true
			if n == oldName || strings.HasPrefix(n, oldName+".") {
				moving = append(moving, n)
			}
		}
		if !exists[oldName] {
			return fmt.Errorf("%w: %s", ErrNoMailbox, oldName)
		}
		for _, n := range moving {
			if exists[newName+n[len(oldName):]] {
				return fmt.Errorf("%w: %s", ErrExists, newName+n[len(oldName):])
			}
		}
		parts := strings.Split(newName, ".")
		for i := 1; i < len(parts); i++ {
			if p := strings.Join(parts[:i], "."); p != "INBOX" && !exists[p] {
				if err := a.mkFolder(p); err != nil && !errors.Is(err, ErrExists) {
					return err
				}
			}
		}
		a.forget(oldName)
		uses := a.readSpecialUse()
		usesChanged := false
		for _, n := range moving {
			to := newName + n[len(oldName):]
			if err := os.Rename(filepath.Join(a.root, dirName(n)), filepath.Join(a.root, dirName(to))); err != nil {
				return fmt.Errorf("mailstore: rename %s: %w", n, err)
			}
			if u, ok := uses[n]; ok {
				delete(uses, n)
				uses[to] = u
				usesChanged = true
			}
		}
		maildir.SyncDir(a.root)
		a.forget(newName)
		if usesChanged {
			return a.writeSpecialUse(uses)
		}
		return nil
	})
}

// renameInbox moves every message of INBOX into a new folder.
func (s *Store) renameInbox(newName string) error {
	if err := s.Create(newName, ""); err != nil {
		return err
	}
	v, err := s.Select("INBOX", false)
	if err != nil {
		return err
	}
	defer v.Close()
	snap, err := v.Sync()
	if err != nil {
		return err
	}
	uids := make([]uint32, len(snap.Msgs))
	for i, m := range snap.Msgs {
		uids[i] = m.UID
	}
	_, err = v.Move(uids, newName)
	return err
}

// SetSubscribed adds or removes name in the subscriptions file.
func (s *Store) SetSubscribed(name string, on bool) error {
	name, err := canonName(name)
	if err != nil {
		return err
	}
	a := s.acc
	return a.rootLocked(func() error { return a.subscribeLocked([]string{name}, on) })
}

// subscribeLocked subscribes to (or unsubscribes from) canonical names,
// writing the file once (root lock held).
func (a *account) subscribeLocked(names []string, on bool) error {
	if len(names) == 0 {
		return nil
	}
	inbox := a.folder("INBOX")
	dl, err := inbox.lock.dotlock(subscriptionsName)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []string
	changed := false
	for _, n := range a.subscriptions() {
		if want[n] {
			delete(want, n)
			if !on {
				changed = true
				continue
			}
		}
		out = append(out, n)
	}
	if on {
		for _, n := range names {
			if want[n] {
				delete(want, n)
				out = append(out, n)
				changed = true
			}
		}
	}
	if !changed {
		dl.release()
		return nil
	}
	_, err = dl.replace(formatSubscriptions(out))
	return err
}

// existing returns the state of a canonical name, ErrNoMailbox when the
// folder's directory is not there.
func (s *Store) existing(name string) (*folder, error) {
	name, err := canonName(name)
	if err != nil {
		return nil, err
	}
	f := s.acc.folder(name)
	if !f.exists() {
		return nil, fmt.Errorf("%w: %s", ErrNoMailbox, name)
	}
	return f, nil
}

// Status returns a folder's counters without selecting it. A folder this
// process does not hold in memory is answered from its cache's header
// alone when the Maildir has not changed since the cache was written (no
// message list read: LIST-STATUS over many folders stays cheap).
func (s *Store) Status(name string) (Status, error) {
	f, err := s.existing(name)
	if err != nil {
		return Status{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		if st, ok := f.headerStatus(); ok {
			return st, nil
		}
	}
	if _, _, err := f.sync(syncOpt{}); err != nil {
		return Status{}, err
	}
	return f.status(), nil
}

// headerStatus is the Status of the cache header when everything it was
// built from is unchanged (the same test as folder.quick).
func (f *folder) headerStatus() (Status, bool) {
	h, _, ok := readCacheHeader(f.dir)
	if !ok || h.newMtime == 0 || h.curMtime == 0 {
		return Status{}, false
	}
	if k, _ := statKey(f.path("cur")); k.mtime != h.curMtime {
		return Status{}, false
	}
	if k, _ := statKey(f.path("new")); k.mtime != h.newMtime {
		return Status{}, false
	}
	if k, _ := statKey(f.path(uidlistName)); k != h.uidlistKey {
		return Status{}, false
	}
	if k, _ := statKey(f.path(keywordsName)); k != h.kwKey {
		return Status{}, false
	}
	c := h.counts
	return Status{Messages: c.messages, Recent: c.recent, Unseen: c.unseen, Deleted: c.deleted, Size: c.size,
		UIDNext: h.uidNext, UIDValidity: h.uidValidity, HighestModSeq: h.highest}, true
}

func (f *folder) status() Status {
	c := countsOf(f.s.msgs, f.s.recentFrom)
	return Status{Messages: c.messages, Recent: c.recent, Unseen: c.unseen, Deleted: c.deleted, Size: c.size,
		UIDNext: f.s.uidNext, UIDValidity: f.s.uidValidity, HighestModSeq: f.s.highest}
}

// Append stores a message durably (tmp, fsync, rename, fsync dir) before
// returning, with flags (system flags and keywords) and the internal date
// (zero: now). A message over MaxMessageSize is ErrTooBig, and nothing is
// left behind.
func (s *Store) Append(name string, flags []string, date time.Time, r io.Reader) (AppendResult, error) {
	f, err := s.existing(name)
	if err != nil {
		return AppendResult{}, err
	}
	fl, err := parseFlags(flags)
	if err != nil {
		return AppendResult{}, err
	}
	letters, err := f.letters(fl)
	if err != nil {
		return AppendResult{}, err
	}
	if err := f.ensureDirs(); err != nil {
		return AppendResult{}, err
	}
	saved, err := maildir.Save(f.dir, r, maildir.SaveOptions{Flags: letters, Mtime: date, MaxSize: s.opts.MaxMessageSize, Host: s.opts.Hostname})
	if errors.Is(err, maildir.ErrTooBig) {
		return AppendResult{}, fmt.Errorf("%w: over %d bytes", ErrTooBig, s.opts.MaxMessageSize)
	}
	if err != nil {
		return AppendResult{}, fmt.Errorf("mailstore: append to %s: %w", f.name, err)
	}
	uids, uv, err := f.assign([]string{saved.Key})
	if err != nil {
		return AppendResult{}, err
	}
	f.notify()
	return AppendResult{UIDValidity: uv, UID: uids[0]}, nil
}

// assign gives UIDs to the files of keys, which this process just put in
// the folder, by adding uidlist records (no scan: the next sync finds the
// files with their UIDs). Callers that wait meanwhile have theirs given in
// the same write.
func (f *folder) assign(keys []string) ([]uint32, uint32, error) {
	f.addPending(keys)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		if _, ok := f.assigned[k]; !ok {
			if err := f.assignPending(); err != nil {
				return nil, 0, err
			}
			break
		}
	}
	out := make([]uint32, len(keys))
	for i, k := range keys {
		uid, ok := f.assigned[k]
		if !ok {
			return nil, 0, fmt.Errorf("mailstore: %s: no UID for %s", f.name, k)
		}
		out[i] = uid
		delete(f.assigned, k)
	}
	return out, f.assignedUV, nil
}

// addPending queues keys for assignPending.
func (f *folder) addPending(keys []string) {
	f.acc.mu.Lock()
	defer f.acc.mu.Unlock()
	if f.pending == nil {
		f.pending = map[string]bool{}
	}
	for _, k := range keys {
		f.pending[k] = true
	}
}

// assignPending numbers every pending key in one uidlist write (f.mu held).
func (f *folder) assignPending() error {
	f.acc.mu.Lock()
	keys := make([]string, 0, len(f.pending))
	for k := range f.pending {
		keys = append(keys, k)
	}
	f.pending = nil
	f.acc.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	putBack := func() { f.addPending(keys) }
	sort.Slice(keys, func(i, j int) bool { return maildir.DeliveryOrder(keys[i], keys[j]) < 0 })
	if err := f.lock.lock(); err != nil {
		putBack()
		return err
	}
	defer f.lock.unlock()
	if _, err := os.Lstat(f.path(uidlistName)); err != nil {
		// No uidlist yet: a sync makes it (with the UIDs the cache knows),
		// and numbers our files with the others.
		if _, _, err := f.syncLocked(syncOpt{}); err != nil {
			putBack()
			return err
		}
	}
	dl, err := f.lock.dotlock(uidlistName)
	if err != nil {
		putBack()
		return err
	}
	ul, _, err := f.readUIDList()
	if err == nil && ul == nil {
		err = fmt.Errorf("mailstore: %s: dovecot-uidlist vanished", f.name)
	}
	if err != nil {
		dl.release()
		putBack()
		return err
	}
	if ul.nextUID < f.s.uidNext {
		ul.nextUID = f.s.uidNext
	}
	idx := f.uidIndex()
	if f.assigned == nil {
		f.assigned = map[string]uint32{}
	}
	added := false
	for _, k := range keys {
		if uid, ok := idx[k]; ok {
			f.assigned[k] = uid
			continue
		}
		uid := ul.nextUID
		ul.nextUID++
		ul.recs = append(ul.recs, uidRec{uid: uid, name: k})
		f.assigned[k] = uid
		added = true
	}
	f.assignedUV = ul.uidValidity
	if !added {
		dl.release()
		return nil
	}
	f.ulIdx = nil
	written, err := dl.replace(ul.format())
	if err != nil {
		f.ul = nil
		for _, k := range keys {
			delete(f.assigned, k)
		}
		return err
	}
	f.ulKey = written
	return nil
}

// Select opens a folder for a session; readOnly for EXAMINE.
func (s *Store) Select(name string, readOnly bool) (*View, error) {
	f, err := s.existing(name)
	if err != nil {
		return nil, err
	}
	v := &View{f: f, s: s, readOnly: readOnly}
	f.mu.Lock()
	if !f.loaded {
		if err := gomaildir.Dir(f.dir).Clean(); err != nil && !errors.Is(err, os.ErrNotExist) {
			f.acc.log.Debug("tmp/ not cleaned", "folder", f.name, "err", err)
		}
	}
	err = v.syncLocked()
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	accounts.Lock()
	s.acc.refs++
	accounts.Unlock()
	return v, nil
}

// parsedFlags are flags split into maildir letters and keywords.
type parsedFlags struct {
	system   string   // letters of system flags
	keywords []string // as given
}

// parseFlags reads IMAP flags: system flags in any case (\Recent is not
// stored and is ignored), keywords; anything else is ErrBadFlag.
func parseFlags(flags []string) (parsedFlags, error) {
	var p parsedFlags
	for _, fl := range flags {
		if strings.HasPrefix(fl, `\`) {
			found := false
			for _, s := range systemLetters {
				if strings.EqualFold(fl, s.flag) {
					p.system += string(s.c)
					found = true
				}
			}
			if !found && !strings.EqualFold(fl, `\Recent`) {
				return p, fmt.Errorf("%w: %s", ErrBadFlag, fl)
			}
			continue
		}
		if !validKeyword(fl) {
			return p, fmt.Errorf("%w: %q", ErrBadFlag, fl)
		}
		p.keywords = append(p.keywords, fl)
	}
	return p, nil
}

// letters returns the maildir letters of flags in this folder, adding
// keywords to dovecot-keywords (under its dot-lock) as needed.
func (f *folder) letters(p parsedFlags) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(p.keywords) == 0 {
		return maildir.SortFlags(p.system), nil
	}
	if err := f.lock.lock(); err != nil {
		return "", err
	}
	defer f.lock.unlock()
	return f.lettersLocked(p)
}

// lettersLocked is letters with f.mu and the flock held.
func (f *folder) lettersLocked(p parsedFlags) (string, error) {
	l := []byte(p.system)
	f.reloadKeywords()
	var missing []string
	for _, k := range p.keywords {
		if i := f.s.kw.index(k); i >= 0 {
			l = append(l, byte('a'+i))
		} else {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		if err := f.ensureTmp(); err != nil {
			return "", err
		}
		dl, err := f.lock.dotlock(keywordsName)
		if err != nil {
			return "", err
		}
		f.reloadKeywords()
		kw := f.s.kw
		for _, k := range missing {
			i := kw.index(k)
			if i < 0 {
				if i = kw.free(); i < 0 {
					dl.release()
					return "", fmt.Errorf("%w: %s", ErrNoKeywords, f.name)
				}
				kw[i] = k
			}
			l = append(l, byte('a'+i))
		}
		if _, err := dl.replace(kw.format()); err != nil {
			return "", err
		}
		f.reloadKeywords()
	}
	return maildir.SortFlags(string(l)), nil
}

// keepLetters are the letters a FLAGS replace keeps: other programs' flags
// IMAP has no name for (P, passed).
func keepLetters(letters string) string {
	var b []byte
	for i := 0; i < len(letters); i++ {
		c := letters[i]
		if c >= 'A' && c <= 'Z' && !strings.ContainsRune("DFRST", rune(c)) {
			b = append(b, c)
		}
	}
	return string(b)
}

func combineLetters(op StoreOp, cur, given string) string {
	switch op {
	case StoreAdd:
		return maildir.SortFlags(cur + given)
	case StoreRemove:
		var b []byte
		for i := 0; i < len(cur); i++ {
			if !hasLetter(given, cur[i]) {
				b = append(b, cur[i])
			}
		}
		return maildir.SortFlags(string(b))
	default:
		return maildir.SortFlags(keepLetters(cur) + given)
	}
}
