//go:build !linux

package spool

import "os"

// readInodes lists the valid queue ids of d. Without getdents64 the inode
// is not known before a stat, so every entry is left for ScanKnown to stat
// (Ino 0), which makes every pass a full scan.
func readInodes(d *os.File) ([]Stamp, error) {
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := make([]Stamp, 0, len(names))
	for _, n := range names {
		if ValidID(n) {
			out = append(out, Stamp{ID: n})
		}
	}
	return out, nil
}
