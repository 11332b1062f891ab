package mime

import (
	"bytes"
	"io"
	"testing"

	"github.com/emersion/go-message/mail"
)

// go-message, an independent MIME reader, reads what we pack: every
// attachment's name and bytes, the text body, the decoded subject.
func TestPackReadByGoMessage(t *testing.T) {
	files := map[string][]byte{
		"bin.dat":         randBytes(5, 70000),
		"crlf text.txt":   []byte("a\r\nb  \r\n.\r\nFrom x\r\n"),
		"naïve résumé.md": []byte("# titre\n\nété\n"),
		"empty":           {},
	}
	var atts []Attachment
	for _, n := range []string{"bin.dat", "crlf text.txt", "naïve résumé.md", "empty"} {
		atts = append(atts, Attachment{Name: n, Reader: bytes.NewReader(files[n])})
	}
	var msg bytes.Buffer
	if err := Pack(&msg, PackOptions{Subject: "Ça marche ✓", To: []string{"a@example.org"},
		Body: bytes.NewReader([]byte("le texte\n")), Attachments: atts}); err != nil {
		t.Fatal(err)
	}
	r, err := mail.CreateReader(&msg)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := r.Header.Subject(); err != nil || s != "Ça marche ✓" {
		t.Errorf("subject %q, %v", s, err)
	}
	got := map[string][]byte{}
	var text []byte
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		switch h := p.Header.(type) {
		case *mail.AttachmentHeader:
			name, err := h.Filename()
			if err != nil {
				t.Error(err)
			}
			got[name] = b
		case *mail.InlineHeader:
			text = b
		}
	}
	if string(text) != "le texte\n" && string(text) != "le texte\r\n" {
		t.Errorf("body %q", text)
	}
	for n, want := range files {
		if g, ok := got[n]; !ok || !bytes.Equal(g, want) {
			t.Errorf("%q: got %d bytes %.30q, want %d", n, len(g), g, len(want))
		}
	}
}
