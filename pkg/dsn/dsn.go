// Package dsn writes RFC 3464 delivery status notifications: the
// multipart/report that queue-runner sends (with the null sender) when it
// gives up on recipients (failure) or warns that delivery is delayed.
package dsn

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-message"
)

// MaxOriginal is the largest original message returned whole (as
// message/rfc822); a larger one is returned as its header only
// (text/rfc822-headers).
const MaxOriginal = 256 << 10

// Actions (RFC 3464 §2.3.3).
const (
	Failed  = "failed"
	Delayed = "delayed"
)

// Recipient is one per-recipient block.
type Recipient struct {
	Final    string // Final-Recipient (the address delivery was tried to)
	Original string // Original-Recipient, when known and different
	Action   string // Failed or Delayed
	Status   string // enhanced status code, e.g. 5.1.1
	// Diagnostic is the remote server's reply ("550 5.1.1 no such user")
	// when Remote is true, else the local error text.
	Diagnostic     string
	Remote         bool
	RemoteMTA      string // the remote host, if any
	LastAttempt    time.Time
	WillRetryUntil time.Time // for Delayed
}

// Report is one notification about one queued message.
type Report struct {
	Hostname   string // the reporting MTA; From is MAILER-DAEMON@Hostname
	To         string // who gets the notification: the original sender or the postmaster
	QueueID    string // the original message's queue id
	Arrived    time.Time
	Date       time.Time // of the notification; zero: now
	Recipients []Recipient
	// Original is the original message and OriginalSize its size.
	Original     io.Reader
	OriginalSize int64
}

// Delay reports whether the report is a delay warning only.
func (r *Report) Delay() bool {
	for _, rc := range r.Recipients {
		if rc.Action != Delayed {
			return false
		}
	}
	return true
}

// Build writes the notification as a complete message with CRLF line ends.
func Build(r *Report) ([]byte, error) {
	if len(r.Recipients) == 0 {
		return nil, fmt.Errorf("dsn: no recipients to report on")
	}
	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	var buf bytes.Buffer
	var h message.Header
	h.Set("From", "Mail Delivery System <MAILER-DAEMON@"+r.Hostname+">")
	h.Set("To", "<"+r.To+">")
	subject := "Undelivered Mail Returned to Sender"
	if r.Delay() {
		subject = "Delayed Mail (still being retried)"
	}
	h.Set("Subject", subject)
	h.Set("Date", date.Format(time.RFC1123Z))
	h.Set("Message-ID", "<"+randHex()+"."+r.QueueID+"@"+r.Hostname+">")
	// RFC 3834: an automatic reply; vacation programs and the like must
	// not answer it.
	h.Set("Auto-Submitted", "auto-replied")
	h.Set("MIME-Version", "1.0")
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})
	mw, err := message.CreateWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}

	// 1. The human-readable part.
	var th message.Header
	th.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	th.Set("Content-Transfer-Encoding", "quoted-printable")
	th.Set("Content-Description", "Notification")
	pw, err := mw.CreatePart(th)
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	io.WriteString(pw, human(r))
	pw.Close()

	// 2. The machine-readable part.
	var sh message.Header
	sh.SetContentType("message/delivery-status", nil)
	sh.Set("Content-Description", "Delivery report")
	pw, err = mw.CreatePart(sh)
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	io.WriteString(pw, status(r, date))
	pw.Close()

	// 3. The original message, or its header.
	if r.Original != nil {
		var oh message.Header
		whole := r.OriginalSize <= MaxOriginal
		if whole {
			oh.SetContentType("message/rfc822", nil)
			oh.Set("Content-Description", "Undelivered message")
		} else {
			oh.SetContentType("text/rfc822-headers", nil)
			oh.Set("Content-Description", "Undelivered message header")
		}
		pw, err = mw.CreatePart(oh)
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		if err := copyCRLF(pw, r.Original, !whole); err != nil {
			return nil, fmt.Errorf("dsn: reading the original: %w", err)
		}
		pw.Close()
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	return buf.Bytes(), nil
}

func human(r *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "This is the mail system at host %s.\r\n\r\n", r.Hostname)
	if r.Delay() {
		b.WriteString("Your message could not be delivered yet to the recipients below.\r\n" +
			"It will be retried; you need not send it again.\r\n\r\n")
	} else {
		b.WriteString("Your message could not be delivered to one or more recipients.\r\n" +
			"It is attached below. The recipients and the reasons:\r\n\r\n")
	}
	for _, rc := range r.Recipients {
		fmt.Fprintf(&b, "<%s>: %s\r\n", rc.Final, oneLine(rc.Diagnostic))
		if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			fmt.Fprintf(&b, "    (will be retried until %s)\r\n", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	return b.String()
}

// status is the message/delivery-status body (RFC 3464 §2.1): the
// per-message fields, then one block per recipient.
func status(r *Report, date time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Reporting-MTA: dns; %s\r\n", r.Hostname)
	if r.QueueID != "" {
		fmt.Fprintf(&b, "X-Letterbox-Queue-ID: %s\r\n", r.QueueID)
	}
	if !r.Arrived.IsZero() {
		fmt.Fprintf(&b, "Arrival-Date: %s\r\n", r.Arrived.Format(time.RFC1123Z))
	}
	for _, rc := range r.Recipients {
		b.WriteString("\r\n")
		if rc.Original != "" && !strings.EqualFold(rc.Original, rc.Final) {
			fmt.Fprintf(&b, "Original-Recipient: rfc822; %s\r\n", ascii(rc.Original))
		}
		fmt.Fprintf(&b, "Final-Recipient: rfc822; %s\r\n", ascii(rc.Final))
		fmt.Fprintf(&b, "Action: %s\r\n", rc.Action)
		st := rc.Status
		if !validStatus(st) {
			st = "5.0.0"
			if rc.Action == Delayed {
				st = "4.0.0"
			}
		}
		fmt.Fprintf(&b, "Status: %s\r\n", st)
		if rc.RemoteMTA != "" {
			fmt.Fprintf(&b, "Remote-MTA: dns; %s\r\n", ascii(rc.RemoteMTA))
		}
		if rc.Diagnostic != "" {
			typ := "x-unix"
			if rc.Remote {
				typ = "smtp"
			}
			fmt.Fprintf(&b, "Diagnostic-Code: %s; %s\r\n", typ, ascii(oneLine(rc.Diagnostic)))
		}
		la := rc.LastAttempt
		if la.IsZero() {
			la = date
		}
		fmt.Fprintf(&b, "Last-Attempt-Date: %s\r\n", la.Format(time.RFC1123Z))
		if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			fmt.Fprintf(&b, "Will-Retry-Until: %s\r\n", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	return b.String()
}

func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// oneLine folds a multi-line diagnostic (a multi-line SMTP reply, a
// command's stderr) into one line, so it cannot break the report's syntax.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ", "\t", " ").Replace(s)
	const max = 900
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

// ascii replaces what a delivery-status field may not hold (it is 7-bit
// text) by '?'.
func ascii(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// copyCRLF copies the message r to w with CRLF line ends; headerOnly stops
// at the end of the header.
func copyCRLF(w io.Writer, r io.Reader, headerOnly bool) error {
	br := bufio.NewReaderSize(r, 64<<10)
	bw := bufio.NewWriter(w)
	var n int64
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			line = strings.TrimRight(line, "\r\n")
			if headerOnly && line == "" {
				break
			}
			n += int64(len(line)) + 2
			if headerOnly && n > MaxOriginal {
				break
			}
			bw.WriteString(line)
			bw.WriteString("\r\n")
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return bw.Flush()
}

func randHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
