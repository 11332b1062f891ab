package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Stamp is a queued message as seen by ScanKnown: its id, the inode number
// its envelope had when the directory was read, and when it is next due.
//
// Envelopes are never changed in place: every update writes a new file and
// renames it over the old one (replaceEnvelope), so an envelope whose due
// time changed has a new inode. That is what lets a caller keep
// (id, inode) → due from an earlier scan and trust it while both match.
type Stamp struct {
	ID  string
	Ino uint64 // 0: unknown (a system without inode numbers in readdir)
	Due time.Time
}

// ScanKnown lists env/ like Scan, taking the due time from known for every
// envelope whose (id, inode) it recognises, and stat'ing only the others.
// It returns the stamps in directory order (not sorted) and how many
// envelopes it stat'ed. On Linux the directory is read with getdents64,
// which yields each entry's inode without a stat.
//
// A stat'ed stamp keeps the inode that readdir reported, with the mtime the
// stat saw; if the envelope was replaced in between, the stat saw the newer
// file, and the next scan finds an inode it does not know and stats again.
func (s *Spool) ScanKnown(known func(id string, ino uint64) (time.Time, bool)) ([]Stamp, int, error) {
	dir := filepath.Join(s.Dir, envDir)
	d, err := os.Open(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("spool: scan %s: %w", dir, err)
	}
	defer d.Close()
	ents, err := readInodes(d)
	if err != nil {
		return nil, 0, fmt.Errorf("spool: scan %s: %w", dir, err)
	}
	var unknown []int
	for i := range ents {
		if ents[i].Ino != 0 && known != nil {
			if due, ok := known(ents[i].ID, ents[i].Ino); ok && !due.IsZero() {
				ents[i].Due = due
				continue
			}
		}
		unknown = append(unknown, i)
	}
	gone := statStamps(int(d.Fd()), ents, unknown)
	if gone == 0 {
		return ents, len(unknown), nil
	}
	j := 0
	for _, e := range ents {
		if !e.Due.IsZero() {
			ents[j] = e
			j++
		}
	}
	return ents[:j], len(unknown), nil
}

// statWorkers is how many goroutines share the stats of a scan: fstatat
// on a cached directory is CPU bound in the kernel, so a few help on a
// multi-core host. Measured on 2 cores, 100,000 envelopes: 350 ms with
// one, 235 ms with two or four.
const statWorkers = 4

// statStamps fills in the due time of ents[i] for each i in idx, from the
// envelope's mtime; an envelope removed meanwhile is left with a zero Due.
// It returns how many were gone.
func statStamps(dfd int, ents []Stamp, idx []int) int {
	workers := statWorkers
	if len(idx) < 256 {
		workers = 1 // not worth the goroutines
	}
	var wg sync.WaitGroup
	gone := make([]int, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var st unix.Stat_t
			for k := w; k < len(idx); k += workers {
				e := &ents[idx[k]]
				if unix.Fstatat(dfd, e.ID, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
					gone[w]++
					continue
				}
				e.Due = time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
				if e.Due.IsZero() {
					// The epoch itself: still a real, long-due message.
					e.Due = time.Unix(0, 1)
				}
				if e.Ino == 0 {
					e.Ino = uint64(st.Ino)
				}
			}
		}(w)
	}
	wg.Wait()
	n := 0
	for _, g := range gone {
		n += g
	}
	return n
}
