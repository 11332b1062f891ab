// Package delivery performs local delivery of one message to one
// route.Destination (Maildir, mbox or pipe) with Return-Path and
// Delivered-To, and classifies failures as temporary or permanent. It is
// used by deliver(8) and queue-runner(8).
//
// CONTRACT: exported names are used by cmd/deliver and pkg/queue.
package delivery

import (
	"io"

	"letterbox/pkg/route"
)

// Error is a failed delivery: Temporary (retry) or not (bounce), with an
// RFC 3463 enhanced status code.
type Error struct {
	Temporary bool
	Status    string // e.g. "5.4.6", "4.2.0"
	Err       error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Deliver writes the message read from msg to d for envelope sender.
func Deliver(d route.Destination, sender string, msg io.Reader) error {
	panic("delivery: not implemented")
}
