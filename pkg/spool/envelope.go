package spool

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The envelope file format (man/letterbox-spool.5), one item a line:
//
//	letterbox-envelope 1
//	id 0CVT4R8M3G5J2ABCDEFGH
//	from "alice@example.org"
//	arrived 2026-11-23T12:00:00.123456789Z
//	size 1234
//	auth "alice"
//	warned 2026-11-23T16:00:00Z
//	notice dsn
//	relay yes
//	junk "dmarc: example.org p=quarantine"
//	rcpt "bob@example.test" state=pending attempts=2 next=2026-11-23T12:30:00Z error="4.2.0 mailbox busy" orcpt="Bob@example.test"
//
// Strings are Go-quoted (so no value can contain a line break); unknown
// keys and unknown rcpt fields are ignored, so a later version can add
// them without breaking an older reader within version 1.
const envelopeMagic = "letterbox-envelope 1"

// maxEnvelope bounds what Parse reads (a sane cap for ~10,000 recipients).
const maxEnvelope = 4 << 20

// Format returns the envelope as text.
func (e *Envelope) Format() string { return string(e.appendFormat(nil)) }

// appendFormat appends the envelope's text to b: Submit writes it without
// a string in between.
func (e *Envelope) appendFormat(b []byte) []byte {
	b = append(b, envelopeMagic+"\n"...)
	if e.ID != "" {
		b = append(append(append(b, "id "...), e.ID...), '\n')
	}
	b = append(strconv.AppendQuote(append(b, "from "...), e.From), '\n')
	b = append(e.Arrived.UTC().AppendFormat(append(b, "arrived "...), time.RFC3339Nano), '\n')
	b = append(strconv.AppendInt(append(b, "size "...), e.Size, 10), '\n')
	if e.AuthUser != "" {
		b = append(strconv.AppendQuote(append(b, "auth "...), e.AuthUser), '\n')
	}
	if !e.Warned.IsZero() {
		b = append(e.Warned.UTC().AppendFormat(append(b, "warned "...), time.RFC3339Nano), '\n')
	}
	if e.Notice != "" {
		b = append(strconv.AppendQuote(append(b, "notice "...), e.Notice), '\n')
	}
	if e.Relay {
		b = append(b, "relay yes\n"...)
	}
	if e.Junk != "" {
		b = append(strconv.AppendQuote(append(b, "junk "...), e.Junk), '\n')
	}
	for _, r := range e.Recipients {
		st := r.State
		if st == "" {
			st = Pending
		}
		b = strconv.AppendQuote(append(b, "rcpt "...), r.Address)
		b = append(append(b, " state="...), st...)
		b = strconv.AppendInt(append(b, " attempts="...), int64(r.Attempts), 10)
		if !r.NextAttempt.IsZero() {
			b = r.NextAttempt.UTC().AppendFormat(append(b, " next="...), time.RFC3339Nano)
		}
		if r.LastError != "" {
			b = strconv.AppendQuote(append(b, " error="...), r.LastError)
		}
		if r.Original != "" {
			b = strconv.AppendQuote(append(b, " orcpt="...), r.Original)
		}
		b = append(b, '\n')
	}
	return b
}

// ErrFormat is wrapped by Parse's errors.
var ErrFormat = errors.New("malformed envelope")

// Parse reads an envelope written by Format.
func Parse(text string) (*Envelope, error) {
	if len(text) > maxEnvelope {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrFormat, maxEnvelope)
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), maxEnvelope)
	if !sc.Scan() || sc.Text() != envelopeMagic {
		return nil, fmt.Errorf("%w: first line is not %q", ErrFormat, envelopeMagic)
	}
	e := &Envelope{}
	seen := map[string]bool{}
	line := 1
	for sc.Scan() {
		line++
		key, rest, _ := strings.Cut(sc.Text(), " ")
		if key == "" {
			continue
		}
		if key != "rcpt" {
			if seen[key] {
				return nil, fmt.Errorf("%w: line %d: %s given twice", ErrFormat, line, key)
			}
			seen[key] = true
		}
		var err error
		switch key {
		case "id":
			if !ValidID(rest) {
				err = fmt.Errorf("bad id %q", rest)
			}
			e.ID = rest
		case "from":
			e.From, err = unquoteAll(rest)
		case "arrived":
			e.Arrived, err = time.Parse(time.RFC3339Nano, rest)
		case "size":
			e.Size, err = strconv.ParseInt(rest, 10, 64)
			if err == nil && e.Size < 0 {
				err = errors.New("negative size")
			}
		case "auth":
			e.AuthUser, err = unquoteAll(rest)
		case "warned":
			e.Warned, err = time.Parse(time.RFC3339Nano, rest)
		case "notice":
			e.Notice, err = unquoteAll(rest)
		case "relay":
			if rest != "yes" {
				err = fmt.Errorf("want yes, not %q", rest)
			}
			e.Relay = true
		case "junk":
			e.Junk, err = unquoteAll(rest)
		case "rcpt":
			var r *Recipient
			r, err = parseRcpt(rest)
			if err == nil {
				e.Recipients = append(e.Recipients, r)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: line %d (%s): %v", ErrFormat, line, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if !seen["from"] || !seen["arrived"] {
		return nil, fmt.Errorf("%w: from or arrived missing", ErrFormat)
	}
	if len(e.Recipients) == 0 {
		return nil, fmt.Errorf("%w: no recipients", ErrFormat)
	}
	return e, nil
}

func unquoteAll(s string) (string, error) {
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return "", err
	}
	if q != s {
		return "", fmt.Errorf("trailing text after %s", q)
	}
	return strconv.Unquote(q)
}

func parseRcpt(s string) (*Recipient, error) {
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return nil, err
	}
	r := &Recipient{State: Pending}
	r.Address, _ = strconv.Unquote(q)
	rest := s[len(q):]
	for rest != "" {
		if rest[0] != ' ' {
			return nil, fmt.Errorf("expected a space at %q", rest)
		}
		rest = rest[1:]
		k, v, ok := strings.Cut(rest, "=")
		if !ok || k == "" || strings.Contains(k, " ") {
			return nil, fmt.Errorf("expected key=value at %q", rest)
		}
		rest = v
		var val string
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				return nil, err
			}
			val, _ = strconv.Unquote(q)
			rest = v[len(q):]
		} else {
			var found bool
			val, rest, found = strings.Cut(v, " ")
			if found {
				rest = " " + rest
			}
		}
		switch k {
		case "state":
			switch State(val) {
			case Pending, Delivered, Bounced:
				r.State = State(val)
			default:
				return nil, fmt.Errorf("unknown state %q", val)
			}
		case "attempts":
			r.Attempts, err = strconv.Atoi(val)
			if err == nil && r.Attempts < 0 {
				err = errors.New("negative attempts")
			}
		case "next":
			r.NextAttempt, err = time.Parse(time.RFC3339Nano, val)
		case "error":
			r.LastError = val
		case "orcpt":
			r.Original = val
		}
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}
