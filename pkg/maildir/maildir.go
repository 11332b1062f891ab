// Package maildir delivers into Maildir directories durably (tmp → write →
// fsync → link into new/ → fsync new/), names files per the Maildir spec,
// and reads Maildir++ folders and other programs' file names. go-maildir
// serves reading, flags and walking where it fits.
//
// CONTRACT: exported names below are used by delivery, pop3 and imap; add to
// them, don't change them.
package maildir

import "io"

// Create makes dir and its tmp/, new/ and cur/ (mode 0700), parents too.
func Create(dir string) error { panic("maildir: not implemented") }

// Deliver writes r into dir/new/ durably and returns the new file's path.
// Success means the file and the new/ directory entry are on disk.
func Deliver(dir string, r io.Reader) (string, error) { panic("maildir: not implemented") }

// FolderPath returns the Maildir++ folder name's directory under root
// (root/.name), refusing names that would leave root.
func FolderPath(root, name string) (string, error) { panic("maildir: not implemented") }
