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
	next int // the message to read ahead at the next wait, as index+1 (set by RETR); 0: none
	msg  int // the message in data, as index+1; 0: none
	n    int64
	data []byte        // the reply, in w's buffer (valid until w is written again)
	w    *bufio.Writer // over refuse: a reply that outgrows its buffer is dropped
}

// readAheadBuf holds a reply of readAheadMax octets as listed, with room
// for byte-stuffing (a line of "." grows from 3 octets to 4) and the
// terminator.
const readAheadBuf = readAheadMax + readAheadMax/2

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
		a.w = bufio.NewWriterSize(refuse{}, readAheadBuf)
	}
	a.w.Reset(refuse{})
	// The reply is converted into w's buffer and taken from there: no
	// flush ever happens (refuse fails it), so the buffer holds it all.
	buf := a.w.AvailableBuffer()
	n, err := writeMessage(a.w, rc, -1, size)
	if err != nil {
		return
	}
	a.msg, a.n, a.data = i+1, n, buf[:a.w.Buffered()]
}

// refuse is the writer under the read-ahead's buffer: a reply larger than
// the buffer (a file larger than listed) makes writeMessage fail.
type refuse struct{}

var errTooLarge = errors.New("pop3: message larger than the read-ahead buffer")

func (refuse) Write([]byte) (int, error) { return 0, errTooLarge }
