package imap

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset"
)

// corpusMessages are pkg/mime's torture corpus: real-world broken MIME.
func corpusMessages(t testing.TB) map[string][]byte {
	files, err := filepath.Glob("../../testdata/mime/*.eml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus in testdata/mime: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// crlf is a message as FETCH sends it.
func crlf(b []byte) []byte {
	var out []byte
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// TestGoIMAPClient drives the server with go-imap's client, an
// independent implementation: every response below is parsed by its
// decoder, BODYSTRUCTURE and ENVELOPE of the torture corpus included, and
// every part it describes is fetched and compared with what go-message
// reads from the same message.
func TestGoIMAPClient(t *testing.T) {
	ts := startServer(t, nil)
	corpus := corpusMessages(t)
	var names []string
	for name, b := range corpus {
		ts.put(t, "INBOX", string(b))
		names = append(names, name)
	}
	var mu sync.Mutex
	var exists []uint32
	c, err := imapclient.DialInsecure(ts.addr, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				mu.Lock()
				exists = append(exists, *d.NumMessages)
				mu.Unlock()
			}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@example.test", "alice pw").Wait(); err != nil {
		t.Fatal(err)
	}
	if !c.Caps().Has(imap.CapIMAP4rev2) || !c.Caps().Has(imap.CapCondStore) || !c.Caps().Has(imap.CapMove) {
		t.Fatalf("capabilities %v", c.Caps())
	}
	boxes, err := c.List("", "*", &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	uses := map[string]bool{}
	for _, b := range boxes {
		for _, a := range b.Attrs {
			uses[string(a)] = true
		}
	}
	for _, u := range []string{`\Sent`, `\Drafts`, `\Trash`, `\Junk`, `\Archive`} {
		if !uses[u] {
			t.Errorf("no folder with %s in %+v", u, boxes)
		}
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if int(sel.NumMessages) != len(corpus) {
		t.Fatalf("%d messages, want %d", sel.NumMessages, len(corpus))
	}
	all := imap.SeqSet{}
	all.AddRange(1, 0)
	fetched, err := c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true, Envelope: true, RFC822Size: true,
		InternalDate: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range fetched {
		name := names[m.UID-1]
		raw := corpus[name]
		whole := m.FindBodySection(&imap.FetchItemBodySection{})
		if !bytes.Equal(whole, crlf(raw)) || m.RFC822Size != int64(len(whole)) {
			t.Errorf("%s: BODY[] is not the message (%d octets, RFC822.SIZE %d)", name, len(whole), m.RFC822Size)
		}
		if m.Envelope == nil || m.BodyStructure == nil {
			t.Errorf("%s: no envelope or structure", name)
			continue
		}
		// Every leaf the structure names: fetch it and compare with
		// go-message's reading of the same part.
		var paths [][]int
		m.BodyStructure.Walk(func(path []int, part imap.BodyStructure) bool {
			if _, ok := part.(*imap.BodyStructureSinglePart); ok && len(path) > 0 {
				paths = append(paths, append([]int(nil), path...))
			}
			return true
		})
		for _, p := range paths {
			sec := &imap.FetchItemBodySection{Part: p, Peek: true}
			got, err := c.Fetch(imap.UIDSetNum(m.UID), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
			if err != nil || len(got) != 1 {
				t.Errorf("%s: BODY[%v]: %v", name, p, err)
				continue
			}
			want, ok := goMessagePart(raw, p)
			if ok && !bytes.Equal(got[0].FindBodySection(sec), want) {
				t.Errorf("%s: BODY[%v] = %q, go-message reads %q", name, p, clipB(got[0].FindBodySection(sec)), clipB(want))
			}
		}
	}
	// Writing: APPEND, STORE, SEARCH, COPY, MOVE, EXPUNGE, IDLE.
	msg := "From: a@example.org\r\nSubject: appended\r\n\r\nbody\r\n"
	ap := c.Append("INBOX", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft}})
	ap.Write([]byte(msg))
	ap.Close()
	apd, err := ap.Wait()
	if err != nil || apd.UID == 0 {
		t.Fatalf("APPEND: %+v %v", apd, err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.UIDSetNum(apd.UID), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	sr, err := c.UIDSearch(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagFlagged, imap.FlagDraft}, Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "APPENDED"}}}, nil).Wait()
	if err != nil || len(sr.AllUIDs()) != 1 || sr.AllUIDs()[0] != apd.UID {
		t.Fatalf("UID SEARCH: %+v %v", sr, err)
	}
	cp, err := c.Copy(imap.UIDSetNum(apd.UID), "Archive").Wait()
	if err != nil || cp.UIDValidity == 0 {
		t.Fatalf("COPY: %+v %v", cp, err)
	}
	mv, err := c.Move(imap.UIDSetNum(apd.UID), "Trash").Wait()
	if err != nil || mv.UIDValidity == 0 {
		t.Fatalf("MOVE: %+v %v", mv, err)
	}
	st, err := c.Status("Trash", &imap.StatusOptions{NumMessages: true, UIDNext: true, Size: true}).Wait()
	if err != nil || *st.NumMessages != 1 {
		t.Fatalf("STATUS Trash: %+v %v", st, err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	ts.put(t, "INBOX", "Subject: while idle\n\nx\n")
	deadline := time.Now().Add(time.Second)
	for {
		mu.Lock()
		n := len(exists)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no EXISTS within 1 s of a delivery during IDLE")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}

func clipB(b []byte) []byte {
	if len(b) > 60 {
		return b[:60]
	}
	return b
}

// goMessagePart reads part path of raw with go-message: the part's body
// as sent (not decoded), in CRLF form. ok is false when go-message cannot
// read that far (then only our reading counts).
func goMessagePart(raw []byte, path []int) ([]byte, bool) {
	e, err := message.Read(bytes.NewReader(crlf(raw)))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return nil, false
	}
	for depth, n := range path {
		mr := e.MultipartReader()
		if mr == nil {
			if n != 1 || depth != len(path)-1 {
				return nil, false
			}
			break
		}
		var p *message.Entity
		for i := 0; i < n; i++ {
			if p, err = mr.NextPart(); err != nil {
				return nil, false
			}
		}
		e = p
	}
	// go-message decodes; compare encoded parts only where encoding is
	// the identity.
	if enc := strings.ToLower(e.Header.Get("Content-Transfer-Encoding")); enc != "" && enc != "7bit" && enc != "8bit" && enc != "binary" {
		return nil, false
	}
	if ct, _, _ := e.Header.ContentType(); strings.HasPrefix(ct, "message/") {
		return nil, false
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(e.Body); err != nil {
		return nil, false
	}
	return buf.Bytes(), true
}
