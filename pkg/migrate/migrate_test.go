package migrate

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/maildir"
	"letterbox/pkg/mbox"
)

func TestFlagsBothWays(t *testing.T) {
	for _, c := range []struct {
		status, xstatus string
		flags           string
		old             bool
		back            string // Status and X-Status lines written back
	}{
		{"", "", "", false, ""},
		{"O", "", "", true, "Status: O\n"},
		{"RO", "", "S", true, "Status: RO\n"},
		{"R", "", "S", true, "Status: RO\n"},
		{"RO", "AF", "FRS", true, "Status: RO\nX-Status: AF\n"},
		{"O", "TD", "DT", true, "Status: O\nX-Status: TD\n"},
		{"", "F", "F", true, "Status: O\nX-Status: F\n"},
	} {
		head := "Subject: x\n"
		if c.status != "" {
			head += "Status: " + c.status + "\n"
		}
		if c.xstatus != "" {
			head += "X-Status:\n " + c.xstatus + "\n" // folded, as some writers do
		}
		h, err := readHeader(bufio.NewReader(strings.NewReader(head + "\nbody\n")))
		if err != nil {
			t.Fatal(err)
		}
		flags, old := h.mboxFlags()
		if flags != c.flags || old != c.old {
			t.Errorf("%q %q: flags %q old %v", c.status, c.xstatus, flags, old)
		}
		if got := string(h.without(hiddenFields...)); got != "Subject: x\n\n" {
			t.Errorf("%q %q: without the flags %q", c.status, c.xstatus, got)
		}
		if got := statusFields(flags, !old); got != c.back {
			t.Errorf("%q %q: written back as %q, want %q", c.status, c.xstatus, got, c.back)
		}
	}
}

func TestSender(t *testing.T) {
	for head, want := range map[string]string{
		"Return-Path: <b@x.test>\nFrom: A <a@x.test>\n": "b@x.test",
		"Return-Path: <>\nFrom: A <a@x.test>\n":         "a@x.test",
		"From: \"A B\" <a@x.test>\n":                    "a@x.test",
		"Subject: none\n":                               "MAILER-DAEMON",
	} {
		h, _ := readHeader(bufio.NewReader(strings.NewReader(head + "\n")))
		if got := h.sender(); got != want {
			t.Errorf("%q: %q, want %q", head, got, want)
		}
	}
}

// TestImportExport: messages go in with their flags and come back; a
// header-only message without a last line end gets its flags lines on a
// line of their own.
func TestImportExport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "md")
	if err := maildir.Create(dir); err != nil {
		t.Fatal(err)
	}
	in := "From a@x Mon Mar  4 10:00:00 2024\nSubject: one\nStatus: RO\n\nbody\n\n" +
		"From b@x Mon Mar  4 10:00:01 2024\nSubject: header only\nX-Status: F"
	n, err := Import(dir, strings.NewReader(in), mbox.Mboxrd, "h")
	var ie *ImportError
	if n != 1 || !errors.As(err, &ie) || ie.Imported != 1 || !errors.Is(err, mbox.ErrTruncated) {
		t.Fatalf("import of a cut file: %d %v", n, err)
	}
	n, err = Import(dir, strings.NewReader(in+"\n"), mbox.Mboxrd, "h")
	if n != 2 || err != nil {
		t.Fatalf("import: %d %v", n, err)
	}
	var out bytes.Buffer
	n, err = Export(dir, &out)
	if n != 3 || err != nil {
		t.Fatalf("export: %d %v", n, err)
	}
	want := "From MAILER-DAEMON Mon Mar  4 10:00:00 2024\nSubject: one\nStatus: RO\n\nbody\n\n" +
		"From MAILER-DAEMON Mon Mar  4 10:00:00 2024\nSubject: one\nStatus: RO\n\nbody\n\n" +
		"From MAILER-DAEMON Mon Mar  4 10:00:01 2024\nSubject: header only\nStatus: O\nX-Status: F\n\n"
	if out.String() != want {
		t.Errorf("export:\n%q\nwant\n%q", out.String(), want)
	}
}

// TestContentLength: a body shorter or longer than its Content-Length by
// more than a byte a line stops the import; within that, it passes.
func TestContentLength(t *testing.T) {
	for _, c := range []struct {
		cl string
		ok bool
	}{{"6", true}, {"7", true}, {"8", true}, {"5", false}, {"9", false}, {"x", true}} {
		dir := filepath.Join(t.TempDir(), "md")
		maildir.Create(dir)
		in := "From a@x Mon Mar  4 10:00:00 2024\nContent-Length: " + c.cl + "\n\nab\ncd\n\n"
		_, err := Import(dir, struct{ io.Reader }{strings.NewReader(in)}, mbox.Mboxrd, "h")
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrContentLength)) {
			t.Errorf("Content-Length %s: %v", c.cl, err)
		}
	}
}

// TestDateFallback: a From_ line without a date that can be read gives
// the message the date of its Date field (mtime and name).
func TestDateFallback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "md")
	maildir.Create(dir)
	in := "From someone\nDate: Sat, 01 Jan 2000 12:00:00 +0000\nSubject: x\n\nbody\n"
	if n, err := Import(dir, strings.NewReader(in), mbox.Mboxrd, "h"); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	ms, err := maildir.List(dir)
	if err != nil || len(ms) != 1 {
		t.Fatal(ms, err)
	}
	if sec, _ := maildir.DeliveryStamp(ms[0].Key); sec != 946728000 {
		t.Errorf("name's time %d", sec)
	}
	var out bytes.Buffer
	Export(dir, &out)
	if !strings.HasPrefix(out.String(), "From MAILER-DAEMON "+time.Unix(946728000, 0).Format(time.ANSIC)+"\n") {
		t.Errorf("export: %q", out.String())
	}
}
