// Package mime builds, lists and unpacks MIME messages (RFC 2045–2049,
// 2047, 2231) and speaks uuencode, for the mime-pack command.
//
// Everything streams: attachments are encoded and decoded in fixed-size
// chunks, so a 2 GB file needs no more memory than a small one. The parser
// is line-based and lenient (missing boundaries, bad base64, unknown
// charsets yield what can be read plus warnings), with caps on nesting,
// part count and header size so that hostile input cannot exhaust memory.
package mime

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	stdmime "mime"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// Attachment is one file to attach.
type Attachment struct {
	Path   string    // file to read; "-" is stdin
	Name   string    // file name in the message (default: base of Path)
	Type   string    // content type; "" detects it from name and content
	Reader io.Reader // if set, read instead of opening Path
}

// PackOptions describes a message to build.
type PackOptions struct {
	From, Subject string
	To, Cc        []string
	Body          io.Reader // text/plain body; nil for none
	HTML          io.Reader // text/html alternative; nil for none
	Attachments   []Attachment
	Inline        bool      // Content-Disposition inline instead of attachment
	Hostname      string    // for the Message-ID
	Date          time.Time // zero: now
	NL            string    // line ending: "\n" (default) or "\r\n"
}

// sniffLen is how much of each part decides its type and encoding.
const sniffLen = 32 << 10

// ParseAttachArg splits the -a argument FILE[:type/subtype]. A suffix is a
// type only if it looks like one, so "C:\x" or "a:b" stay file names.
func ParseAttachArg(s string) Attachment {
	if i := strings.LastIndexByte(s, ':'); i > 0 {
		t := s[i+1:]
		if j := strings.IndexByte(t, '/'); j > 0 && j < len(t)-1 && !strings.ContainsAny(t, " \t") {
			if _, _, err := stdmime.ParseMediaType(t); err == nil {
				return Attachment{Path: s[:i], Type: t}
			}
		}
	}
	return Attachment{Path: s}
}

func boundary() string {
	var b [12]byte
	rand.Read(b[:])
	// "=_" never occurs in base64 or quoted-printable text.
	return "=_lb_" + hex.EncodeToString(b[:])
}

func addrList(list []string) string {
	var out []string
	for _, a := range list {
		if as, err := mail.ParseAddressList(a); err == nil {
			for _, x := range as {
				out = append(out, x.String())
			}
		} else {
			out = append(out, EncodeHeaderText(a))
		}
	}
	return strings.Join(out, ",\n ")
}

// Pack writes the message described by o to w.
func Pack(w io.Writer, o PackOptions) error {
	nl := o.NL
	if nl == "" {
		nl = "\n"
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	var h bytes.Buffer
	date := o.Date
	if date.IsZero() {
		date = time.Now()
	}
	host := o.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	if host == "" {
		host = "localhost"
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	if o.From != "" {
		fmt.Fprintf(&h, "From: %s\n", addrList([]string{o.From}))
	}
	if len(o.To) > 0 {
		fmt.Fprintf(&h, "To: %s\n", addrList(o.To))
	}
	if len(o.Cc) > 0 {
		fmt.Fprintf(&h, "Cc: %s\n", addrList(o.Cc))
	}
	fmt.Fprintf(&h, "Subject: %s\n", foldText(EncodeHeaderText(o.Subject), len("Subject: ")))
	fmt.Fprintf(&h, "Date: %s\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&h, "Message-ID: <%s.%s@%s>\n", date.UTC().Format("20060102150405"), hex.EncodeToString(rnd[:]), host)
	h.WriteString("MIME-Version: 1.0\n")
	writeNL(bw, h.Bytes(), nl)

	var parts []func(io.Writer, string) error
	bodyPart := func(r io.Reader, sub string) func(io.Writer, string) error {
		return func(w io.Writer, nl string) error {
			return writeLeaf(w, nl, r, "text/"+sub, "", "", "")
		}
	}
	var text func(io.Writer, string) error
	switch {
	case o.HTML != nil:
		body := o.Body
		if body == nil {
			body = strings.NewReader("")
		}
		alt := []func(io.Writer, string) error{bodyPart(body, "plain"), bodyPart(o.HTML, "html")}
		text = func(w io.Writer, nl string) error { return writeMultipart(w, nl, "alternative", alt) }
	case o.Body != nil:
		text = bodyPart(o.Body, "plain")
	}
	if text != nil {
		parts = append(parts, text)
	}
	for _, a := range o.Attachments {
		a := a
		parts = append(parts, func(w io.Writer, nl string) error {
			r := a.Reader
			if r == nil {
				if a.Path == "-" {
					r = os.Stdin
				} else {
					f, err := os.Open(a.Path)
					if err != nil {
						return fmt.Errorf("attach: %w", err)
					}
					defer f.Close()
					if fi, err := f.Stat(); err == nil && fi.IsDir() {
						return fmt.Errorf("attach: %s is a directory", a.Path)
					}
					r = f
				}
			}
			name := a.Name
			if name == "" && a.Path != "-" {
				name = filepath.Base(a.Path)
			}
			disp := "attachment"
			if o.Inline {
				disp = "inline"
			}
			return writeLeaf(w, nl, r, a.Type, name, disp, a.Path)
		})
	}
	var err error
	switch len(parts) {
	case 0:
		err = writeLeaf(bw, nl, strings.NewReader(""), "text/plain", "", "", "")
	case 1:
		if o.Attachments == nil || text != nil {
			err = parts[0](bw, nl)
		} else {
			err = writeMultipart(bw, nl, "mixed", parts)
		}
	default:
		err = writeMultipart(bw, nl, "mixed", parts)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// writeNL writes b (with \n line ends) using nl.
func writeNL(w io.Writer, b []byte, nl string) {
	if nl != "\n" {
		b = bytes.ReplaceAll(b, []byte("\n"), []byte(nl))
	}
	w.Write(b)
}

func writeMultipart(w io.Writer, nl, sub string, parts []func(io.Writer, string) error) error {
	b := boundary()
	var h bytes.Buffer
	fmt.Fprintf(&h, "Content-Type: multipart/%s;\n\tboundary=\"%s\"\n\nThis is a multi-part message in MIME format.\n", sub, b)
	writeNL(w, h.Bytes(), nl)
	for _, p := range parts {
		io.WriteString(w, nl+"--"+b+nl)
		if err := p(w, nl); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, nl+"--"+b+"--"+nl)
	return err
}

// DetectType picks a content type from the file name's extension, else from
// the content (http.DetectContentType's sniffing).
func DetectType(name string, head []byte) string {
	if ext := strings.ToLower(filepath.Ext(name)); ext != "" {
		if t := stdmime.TypeByExtension(ext); t != "" {
			mt, _, _ := stdmime.ParseMediaType(t)
			if mt != "" {
				return mt
			}
		}
		if t, ok := extraTypes[ext]; ok {
			return t
		}
	}
	t := http.DetectContentType(head)
	mt, _, _ := stdmime.ParseMediaType(t)
	if mt == "text/plain" && !looksText(head) {
		return "application/octet-stream"
	}
	return mt
}

// extraTypes covers common extensions that /etc/mime.types may lack.
var extraTypes = map[string]string{
	".txt": "text/plain", ".pdf": "application/pdf", ".zip": "application/zip",
	".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
	".html": "text/html", ".htm": "text/html", ".csv": "text/csv", ".json": "application/json",
	".eml": "message/rfc822", ".gz": "application/gzip", ".tar": "application/x-tar",
	".md": "text/markdown", ".ics": "text/calendar", ".xml": "application/xml",
}

// looksText reports whether a sample is text: no NUL, few control bytes.
func looksText(b []byte) bool {
	ctl := 0
	for _, c := range b {
		if c == 0 {
			return false
		}
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f' {
			ctl++
		}
	}
	return ctl*100 <= len(b)
}

// mostlyASCII: quoted-printable stays readable and compact only when at most
// about one byte in ten needs escaping.
func mostlyASCII(b []byte) bool {
	hi := 0
	for _, c := range b {
		if c >= 0x80 || c == 0 {
			hi++
		}
	}
	return hi*10 <= len(b)
}

func writeLeaf(w io.Writer, nl string, r io.Reader, ctype, name, disp, path string) error {
	br := bufio.NewReaderSize(r, sniffLen)
	head, err := br.Peek(sniffLen)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if ctype == "" {
		ctype = DetectType(name, head)
	}
	ctype = strings.ToLower(ctype)
	isText := strings.HasPrefix(ctype, "text/")
	qp := isText && looksText(head) && mostlyASCII(head)
	var h bytes.Buffer
	h.WriteString("Content-Type: " + ctype)
	if isText {
		cs := "us-ascii"
		for _, c := range head {
			if c >= 0x80 {
				cs = "utf-8"
				break
			}
		}
		if cs == "utf-8" && !utf8.Valid(trimPartialRune(head)) {
			cs = "" // unknown 8-bit text: say nothing rather than lie
		}
		if cs != "" {
			h.WriteString(";\n\tcharset=" + cs)
		}
	}
	if name != "" {
		formatParam(&h, "name", name)
	}
	h.WriteByte('\n')
	if qp {
		h.WriteString("Content-Transfer-Encoding: quoted-printable\n")
	} else {
		h.WriteString("Content-Transfer-Encoding: base64\n")
	}
	if disp != "" {
		h.WriteString("Content-Disposition: " + disp)
		if name != "" {
			formatParam(&h, "filename", name)
		}
		h.WriteByte('\n')
	}
	h.WriteByte('\n')
	writeNL(w, h.Bytes(), nl)
	if qp {
		q := newQPWriter(w, nl)
		if _, err := io.Copy(q, br); err != nil {
			return fmt.Errorf("encode %s: %w", path, err)
		}
		return q.Close()
	}
	if _, err := WriteBase64(w, br, nl); err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return nil
}

// trimPartialRune drops an incomplete UTF-8 sequence cut by the sample's end.
func trimPartialRune(b []byte) []byte {
	for i := 1; i <= 3 && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			break
		}
	}
	return b
}

// foldText folds a long unstructured header value at spaces so that lines
// stay near 76 columns (RFC 5322 §2.2.3); a word longer than a line stays
// whole. start is the width of the field name before the value.
func foldText(s string, start int) string {
	if start+len(s) <= 76 || strings.Contains(s, "\n") {
		return s
	}
	var b strings.Builder
	col := start
	for i, w := range strings.Split(s, " ") {
		if i > 0 {
			if col+1+len(w) > 76 && col > 1 {
				b.WriteString("\n")
				col = 0
			}
			b.WriteByte(' ')
			col++
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}
