// Package migrate moves mail between an mbox file and a Maildir (folder):
// mailuser import and export. Sites move users from mbox to Maildir when
// they add IMAP; this is mb2md and `doveadm import` for letterbox.
//
// Both directions stream: one message at a time, of which only the header
// is held (up to MaxHeader), so a 1 GB mbox costs what a small one does.
//
// Flags travel as mutt and Dovecot carry them: in an mbox, the Status
// header (R read, O old: seen by a mail reader, no longer new) and
// X-Status (A answered, F flagged, T draft, D deleted); in a Maildir, the
// letters of the file name (S, R, F, D, T) and new/ for a message no reader
// has seen. An import takes the headers off the message, as mutt does when
// it saves to a Maildir and as Dovecot hides them when it reads an mbox,
// with the rest of what Dovecot hides (X-Keywords, X-IMAP, X-IMAPbase,
// X-UID, Content-Length, X-Delivery-ID: its bookkeeping, meaningless in a
// Maildir; keywords are not carried). An export writes Status and X-Status
// back, at the end of the header where mutt and Dovecot put them.
//
// Dates: the From_ line's date becomes the file's mtime (IMAP's
// INTERNALDATE, as Dovecot reads it) and the time in its Maildir name; an
// export writes the mtime back into the From_ line.
package migrate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"letterbox/pkg/maildir"
	"letterbox/pkg/mbox"
)

// MaxHeader is how much of a message's header is held to read and change
// its flags headers; a longer header passes through unchanged (its flags
// headers, if any, stay in it).
const MaxHeader = 1 << 20

// ImportError is an import that stopped: Imported messages are in the
// Maildir, durably; the rest are not.
type ImportError struct {
	Imported int
	Err      error
}

func (e *ImportError) Error() string {
	return fmt.Sprintf("import stopped after %d messages (those are imported, durably; the rest are not): %v", e.Imported, e.Err)
}

func (e *ImportError) Unwrap() error { return e.Err }

// Import copies every message of the mbox in (format f) into the Maildir
// dir (INBOX or a folder; it must exist) and returns how many. Each file is
// written under tmp/, fsynced and linked into new/ or cur/ by
// maildir.Save; new/ and cur/ are fsynced before Import returns, on
// success and on failure alike, so the count returned is what is on disk.
// host is the host part of the new names ("" this host's). A message that
// cannot be read to its end (a truncated file) is not imported.
func Import(dir string, in io.Reader, f mbox.Format, host string) (int, error) {
	s, err := mbox.NewStream(in, f)
	if err != nil {
		return 0, err
	}
	n := 0
	var lastSec int64
	seq := 0
	for {
		from, r, err := s.Next()
		if err == io.EOF {
			break
		}
		if err == nil {
			_, date, ok := mbox.ParseFromLine(from)
			err = importOne(dir, r, date, ok, &lastSec, &seq, host)
		}
		if err != nil {
			if serr := syncNewCur(dir); serr != nil {
				err = errors.Join(err, serr)
			}
			return n, &ImportError{Imported: n, Err: fmt.Errorf("message %d: %w", n+1, err)}
		}
		n++
	}
	if err := syncNewCur(dir); err != nil {
		return n, &ImportError{Imported: 0, Err: err}
	}
	return n, nil
}

func syncNewCur(dir string) error {
	for _, sub := range []string{"new", "cur"} {
		if err := maildir.SyncDir(filepath.Join(dir, sub)); err != nil {
			return fmt.Errorf("migrate: fsync %s/%s: %w", dir, sub, err)
		}
	}
	return nil
}

// importOne saves one message. The name's time is the From_ line's date;
// messages of one second get successive microseconds, so that they keep
// their mbox order among new messages (maildir.DeliveryOrder).
func importOne(dir string, r io.Reader, date time.Time, dated bool, lastSec *int64, seq *int, host string) error {
	br := bufio.NewReaderSize(r, 32<<10)
	h, err := readHeader(br)
	if err != nil {
		return err
	}
	flags, old := h.mboxFlags()
	if !dated {
		// A From_ line without a date we can read: the Date header's, else now.
		date = time.Now()
		if t, err := mail.ParseDate(h.value("Date")); err == nil {
			date = t
		}
	}
	date = date.Truncate(time.Second)
	if date.Unix() == *lastSec {
		*seq++
	} else {
		*lastSec, *seq = date.Unix(), 0
	}
	name := date.Add(time.Duration(*seq%1e6) * time.Microsecond)
	var rest io.Reader = br
	if cl, err := strconv.ParseInt(h.value("Content-Length"), 10, 64); err == nil && h.complete {
		rest = &lengthCheck{r: br, want: cl}
	}
	body := io.MultiReader(bytes.NewReader(h.without(hiddenFields...)), rest)
	_, err = maildir.Save(dir, body, maildir.SaveOptions{Flags: flags, New: !old && flags == "",
		Mtime: date, Time: name, Host: host, NoDirSync: true})
	return err
}

// ErrContentLength: a message's body is not as long as its Content-Length
// says. Writers that count lengths (Dovecot's mbox, mboxcl2) do not quote
// From_ lines, so such a file read as mboxo or mboxrd may split a message
// in two; the import stops rather than do it.
var ErrContentLength = errors.New("the body is not as long as its Content-Length field says: the file may count lengths instead of quoting From_ lines (Dovecot's mbox, mboxcl2), which mboxo and mboxrd readers split wrongly")

// lengthCheck fails at the end of a body whose length is not want. Each
// line may have lost a byte to the reader (a CR before LF, a '>' of From_
// quoting a writer counted), so a body up to a byte a line shorter is
// right.
type lengthCheck struct {
	r        io.Reader
	n, lines int64
	want     int64
}

func (l *lengthCheck) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	l.lines += int64(bytes.Count(p[:n], []byte{'\n'}))
	if err == io.EOF && (l.n > l.want || l.n+l.lines < l.want) {
		return n, fmt.Errorf("%w (%d bytes, Content-Length %d)", ErrContentLength, l.n, l.want)
	}
	return n, err
}

// hiddenFields are the header fields an import takes off: the flags, now
// in the name, and the rest of what Dovecot hides when it reads an mbox
// (its UID and keyword bookkeeping, the mbox's Content-Length).
var hiddenFields = []string{"Status", "X-Status", "X-Keywords", "X-IMAP", "X-IMAPbase", "X-UID", "Content-Length", "X-Delivery-ID"}

// Export writes the messages of the Maildir dir (INBOX or a folder) to w
// as mboxrd, oldest first (maildir.List's order, which is the order an
// import gave them), and returns how many. Each From_ line carries the
// message's envelope sender (Return-Path, else From, else MAILER-DAEMON)
// and its date (the file's mtime); Status and X-Status carry its flags.
// A message that vanishes meanwhile (expunged by a client) is skipped.
func Export(dir string, w io.Writer) (int, error) {
	msgs, err := maildir.List(dir)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	n := 0
	for _, m := range msgs {
		ok, err := exportOne(bw, m)
		if err != nil {
			return n, fmt.Errorf("migrate: export %s: %w", m.Path, err)
		}
		if ok {
			n++
		}
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("migrate: export: %w", err)
	}
	return n, nil
}

func exportOne(w io.Writer, m maildir.Message) (bool, error) {
	f, err := os.Open(m.Path)
	if errors.Is(err, os.ErrNotExist) {
		// Moved to cur/ or given other flags meanwhile: look for it by key.
		if ms, lerr := maildir.List(filepath.Dir(filepath.Dir(m.Path))); lerr == nil {
			for _, o := range ms {
				if o.Key == m.Key {
					return exportOne(w, o)
				}
			}
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	br := bufio.NewReaderSize(f, 32<<10)
	h, err := readHeader(br)
	if err != nil {
		return false, err
	}
	head := h.without("Status", "X-Status")
	if h.complete {
		// The flags headers go last, before the blank line.
		end := len(head) - len(h.sep)
		head = head[:end:end]
		if end > 0 && head[end-1] != '\n' {
			head = append(head, '\n') // a message that is a header without its last line end
		}
		head = append(head, statusFields(m.Flags, m.New)+string(h.sep)...)
	}
	return true, mbox.WriteMessage(w, h.sender(), fi.ModTime(), io.MultiReader(bytes.NewReader(head), br))
}

// statusFields returns the Status and X-Status lines for Maildir flags.
func statusFields(flags string, isNew bool) string {
	var st, xs strings.Builder
	if strings.Contains(flags, "S") {
		st.WriteByte('R')
	}
	if !isNew {
		st.WriteByte('O')
	}
	for _, c := range []struct{ maildir, mbox byte }{{'R', 'A'}, {'F', 'F'}, {'D', 'T'}, {'T', 'D'}} {
		if strings.IndexByte(flags, c.maildir) >= 0 {
			xs.WriteByte(c.mbox)
		}
	}
	out := ""
	if st.Len() > 0 {
		out += "Status: " + st.String() + "\n"
	}
	if xs.Len() > 0 {
		out += "X-Status: " + xs.String() + "\n"
	}
	return out
}

// header is a message's header as read: raw bytes and where each field
// starts.
type header struct {
	raw      []byte
	fields   []field
	sep      []byte // the blank line that ends it ("" when the message ends first)
	complete bool   // the header ended within MaxHeader (blank line or end of message)
}

type field struct {
	name       string
	start, end int // in raw, continuation lines included
}

// readHeader reads the header of a message (LF or CRLF line ends) up to
// and including the blank line that ends it, or up to MaxHeader bytes.
func readHeader(br *bufio.Reader) (*header, error) {
	h := &header{}
	for len(h.raw) < MaxHeader {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: surely not a header we
			// change; keep it as it is.
			h.raw = append(h.raw, line...)
			continue
		}
		if len(line) > 0 {
			switch {
			case len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n':
				h.raw = append(h.raw, line...)
				h.sep, h.complete = h.raw[len(h.raw)-len(line):], true
				return h, nil
			case (line[0] == ' ' || line[0] == '\t') && len(h.fields) > 0:
				h.raw = append(h.raw, line...)
				h.fields[len(h.fields)-1].end = len(h.raw)
			default:
				name, _, _ := bytes.Cut(line, []byte(":"))
				start := len(h.raw)
				h.raw = append(h.raw, line...)
				h.fields = append(h.fields, field{name: string(bytes.TrimRight(name, " \t")), start: start, end: len(h.raw)})
			}
		}
		if err == io.EOF {
			h.complete = true
			return h, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

// without returns the header without the fields named (any case).
func (h *header) without(names ...string) []byte {
	out := make([]byte, 0, len(h.raw))
	pos := 0
	for _, f := range h.fields {
		for _, n := range names {
			if strings.EqualFold(f.name, n) {
				out = append(out, h.raw[pos:f.start]...)
				pos = f.end
				break
			}
		}
	}
	return append(out, h.raw[pos:]...)
}

// value returns the first field named name, unfolded and trimmed.
func (h *header) value(name string) string {
	for _, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			_, v, _ := strings.Cut(string(h.raw[f.start:f.end]), ":")
			return strings.TrimSpace(strings.NewReplacer("\r\n", "", "\n", "").Replace(v))
		}
	}
	return ""
}

// mboxFlags reads Status and X-Status: the Maildir flag letters, and
// whether a mail reader has seen the message (O, or any flag).
func (h *header) mboxFlags() (flags string, old bool) {
	st, xs := h.value("Status"), h.value("X-Status")
	var b []byte
	if strings.Contains(st, "R") {
		b = append(b, 'S')
	}
	for _, c := range []struct{ mbox, maildir byte }{{'A', 'R'}, {'F', 'F'}, {'T', 'D'}, {'D', 'T'}} {
		if strings.IndexByte(xs, c.mbox) >= 0 {
			b = append(b, c.maildir)
		}
	}
	return maildir.SortFlags(string(b)), strings.Contains(st, "O") || len(b) > 0
}

// sender is the address for the From_ line: the envelope sender
// (Return-Path), else the author (From), else MAILER-DAEMON.
func (h *header) sender() string {
	if rp := strings.Trim(h.value("Return-Path"), "<> \t"); rp != "" && !strings.ContainsAny(rp, " \t") {
		return rp
	}
	if a, err := mail.ParseAddress(h.value("From")); err == nil {
		return a.Address
	}
	return "MAILER-DAEMON"
}
