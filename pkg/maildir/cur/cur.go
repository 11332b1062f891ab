// Package cur gives a Maildir message its flags in cur/ and finds a
// message that another program renamed, by its key: the part of Maildir
// handling that goes through github.com/emersion/go-maildir. It is apart
// from pkg/maildir so that deliver(8), which only writes into new/, does
// not link go-maildir: its crypto/rand brings the FIPS crypto packages,
// whose initialisation every run of deliver would pay (about 0.5 ms a
// message; bench/NOTES-perf.md).
package cur

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	gomaildir "github.com/emersion/go-maildir"

	"letterbox/pkg/maildir"
)

// SetFlags gives m the flags (letters, any order) and moves it to cur/ as
// "<key>:2,<sorted flags>", the way Dovecot and mutt name it: from new/
// too, one message at a time (go-maildir's only way out of new/, Unseen,
// takes all of new/ into cur/ and drops the names' info). When m's file
// has been renamed meanwhile (another client changed its flags), FindKey
// finds it in cur/ and it gets the flags.
func SetFlags(dir string, m maildir.Message, flags string) (maildir.Message, error) {
	flags = maildir.SortFlags(flags)
	name := maildir.InfoName(m.Key, flags)
	target := filepath.Join(dir, "cur", name)
	if m.Path == target {
		m.Flags, m.New = flags, false
		return m, nil
	}
	err := os.Rename(m.Path, target)
	if errors.Is(err, os.ErrNotExist) {
		if gm, p, ok := FindKey(dir, m.Key); gm != nil {
			err = gm.SetFlags([]gomaildir.Flag(flags))
		} else if ok {
			err = os.Rename(p, target)
		}
	}
	if err != nil {
		return m, fmt.Errorf("maildir: set flags of %s: %w", m.Key, err)
	}
	m.Path, m.Name, m.Flags, m.New = target, name, flags, false
	return m, nil
}

// FindKey finds the file in dir/cur/ that holds the message key now, after
// another program renamed it (an IMAP client changed its flags, a reader
// took it from new/ into cur/). go-maildir's MessageByKey looks (a stat of
// the names common flags give, then a scan of cur/) and gm is its Message;
// for a name its parser refuses (an info section other than "2,…", such
// as ":1,…"), a scan with maildir.ParseName finds it and gm is nil. ok is false
// when no name in cur/ carries the key with an info section: renames give
// one, and nothing moves a message back into new/.
func FindKey(dir, key string) (gm *gomaildir.Message, path string, ok bool) {
	gm, err := gomaildir.Dir(dir).MessageByKey(key)
	if err == nil {
		return gm, gm.Filename(), true
	}
	var fe *gomaildir.FlagError
	var me *gomaildir.MailfileError
	if !errors.As(err, &fe) && !errors.As(err, &me) {
		return nil, "", false // no such key (KeyError), or cur/ unreadable
	}
	d := filepath.Join(dir, "cur")
	ents, err := os.ReadDir(d)
	if err != nil {
		return nil, "", false
	}
	for _, e := range ents {
		if k, _, _, ok := maildir.ParseName(e.Name()); ok && k == key {
			return nil, filepath.Join(d, e.Name()), true
		}
	}
	return nil, "", false
}
