package listen

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// v2 builds a PROXY v2 header by hand (the specification's layout), so
// the tests don't depend on the parser's own writer.
func v2(cmd, fam byte, addrs []byte, tlvs ...[]byte) []byte {
	b := append([]byte{}, proxyproto.SIGV2...)
	b = append(b, 0x20|cmd, fam)
	payload := append([]byte{}, addrs...)
	for _, t := range tlvs {
		payload = append(payload, t...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

func ip4(src, dst string, sp, dp uint16) []byte {
	b := append(net.ParseIP(src).To4(), net.ParseIP(dst).To4()...)
	b = binary.BigEndian.AppendUint16(b, sp)
	return binary.BigEndian.AppendUint16(b, dp)
}

func ip6(src, dst string, sp, dp uint16) []byte {
	b := append(net.ParseIP(src).To16(), net.ParseIP(dst).To16()...)
	b = binary.BigEndian.AppendUint16(b, sp)
	return binary.BigEndian.AppendUint16(b, dp)
}

func unixAddrs(src, dst string) []byte {
	b := make([]byte, 216)
	copy(b, src)
	copy(b[108:], dst)
	return b
}

func tlv(typ byte, v string) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

const (
	cmdLocal = 0
	cmdProxy = 1
	famTCP4  = 0x11
	famUDP4  = 0x12
	famTCP6  = 0x21
	famUnix  = 0x31
)

// validHeaders are headers the parser must take, with the source each
// names ("" for LOCAL and UNKNOWN). Each is also a fuzz seed.
var validHeaders = []struct {
	name, src string
	b         []byte
}{
	{"v1-tcp4", "192.0.2.7:4321", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 4321 25\r\n")},
	{"v1-tcp6", "[2001:db8::7]:4321", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 4321 993\r\n")},
	{"v1-unknown", "", []byte("PROXY UNKNOWN\r\n")},
	{"v1-unknown-addrs", "", []byte("PROXY UNKNOWN ffff:f::f:ffff ffff:f::f:ffff 65535 65535\r\n")},
	{"v2-tcp4", "192.0.2.7:4321", v2(cmdProxy, famTCP4, ip4("192.0.2.7", "198.51.100.1", 4321, 25))},
	{"v2-tcp6", "[2001:db8::7]:4321", v2(cmdProxy, famTCP6, ip6("2001:db8::7", "2001:db8::1", 4321, 993))},
	{"v2-tcp4-tlvs", "192.0.2.7:4321", v2(cmdProxy, famTCP4, ip4("192.0.2.7", "198.51.100.1", 4321, 25),
		tlv(0x01, "smtp"), tlv(0x02, "mx.example.test"), tlv(0x04, ""), tlv(0xE0, "custom"))},
	{"v2-local", "", v2(cmdLocal, 0, nil)},
	{"v2-local-with-addrs", "", v2(cmdLocal, famTCP4, ip4("10.0.0.1", "10.0.0.2", 1, 2))},
	{"v2-unix", "/run/client.sock", v2(cmdProxy, famUnix, unixAddrs("/run/client.sock", "/run/haproxy.sock"))},
	{"v2-udp4", "192.0.2.7:53", v2(cmdProxy, famUDP4, ip4("192.0.2.7", "198.51.100.1", 53, 53))},
}

// badHeaders must be refused.
var badHeaders = []struct {
	name string
	b    []byte
}{
	{"missing", []byte("EHLO client.example\r\n")},
	{"tls-hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}},
	{"v1-lf-only", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 4321 25\n")},
	{"v1-too-long", []byte("PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n")},
	{"v1-extra-field", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 4321 25 26\r\n")},
	{"v1-few-fields", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 4321\r\n")},
	{"v1-bad-ip", []byte("PROXY TCP4 192.0.2.300 198.51.100.1 4321 25\r\n")},
	{"v1-v6-in-tcp4", []byte("PROXY TCP4 2001:db8::7 198.51.100.1 4321 25\r\n")},
	{"v1-bad-port", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n")},
	{"v1-lowercase", []byte("PROXY tcp4 192.0.2.7 198.51.100.1 4321 25\r\n")},
	{"v2-bad-version", append(append([]byte{}, proxyproto.SIGV2...), 0x31, famTCP4, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)},
	{"v2-bad-command", append(append([]byte{}, proxyproto.SIGV2...), 0x22, famTCP4, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)},
	{"v2-short-addrs", v2(cmdProxy, famTCP4, []byte{192, 0, 2, 7, 198, 51, 100, 1})},
	{"v2-oversized", v2(cmdProxy, famTCP4, ip4("192.0.2.7", "198.51.100.1", 1, 2), tlv(0xE0, strings.Repeat("x", maxProxyV2Payload)))},
	{"v2-truncated-tlv", v2(cmdProxy, famTCP4, ip4("192.0.2.7", "198.51.100.1", 1, 2), []byte{0xE0, 0, 9, 'a'})},
	{"v2-proxy-unspec", v2(cmdProxy, 0, nil)},
	{"v2-family-unspec-stream", v2(cmdProxy, 0x01, nil)},
	{"v2-family-4-no-protocol", v2(cmdProxy, 0x10, ip4("192.0.2.7", "198.51.100.1", 1, 2))},
	{"v2-bad-signature", append([]byte("\r\n\r\n\x00\r\nQUIX\n"), 0x21, famTCP4, 0, 0)},
}

func TestReadProxyHeader(t *testing.T) {
	for _, h := range validHeaders {
		// The client's data follows at once: none of it may be taken.
		r := bytes.NewReader(append(append([]byte{}, h.b...), "EHLO x\r\n"...))
		got, err := ReadProxyHeader(r)
		if err != nil {
			t.Errorf("%s: %v", h.name, err)
			continue
		}
		if rest, _ := io.ReadAll(r); string(rest) != "EHLO x\r\n" {
			t.Errorf("%s: the header took client data: %q left", h.name, rest)
		}
		src := ""
		if !got.Command.IsLocal() {
			src = got.SourceAddr.String()
		}
		if src != h.src {
			t.Errorf("%s: source %q, want %q", h.name, src, h.src)
		}
	}
	for _, h := range badHeaders {
		if got, err := ReadProxyHeader(bytes.NewReader(h.b)); err == nil || !errors.Is(err, ErrProxyHeader) {
			t.Errorf("%s: taken (%+v, %v)", h.name, got, err)
		}
	}
	// Every proper prefix of a valid header is a truncated one.
	for _, h := range validHeaders {
		for n := 0; n < len(h.b); n++ {
			if _, err := ReadProxyHeader(bytes.NewReader(h.b[:n])); err == nil {
				t.Errorf("%s cut to %d bytes: taken", h.name, n)
			}
		}
	}
}

// TestProxySeeds keeps the fuzz seeds in testdata/ in step with the
// tables above.
func TestProxySeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzReadProxyHeader")
	want := map[string][]byte{}
	for _, h := range validHeaders {
		want["valid-"+h.name] = h.b
	}
	for _, h := range badHeaders {
		want["bad-"+h.name] = h.b
	}
	if os.Getenv("LETTERBOX_WRITE_SEEDS") != "" {
		must(t, os.MkdirAll(dir, 0o755))
		for name, b := range want {
			must(t, os.WriteFile(filepath.Join(dir, name), []byte("go test fuzz v1\n[]byte("+quoteGo(b)+")\n"), 0o644))
		}
	}
	for name := range want {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("seed %s missing (LETTERBOX_WRITE_SEEDS=1 go test -run TestProxySeeds writes them): %v", name, err)
		}
	}
}

func quoteGo(b []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			sb.WriteByte(c)
		default:
			sb.WriteString(`\x`)
			sb.WriteByte("0123456789abcdef"[c>>4])
			sb.WriteByte("0123456789abcdef"[c&15])
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzReadProxyHeader: no input panics or reads past the header; a header
// taken is one the parser's own writer gives back the same addresses for.
func FuzzReadProxyHeader(f *testing.F) {
	for _, h := range validHeaders {
		f.Add(h.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		h, err := ReadProxyHeader(r)
		if err != nil {
			if !errors.Is(err, ErrProxyHeader) {
				t.Fatalf("error not wrapping ErrProxyHeader: %v", err)
			}
			return
		}
		used := len(b) - r.Len()
		if h.Version == 1 && !bytes.HasSuffix(b[:used], []byte("\r\n")) {
			t.Fatalf("v1 header %q does not end in CRLF", b[:used])
		}
		if used > maxProxyV1 && h.Version == 1 || used > 16+maxProxyV2Payload {
			t.Fatalf("took %d bytes", used)
		}
		if _, _, ok := h.TCPAddrs(); h.Command.IsLocal() || !ok {
			return
		}
		out, err := h.Format()
		if err != nil {
			t.Fatalf("a header taken cannot be written again: %v", err)
		}
		again, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(out)))
		if err != nil || again.SourceAddr.String() != h.SourceAddr.String() || again.DestinationAddr.String() != h.DestinationAddr.String() {
			t.Fatalf("round trip: %+v %v, want %+v", again, err, h)
		}
	})
}

// proxyPair is a listener behind Proxy on loopback and a logger capturing
// its refusals.
type proxyPair struct {
	ln  net.Listener
	log *syncBuf
}

func newProxyPair(t *testing.T, networks []string, timeout time.Duration) *proxyPair {
	t.Helper()
	nets, err := ParseNetworks(networks)
	must(t, err)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	buf := &syncBuf{}
	p := &Proxy{Networks: nets, Timeout: timeout, Log: slog.New(slog.NewTextHandler(buf, nil))}
	ln := p.Listener(inner, "smtp")
	t.Cleanup(func() { ln.Close() })
	return &proxyPair{ln: ln, log: buf}
}

// syncBuf is a log written by the listener's goroutines and read by the
// test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// acceptOne accepts within 10 s.
func acceptOne(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		must(t, r.err)
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(10 * time.Second):
		t.Fatal("Accept returned nothing within 10 s")
	}
	return nil
}

func dialSend(t *testing.T, addr string, b []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	if len(b) > 0 {
		_, err = c.Write(b)
		must(t, err)
	}
	return c
}

// waitClosed fails unless the server closes c within 10 s without a byte.
func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s: want the connection closed, got %d bytes, %v", what, n, err)
	}
}

func TestProxyListener(t *testing.T) {
	pp := newProxyPair(t, []string{"127.0.0.0/8"}, 5*time.Second)
	addr := pp.ln.Addr().String()

	// A connection that sends nothing yet holds up no other.
	dialSend(t, addr, nil)
	for _, h := range validHeaders[:8] {
		c := dialSend(t, addr, append(append([]byte{}, h.b...), "HELLO"...))
		got := acceptOne(t, pp.ln)
		want := h.src
		if want == "" {
			want = c.LocalAddr().String() // LOCAL: the connection's own
		}
		if got.RemoteAddr().String() != want {
			t.Errorf("%s: RemoteAddr %s, want %s", h.name, got.RemoteAddr(), want)
		}
		if h.src != "" && got.LocalAddr().String() == c.RemoteAddr().String() {
			t.Errorf("%s: LocalAddr is the socket's, not the header's destination", h.name)
		}
		b := make([]byte, 5)
		got.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(got, b); err != nil || string(b) != "HELLO" {
			t.Errorf("%s: the client's data after the header: %q %v", h.name, b, err)
		}
	}
	// UNIX and UDP sources are not served; a bad header is refused.
	for _, b := range [][]byte{validHeaders[9].b, validHeaders[10].b, badHeaders[0].b} {
		waitClosed(t, dialSend(t, addr, b), string(b))
	}
	for _, want := range []string{"only TCP over IPv4 or IPv6", `missing (the connection starts with \"EHLO \")`, "mode=smtp+proxy"} {
		if !strings.Contains(pp.log.String(), want) {
			t.Errorf("log has no %q:\n%s", want, pp.log)
		}
	}
}

func TestProxyRefusals(t *testing.T) {
	// Not from proxy-networks: refused before anything is read.
	pp := newProxyPair(t, []string{"192.0.2.0/24"}, 5*time.Second)
	waitClosed(t, dialSend(t, pp.ln.Addr().String(), validHeaders[0].b), "outside proxy-networks")
	if !strings.Contains(pp.log.String(), "is not in proxy-networks") {
		t.Errorf("log: %s", pp.log)
	}

	// Slow: nothing, or half a header, within the timeout.
	pp = newProxyPair(t, []string{"127.0.0.1"}, 200*time.Millisecond)
	waitClosed(t, dialSend(t, pp.ln.Addr().String(), nil), "no header")
	waitClosed(t, dialSend(t, pp.ln.Addr().String(), validHeaders[4].b[:20]), "half a header")
	if n := strings.Count(pp.log.String(), "none within 200ms"); n != 2 {
		t.Errorf("want 2 timeouts logged, got %d:\n%s", n, pp.log)
	}

	// Closed listener: Accept ends.
	pp.ln.Close()
	if _, err := pp.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}

func TestProxyModes(t *testing.T) {
	modes := []string{"smtp", "submission"}
	ls, err := Listeners([]string{"smtp+proxy=127.0.0.1:0", "submission=127.0.0.1:0"}, "smtp", modes)
	must(t, err)
	closeAll(ls)
	if ls[0].Mode != "smtp" || !ls[0].Proxy || ls[1].Mode != "submission" || ls[1].Proxy {
		t.Fatalf("got %+v", ls)
	}
	if _, err := Listeners([]string{"smtp+proxyx=127.0.0.1:0"}, "smtp", modes); err == nil {
		t.Fatal("smtp+proxyx accepted")
	}
	// A marked listener without proxy-networks would refuse everyone.
	_, err = Open(Options{Listen: []string{"submission+proxy=127.0.0.1:0"}, DefaultMode: "smtp", Modes: modes})
	if err == nil || !strings.Contains(err.Error(), "needs proxy-networks") {
		t.Fatalf("no proxy-networks: %v", err)
	}
	if _, err := Open(Options{Listen: []string{"127.0.0.1:0"}, DefaultMode: "smtp", Modes: modes, ProxyNetworks: []string{"10.0.0.0/33"}}); err == nil {
		t.Fatal("a bad proxy-networks accepted")
	}
	ln, err := Open(Options{Listen: []string{"submission+proxy=127.0.0.1:0"}, DefaultMode: "smtp", Modes: modes, ProxyNetworks: []string{"127.0.0.1"}})
	must(t, err)
	defer closeAll(ln.Listeners)
	l := ln.Listeners[0]
	if _, ok := l.Listener.(*proxyListener); !ok || l.Mode != "submission" || !l.Proxy {
		t.Fatalf("Open gave %+v", l)
	}
	c := dialSend(t, l.Addr().String(), validHeaders[4].b)
	if got := acceptOne(t, l.Listener).RemoteAddr().String(); got != "192.0.2.7:4321" {
		t.Fatalf("RemoteAddr %s", got)
	}
	c.Close()
}
