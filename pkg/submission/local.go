package submission

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"letterbox/pkg/spool"
)

// Local submission: a message a local user hands to sendmail. Who the user
// is comes from the kernel, never from what they wrote: sendmail run by
// root (or by the spool's owner) commits to the spool itself and writes
// the trace field naming itself; anyone else's message goes through the
// drop directory, and queue-runner writes that field when it takes the
// file in, from the file's owner (Pickup), as Postfix's pickup does.

// LocalReceived is the trace field of a message submitted by the local
// user login (uid), received at hostname.
func LocalReceived(login string, uid uint32, hostname string, now time.Time) string {
	return fmt.Sprintf("Received: (from %s uid %d)\r\n\tby %s (letterbox sendmail); %s\r\n",
		headerSafe(login), uid, hostname, now.Format(time.RFC1123Z))
}

// headerSafe keeps a login name from breaking the header field it goes
// into: anything but printable ASCII other than parentheses becomes '?'.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 0x7f || r == '(' || r == ')' || r == '\\' {
			return '?'
		}
		return r
	}, s)
}

// Pickup is the admission of drop files (spool.TakeDrops): the trace field
// naming the file's owner and, when that user is not trusted and set an
// envelope sender that is not theirs (sendmail -f), an
// X-Authentication-Warning as sendmail and Postfix's pickup write it.
type Pickup struct {
	Hostname string
	// IsLocal reports whether a domain is one of ours; a user owns
	// login@hostname and login@ every local domain, with any +detail.
	IsLocal func(domain string) bool
	// Trusted are the uids that may set any sender without a warning:
	// root, the mail system's own user (queue-runner's) and mail-user,
	// as Postfix's trusted users.
	Trusted []uint32
	Now     func() time.Time // nil: time.Now
}

// Header returns the fields for drop file d; it is a spool.Pickup.
func (p Pickup) Header(d spool.DropFile) (string, error) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	login := d.Login
	if login == "" {
		login = strconv.FormatUint(uint64(d.UID), 10)
	}
	h := LocalReceived(login, d.UID, p.Hostname, now())
	if !p.trusted(d.UID) && !p.ownsSender(login, d.Env.From) {
		sender := d.Env.From
		if sender == "" {
			sender = "<>"
		}
		h += fmt.Sprintf("X-Authentication-Warning: %s: %s set sender to %s using -f\r\n", p.Hostname, headerSafe(login), headerSafe(sender))
	}
	return h, nil
}

func (p Pickup) trusted(uid uint32) bool {
	for _, t := range p.Trusted {
		if t == uid {
			return true
		}
	}
	return false
}

// ownsSender reports whether sender is the local user login's own
// address: login@hostname or login@ a local domain, +detail allowed. The
// null sender is nobody's.
func (p Pickup) ownsSender(login, sender string) bool {
	i := strings.LastIndexByte(sender, '@')
	if i <= 0 {
		return false
	}
	local, domain := sender[:i], strings.ToLower(strings.TrimSuffix(sender[i+1:], "."))
	if !strings.EqualFold(domain, p.Hostname) && (p.IsLocal == nil || !p.IsLocal(domain)) {
		return false
	}
	return OwnsAddress(login+"@"+domain, local, domain)
}
