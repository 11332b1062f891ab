//go:build !linux

package spool

import "os"

// openBarrier reports that there is no file-system-wide barrier here: the
// writers fsync their own files and the batch fsyncs data/.
func openBarrier(dir string) (*os.File, bool) { return nil, false }

func barrier(fs *os.File) error { return nil }
