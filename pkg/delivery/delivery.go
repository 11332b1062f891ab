// Package delivery performs local delivery of one message to one
// route.Destination (Maildir, mbox or pipe) with Return-Path and
// Delivered-To, and classifies failures as temporary or permanent. It is
// used by deliver(8) and queue-runner(8).
//
// CONTRACT: exported names are used by cmd/deliver and pkg/queue.
package delivery

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"letterbox/pkg/maildir"
	"letterbox/pkg/mbox"
	"letterbox/pkg/route"
)

// Error is a failed delivery: Temporary (retry) or not (bounce), with an
// RFC 3463 enhanced status code.
type Error struct {
	Temporary bool
	Status    string // e.g. "5.4.6", "4.2.0"
	Err       error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errors wrapped in an *Error's chain; test them with errors.Is.
var (
	// ErrLoop: the message already carries our Delivered-To, or too many.
	ErrLoop = errors.New("mail loop")
	// ErrCantCreate: the mailbox (or its directory) doesn't exist and can't
	// be made.
	ErrCantCreate = errors.New("cannot create mailbox")
	// ErrInput: reading the message failed (not the mailbox's fault).
	ErrInput = errors.New("cannot read message")
	// ErrPipe: a pipe command failed permanently (its stderr follows).
	ErrPipe = errors.New("command failed")
)

// MaxDeliveredTo is the number of Delivered-To headers after which a
// message is taken to be looping (qmail's limit for its hop count).
const MaxDeliveredTo = 100

// maxHeaderScan bounds how much of the header is searched for
// Delivered-To; a header that long is passed on unexamined beyond it.
const maxHeaderScan = 1 << 20

// Headers returns the trace header lines that local delivery prepends:
// Return-Path with the envelope sender (<> for the null sender) and, when
// deliveredTo is not empty, Delivered-To; each line ends with eol.
func Headers(sender, deliveredTo, eol string) string {
	s := "Return-Path: <" + sender + ">" + eol
	if deliveredTo != "" {
		s += "Delivered-To: " + deliveredTo + eol
	}
	return s
}

// Prepare checks msg for a delivery loop to deliveredTo (a Delivered-To
// header with the same address, or more than MaxDeliveredTo of them) and
// returns the message with the trace headers prepended, in the message's
// own line-end style (CRLF when its first line ends so, else LF).
// A loop is a permanent *Error with status 5.4.6.
func Prepare(sender, deliveredTo string, msg io.Reader) (io.Reader, error) {
	return prepare(sender, deliveredTo, msg, true)
}

// prepare is Prepare; without returnPath only Delivered-To is added (for
// forwarding).
func prepare(sender, deliveredTo string, msg io.Reader, returnPath bool) (io.Reader, error) {
	br := bufio.NewReaderSize(msg, 64<<10)
	// Usually the whole header is in the first buffer: it is checked where
	// it lies, and the message goes on from the reader without a copy.
	buf, err := br.Peek(br.Size())
	if err != nil && err != io.EOF {
		return nil, &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: %w: %w", ErrInput, err)}
	}
	whole := err == io.EOF
	eol, ok, err := scanHeader(buf, whole, deliveredTo)
	if err != nil {
		return nil, err
	}
	if ok {
		var rest io.Reader = br
		if whole {
			// The whole message is in buf (br is not read again): spare
			// the read that would find the end a second time.
			rest = bytes.NewReader(buf)
		}
		return &traced{head: traceHeaders(sender, deliveredTo, eol, returnPath), body: rest}, nil
	}
	// A header longer than the buffer: read it line by line into memory.
	var head bytes.Buffer
	count := 0
	for head.Len() < maxHeaderScan {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			head.Write(line)
			continue
		}
		if eol == "" {
			eol = lineEnd(line)
		}
		head.Write(line)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: %w: %w", ErrInput, err)}
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			break // end of header
		}
		if err := checkLine(trimmed, deliveredTo, &count); err != nil {
			return nil, err
		}
	}
	if eol == "" {
		eol = "\n"
	}
	return &traced{head: traceHeaders(sender, deliveredTo, eol, returnPath) + head.String(), body: br}, nil
}

// traced is a message behind the lines head: what io.MultiReader of the
// two reads, and a WriteTo that hands each part to the writer as it lies
// (MultiReader's WriteTo, and io.Copy of a plain Reader, first allocate a
// 32 KiB buffer to copy through: deliver(8) pays for every page it
// touches, and the message is already in memory or behind a bufio.Reader).
type traced struct {
	head string
	body io.Reader
}

func (t *traced) Read(p []byte) (int, error) {
	if t.head != "" {
		n := copy(p, t.head)
		t.head = t.head[n:]
		return n, nil
	}
	return t.body.Read(p)
}

func (t *traced) WriteTo(w io.Writer) (int64, error) {
	var sum int64
	if t.head != "" {
		n, err := io.WriteString(w, t.head)
		sum, t.head = int64(n), t.head[n:]
		if err != nil {
			return sum, err
		}
	}
	n, err := io.Copy(w, t.body)
	return sum + n, err
}

// scanHeader checks the header lines at the start of buf for a loop. ok is
// false when buf ends before the header does and complete is false (more of
// the message follows). A last line without its line feed is not examined.
func scanHeader(buf []byte, complete bool, deliveredTo string) (eol string, ok bool, err error) {
	count := 0
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if !complete {
				return "", false, nil
			}
			if eol == "" {
				eol = "\n"
			}
			return eol, true, nil
		}
		line := buf[:i+1]
		buf = buf[i+1:]
		if eol == "" {
			eol = lineEnd(line)
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			return eol, true, nil
		}
		if err := checkLine(trimmed, deliveredTo, &count); err != nil {
			return "", false, err
		}
	}
}

// lineEnd is the message's line end style, from its first line.
func lineEnd(line []byte) string {
	if bytes.HasSuffix(line, []byte("\r\n")) {
		return "\r\n"
	}
	return "\n"
}

// checkLine counts a Delivered-To header line and reports a loop: our own
// address in it, or more than MaxDeliveredTo of them.
func checkLine(line []byte, deliveredTo string, count *int) error {
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok || !bytes.EqualFold(bytes.TrimSpace(name), []byte("Delivered-To")) {
		return nil
	}
	*count++
	v := strings.Trim(strings.TrimSpace(string(value)), "<>")
	if deliveredTo != "" && strings.EqualFold(v, deliveredTo) {
		return &Error{Status: "5.4.6", Err: fmt.Errorf("delivery: %w: message already delivered to %s", ErrLoop, deliveredTo)}
	}
	if *count > MaxDeliveredTo {
		return &Error{Status: "5.4.6", Err: fmt.Errorf("delivery: %w: more than %d Delivered-To headers", ErrLoop, MaxDeliveredTo)}
	}
	return nil
}

// traceHeaders is Headers, without Return-Path when returnPath is false.
func traceHeaders(sender, deliveredTo, eol string, returnPath bool) string {
	h := Headers(sender, deliveredTo, eol)
	if !returnPath {
		h = strings.TrimPrefix(h, Headers(sender, "", eol))
	}
	return h
}

// Deliver writes the message read from msg to d for envelope sender.
func Deliver(d route.Destination, sender string, msg io.Reader) error {
	return DeliverContext(context.Background(), d, sender, msg)
}

// DeliverContext is Deliver with a context that bounds a pipe command's run.
func DeliverContext(ctx context.Context, d route.Destination, sender string, msg io.Reader) error {
	return deliverContext(ctx, d, sender, msg, nil)
}

// deliverContext is DeliverContext, a Maildir delivery fsyncing new/
// through ds (nil: on its own).
func deliverContext(ctx context.Context, d route.Destination, sender string, msg io.Reader, ds *maildir.DirSyncer) error {
	r, err := Prepare(sender, d.Address, msg)
	if err != nil {
		return err
	}
	switch d.Kind {
	case route.Maildir:
		return toMaildir(d, r, ds)
	case route.Mbox:
		return toMbox(d, sender, r)
	case route.Pipe:
		return toPipe(ctx, d, sender, r)
	}
	return &Error{Status: "5.3.5", Err: fmt.Errorf("delivery: %s: not a local destination (kind %d)", d.Address, d.Kind)}
}

// inputReader marks read errors of the message so they are not blamed on
// the mailbox, and counts what was read.
type inputReader struct {
	r   io.Reader
	n   int64
	err error
}

func (i *inputReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	i.n += int64(n)
	if err != nil && err != io.EOF {
		i.err = err
	}
	return n, err
}

// WriteTo passes the message on without a buffer of io.Copy's when its
// reader can write itself out (traced can); an error of w stays w's, any
// other is the message's.
func (i *inputReader) WriteTo(w io.Writer) (int64, error) {
	wt, ok := i.r.(io.WriterTo)
	if !ok {
		return io.Copy(w, struct{ io.Reader }{i})
	}
	ew := &writeErr{w: w}
	n, err := wt.WriteTo(ew)
	i.n += n
	if err != nil && ew.err == nil {
		i.err = err
	}
	return n, err
}

// writeErr remembers the error its writer returned.
type writeErr struct {
	w   io.Writer
	err error
}

func (e *writeErr) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

func toMaildir(d route.Destination, r io.Reader, ds *maildir.DirSyncer) error {
	if d.Path == "" {
		return &Error{Status: "5.3.5", Err: errors.New("delivery: Maildir destination without a path")}
	}
	if d.Folder != "" {
		if _, err := maildir.FolderPath(d.Path, d.Folder); err != nil {
			return classify(fmt.Errorf("delivery: %w %s: %w", ErrCantCreate, d.Path, err))
		}
	}
	in := &inputReader{r: r}
	_, err := ds.DeliverFolder(d.Path, d.Folder, in)
	if err != nil && in.n == 0 && (errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) && !errors.Is(err, maildir.ErrUnsafe) {
		// Only a missing Maildir pays for creating one; the usual case costs
		// no system call for checking. Nothing was read yet, so the message
		// is whole for the second try.
		if d.Folder != "" {
			_, err = maildir.CreateFolder(d.Path, d.Folder)
		} else {
			err = maildir.Create(d.Path)
		}
		if err != nil {
			return classify(fmt.Errorf("delivery: %w %s: %w", ErrCantCreate, d.Path, err))
		}
		_, err = ds.DeliverFolder(d.Path, d.Folder, in)
	}
	if err != nil {
		if in.err != nil {
			return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: %w: %w", ErrInput, in.err)}
		}
		return classify(fmt.Errorf("delivery: %w", err))
	}
	return nil
}

func toMbox(d route.Destination, sender string, r io.Reader) error {
	if d.Path == "" {
		return &Error{Status: "5.3.5", Err: errors.New("delivery: mbox destination without a path")}
	}
	in := &inputReader{r: r}
	if err := mbox.Append(d.Path, sender, time.Now(), in); err != nil {
		if in.err != nil {
			return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: %w: %w", ErrInput, in.err)}
		}
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			err = fmt.Errorf("%w %s: %w", ErrCantCreate, d.Path, err)
		}
		return classify(fmt.Errorf("delivery: %w", err))
	}
	return nil
}

// classify wraps a mailbox error: all are temporary (the mail waits in the
// queue until the disk, the permissions or the lock holder are fixed);
// disk full is 4.2.0, the rest 4.3.0 unless it's the mailbox itself.
func classify(err error) *Error {
	status := "4.3.0"
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		status = "4.2.0"
	case errors.Is(err, ErrCantCreate), errors.Is(err, os.ErrPermission):
		status = "4.2.0"
	}
	return &Error{Temporary: true, Status: status, Err: err}
}

// maxStderr bounds what is kept of a pipe command's stderr for the error.
const maxStderr = 4096

type limitedBuffer struct{ b bytes.Buffer }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxStderr - l.b.Len(); room > 0 {
		if len(p) > room {
			l.b.Write(p[:room])
		} else {
			l.b.Write(p)
		}
	}
	return len(p), nil
}

// PipeEnv returns the environment variables a pipe command gets (qmail's
// and Postfix's convention), to be added to the inherited environment.
func PipeEnv(d route.Destination, sender string) []string {
	local, domain := d.Address, ""
	if i := strings.LastIndexByte(d.Address, '@'); i >= 0 {
		local, domain = d.Address[:i], d.Address[i+1:]
	}
	orig := d.Original
	if orig == "" {
		orig = d.Address
	}
	return []string{
		"SENDER=" + sender,
		"RECIPIENT=" + d.Address,
		"LOCAL=" + local,
		"DOMAIN=" + domain,
		"ORIGINAL_RECIPIENT=" + orig,
	}
}

func toPipe(ctx context.Context, d route.Destination, sender string, r io.Reader) error {
	if strings.TrimSpace(d.Command) == "" {
		return &Error{Status: "5.3.5", Err: errors.New("delivery: empty pipe command")}
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", d.Command)
	in := &inputReader{r: r}
	cmd.Stdin = in
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), PipeEnv(d, sender)...)
	err := cmd.Run()
	msg := strings.TrimSpace(stderr.b.String())
	if err == nil {
		return nil
	}
	if in.err != nil {
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: %w: %w", ErrInput, in.err)}
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: pipe %q: %w", d.Command, err)}
	}
	if msg == "" {
		msg = ee.String()
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() || ctx.Err() != nil {
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: pipe %q: %s", d.Command, msg)}
	}
	if ee.ExitCode() == 75 {
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: pipe %q: %s", d.Command, msg)}
	}
	return &Error{Status: "5.3.0", Err: fmt.Errorf("delivery: %w: %s", ErrPipe, msg)}
}
