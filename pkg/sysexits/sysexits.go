// Package sysexits holds the sysexits(3) codes that deliver and sendmail exit
// with, and the one place where an error becomes an exit code.
package sysexits

import "errors"

const (
	OK          = 0
	Usage       = 64 // command line usage error
	DataErr     = 65 // data format error
	NoInput     = 66 // cannot open input
	NoUser      = 67 // addressee unknown
	NoHost      = 68 // host name unknown
	Unavailable = 69 // service unavailable
	Software    = 70 // internal software error
	CantCreat   = 73 // can't create (user) output file
	IOErr       = 74 // input/output error
	TempFail    = 75 // temporary failure; user is invited to retry
	NoPerm      = 77 // permission denied
	Config      = 78 // configuration error
)

// Error is an error that knows its exit code.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// New wraps err with code.
func New(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Code returns the exit code for err: 0 for nil, the code of the first *Error
// in its chain, else TempFail (an unknown failure must not lose mail: the
// caller retries).
func Code(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return TempFail
}
