package check

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzHeaderParser: any input, cut anywhere, gives the same header, whose
// fields are the input's first octets byte for byte (a last line without
// its end gets one); limits hold.
func FuzzHeaderParser(f *testing.F) {
	for _, s := range []string{
		"From: a\r\nTo: b\r\n\r\nbody\r\n",
		"Subject: x\r\n folded\r\n\tagain\r\n\r\n",
		" leading continuation\r\nFrom: a\r\n\r\n",
		"From : obsolete space\r\nno colon here\r\nbody",
		"X: a\r\nY: b",
		"X: a\r\n",
		"\r\nbody only",
		"From: a\n\nLF only\n",
		"\xff\xfe: binary\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		lim := HeaderLimits{MaxFields: 20, MaxBytes: 2000}
		whole := &headerParser{lim: lim}
		whole.feed(data, 0)
		whole.finish(int64(len(data)))
		pieces := &headerParser{lim: lim}
		step := int(cut%16) + 1
		for off := 0; off < len(data); off += step {
			end := min(off+step, len(data))
			pieces.feed(data[off:end], int64(off))
		}
		pieces.finish(int64(len(data)))
		if (whole.err == nil) != (pieces.err == nil) {
			t.Fatalf("errors differ: %v / %v", whole.err, pieces.err)
		}
		if whole.err != nil {
			return
		}
		if len(whole.fields) > lim.MaxFields {
			t.Fatalf("%d fields", len(whole.fields))
		}
		if whole.sepOff != pieces.sepOff || whole.bodyOff != pieces.bodyOff || len(whole.fields) != len(pieces.fields) {
			t.Fatalf("cut in pieces of %d: sep %d/%d body %d/%d fields %d/%d", step,
				whole.sepOff, pieces.sepOff, whole.bodyOff, pieces.bodyOff, len(whole.fields), len(pieces.fields))
		}
		var head []byte
		for i, fl := range whole.fields {
			if !bytes.Equal(fl.Raw, pieces.fields[i].Raw) || fl.Name != pieces.fields[i].Name {
				t.Fatalf("field %d differs", i)
			}
			if fl.Name == "" || fieldName(fl.Raw) != fl.Name {
				t.Fatalf("field %d has name %q", i, fl.Name)
			}
			head = append(head, fl.Raw...)
		}
		if whole.sepOff > int64(len(data)) || whole.bodyOff < whole.sepOff || whole.bodyOff > int64(len(data)) {
			t.Fatalf("offsets %d %d of %d", whole.sepOff, whole.bodyOff, len(data))
		}
		orig := data[:whole.sepOff]
		if !bytes.Equal(head, orig) && !bytes.Equal(head, append(append([]byte(nil), orig...), "\r\n"...)) {
			t.Fatalf("header %q is not the input's %q", head, orig)
		}
		// The fields' values never break the header when written back
		// by newField.
		for _, fl := range whole.fields {
			nf := newField(fl.Name, fl.Value())
			p := &headerParser{lim: DefaultHeaderLimits}
			p.feed(append(nf.Raw, "\r\n"...), 0)
			if !p.done || len(p.fields) != 1 {
				t.Fatalf("newField(%q, %q) = %q does not parse as one field", fl.Name, fl.Value(), nf.Raw)
			}
		}
	})
}

// FuzzTagList: the tag-list parser never panics, its names are valid and
// unique when it says ok, and its values have no surrounding white space.
func FuzzTagList(f *testing.F) {
	for _, s := range []string{
		"v=1; a=rsa-sha256; d=example.org; s=sel; h=from:to; bh=abc=; b=def\r\n ghi",
		"v=DMARC1; p=reject; pct=50; rua=mailto:a@b",
		";;;", "=", "a=", "=b", "a=b=c", "a b=c", "v=1; v=1", "1a=b", "a_1=x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tags, ok := ParseTagList(s)
		seen := map[string]bool{}
		for _, tg := range tags {
			if !validTagName(tg.Name) {
				t.Fatalf("invalid name %q", tg.Name)
			}
			if strings.Trim(tg.Value, " \t\r\n") != tg.Value {
				t.Fatalf("value %q not trimmed", tg.Value)
			}
			if seen[tg.Name] && ok {
				t.Fatalf("duplicate %q accepted", tg.Name)
			}
			seen[tg.Name] = true
		}
	})
}

// FuzzAuthservID: the authserv-id parser and the From domain extraction
// never panic, and an id is never empty for a field that starts with a
// plain token.
func FuzzAuthservID(f *testing.F) {
	for _, s := range []string{"mx.example.test; spf=pass", "(c) mx (d) 1; none", `"quoted"; x`, "((nested) x) y;", `\`, "a@b.test, <c@d.test>", "<a@b> (x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id := authservID(s)
		if strings.ContainsAny(id, " \t;") {
			t.Fatalf("id %q", id)
		}
		for _, d := range fromDomains([]Field{newField("From", s)}) {
			if d == "" || strings.ContainsAny(d, " @<>") {
				t.Fatalf("domain %q from %q", d, s)
			}
		}
	})
}

// FuzzSignatureTags: what Authentication-Results says of a signature is
// what it was before the tag list stopped copying (Field.Value, a split
// list, strings.Map over the whole b=): the same d, i, s, a and header.b
// for any field, valid UTF-8 or not.
func FuzzSignatureTags(f *testing.F) {
	for _, s := range []string{
		"v=1; a=rsa-sha256; d=example.org; s=sel; h=from:to; bh=abc=; b=de\r\n f ghijklmn",
		"d = a.test ;s=\r\n\tx; b=\xff\xfeabcdefgh", "b=a\r\nb\tc d\re\nfghij", "i=@x\x80y.test; d=x\xc3\xa9.test",
		";;", "b=", "a=b=c; b=12345678901",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fld := Field{Name: "DKIM-Signature", Raw: []byte("DKIM-Signature:" + s + "\r\n")}
		got, want := signatureTags(fld), refSignatureTags(fld)
		if got != want {
			t.Fatalf("%q: %+v, want %+v", s, got, want)
		}
	})
}

// refSignatureTags is how the tags of a signature were read before.
func refSignatureTags(f Field) dkimOutcome {
	var tags []Tag
	for _, part := range strings.Split(f.Value(), ";") {
		name, value, found := strings.Cut(part, "=")
		name = strings.Trim(name, " \t\r\n")
		if !found || !validTagName(name) {
			continue
		}
		tags = append(tags, Tag{Name: name, Value: strings.Trim(value, " \t\r\n")})
	}
	strip := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch r {
			case ' ', '\t', '\r', '\n':
				return -1
			}
			return r
		}, s)
	}
	b := strip(tagValue(tags, "b"))
	if len(b) > 8 {
		b = b[:8]
	}
	return dkimOutcome{
		domain:     printable(strip(tagValue(tags, "d")), 255),
		identifier: printable(strip(tagValue(tags, "i")), 255),
		selector:   printable(strip(tagValue(tags, "s")), 255),
		algorithm:  printable(strip(tagValue(tags, "a")), 40),
		b:          printable(b, 8),
	}
}
