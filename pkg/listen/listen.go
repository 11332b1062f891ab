// Package listen gives the servers (smtpd, pop3d, imapd) their connections in
// the three launch modes of DESIGN.md § Launching the servers:
//
//  1. no --listen and no LISTEN_FDS: one connection on stdin/stdout (inetd,
//     tcpserver, systemd Accept=yes);
//  2. LISTEN_FDS (systemd Accept=no): every passed listener, its mode taken
//     from LISTEN_FDNAMES;
//  3. --listen [MODE=]ADDR: listen ourselves.
//
// It also loads TLS certificates and then drops privileges (--user), after
// binding and after reading what only root may read.
package listen

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"

	"letterbox/pkg/privsep"
)

// Listener is a listening socket and the protocol mode it serves ("smtp",
// "submission", "imaps", …). Proxy: the mode was given with ProxySuffix
// (proxy.go), and Open has made Listener take the PROXY header off each
// connection.
type Listener struct {
	net.Listener
	Mode  string
	Proxy bool
}

// Listeners returns the sockets to serve: one per spec ("[MODE=]ADDR"), or the
// systemd-passed ones when specs is empty and LISTEN_FDS is set. It returns
// nil, nil when neither applies: the caller serves Stdio(). A mode not in modes
// (with or without ProxySuffix) is an error; a passed socket whose name is
// not a mode gets defaultMode.
func Listeners(specs []string, defaultMode string, modes []string) ([]Listener, error) {
	valid := func(m string) bool {
		m, _ = SplitMode(m)
		for _, x := range modes {
			if x == m {
				return true
			}
		}
		return false
	}
	if len(specs) > 0 {
		var out []Listener
		for _, spec := range specs {
			mode, addr := defaultMode, spec
			if i := strings.Index(spec, "="); i >= 0 {
				mode, addr = spec[:i], spec[i+1:]
			}
			if !valid(mode) {
				closeAll(out)
				return nil, fmt.Errorf("listen: %q: unknown mode %q (want one of %s)", spec, mode, strings.Join(modes, ", "))
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				closeAll(out)
				return nil, fmt.Errorf("listen: %w", err)
			}
			base, proxied := SplitMode(mode)
			out = append(out, Listener{Listener: l, Mode: base, Proxy: proxied})
		}
		return out, nil
	}
	if os.Getenv("LISTEN_FDS") == "" {
		return nil, nil
	}
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("listen: LISTEN_FDS: %w", err)
	}
	var out []Listener
	for name, ls := range named {
		mode := name
		if !valid(mode) {
			mode = defaultMode
		}
		base, proxied := SplitMode(mode)
		for _, l := range ls {
			if l == nil {
				continue
			}
			out = append(out, Listener{Listener: l, Mode: base, Proxy: proxied})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("listen: LISTEN_FDS set but no listening socket was passed")
	}
	return out, nil
}

// Name is the mode as it was given: with ProxySuffix when marked.
func (l Listener) Name() string {
	if l.Proxy {
		return l.Mode + ProxySuffix
	}
	return l.Mode
}

func closeAll(ls []Listener) {
	for _, l := range ls {
		if l.Listener != nil {
			l.Close()
		}
	}
}

// UnknownAddr is the peer address of a connection on pipes with no
// TCPREMOTEIP: it is never trusted.
type UnknownAddr struct{}

func (UnknownAddr) Network() string { return "unknown" }
func (UnknownAddr) String() string  { return "unknown" }

// Stdio returns the connection on file descriptors 0 and 1. When fd 0 is a
// socket (systemd Accept=yes, inetd) it is that socket; otherwise the two
// descriptors are joined and the peer comes from TCPREMOTEIP/TCPREMOTEPORT
// (ucspi-tcp), or is UnknownAddr.
func Stdio() (net.Conn, error) {
	if _, err := syscall.Getpeername(0); err == nil {
		c, err := net.FileConn(os.Stdin)
		if err == nil {
			return c, nil
		}
	}
	// Non-blocking descriptors are registered with Go's poller, so read
	// deadlines (command and data timeouts) work on pipes too.
	syscall.SetNonblock(0, true)
	syscall.SetNonblock(1, true)
	in := os.NewFile(0, "stdin")
	out := os.NewFile(1, "stdout")
	var remote net.Addr = UnknownAddr{}
	if ip := net.ParseIP(os.Getenv("TCPREMOTEIP")); ip != nil {
		port, _ := strconv.Atoi(os.Getenv("TCPREMOTEPORT"))
		remote = &net.TCPAddr{IP: ip, Port: port}
	}
	var local net.Addr = UnknownAddr{}
	if ip := net.ParseIP(os.Getenv("TCPLOCALIP")); ip != nil {
		port, _ := strconv.Atoi(os.Getenv("TCPLOCALPORT"))
		local = &net.TCPAddr{IP: ip, Port: port}
	}
	return &pipeConn{in: in, out: out, remote: remote, local: local}, nil
}

// pipeConn is a net.Conn made of two files.
type pipeConn struct {
	in, out       *os.File
	remote, local net.Addr
	closeOnce     sync.Once
}

func (c *pipeConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *pipeConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *pipeConn) Close() error {
	c.closeOnce.Do(func() { c.in.Close(); c.out.Close() })
	return nil
}

// ReadSyscallConn is the read side's descriptor, for a reader that waits
// for input itself (pop3d's one-session process: pkg/pop3's waitConn).
func (c *pipeConn) ReadSyscallConn() (syscall.RawConn, error) { return c.in.SyscallConn() }
func (c *pipeConn) LocalAddr() net.Addr                       { return c.local }
func (c *pipeConn) RemoteAddr() net.Addr                      { return c.remote }
func (c *pipeConn) SetDeadline(t time.Time) error {
	c.in.SetReadDeadline(t)
	c.out.SetWriteDeadline(t)
	return nil
}
func (c *pipeConn) SetReadDeadline(t time.Time) error {
	c.in.SetReadDeadline(t)
	return nil
}
func (c *pipeConn) SetWriteDeadline(t time.Time) error {
	c.out.SetWriteDeadline(t)
	return nil
}

// OneConn is a net.Listener that yields c once; the next Accept waits until
// c is closed and then reports net.ErrClosed, so a server's Serve loop
// returns when the single (inetd) session ends.
func OneConn(c net.Conn) net.Listener {
	return &oneConnListener{conn: &notifyConn{Conn: c, done: make(chan struct{})}}
}

type oneConnListener struct {
	mu     sync.Mutex
	conn   *notifyConn
	given  bool
	closed chan struct{}
	once   sync.Once
}

func (l *oneConnListener) init() { l.once.Do(func() { l.closed = make(chan struct{}) }) }

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.init()
	l.mu.Lock()
	if !l.given {
		l.given = true
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	select {
	case <-l.conn.done:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.init()
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type notifyConn struct {
	net.Conn
	done chan struct{}
	once sync.Once
}

// NetConn is the connection c wraps (as tls.Conn's NetConn), for a reader
// that needs its descriptor (pop3d's one-session process: pkg/pop3's
// waitConn).
func (c *notifyConn) NetConn() net.Conn { return c.Conn }

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// IsTrusted reports whether addr is on a local network that may relay:
// inside one of nets. An UnknownAddr is never inside.
func IsTrusted(addr net.Addr, nets []*net.IPNet) bool {
	ip := IP(addr)
	if ip == nil {
		return false
	}
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// IP returns the IP of a TCP or UDP address, or nil.
func IP(addr net.Addr) net.IP {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP
	case *net.UDPAddr:
		return a.IP
	}
	return nil
}

// IsLoopback reports whether addr is a loopback TCP address.
func IsLoopback(addr net.Addr) bool {
	ip := IP(addr)
	return ip != nil && ip.IsLoopback()
}

// ParseNetworks parses CIDRs ("127.0.0.0/8", "::1/128"); a bare IP is one host.
func ParseNetworks(specs []string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range specs {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			if ip := net.ParseIP(s); ip != nil {
				bits := 32
				if ip.To4() == nil {
					bits = 128
				}
				s = fmt.Sprintf("%s/%d", s, bits)
			}
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("listen: network %q: %w", s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// DropPrivileges switches to the user name, its primary group and its
// supplementary groups. It is meant to be called after binding. Not root and
// already that user: nothing to do; not root and another user: an error.
func DropPrivileges(name string) error {
	if name == "" {
		return nil
	}
	c, err := privsep.LookupUser(name)
	if err != nil {
		return fmt.Errorf("listen: --user %s: %w", name, err)
	}
	if err := c.Switch(); err != nil {
		return fmt.Errorf("listen: --user %s: %w", name, err)
	}
	return nil
}

// LoadTLS reads a PEM certificate and key. Neither given: nil, nil (no TLS).
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("listen: tls-cert and tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("listen: TLS: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Options say how a server was launched (DESIGN.md § Launching the
// servers) and what it must read before it gives up root.
type Options struct {
	Listen      []string // --listen specs, "[MODE=]ADDR"
	DefaultMode string   // mode of a spec without MODE= and of an unnamed passed socket
	StdioMode   string   // --mode: the mode of the stdin/stdout session
	Modes       []string // the modes this server serves
	User        string   // --user: drop to it after binding ("" = stay)
	// TLSCert and TLSKey are read before the drop to User, so a key only
	// root may read (0600 root, as it should be) works with --user.
	TLSCert, TLSKey string
	// ProxyNetworks (CIDRs) may send the PROXY header that listeners marked
	// with ProxySuffix expect; ProxyTimeout bounds its arrival (0: the
	// default); Log gets the refused connections.
	ProxyNetworks []string
	ProxyTimeout  time.Duration
	Log           *slog.Logger
}

// Launch is what a server gets from Open.
type Launch struct {
	Listeners []Listener
	Stdio     bool        // one session on stdin/stdout (its one Listener)
	TLS       *tls.Config // nil without tls-cert and tls-key
}

// Open gives a server its sockets in whichever launch mode it was started:
// the --listen specs, else the systemd-passed sockets, else one connection
// on stdin/stdout served in StdioMode. It reads the TLS certificate and key,
// then drops privileges to User (none when empty), after every bind and
// every read that needs root.
func Open(o Options) (*Launch, error) {
	tlsConf, err := LoadTLS(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, err
	}
	nets, err := ParseNetworks(o.ProxyNetworks)
	if err != nil {
		return nil, fmt.Errorf("listen: proxy-networks: %w", err)
	}
	proxy := &Proxy{Networks: nets, Timeout: o.ProxyTimeout, Log: o.Log}
	ls, err := Listeners(o.Listen, o.DefaultMode, o.Modes)
	if err != nil {
		return nil, err
	}
	stdio := false
	if ls == nil {
		mode, proxied := SplitMode(o.StdioMode)
		valid := false
		for _, m := range o.Modes {
			valid = valid || m == mode
		}
		if !valid {
			return nil, fmt.Errorf("listen: --mode %q: want one of %s (each also with %s)", o.StdioMode, strings.Join(o.Modes, ", "), ProxySuffix)
		}
		ls, stdio = []Listener{{Mode: mode, Proxy: proxied}}, true
	}
	for i, l := range ls {
		if l.Proxy && len(nets) == 0 {
			closeAll(ls)
			return nil, fmt.Errorf("listen: a %s%s listener needs proxy-networks (the addresses of the proxies that may send the PROXY header)", l.Mode, ProxySuffix)
		}
		if l.Proxy && !stdio {
			ls[i].Listener = proxy.Listener(l.Listener, l.Mode)
		}
	}
	if stdio {
		OneSessionGC()
		// inetd, tcpserver or systemd Accept=yes: the proxy's connection is
		// on stdin, its header first.
		c, err := Stdio()
		if err != nil {
			return nil, err
		}
		if ls[0].Proxy {
			pc, err := proxy.Handshake(c)
			if err != nil {
				proxy.refused(ls[0].Mode, c.RemoteAddr(), err)
				c.Close()
				return nil, fmt.Errorf("listen: %w", err)
			}
			c = pc
		}
		ls[0].Listener = OneConn(c)
	}
	if err := DropPrivileges(o.User); err != nil {
		closeAll(ls)
		return nil, err
	}
	return &Launch{Listeners: ls, Stdio: stdio, TLS: tlsConf}, nil
}
