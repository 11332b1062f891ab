package listen

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// A listener whose mode carries the suffix ProxySuffix ("smtp+proxy",
// "imaps+proxy") sits behind a load balancer such as HAProxy: every
// connection starts with a PROXY protocol header (HAProxy's
// proxy-protocol.txt, version 1 or 2) that names the client, and that
// client's address is the connection's RemoteAddr for everything after it
// (relay decisions, checks, Received, logs, auth failures). As Postfix's
// smtpd_upstream_proxy_protocol and Dovecot's haproxy_trusted_networks do,
// the header is taken only from ProxyNetworks, and a marked listener
// refuses every connection that does not start with a valid header from
// there, with a log line: a peer outside the networks, no header within
// the timeout, a malformed or oversized header, an address family other
// than TCP over IPv4 or IPv6.
//
// A v2 LOCAL header (HAProxy's health checks) and a v1 "PROXY UNKNOWN" are
// accepted and the connection keeps its own addresses, as the
// specification says and Postfix does: the check gets an ordinary session
// with the proxy as the client.
//
// The header is parsed by github.com/pires/go-proxyproto; this file reads
// exactly the header's bytes off the socket (so nothing of the client's
// own data, a TLS ClientHello say, is ever buffered here, and the socket
// can be handed on as it is) and decides what to trust.

// ProxySuffix marks a mode whose connections start with a PROXY header.
const ProxySuffix = "+proxy"

// DefaultProxyTimeout is how long a header may take (Postfix's
// smtpd_upstream_proxy_timeout is 5 s too).
const DefaultProxyTimeout = 5 * time.Second

// maxProxyV2Payload bounds a v2 header's addresses and TLVs, as the parser
// does: HAProxy's TLVs (ALPN, authority, SSL details, unique id) take a few
// hundred bytes at most.
const maxProxyV2Payload = 4096

// maxProxyV1 is the longest v1 line the specification allows, CRLF
// included.
const maxProxyV1 = 107

// SplitMode separates a mode from its ProxySuffix.
func SplitMode(mode string) (base string, proxied bool) {
	if b, ok := strings.CutSuffix(mode, ProxySuffix); ok {
		return b, true
	}
	return mode, false
}

// ErrProxyHeader is wrapped by every refusal of a header.
var ErrProxyHeader = errors.New("PROXY header")

// ReadProxyHeader reads one PROXY header (v1 or v2) from r, not a byte
// more, and parses it. TLVs are checked for framing and otherwise ignored.
func ReadProxyHeader(r io.Reader) (*proxyproto.Header, error) {
	raw, err := readProxyBytes(r)
	if err != nil {
		return nil, err
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)+16))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	switch h.TransportProtocol {
	case proxyproto.UNSPEC, proxyproto.TCPv4, proxyproto.UDPv4, proxyproto.TCPv6, proxyproto.UDPv6, proxyproto.UnixStream, proxyproto.UnixDatagram:
	default:
		// The parser takes any family with any protocol (0x01: no
		// family, a stream); the specification defines these seven.
		return nil, fmt.Errorf("%w: v2 address family and protocol %#02x", ErrProxyHeader, byte(h.TransportProtocol))
	}
	if h.Version == 1 && h.TransportProtocol != proxyproto.UNSPEC && len(strings.Split(string(raw), " ")) != 6 {
		return nil, fmt.Errorf("%w: v1 line with other than 6 fields", ErrProxyHeader)
	}
	if _, err := h.TLVs(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	return h, nil
}

// readProxyBytes returns the bytes of one header: a v1 line up to its LF
// (read one byte at a time, so nothing after it is taken), or a v2 header
// of the length its fixed part announces.
func readProxyBytes(r io.Reader) ([]byte, error) {
	buf := make([]byte, 5, 16)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxyHeader, eofIsTruncation(err))
	}
	switch {
	case bytes.Equal(buf, proxyproto.SIGV1):
		one := make([]byte, 1)
		for buf[len(buf)-1] != '\n' {
			if len(buf) == maxProxyV1 {
				return nil, fmt.Errorf("%w: v1 line longer than %d bytes", ErrProxyHeader, maxProxyV1)
			}
			if _, err := io.ReadFull(r, one); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrProxyHeader, eofIsTruncation(err))
			}
			buf = append(buf, one[0])
		}
		return buf, nil
	case bytes.Equal(buf, proxyproto.SIGV2[:5]):
		buf = buf[:16]
		if _, err := io.ReadFull(r, buf[5:]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrProxyHeader, eofIsTruncation(err))
		}
		if !bytes.Equal(buf[:12], proxyproto.SIGV2) {
			return nil, fmt.Errorf("%w: not a v2 signature", ErrProxyHeader)
		}
		n := int(binary.BigEndian.Uint16(buf[14:16]))
		if n > maxProxyV2Payload {
			return nil, fmt.Errorf("%w: v2 header of %d bytes (at most %d)", ErrProxyHeader, n, maxProxyV2Payload)
		}
		buf = append(buf, make([]byte, n)...)
		if _, err := io.ReadFull(r, buf[16:]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrProxyHeader, eofIsTruncation(err))
		}
		return buf, nil
	}
	return nil, fmt.Errorf("%w: missing (the connection starts with %q)", ErrProxyHeader, buf)
}

func eofIsTruncation(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("connection closed inside the header")
	}
	return err
}

// Proxy says who may send PROXY headers, how long one may take, and where
// refusals are logged.
type Proxy struct {
	Networks []*net.IPNet
	Timeout  time.Duration // 0: DefaultProxyTimeout
	Log      *slog.Logger  // nil: slog.Default()
}

// ProxiedConn is a connection that came through a proxy: the socket from
// the proxy, with the client's and the server's addresses from the header.
type ProxiedConn struct {
	net.Conn
	Client, Server net.Addr
}

func (c *ProxiedConn) RemoteAddr() net.Addr { return c.Client }
func (c *ProxiedConn) LocalAddr() net.Addr  { return c.Server }

// Handshake takes the PROXY header off c: it returns c with the client's
// address, or an error (and c is the caller's to close) when c's peer is
// not in p.Networks or its header is missing, late or not one we take.
func (p *Proxy) Handshake(c net.Conn) (net.Conn, error) {
	peer := c.RemoteAddr()
	if !IsTrusted(peer, p.Networks) {
		return nil, fmt.Errorf("%w: the peer %s is not in proxy-networks", ErrProxyHeader, peer)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultProxyTimeout
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	h, err := ReadProxyHeader(c)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%w: none within %v", ErrProxyHeader, timeout)
		}
		return nil, err
	}
	if h.Command.IsLocal() {
		// Health checks; v1's UNKNOWN is parsed as LOCAL too.
		return c, nil
	}
	src, dst, ok := h.TCPAddrs()
	if !ok || !h.TransportProtocol.IsStream() {
		return nil, fmt.Errorf("%w: address family %#02x: only TCP over IPv4 or IPv6 is served", ErrProxyHeader, byte(h.TransportProtocol))
	}
	return &ProxiedConn{Conn: c, Client: src, Server: dst}, nil
}

func (p *Proxy) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return slog.Default()
}

// refused logs a refused connection: one line, at warning level.
func (p *Proxy) refused(mode string, peer net.Addr, err error) {
	p.log().Warn("connection refused", "mode", mode+ProxySuffix, "peer", peer.String(), "error", err.Error())
}

// Listener returns l with every connection's header taken off before
// Accept returns it (each in a goroutine of its own, so a slow proxy holds
// up no other). Refused connections are logged and closed. It accepts
// from now on, until Close.
func (p *Proxy) Listener(l net.Listener, mode string) net.Listener {
	pl := &proxyListener{Listener: l, proxy: p, mode: mode,
		ready: make(chan accepted), done: make(chan struct{})}
	go pl.acceptLoop()
	return pl
}

type accepted struct {
	conn net.Conn
	err  error
}

type proxyListener struct {
	net.Listener
	proxy     *Proxy
	mode      string
	ready     chan accepted
	done      chan struct{}
	closeOnce sync.Once
}

func (l *proxyListener) Accept() (net.Conn, error) {
	select {
	case a := <-l.ready:
		return a.conn, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *proxyListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

// acceptLoop accepts until the listener is closed; errors go to Accept
// (the server backs off from them as it would without the proxy).
func (l *proxyListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !l.deliver(accepted{err: err}) || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			pc, err := l.proxy.Handshake(c)
			if err != nil {
				l.proxy.refused(l.mode, c.RemoteAddr(), err)
				c.Close()
				return
			}
			if !l.deliver(accepted{conn: pc}) {
				c.Close()
			}
		}()
	}
}

// deliver hands a to Accept; false when the listener closed first.
func (l *proxyListener) deliver(a accepted) bool {
	select {
	case l.ready <- a:
		return true
	case <-l.done:
		return false
	}
}
