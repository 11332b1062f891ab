package delivery

import (
	"errors"
	"os"

	"letterbox/pkg/route"
	"letterbox/pkg/sysexits"
)

// ExitCode maps a delivery error to deliver(8)'s sysexits(3) status, the
// one place where that happens: 0 ok, 64 usage, 65 data error (a loop), 67
// no such user, 73 can't create the mailbox, 74 the message couldn't be
// read, 75 temporary failure, 77 permission denied, 69 a pipe command
// failed permanently.
func ExitCode(err error) int {
	var se *sysexits.Error
	switch {
	case err == nil:
		return sysexits.OK
	case errors.As(err, &se):
		return se.Code
	case errors.Is(err, route.ErrNoSuchUser):
		return sysexits.NoUser
	case errors.Is(err, route.ErrBadAddress):
		return sysexits.Usage
	case errors.Is(err, ErrLoop), errors.Is(err, route.ErrLoop):
		return sysexits.DataErr
	case errors.Is(err, ErrInput):
		return sysexits.IOErr
	case errors.Is(err, os.ErrPermission):
		return sysexits.NoPerm
	case errors.Is(err, ErrCantCreate):
		return sysexits.CantCreat
	case errors.Is(err, ErrPipe):
		return sysexits.Unavailable
	}
	var de *Error
	if errors.As(err, &de) && !de.Temporary {
		return sysexits.Unavailable
	}
	return sysexits.TempFail
}
