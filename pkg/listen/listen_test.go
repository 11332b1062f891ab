package listen

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestListenersSpecs(t *testing.T) {
	ls, err := Listeners([]string{"127.0.0.1:0", "submission=127.0.0.1:0"}, "smtp", []string{"smtp", "submission", "submissions"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(ls)
	if len(ls) != 2 || ls[0].Mode != "smtp" || ls[1].Mode != "submission" {
		t.Fatalf("got %+v", ls)
	}
	if _, err := Listeners([]string{"bogus=127.0.0.1:0"}, "smtp", []string{"smtp"}); err == nil {
		t.Fatal("unknown mode accepted")
	}
	if _, err := Listeners([]string{"127.0.0.1:notaport"}, "smtp", []string{"smtp"}); err == nil {
		t.Fatal("bad address accepted")
	}
}

func TestListenersNone(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	ls, err := Listeners(nil, "smtp", []string{"smtp"})
	if err != nil || ls != nil {
		t.Fatalf("no specs and no LISTEN_FDS must mean stdio: %v %v", ls, err)
	}
}

func TestOneConn(t *testing.T) {
	a, b := net.Pipe()
	l := OneConn(a)
	c, err := l.Accept()
	if err != nil || c == nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { _, err := l.Accept(); done <- err }()
	select {
	case <-done:
		t.Fatal("second Accept returned while the connection is open")
	case <-time.After(50 * time.Millisecond):
	}
	go io.Copy(io.Discard, b)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second Accept: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Accept did not return after the connection closed")
	}
}

func TestTrust(t *testing.T) {
	nets, err := ParseNetworks([]string{"127.0.0.0/8", "::1", " 10.1.2.3 "})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.5")}, true},
		{&net.TCPAddr{IP: net.ParseIP("::1")}, true},
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3")}, true},
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.4")}, false},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1")}, false},
		{UnknownAddr{}, false},
	}
	for _, c := range cases {
		if got := IsTrusted(c.addr, nets); got != c.want {
			t.Errorf("IsTrusted(%v) = %v", c.addr, got)
		}
	}
	if _, err := ParseNetworks([]string{"300.0.0.0/8"}); err == nil {
		t.Error("bad network accepted")
	}
	if IsLoopback(UnknownAddr{}) || !IsLoopback(&net.TCPAddr{IP: net.ParseIP("127.0.0.1")}) {
		t.Error("IsLoopback")
	}
}

func TestLoadTLS(t *testing.T) {
	if c, err := LoadTLS("", ""); c != nil || err != nil {
		t.Fatal("no files must mean no TLS")
	}
	if _, err := LoadTLS("/nonexistent.pem", ""); err == nil {
		t.Fatal("cert without key accepted")
	}
	if _, err := LoadTLS("/nonexistent.pem", "/nonexistent.key"); err == nil {
		t.Fatal("missing files accepted")
	}
}

func TestOpen(t *testing.T) {
	ln, err := Open(Options{Listen: []string{"imaps=127.0.0.1:0"}, DefaultMode: "imap", StdioMode: "imap", Modes: []string{"imap", "imaps"}})
	if err != nil || ln.Stdio || len(ln.Listeners) != 1 || ln.Listeners[0].Mode != "imaps" || ln.TLS != nil {
		t.Fatalf("Open with --listen: %+v %v", ln, err)
	}
	closeAll(ln.Listeners)
	t.Setenv("LISTEN_FDS", "")
	if _, err := Open(Options{DefaultMode: "imap", StdioMode: "bogus", Modes: []string{"imap", "imaps"}}); err == nil {
		t.Fatal("an unknown stdio mode was accepted")
	}
	// The key is read first: a bad one fails before anything is bound.
	_, err = Open(Options{Listen: []string{"127.0.0.1:0"}, DefaultMode: "imap", Modes: []string{"imap"},
		TLSCert: "/nonexistent.pem", TLSKey: "/nonexistent.key"})
	if err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("missing key: %v", err)
	}
}
