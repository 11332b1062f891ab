package pop3

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"letterbox/pkg/listen"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// waitFor waits for a waitConn's read to be in ppoll (a state, not a time).
func waitFor(t *testing.T, c *waitConn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		w := c.waiting
		c.mu.Unlock()
		if w {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the read never waited")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWaitConn(t *testing.T) {
	read := func(c net.Conn) chan error {
		done := make(chan error, 1)
		go func() {
			var b [16]byte
			n, err := c.Read(b[:])
			if err == nil && string(b[:n]) != "RETR 1\r\n" {
				err = errors.New("read " + string(b[:n]))
			}
			done <- err
		}()
		return done
	}
	t.Run("data", func(t *testing.T) {
		peer, raw := tcpPair(t)
		c := newWaitConn(raw).(*waitConn)
		done := read(c)
		waitFor(t, c)
		io.WriteString(peer, "RETR 1\r\n")
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("eof", func(t *testing.T) {
		peer, raw := tcpPair(t)
		c := newWaitConn(raw)
		peer.Close()
		if _, err := c.Read(make([]byte, 8)); err != io.EOF {
			t.Fatalf("read after the peer closed: %v, want EOF", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		_, raw := tcpPair(t)
		c := newWaitConn(raw)
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 8))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past the deadline: %v, want a timeout", err)
		}
	})
	t.Run("deadline-moved-earlier", func(t *testing.T) {
		// Shutdown's interrupt: the deadline moved to now while a read waits.
		_, raw := tcpPair(t)
		c := newWaitConn(raw).(*waitConn)
		c.SetReadDeadline(time.Now().Add(time.Hour))
		done := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 8)); done <- err }()
		waitFor(t, c)
		c.SetReadDeadline(time.Now())
		if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after the deadline moved to now: %v", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		// Shutdown's kill: closing a descriptor does not end a ppoll on it.
		_, raw := tcpPair(t)
		c := newWaitConn(raw).(*waitConn)
		done := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 8)); done <- err }()
		waitFor(t, c)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after Close: %v, want net.ErrClosed", err)
		}
		if c.wake != -1 {
			t.Fatal("eventfd left open")
		}
	})
	t.Run("one-session-listener", func(t *testing.T) {
		// inetd mode: the session's connection is pkg/listen's
		// OneConn wrapper around stdin's; waitConn must see through it,
		// and Close must still be the wrapper's (it ends Serve).
		_, raw := tcpPair(t)
		l := listen.OneConn(raw)
		conn, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c, ok := newWaitConn(conn).(*waitConn)
		if !ok {
			t.Fatalf("OneConn's connection not read through ppoll: %T", newWaitConn(conn))
		}
		c.Close()
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after the session's Close: %v", err)
		}
	})
	t.Run("not-a-descriptor", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if c := newWaitConn(a); c != a {
			t.Fatalf("net.Pipe wrapped: %T", c)
		}
	})
}
