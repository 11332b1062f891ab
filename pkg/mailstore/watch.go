package mailstore

import (
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Watching: one inotify instance per process (fsnotify), watching new/
// and cur/ of every folder some view watches, and waking that folder's
// watchers on any event there. Changes made through this process wake
// them directly (folder.notify). With Options.PollInterval, a poller per
// watched folder also compares the folder's files' versions that often,
// for file systems whose changes by other hosts inotify cannot see (NFS);
// a folder inotify cannot watch (the instance's watch limit) is polled
// every fallbackPoll, and a folder on NFS without PollInterval every
// nfsPoll. A poll opens what it looks at: NFS clients cache attributes
// (for directories up to a minute by default) and revalidate them on
// open (close-to-open consistency), so a stat alone could miss another
// host's change for that long.
const fallbackPoll = time.Second

// nfsPoll is a variable so that tests can shorten it.
var nfsPoll = 5 * time.Second

// nfsSuperMagic is NFS_SUPER_MAGIC of statfs(2).
const nfsSuperMagic = 0x6969

// onNFS reports whether dir is on an NFS mount (a variable for tests).
var onNFS = func(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == nfsSuperMagic
}

// openKey is statKey through open(2), which makes an NFS client revalidate.
func openKey(path string) (fileKey, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fileKey{}, false
	}
	defer unix.Close(fd)
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil {
		return fileKey{}, false
	}
	return keyOf(&st), true
}

var hub struct {
	mu   sync.Mutex
	w    *fsnotify.Watcher
	dirs map[string]*folder // new/ and cur/ paths → folder
}

// watchDirs starts inotify on f's new/ and cur/; false when it could not.
func watchDirs(f *folder) bool {
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if hub.w == nil {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			f.acc.log.Warn("inotify unavailable, polling", "err", err)
			return false
		}
		hub.w, hub.dirs = w, map[string]*folder{}
		go hubLoop(w)
	}
	for _, sub := range []string{"new", "cur"} {
		p := f.path(sub)
		if err := hub.w.Add(p); err != nil {
			f.acc.log.Warn("inotify cannot watch, polling", "dir", p, "err", err)
			unwatchDirsLocked(f)
			return false
		}
		hub.dirs[p] = f
	}
	return true
}

func unwatchDirs(f *folder) {
	hub.mu.Lock()
	defer hub.mu.Unlock()
	unwatchDirsLocked(f)
}

func unwatchDirsLocked(f *folder) {
	for _, sub := range []string{"new", "cur"} {
		p := f.path(sub)
		if hub.dirs[p] == f {
			delete(hub.dirs, p)
			hub.w.Remove(p)
		}
	}
}

func hubLoop(w *fsnotify.Watcher) {
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			hub.mu.Lock()
			f := hub.dirs[filepath.Dir(ev.Name)]
			if f == nil {
				f = hub.dirs[ev.Name] // the directory itself
			}
			hub.mu.Unlock()
			if f != nil {
				f.notify()
			}
		case _, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflowed queue lost events: wake everyone.
			hub.mu.Lock()
			fs := make([]*folder, 0, len(hub.dirs))
			for _, f := range hub.dirs {
				fs = append(fs, f)
			}
			hub.mu.Unlock()
			for _, f := range fs {
				f.notify()
			}
		}
	}
}

// Watch returns a channel that receives a value soon after the folder may
// have changed (inotify on new/ and cur/, this process's own sessions, and
// polling every Options.PollInterval if set); stop releases it (Close
// releases every watch of the view). The channel is never closed.
func (v *View) Watch() (changed <-chan struct{}, stop func()) {
	f := v.f
	c := make(chan struct{}, 1)
	f.acc.watchMu.Lock()
	first := len(f.watchers) == 0
	if f.watchers == nil {
		f.watchers = map[chan struct{}]struct{}{}
	}
	f.watchers[c] = struct{}{}
	f.acc.watchMu.Unlock()
	if first {
		f.ensureDirs()
		poll := f.acc.pollInterval
		if poll <= 0 && onNFS(f.dir) {
			poll = nfsPoll
		}
		if !watchDirs(f) && (poll <= 0 || poll > fallbackPoll) {
			poll = fallbackPoll
		}
		if poll > 0 {
			// The first look is taken here, not in the poller: a change
			// made after Watch returns must differ from it however late
			// the poller's goroutine starts.
			first := f.look()
			f.acc.watchMu.Lock()
			f.stopPoll = make(chan struct{})
			go f.poll(poll, f.stopPoll, first)
			f.acc.watchMu.Unlock()
		}
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			f.acc.watchMu.Lock()
			delete(f.watchers, c)
			last := len(f.watchers) == 0
			var sp chan struct{}
			if last {
				sp, f.stopPoll = f.stopPoll, nil
			}
			f.acc.watchMu.Unlock()
			if last {
				unwatchDirs(f)
				if sp != nil {
					close(sp)
				}
			}
		})
	}
	v.stops = append(v.stops, stop)
	return c, stop
}

// folderLook is one poll's view of the files a folder's state depends on.
type folderLook struct {
	keys [5]fileKey // new/, cur/, dovecot-uidlist, dovecot-keywords, our cache
	// settled: new/'s and cur/'s mtimes were old enough when read that the
	// next change of either must give it another mtime (see settled).
	settled bool
}

func (f *folder) look() folderLook {
	now := nanotime()
	var l folderLook
	for i, n := range []string{"new", "cur", uidlistName, keywordsName, cacheName} {
		l.keys[i], _ = openKey(f.path(n))
	}
	l.settled = settled(l.keys[0].mtime, now) && settled(l.keys[1].mtime, now)
	return l
}

// poll wakes the watchers when any file the state depends on has another
// version than at the previous look, or when that look could not tell: a
// message delivered in the same clock tick as the previous look leaves
// the directory's (inode, size, mtime) as it was.
func (f *folder) poll(every time.Duration, stop chan struct{}, last folderLook) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if l := f.look(); l.keys != last.keys || !last.settled {
				last = l
				f.notify()
			}
		}
	}
}
