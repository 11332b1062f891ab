// Command proxy drives IMAP sessions for bench/proxy.sh: N sessions over C
// connections at a time, each LOGIN, SELECT INBOX, UID FETCH 1:* (FLAGS),
// LOGOUT, and prints "SECONDS SESSIONS" (every session must succeed).
//
//	proxy imap -addr HOST:PORT -user U -pass P [-n 1000] [-c 10] [-header]
//
// -header sends a PROXY v2 header first (as HAProxy's send-proxy-v2 does),
// for a +proxy listener reached without HAProxy.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "imap" {
		fmt.Fprintln(os.Stderr, "usage: proxy imap -addr HOST:PORT -user U -pass P [-n N] [-c C]")
		os.Exit(64)
	}
	fs := flag.NewFlagSet("imap", flag.ExitOnError)
	addr := fs.String("addr", "", "server")
	user := fs.String("user", "", "login")
	pass := fs.String("pass", "", "password")
	n := fs.Int("n", 1000, "sessions")
	c := fs.Int("c", 10, "sessions at a time")
	header := fs.Bool("header", false, "send a PROXY v2 header first")
	fs.Parse(os.Args[2:])
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *c)
	start := time.Now()
	for i := 0; i < *c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(*n) {
				if err := session(*addr, *user, *pass, *header); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errs:
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	default:
	}
	fmt.Printf("%.3f %d\n", elapsed.Seconds(), *n)
}

func session(addr, user, pass string, header bool) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if header {
		h := proxyproto.HeaderProxyFromAddrs(2, conn.LocalAddr(), conn.RemoteAddr())
		if _, err := h.WriteTo(conn); err != nil {
			return err
		}
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(conn)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		return fmt.Errorf("greeting %q: %v", l, err)
	}
	for i, cmd := range []string{
		fmt.Sprintf("LOGIN %q %q", user, pass), "SELECT INBOX", "UID FETCH 1:* (FLAGS)", "LOGOUT",
	} {
		tag := fmt.Sprintf("a%d", i)
		if _, err := fmt.Fprintf(conn, "%s %s\r\n", tag, cmd); err != nil {
			return err
		}
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("%s: %v", cmd, err)
			}
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" OK") {
					return fmt.Errorf("%s: %s", cmd, strings.TrimSpace(l))
				}
				break
			}
		}
	}
	return nil
}
