// Package sendmail is sendmail(8): the sendmail-compatible injection command
// for local programs and cron (also mailq, -bp, -q, -bs). It reads a
// message, applies the admission rules of package submission (address
// syntax, the recipient check, the Date and Message-ID fields) and commits
// it to the spool, or leaves it in the spool's drop directory when the
// user may not write the spool.
package sendmail

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"letterbox/pkg/submission"
	"letterbox/pkg/sysexits"
)

// Options is a parsed sendmail(8) command line.
type Options struct {
	Op         string // "send" (default), "list" (-bp, mailq), "flush" (-q), "smtp" (-bs)
	ReadHeader bool   // -t: recipients from To, Cc, Bcc
	IgnoreDots bool   // -i, -oi: a lone "." does not end the input
	Sender     string // -f, -r
	SenderSet  bool
	FullName   string // -F
	Verbose    bool   // -v
	Recipients []string
	Long       []string // --flags for the config layer (--config FILE, --help…)
	Ignored    []string // other sendmails' flags, accepted and ignored
}

// sendmail flags that take an argument (attached or the next word), from
// Postfix's and sendmail's manuals; unknown ones are ignored as nullmailer
// does.
const argFlags = "BCFNORVXfhLpr"

// ParseArgs parses args (without argv[0]) getopt-style by hand:
// urfave/cli can't accept and ignore other sendmails' flags. Long options
// ("--config FILE", "--help") are passed on in Long; longTakesValue says
// which of them take a value.
func ParseArgs(name string, args []string, longTakesValue func(string) bool) (*Options, error) {
	o := &Options{Op: "send"}
	if name == "mailq" {
		o.Op = "list"
	}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if strings.HasPrefix(a, "--") {
			o.Long = append(o.Long, a)
			if !strings.Contains(a, "=") && longTakesValue(strings.TrimPrefix(a, "--")) && i+1 < len(args) {
				i++
				o.Long = append(o.Long, args[i])
			}
			continue
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		// -oX options: -oi is -i; the rest (-oem, -oee, -odi…) are ignored.
		if strings.HasPrefix(a, "-o") {
			if a == "-oi" {
				o.IgnoreDots = true
			} else {
				o.Ignored = append(o.Ignored, a)
			}
			continue
		}
		if strings.HasPrefix(a, "-b") {
			switch a {
			case "-bp":
				o.Op = "list"
			case "-bs":
				o.Op = "smtp"
			case "-bm":
				o.Op = "send"
			default:
				o.Ignored = append(o.Ignored, a)
			}
			continue
		}
		if strings.HasPrefix(a, "-q") {
			// -q, -q30m, -qIqueueid: one flush either way.
			o.Op = "flush"
			continue
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			if strings.IndexByte(argFlags, c) >= 0 {
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, fmt.Errorf("sendmail: option -%c needs an argument", c)
					}
					i++
					val = args[i]
				}
				switch c {
				case 'f', 'r':
					o.Sender, o.SenderSet = val, true
				case 'F':
					o.FullName = val
				default:
					o.Ignored = append(o.Ignored, "-"+string(c)+" "+val)
				}
				break
			}
			switch c {
			case 't':
				o.ReadHeader = true
			case 'i':
				o.IgnoreDots = true
			case 'v':
				o.Verbose = true
			default:
				o.Ignored = append(o.Ignored, "-"+string(c))
			}
		}
	}
	for _, a := range args[i:] {
		for _, r := range strings.Split(a, ",") {
			if r = strings.TrimSpace(r); r != "" {
				o.Recipients = append(o.Recipients, r)
			}
		}
	}
	return o, nil
}

// Prepared is a message ready for the spool.
type Prepared struct {
	From       string
	Recipients []string
	Data       []byte // CRLF line ends
}

// LocalUser is who runs sendmail.
type LocalUser struct {
	Login string
	Gecos string
	UID   uint32
}

// CurrentUser returns the invoking user; without a passwd entry
// (containers) the login is the uid in decimal.
func CurrentUser() LocalUser {
	uid := uint32(os.Getuid())
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return LocalUser{Login: strconv.FormatUint(uint64(uid), 10), UID: uid}
	}
	gecos, _, _ := strings.Cut(u.Name, ",")
	return LocalUser{Login: u.Username, Gecos: gecos, UID: uid}
}

// PrepareMessage reads the message from r as sendmail does and returns the
// envelope and the data in the spool's form (CRLF line ends). It adds Date,
// Message-ID and From when missing, takes -t recipients from To/Cc/Bcc and
// removes Bcc. The trace field naming the user is not its to write (see
// Run). Bad addresses are a sysexits error with code 65, so that
// nothing is queued.
func PrepareMessage(o *Options, r io.Reader, me LocalUser, hostname, domain string, maxSize int64) (*Prepared, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, sysexits.New(sysexits.IOErr, fmt.Errorf("sendmail: reading the message: %w", err))
	}
	if int64(len(raw)) > maxSize {
		return nil, sysexits.New(sysexits.DataErr, fmt.Errorf("sendmail: message larger than %d octets", maxSize))
	}
	lines := splitLines(raw)
	if !o.IgnoreDots {
		for i, l := range lines {
			if l == "." {
				lines = lines[:i]
				break
			}
		}
	}
	// The header: lines that look like fields (or continue one) up to the
	// first empty line.
	end := 0
	for end < len(lines) && lines[end] != "" && (submission.IsFieldLine(lines[end]) || end > 0 && submission.IsContinuation(lines[end])) {
		end++
	}
	header, body := lines[:end], lines[end:]
	if len(body) > 0 && body[0] == "" {
		body = body[1:]
	}
	type field struct {
		name  string
		lines []string
	}
	var fields []field
	for _, l := range header {
		if submission.IsContinuation(l) && len(fields) > 0 {
			fields[len(fields)-1].lines = append(fields[len(fields)-1].lines, l)
			continue
		}
		fields = append(fields, field{submission.FieldName(l), []string{l}})
	}
	value := func(f field) string {
		v := strings.Join(f.lines, " ")
		_, v, _ = strings.Cut(v, ":")
		return strings.TrimSpace(v)
	}
	has := map[string]bool{}
	var rcpts []string
	for _, f := range fields {
		has[f.name] = true
		if o.ReadHeader && (f.name == "to" || f.name == "cc" || f.name == "bcc") {
			v := value(f)
			if v == "" {
				continue
			}
			list, err := headerAddresses(v, domain)
			if err != nil {
				return nil, sysexits.New(sysexits.DataErr, fmt.Errorf("sendmail: bad address in %s: header %q: %v", f.name, v, err))
			}
			rcpts = append(rcpts, list...)
		}
	}
	rcpts = append(rcpts, o.Recipients...)
	if len(rcpts) == 0 {
		if o.ReadHeader {
			return nil, sysexits.New(sysexits.DataErr, errors.New("sendmail: no recipient addresses found in the header (To, Cc, Bcc)"))
		}
		return nil, sysexits.New(sysexits.Usage, errors.New("sendmail: no recipients given (name them as arguments, or use -t)"))
	}
	p := &Prepared{}
	seen := map[string]bool{}
	for _, r := range rcpts {
		a, err := submission.ParseAddress(r, domain)
		if err != nil {
			return nil, sysexits.New(sysexits.DataErr, fmt.Errorf("sendmail: bad recipient address %q: %v", r, err))
		}
		if !seen[strings.ToLower(a)] {
			seen[strings.ToLower(a)] = true
			p.Recipients = append(p.Recipients, a)
		}
	}
	if o.SenderSet {
		s := strings.TrimSpace(o.Sender)
		if s == "" || s == "<>" {
			p.From = ""
		} else if p.From, err = submission.ParseAddress(s, hostname); err != nil {
			return nil, sysexits.New(sysexits.DataErr, fmt.Errorf("sendmail: bad sender address %q: %v", o.Sender, err))
		}
	} else {
		p.From = me.Login + "@" + hostname
	}

	var out bytes.Buffer
	now := time.Now()
	for _, f := range fields {
		if f.name == "bcc" {
			continue // never shown to the other recipients
		}
		for _, l := range f.lines {
			out.WriteString(l + "\r\n")
		}
	}
	if !has["from"] {
		name := o.FullName
		if name == "" {
			name = me.Gecos
		}
		addr := mail.Address{Name: name, Address: me.Login + "@" + hostname}
		out.WriteString("From: " + addr.String() + "\r\n")
	}
	out.WriteString(submission.MissingFields(has, hostname, now))
	out.WriteString("\r\n")
	for _, l := range body {
		out.WriteString(l + "\r\n")
	}
	p.Data = out.Bytes()
	return p, nil
}

// headerAddresses parses an address list header. Local users often write
// bare names ("To: root"), which RFC 5322 forbids but sendmail accepts: if
// the strict parse fails, each comma-separated element is tried alone.
func headerAddresses(v, domain string) ([]string, error) {
	var out []string
	if list, err := mail.ParseAddressList(v); err == nil {
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out, nil
	}
	for _, part := range splitOutsideQuotes(v) {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if a, err := mail.ParseAddress(part); err == nil {
			out = append(out, a.Address)
			continue
		}
		a, err := submission.ParseAddress(part, domain)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", part, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func splitOutsideQuotes(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case '\\':
			i++
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// splitLines splits on LF, dropping one CR before it: input may have either
// line end; the spool gets CRLF.
func splitLines(b []byte) []string {
	s := string(b)
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}
