package handoff_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/privsep/handoff"
	"letterbox/pkg/privsep/privseptest"
)

// The test binary is also the child: Spawn re-executes it, and TestMain
// serves the handed-off "session" the state names.
func TestMain(m *testing.M) {
	if handoff.IsHandoffChild() {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// child is a session process for the tests. State "echo": accept, with the
// process's credentials and open sockets as the report, then answer each
// line with "echo: LINE" until end of input. "refuse": refuse. "die":
// exit without a verdict. "wait": accept, then wait for SIGTERM and say
// "bye" on the connection.
func child() int {
	h, err := handoff.TakeHandoff()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 70
	}
	switch string(h.State) {
	case "refuse":
		h.Refuse([]byte("mailbox locked"))
		return 0
	case "die":
		return 3
	case "wait":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		h.Accept(nil)
		h.Conn.Write([]byte("ready\n"))
		<-sig
		h.Conn.Write([]byte("bye\n"))
		h.Conn.Close()
		return 0
	}
	if err := h.Accept([]byte(selfReport())); err != nil {
		return 71
	}
	r := bufio.NewReader(h.Conn)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			break
		}
		fmt.Fprintf(h.Conn, "echo: %s", l)
	}
	h.Conn.Close()
	return 0
}

// selfReport is this process's Uid, Gid and Groups lines of
// /proc/self/status and one line per open socket.
func selfReport() string {
	var b strings.Builder
	st, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:") || strings.HasPrefix(l, "Groups:") {
			b.WriteString(l + "\n")
		}
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if t, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(t, "socket:") {
			b.WriteString("socket " + e.Name() + "\n")
		}
	}
	return b.String()
}

// checkCred checks a child's report: real, effective, saved and file
// system ids all the user's, its groups exactly the user's, and one socket
// (its connection; not the listener, not the other connections of the
// parent).
func checkCred(t *testing.T, report string, u privseptest.User) {
	t.Helper()
	uid, gid := strconv.Itoa(int(u.UID)), strconv.Itoa(int(u.GID))
	want := map[string]string{
		"Uid:": strings.Join([]string{uid, uid, uid, uid}, "\t"),
		"Gid:": strings.Join([]string{gid, gid, gid, gid}, "\t"),
	}
	var groups []string
	for _, g := range u.Groups {
		groups = append(groups, strconv.Itoa(int(g)))
	}
	sort.Strings(groups)
	sockets := 0
	for _, l := range strings.Split(report, "\n") {
		k, v, _ := strings.Cut(l, "\t")
		switch {
		case want[k] != "":
			if v != want[k] {
				t.Errorf("child %s %q, want %q", k, v, want[k])
			}
			delete(want, k)
		case k == "Groups:":
			got := strings.Fields(v)
			sort.Strings(got)
			if strings.Join(got, " ") != strings.Join(groups, " ") {
				t.Errorf("child groups %v, want %v", got, groups)
			}
			groups = nil
		case strings.HasPrefix(l, "socket "):
			sockets++
		}
	}
	if len(want) > 0 || groups != nil {
		t.Errorf("report lacks %v (groups %v): %q", want, groups, report)
	}
	if sockets != 1 {
		t.Errorf("child holds %d sockets, want only its connection: %q", sockets, report)
	}
}

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	deadline := time.Now().Add(20 * time.Second)
	client.SetDeadline(deadline)
	return client, server
}

func echo(t *testing.T, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != "echo: "+line+"\n" {
		t.Fatalf("echo of %q: %q %v", line, got, err)
	}
}

func spawn(t *testing.T, u privseptest.User, conn net.Conn, state string) *handoff.Child {
	t.Helper()
	c, err := handoff.Spawn(handoff.Session{Cred: u.Cred, Conn: conn, State: []byte(state), Name: "handoff-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kill(); c.Wait() })
	return c
}

// A plain socket is passed itself: the child talks to the client directly,
// with the user's credentials.
func TestHandoffSocket(t *testing.T) {
	u := privseptest.NewUser(t)
	client, server := pair(t)
	_, other := pair(t) // another session's connection: not the child's
	_ = other
	c := spawn(t, u, server, "echo")
	ok, report, err := c.Report()
	if err != nil || !ok {
		t.Fatalf("report: %v %v %q", ok, err, report)
	}
	checkCred(t, string(report), u)
	r := bufio.NewReader(client)
	echo(t, client, r, "hello")
	echo(t, client, r, "again")
	client.(*net.TCPConn).CloseWrite()
	if err := c.Wait(); err != nil {
		t.Fatalf("child exit: %v", err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after the child ended: %v", err)
	}
}

// A TLS connection stays in the parent, which proxies the plaintext.
func TestHandoffTLS(t *testing.T) {
	u := privseptest.NewUser(t)
	cert := selfSigned(t)
	rawClient, rawServer := pair(t)
	srv := tls.Server(rawServer, &tls.Config{Certificates: []tls.Certificate{cert}})
	client := tls.Client(rawClient, &tls.Config{InsecureSkipVerify: true})
	hs := make(chan error, 1)
	go func() { hs <- srv.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	c := spawn(t, u, srv, "echo")
	ok, report, err := c.Report()
	if err != nil || !ok {
		t.Fatalf("report: %v %v %q", ok, err, report)
	}
	checkCred(t, string(report), u)
	r := bufio.NewReader(client)
	echo(t, client, r, "over tls")
	client.CloseWrite()
	if err := c.Wait(); err != nil {
		t.Fatalf("child exit: %v", err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("TLS connection not closed cleanly after the child ended: %v", err)
	}
}

// A child that refuses, or dies before its verdict, leaves the connection
// to the parent, untouched.
func TestHandoffRefusedOrDead(t *testing.T) {
	u := privseptest.NewUser(t)
	for _, state := range []string{"refuse", "die"} {
		client, server := pair(t)
		c := spawn(t, u, server, state)
		ok, report, err := c.Report()
		switch {
		case ok:
			t.Fatalf("%s: accepted", state)
		case state == "refuse" && (err != nil || string(report) != "mailbox locked"):
			t.Fatalf("refuse: %v %q", err, report)
		case state == "die" && !errors.Is(err, handoff.ErrNoReport):
			t.Fatalf("die: %v", err)
		}
		io.WriteString(server, "still mine\n")
		if l, err := bufio.NewReader(client).ReadString('\n'); l != "still mine\n" {
			t.Fatalf("%s: connection lost after the child gave it back: %q %v", state, l, err)
		}
	}
}

// Signal reaches the child (a shutdown); Kill cuts it off.
func TestHandoffSignalAndKill(t *testing.T) {
	u := privseptest.NewUser(t)
	client, server := pair(t)
	c := spawn(t, u, server, "wait")
	if ok, _, err := c.Report(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	r := bufio.NewReader(client)
	if l, _ := r.ReadString('\n'); l != "ready\n" {
		t.Fatalf("%q", l)
	}
	c.Signal(syscall.SIGTERM)
	if l, _ := r.ReadString('\n'); l != "bye\n" {
		t.Fatalf("after SIGTERM: %q", l)
	}
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}

	client, server = pair(t)
	c = spawn(t, u, server, "wait")
	if ok, _, err := c.Report(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	c.Kill()
	if err := c.Wait(); err == nil {
		t.Fatal("a killed child exited cleanly")
	}
	r = bufio.NewReader(client)
	r.ReadString('\n') // "ready"
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("connection open after Kill: %v", err)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
