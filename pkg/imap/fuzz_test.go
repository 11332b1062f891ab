package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// FuzzCommand: any byte stream parses into commands or errors without
// panicking, within the limits, and the reader stays in step with it
// (seeds in testdata/fuzz/FuzzCommand).
func FuzzCommand(f *testing.F) {
	f.Add([]byte("a LOGIN {5}\r\nalice {2+}\r\npw\r\nb SELECT INBOX\r\n"))
	f.Add([]byte("a APPEND INBOX (\\Seen) {11+}\r\nhello\r\nb OK\r\n\r\nc NOOP\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		conts := 0
		br := bufio.NewReaderSize(bytes.NewReader(data), 16)
		r := newReader(br, func() error { conts++; return nil })
		r.maxCmd, r.maxLiteral = 2048, 512
		for n := 0; n < 500; n++ {
			err := r.begin()
			if err == nil {
				var c *command
				c, err = parseCommand(r)
				if err == nil {
					if c.tag == "" || strings.ContainsAny(c.tag, " +(){*%\"\\") || c.name == "" {
						t.Fatalf("command %+v", c)
					}
					if c.name != "APPEND" {
						continue
					}
					a := c.args.(appendArgs)
					if a.size > 4096 {
						err = &literalError{size: a.size, limit: 4096, sync: a.sync}
					} else {
						lit := &literalStream{r: r, left: a.size, utf8: a.utf8}
						got, rerr := io.ReadAll(lit)
						if rerr == nil && int64(len(got)) != a.size {
							t.Fatalf("APPEND literal of %d read as %d", a.size, len(got))
						}
						if err = rerr; err == nil {
							continue
						}
					}
				}
			}
			var se *syntaxError
			var le *literalError
			switch {
			case errors.As(err, &se), errors.As(err, &le) && (le.sync || le.size <= r.discardLimit()):
				if r.skip() != nil {
					return
				}
			default:
				return // end of input, too long, too big: the session ends
			}
		}
	})
}

// FuzzLiteralEnd: whatever a literal holds (CRLFs, things that look like
// commands), it is its octet count that ends it, and the next command is
// the one after it.
func FuzzLiteralEnd(f *testing.F) {
	f.Add([]byte("x\r\nb LOGOUT\r\n"), true)
	f.Add([]byte("\r\n.\r\n{3}\r\n"), false)
	f.Fuzz(func(t *testing.T, payload []byte, sync bool) {
		if len(payload) > 4096 {
			return
		}
		plus := "+"
		if sync {
			plus = ""
		}
		for _, form := range []string{"LOGIN {%d%s}\r\n%s pw\r\n", "APPEND INBOX {%d%s}\r\n%s\r\n"} {
			in := "a " + fmt.Sprintf(form, len(payload), plus, payload) + "zz NOOP\r\n"
			conts := 0
			r := newReader(bufio.NewReaderSize(strings.NewReader(in), 16), func() error { conts++; return nil })
			r.maxLiteral = 4096
			if err := r.begin(); err != nil {
				t.Fatal(err)
			}
			c, err := parseCommand(r)
			if err != nil {
				t.Fatalf("%q: %v", in, err)
			}
			var got []byte
			if a, ok := c.args.(appendArgs); ok {
				got, err = io.ReadAll(&literalStream{r: r, left: a.size})
			} else {
				got = []byte(c.args.(loginArgs).user)
				if sync != (conts == 1) {
					t.Fatalf("%q: %d continuations", in, conts)
				}
			}
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("%q: literal %q, %v", in, got, err)
			}
			if err := r.begin(); err != nil {
				t.Fatal(err)
			}
			if c, err := parseCommand(r); err != nil || c.tag != "zz" || c.name != "NOOP" {
				t.Fatalf("%q: next command %+v, %v", in, c, err)
			}
		}
	})
}
