package sendmail

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"letterbox/pkg/sysexits"
)

func TestParseArgs(t *testing.T) {
	long := func(n string) bool { return n == "config" }
	o, err := ParseArgs("sendmail", []string{"-oem", "-t", "-oi", "-fbob@x.test", "-F", "Bob B", "-odi", "-N", "never", "--config", "f.conf", "-v", "a@x.test,b@x.test", "c"}, long)
	if err != nil {
		t.Fatal(err)
	}
	if !o.ReadHeader || !o.IgnoreDots || !o.Verbose || o.Sender != "bob@x.test" || o.FullName != "Bob B" || o.Op != "send" {
		t.Fatalf("%+v", o)
	}
	if !reflect.DeepEqual(o.Recipients, []string{"a@x.test", "b@x.test", "c"}) || !reflect.DeepEqual(o.Long, []string{"--config", "f.conf"}) {
		t.Fatalf("%+v", o)
	}
	for args, op := range map[string]string{"-bp": "list", "-q": "flush", "-q30m": "flush", "-bs": "smtp", "-bm": "send"} {
		o, _ := ParseArgs("sendmail", []string{args}, long)
		if o.Op != op {
			t.Errorf("%s: op %s", args, o.Op)
		}
	}
	if o, _ := ParseArgs("mailq", nil, long); o.Op != "list" {
		t.Error("mailq is not -bp")
	}
	if _, err := ParseArgs("sendmail", []string{"-f"}, long); err == nil {
		t.Error("-f without argument accepted")
	}
}

func TestPrepareMessage(t *testing.T) {
	me := LocalUser{Login: "joe", Gecos: "Joe User", UID: 1000}
	o := &Options{ReadHeader: true}
	in := "To: A <a@remote.test>, b\nCc: c@remote.test\nBcc: secret@remote.test,\n  other@remote.test\nSubject: hi\n\nline\n.\nafter dot\n"
	p, err := PrepareMessage(o, strings.NewReader(in), me, "host.test", "example.test", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a@remote.test", "b@example.test", "c@remote.test", "secret@remote.test", "other@remote.test"}
	if !reflect.DeepEqual(p.Recipients, want) || p.From != "joe@host.test" {
		t.Fatalf("%+v", p)
	}
	d := string(p.Data)
	for _, s := range []string{"\r\nFrom: \"Joe User\" <joe@host.test>\r\n", "\r\nDate: ", "\r\nMessage-ID: <", "@host.test>\r\n", "Subject: hi\r\n", "\r\n\r\nline\r\n"} {
		if !strings.Contains(d, s) {
			t.Errorf("missing %q in %q", s, d)
		}
	}
	if strings.Contains(d, "Received:") {
		t.Errorf("the trace field is not PrepareMessage's to write: %q", d)
	}
	if strings.Contains(d, "secret") || strings.Contains(d, "other@") || strings.Contains(d, "after dot") || strings.Contains(strings.ReplaceAll(d, "\r\n", ""), "\n") {
		t.Errorf("bad data %q", d)
	}

	// -i keeps the dot line; -F names the sender; a present From stays.
	o = &Options{IgnoreDots: true, FullName: "Robot", Recipients: []string{"x@remote.test"}, Sender: "", SenderSet: true}
	p, err = PrepareMessage(o, strings.NewReader("Subject: s\n\na\n.\nb\n"), me, "host.test", "example.test", 1<<20)
	if err != nil || p.From != "" || !strings.Contains(string(p.Data), "\r\na\r\n.\r\nb\r\n") || !strings.Contains(string(p.Data), "From: \"Robot\" <joe@host.test>") {
		t.Fatalf("%v %+v %q", err, p, p.Data)
	}

	for _, bad := range []struct {
		o    *Options
		in   string
		code int
	}{
		{&Options{ReadHeader: true}, "To: a@@b\n\nx\n", sysexits.DataErr},
		{&Options{Recipients: []string{"a b@c"}}, "x\n", sysexits.DataErr},
		{&Options{Recipients: []string{"a@remote.test"}, Sender: "bad@@x", SenderSet: true}, "x\n", sysexits.DataErr},
		{&Options{}, "x\n", sysexits.Usage},
		{&Options{ReadHeader: true}, "Subject: x\n\nx\n", sysexits.DataErr},
	} {
		_, err := PrepareMessage(bad.o, strings.NewReader(bad.in), me, "host.test", "example.test", 1<<20)
		var se *sysexits.Error
		if !errors.As(err, &se) || se.Code != bad.code {
			t.Errorf("%+v %q: got %v", bad.o, bad.in, err)
		}
	}
}
