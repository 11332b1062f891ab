// Command imap is the IMAP benchmark driver of bench/imap.sh.
//
//	imap run [-preauth] [-user U -pass P] [-bodies] -- COMMAND [ARG...]
//	imap idle -n N -pid PID -addr ADDR -user U -pass P
//	imap idle -n N -spawn -- COMMAND [ARG...]
//
// run starts COMMAND with one IMAP session on its stdin/stdout (inetd
// mode; Dovecot's imap started in preauth mode skips the login), does
// LOGIN + SELECT INBOX + UID FETCH 1:* (FLAGS) (with -bodies, then UID
// FETCH 1:* BODY.PEEK[] too) + LOGOUT, and prints: seconds, peak RSS of
// the server in KiB, messages, octets of bodies.
//
// idle opens N sessions that each log in, SELECT INBOX and IDLE: to one
// server at ADDR whose process is PID, or one COMMAND process per session
// (Dovecot's model). Once all idle, it prints the memory per session in
// KiB: the growth of the server's proportional set size (PSS: shared pages
// divided among the processes sharing them) over N, then the same for the
// resident set size, then N.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: imap run|idle ...")
		os.Exit(64)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "idle":
		err = idle(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "imap bench:", err)
		os.Exit(1)
	}
}

// client is a minimal IMAP client: commands one at a time, literals read
// by their count.
type client struct {
	r *bufio.Reader
	w *bufio.Writer
	n int
	// octets of literals read, messages seen in FETCH responses
	octets, fetched int64
}

func (c *client) cmd(s string) error {
	c.n++
	tag := "b" + strconv.Itoa(c.n)
	c.w.WriteString(tag + " " + s + "\r\n")
	if err := c.w.Flush(); err != nil {
		return err
	}
	for {
		l, fetch, err := c.response()
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		if fetch {
			c.fetched++
		}
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				return fmt.Errorf("%s: %s", s, l)
			}
			return nil
		}
	}
}

// response reads a response; literals in it are read and counted. fetch
// says whether it is a FETCH response.
func (c *client) response() (string, bool, error) {
	l, err := c.line()
	return l, strings.HasPrefix(l, "* ") && strings.Contains(l, " FETCH ("), err
}

// line reads a response's first line and, past any literals, returns it
// (what follows its literals is read and dropped).
func (c *client) line() (string, error) {
	l, err := c.r.ReadString('\n')
	if err != nil {
		return l, err
	}
	first := l
	for strings.HasSuffix(l, "}\r\n") {
		i := strings.LastIndexByte(l, '{')
		n, err := strconv.ParseInt(l[i+1:len(l)-3], 10, 64)
		if i < 0 || err != nil {
			break
		}
		if _, err := io.CopyN(io.Discard, c.r, n); err != nil {
			return l, err
		}
		c.octets += n
		rest, err := c.r.ReadString('\n')
		if err != nil {
			return l, err
		}
		l = rest
	}
	return first, nil
}

// greet reads the greeting and logs in.
func (c *client) greet(preauth bool, user, pass string) error {
	l, err := c.line()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if preauth {
		if !strings.HasPrefix(l, "* PREAUTH") {
			return fmt.Errorf("greeting: %q", l)
		}
		return nil
	}
	if !strings.HasPrefix(l, "* OK") {
		return fmt.Errorf("greeting: %q", l)
	}
	return c.cmd(fmt.Sprintf("LOGIN %q %q", user, pass))
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	preauth := fs.Bool("preauth", false, "no login (Dovecot's imap started logged in)")
	user := fs.String("user", "", "user name")
	pass := fs.String("pass", "", "password")
	bodies := fs.Bool("bodies", false, "also fetch every message's body")
	phases := fs.Bool("phases", false, "print to stderr when each step ended (ms since the start)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return fmt.Errorf("run: no command")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	c := &client{r: bufio.NewReaderSize(out, 64<<10), w: bufio.NewWriter(in)}
	var steps []string
	step := func(name string) {
		if *phases {
			steps = append(steps, fmt.Sprintf("%s %.1f", name, time.Since(start).Seconds()*1000))
		}
	}
	err = c.greet(*preauth, *user, *pass)
	step("login")
	if err == nil {
		err = c.cmd("SELECT INBOX")
	}
	step("select")
	if err == nil {
		err = c.cmd("UID FETCH 1:* (FLAGS)")
	}
	step("fetch")
	msgs := c.fetched
	if err == nil && *bodies {
		c.fetched = 0
		err = c.cmd("UID FETCH 1:* (BODY.PEEK[])")
		if err == nil && c.fetched != msgs {
			err = fmt.Errorf("bodies of %d messages, flags of %d", c.fetched, msgs)
		}
		step("bodies")
	}
	if err == nil {
		err = c.cmd("LOGOUT")
	}
	in.Close()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	io.Copy(io.Discard, c.r)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	elapsed := time.Since(start)
	step("exit")
	if *phases {
		fmt.Fprintln(os.Stderr, strings.Join(steps, "  "))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	fmt.Printf("%.3f %d %d %d\n", elapsed.Seconds(), ru.Maxrss, msgs, c.octets)
	return nil
}

// memory returns a process's PSS and RSS in KiB.
func memory(pid int) (pss, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Pss:":
			pss = v
		case "Rss:":
			rss = v
		}
	}
	return pss, rss, nil
}

func idle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	n := fs.Int("n", 1000, "sessions")
	pid := fs.Int("pid", 0, "the server's process (with -addr)")
	addr := fs.String("addr", "", "the server's address")
	user := fs.String("user", "", "user name")
	pass := fs.String("pass", "", "password")
	spawn := fs.Bool("spawn", false, "one COMMAND process per session, logged in (preauth)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var basePSS, baseRSS int64
	if !*spawn {
		var err error
		if basePSS, baseRSS, err = memory(*pid); err != nil {
			return err
		}
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}()
	var conns []io.Closer
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < *n; i++ {
		var c *client
		if *spawn {
			argv := fs.Args()
			cmd := exec.Command(argv[0], argv[1:]...)
			in, err := cmd.StdinPipe()
			if err != nil {
				return err
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			if err := cmd.Start(); err != nil {
				return fmt.Errorf("session %d: %w", i, err)
			}
			procs = append(procs, cmd)
			conns = append(conns, in)
			c = &client{r: bufio.NewReaderSize(out, 4096), w: bufio.NewWriter(in)}
		} else {
			nc, err := net.Dial("tcp", *addr)
			if err != nil {
				return fmt.Errorf("session %d: %w", i, err)
			}
			conns = append(conns, nc)
			c = &client{r: bufio.NewReaderSize(nc, 4096), w: bufio.NewWriter(nc)}
		}
		if err := c.greet(*spawn, *user, *pass); err != nil {
			return fmt.Errorf("session %d: %w", i, err)
		}
		if err := c.cmd("SELECT INBOX"); err != nil {
			return fmt.Errorf("session %d: %w", i, err)
		}
		c.w.WriteString("i IDLE\r\n")
		c.w.Flush()
		l, err := c.line()
		if err != nil || !strings.HasPrefix(l, "+") {
			return fmt.Errorf("session %d: IDLE: %q %v", i, l, err)
		}
	}
	// Let the servers settle (Go's heap, lazily faulted pages).
	time.Sleep(2 * time.Second)
	var pss, rss int64
	if *spawn {
		for _, p := range procs {
			a, b, err := memory(p.Process.Pid)
			if err != nil {
				return err
			}
			pss += a
			rss += b
		}
	} else {
		a, b, err := memory(*pid)
		if err != nil {
			return err
		}
		pss, rss = a-basePSS, b-baseRSS
	}
	fmt.Printf("%.1f %.1f %d\n", float64(pss)/float64(*n), float64(rss)/float64(*n), *n)
	return nil
}
