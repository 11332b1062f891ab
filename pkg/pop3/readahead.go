package pop3

import (
	"bufio"
	"errors"

	"letterbox/pkg/maildir"
)

// readAheadMax is the largest message (as listed) read ahead: the reply
// is held in memory until asked for.
const readAheadMax = 64 * 1024

// readAhead reads and converts, after RETR n, message n+1 while the
// client is still reading n, when the session waits for the client's next
// command. Clients download one message at a time, each RETR sent once
// the previous reply is in: the session's open, read and conversion of
// the next message then overlap the client's reading of this one, and
// the next RETR only writes. On two cores this took the server's share
// out of a download's critical path (bench/NOTES-perf.md, bench/pop3.sh).
//
// What is sent is what RETR would send at that moment: the same
// conversion, of the same file (Maildir files never change once
// delivered); a message read ahead and not asked for is dropped. Anything
// that goes wrong reading ahead is left for RETR to meet and report.
type readAhead struct {
	next int // the message to read ahead at the next wait; 0: none (set by RETR as index+1)
	msg  int // index+1 of the message in data; 0: none
	n    int64
	data []byte
	w    *bufio.Writer // into sink, sized to hold a whole reply
	sink capped
}

// take returns message i's reply if it was read ahead.
func (a *readAhead) take(i int) ([]byte, int64, bool) {
	if a.msg != i+1 {
		return nil, 0, false
	}
	a.msg = 0
	return a.data, a.n, true
}

// readAhead reads the message the last RETR points at, if any.
func (s *session) readAhead() {
	a := &s.ahead
	i := a.next - 1
	a.next = 0
	if i < 0 || i >= len(s.msgs) || s.deleted[i] || s.msgs[i].Size > readAheadMax || a.msg == i+1 || s.drop == nil {
		return
	}
	a.msg = 0
	rc, err := s.drop.Open(i)
	if err != nil {
		return
	}
	defer rc.Close()
	size := int64(-1)
	if f, ok := rc.(*maildir.RegularFile); ok {
		size = f.Size()
	}
	if a.w == nil {
		a.w = bufio.NewWriterSize(&a.sink, 2*readAheadMax)
	}
	a.sink.b = a.sink.b[:0]
	a.w.Reset(&a.sink)
	n, err := writeMessage(a.w, rc, -1, size)
	if err == nil {
		err = a.w.Flush()
	}
	if err != nil {
		return
	}
	a.msg, a.n, a.data = i+1, n, a.sink.b
}

// capped collects a reply read ahead, refusing more than two readAheadMax
// (a file larger than it was listed).
type capped struct{ b []byte }

var errTooLarge = errors.New("pop3: message larger than listed")

func (c *capped) Write(p []byte) (int, error) {
	if len(c.b)+len(p) > 2*readAheadMax {
		return 0, errTooLarge
	}
	c.b = append(c.b, p...)
	return len(p), nil
}
