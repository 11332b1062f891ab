// Command pop3 is the POP3 benchmark driver of bench/pop3.sh.
//
//	pop3 gen DIR COUNT MINSIZE MAXSIZE   write a Maildir of COUNT messages
//	pop3 run [-preauth] [-user U -pass P] -- COMMAND [ARG...]
//
// run starts COMMAND with the POP3 session on its stdin/stdout (inetd mode;
// Dovecot's pop3 in preauth mode has no greeting and no login), does
// LOGIN + STAT + UIDL + RETR of every message + QUIT, one command at a time
// as a simple client does, checks that every RETR returned the size listed,
// and prints: seconds, peak RSS of the server in KiB, messages, octets,
// the seconds until STAT was answered (the login: the server started, the
// user authenticated, the maildrop locked and listed), and the CPU seconds
// (user+system) of this client and of the server: a client whose CPU
// nears the elapsed time, or a sum of the two near the cores' capacity,
// limits what the run measures.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pop3 gen|run ...")
		os.Exit(64)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pop3 bench:", err)
		os.Exit(1)
	}
}

// gen writes messages with LF line ends into DIR/new/, named as our
// deliver and Dovecot's LDA name them (,S=<size>,W=<CRLF size>).
func gen(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("gen DIR COUNT MINSIZE MAXSIZE")
	}
	dir := args[0]
	count, _ := strconv.Atoi(args[1])
	minSize, _ := strconv.Atoi(args[2])
	maxSize, _ := strconv.Atoi(args[3])
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	rnd := rand.New(rand.NewSource(1))
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:71] + "\n"
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for i := 0; i < count; i++ {
		size := minSize
		if maxSize > minSize {
			size += rnd.Intn(maxSize - minSize)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "From: sender%d@example.org\nTo: bench@example.test\nSubject: message %d\nMessage-ID: <%d@bench.example.org>\nDate: Thu, 1 Jan 2026 00:00:00 +0000\n\n", i, i, i)
		for b.Len() < size {
			if rnd.Intn(20) == 0 {
				b.WriteString(".a line starting with a dot\n")
			}
			b.WriteString(line)
		}
		body := b.String()
		lines := strings.Count(body, "\n")
		name := fmt.Sprintf("%d.M%dP1Q%d.bench,S=%d,W=%d", base+int64(i), i, i, len(body), len(body)+lines)
		if err := os.WriteFile(filepath.Join(dir, "new", name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	preauth := fs.Bool("preauth", false, "no greeting and no login (Dovecot's pop3 started logged in)")
	user := fs.String("user", "", "user name")
	pass := fs.String("pass", "", "password")
	profile := fs.String("profile", "", "`DIR`: send the server SIGUSR1 once STAT is answered and again after the last RETR, then wait for DIR/allocs.1.end (a pop3d built with -tags benchprof and LETTERBOX_PROFILE_DIR=DIR profiles the download between them)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return fmt.Errorf("run: no command")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	// The pipes are blocking, read and written with plain system calls:
	// through Go's poller (exec's StdinPipe/StdoutPipe) the driver parked
	// and woke its goroutine, and the runtime's sysmon thread, at every
	// reply; that was more than half of its CPU, paid in every server's
	// time alike, since the client waits for each reply.
	srvIn, in, err := blockingPipe() // the server's stdin; the driver writes in
	if err != nil {
		return err
	}
	outp, srvOut, err := blockingPipe() // the server's stdout; the driver reads outp
	if err != nil {
		return err
	}
	defer outp.Close()
	cmd.Stdin, cmd.Stdout = srvIn, srvOut
	start := time.Now()
	err = cmd.Start()
	srvIn.Close()
	srvOut.Close()
	if err != nil {
		in.Close()
		return err
	}
	r := bufio.NewReaderSize(outp, 64*1024)
	w := bufio.NewWriter(in)
	c := &client{r: r, w: w, start: start}
	if *profile != "" {
		marks := 0
		c.mark = func() {
			// setpriv and env exec in place: the PID is pop3d's.
			cmd.Process.Signal(syscall.SIGUSR1)
			marks++
			if marks == 2 {
				// The profile is written by the server's own goroutine:
				// QUIT only once it is, or the exit cuts it off.
				end := filepath.Join(*profile, "allocs.1.end")
				for i := 0; i < 500; i++ {
					if _, err := os.Stat(end); err == nil {
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
				fmt.Fprintln(os.Stderr, "pop3 bench: no", end, "after 5 s")
			}
		}
	}
	msgs, octets, err := c.session(*preauth, *user, *pass)
	in.Close()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	io.Copy(io.Discard, r)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	elapsed := time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var self syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	// The server's CPU counts its children (setpriv and env exec in
	// place; pop3d's own session process, if any, is waited for).
	srvCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	cliCPU := time.Duration(self.Utime.Nano() + self.Stime.Nano())
	fmt.Printf("%.3f %d %d %d %.4f %.3f %.3f\n", elapsed.Seconds(), ru.Maxrss, msgs, octets, c.login.Seconds(), cliCPU.Seconds(), srvCPU.Seconds())
	return nil
}

type client struct {
	r     *bufio.Reader
	w     *bufio.Writer
	start time.Time
	login time.Duration // from the start to STAT's answer
	mark  func()        // called when the download starts and ends (-profile)
}

func (c *client) cmd(s string) (string, error) {
	c.w.WriteString(s + "\r\n")
	if err := c.w.Flush(); err != nil {
		return "", err
	}
	return c.status(s)
}

func (c *client) status(what string) (string, error) {
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if !strings.HasPrefix(l, "+OK") {
		return "", fmt.Errorf("%s: %q", what, strings.TrimSpace(l))
	}
	return strings.TrimSpace(l), nil
}

// multi reads a multi-line body and returns its octets, un-stuffed.
func (c *client) multi() (int64, error) {
	var n int64
	for {
		l, err := c.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			n += int64(len(l))
			for err == bufio.ErrBufferFull {
				l, err = c.r.ReadSlice('\n')
				n += int64(len(l))
			}
			if err != nil {
				return n, err
			}
			continue
		}
		if err != nil {
			return n, err
		}
		if len(l) == 3 && l[0] == '.' {
			return n, nil
		}
		if l[0] == '.' {
			n--
		}
		n += int64(len(l))
	}
}

// step prints, with POP3_BENCH_STEPS set, the time since start at which a
// login step was answered (on stderr), to see where a login's time goes.
func (c *client) step(what string) {
	if os.Getenv("POP3_BENCH_STEPS") != "" {
		fmt.Fprintf(os.Stderr, "%s %.4f\n", what, time.Since(c.start).Seconds())
	}
}

func (c *client) session(preauth bool, user, pass string) (int, int64, error) {
	if !preauth {
		if _, err := c.status("greeting"); err != nil {
			return 0, 0, err
		}
		c.step("greeting")
		if _, err := c.cmd("USER " + user); err != nil {
			return 0, 0, err
		}
		c.step("USER")
		if _, err := c.cmd("PASS " + pass); err != nil {
			return 0, 0, err
		}
		c.step("PASS")
	}
	st, err := c.cmd("STAT")
	if err != nil {
		return 0, 0, err
	}
	c.login = time.Since(c.start)
	c.step("STAT")
	f := strings.Fields(st)
	if len(f) < 3 {
		return 0, 0, fmt.Errorf("STAT: %q", st)
	}
	count, _ := strconv.Atoi(f[1])
	if c.mark != nil {
		c.mark()
	}
	if _, err := c.cmd("UIDL"); err != nil {
		return 0, 0, err
	}
	if _, err := c.multi(); err != nil {
		return 0, 0, err
	}
	var total int64
	for i := 1; i <= count; i++ {
		l, err := c.cmd("RETR " + strconv.Itoa(i))
		if err != nil {
			return 0, 0, err
		}
		n, err := c.multi()
		if err != nil {
			return 0, 0, err
		}
		if f := strings.Fields(l); len(f) >= 2 && f[1] != strconv.FormatInt(n, 10) {
			return 0, 0, fmt.Errorf("RETR %d: listed %s octets, got %d", i, f[1], n)
		}
		total += n
	}
	if c.mark != nil {
		c.mark()
	}
	if _, err := c.cmd("QUIT"); err != nil {
		return 0, 0, err
	}
	return count, total, nil
}

// blockingPipe returns a pipe whose ends are in blocking mode (os.Pipe's
// are non-blocking, for the poller): the read end first.
func blockingPipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "pipe-r"), os.NewFile(uintptr(fds[1]), "pipe-w"), nil
}
