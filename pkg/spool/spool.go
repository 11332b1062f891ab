// Package spool is the queue directory that smtpd and sendmail write and
// queue-runner reads. See man/letterbox-spool.5; the commit protocol is in
// this file, top to bottom.
//
// CONTRACT: exported names below are used by smtpd, sendmail and
// queue-runner; add to them, don't change them.
package spool

import (
	"io"
	"time"
)

// State of one recipient.
type State string

const (
	Pending   State = "pending"
	Delivered State = "delivered"
	Bounced   State = "bounced"
)

// Recipient is one recipient of a queued message with its own state.
type Recipient struct {
	Address     string
	Original    string // ORCPT, when it differs
	State       State
	Attempts    int
	NextAttempt time.Time
	LastError   string
}

// Envelope is a queued message's metadata.
type Envelope struct {
	ID         string
	From       string // "" is the null sender
	Arrived    time.Time
	Size       int64
	AuthUser   string // who submitted it, if authenticated
	Recipients []*Recipient
}

// Spool is an opened queue directory.
type Spool struct{ Dir string }

// Open opens (creating if needed) the spool at dir.
func Open(dir string) (*Spool, error) { panic("spool: not implemented") }

// Submit stores data and env durably and returns the queue id; the
// envelope's appearance is the commit point. It pokes the trigger FIFO.
func (s *Spool) Submit(env *Envelope, data io.Reader) (string, error) {
	panic("spool: not implemented")
}
