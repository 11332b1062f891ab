package queue

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"letterbox/pkg/route"
	"letterbox/pkg/spool"
)

// maildirRouter: every address is the Maildir root/<local>.
type maildirRouter struct{ root string }

func (m maildirRouter) Resolve(addr string) ([]route.Destination, error) {
	local, _, _ := strings.Cut(addr, "@")
	return []route.Destination{{Kind: route.Maildir, Path: filepath.Join(m.root, local), Address: addr}}, nil
}

// TestJunkFolder: a message marked junk goes to the Junk folder of a
// Maildir that has one, to INBOX of one that has none (no Junk folder is
// created); unmarked mail goes to INBOX.
func TestJunkFolder(t *testing.T) {
	r, _, _, _ := newRunner(t)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "withjunk", ".Junk", "cur"), 0o700)
	os.MkdirAll(filepath.Join(root, "nojunk", "cur"), 0o700)
	r.Router = maildirRouter{root}
	var mu sync.Mutex
	folders := map[string]string{}
	r.deliverLocal = func(ctx context.Context, d route.Destination, sender string, rd io.Reader) error {
		mu.Lock()
		defer mu.Unlock()
		folders[sender+">"+d.Address] = d.Folder
		return nil
	}
	for _, e := range []*spool.Envelope{
		{From: "a@remote.test", Junk: "dmarc: remote.test p=quarantine", Recipients: []*spool.Recipient{{Address: "withjunk@example.test"}, {Address: "nojunk@example.test"}}},
		{From: "b@remote.test", Recipients: []*spool.Recipient{{Address: "withjunk@example.test"}}},
	} {
		e.Arrived = start
		for _, rc := range e.Recipients {
			rc.State = spool.Pending
		}
		if _, err := r.Spool.Submit(e, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	pass(t, r)
	want := map[string]string{"a@remote.test>withjunk@example.test": "Junk", "a@remote.test>nojunk@example.test": "", "b@remote.test>withjunk@example.test": ""}
	for a, f := range want {
		if got, ok := folders[a]; !ok || got != f {
			t.Errorf("%s: folder %q (delivered %v), want %q", a, got, ok, f)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "nojunk", ".Junk")); err == nil {
		t.Error("a Junk folder was created")
	}
}
