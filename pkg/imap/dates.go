package imap

import (
	"time"

	"letterbox/pkg/mailstore"
)

// lazyDates gives commands the internal dates a snapshot lacks: mailstore
// leaves the dates of new mail to be read from their files when a command
// needs them (a first SELECT of 10,000 messages then stats none). At the
// first date missing, the dates of every message the command may look at
// are read at once.
type lazyDates struct {
	sel  *selected
	idx  []int // sequence indexes the command may ask for; nil: all
	read map[uint32]time.Time
	done bool
	err  error
}

// of returns m's internal date, and false when it cannot be read: the
// message was expunged by someone else since the client was told (or the
// reading failed: d.err).
func (d *lazyDates) of(m *mailstore.Msg) (time.Time, bool) {
	if !m.InternalDate.IsZero() {
		return m.InternalDate, true
	}
	if !d.done {
		d.load()
	}
	t, ok := d.read[m.UID]
	return t, ok
}

func (d *lazyDates) load() {
	d.done = true
	sel := d.sel
	var uids []uint32
	add := func(i int) {
		if m := sel.lookupAt(sel.uids[i], i); m != nil && m.InternalDate.IsZero() {
			uids = append(uids, m.UID)
		}
	}
	if d.idx == nil {
		for i := range sel.uids {
			add(i)
		}
	} else {
		for _, i := range d.idx {
			add(i)
		}
	}
	if len(uids) == 0 {
		return
	}
	ts, err := sel.view.InternalDates(uids)
	if err != nil {
		d.err = err
		return
	}
	d.read = make(map[uint32]time.Time, len(uids))
	for k, t := range ts {
		if !t.IsZero() {
			d.read[uids[k]] = t
		}
	}
}
