package queue

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"letterbox/pkg/dkim"
	"letterbox/pkg/remote"
	"letterbox/pkg/spool"
)

// dataRemote keeps what each delivery sent.
type dataRemote struct {
	mu    sync.Mutex
	sent  map[string]string // rcpt → message
	spool string
	files []string // the spool's data files, read during the deliveries
}

func (d *dataRemote) Deliver(ctx context.Context, domain, from string, rcpts []string, open func() (io.ReadCloser, error)) ([]remote.Result, error) {
	rc, err := open()
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	names, _ := filepath.Glob(filepath.Join(d.spool, "data", "*"))
	for _, n := range names {
		f, _ := os.ReadFile(n)
		d.files = append(d.files, string(f))
	}
	var out []remote.Result
	for _, r := range rcpts {
		d.sent[r] = string(b)
		out = append(out, remote.Result{Rcpt: r, Code: 250, Status: "2.0.0"})
	}
	return out, nil
}

// TestSignOutgoing: mail from our users (authenticated, relay networks,
// our notices) leaves with a signature that verifies; a stranger's mail
// that we forward leaves unsigned; the spool's data file is unchanged.
func TestSignOutgoing(t *testing.T) {
	r, _, _, logs := newRunner(t)
	dir := t.TempDir()
	key, err := dkim.Generate(dir, "example.test", "sel", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	r.Signer = signer(dir)
	// A key that cannot be read: the mail goes unsigned, with a warning.
	os.MkdirAll(filepath.Join(dir, "broken.test"), 0o700)
	os.WriteFile(filepath.Join(dir, "broken.test", "sel.key"), []byte("not a key"), 0o600)
	dr := &dataRemote{sent: map[string]string{}, spool: r.Spool.Dir}
	r.Remote = dr
	msg := "From: Alice <alice@example.test>\nTo: x@remote.test\nSubject: hi\n\nhello\n"
	for _, e := range []*spool.Envelope{
		{From: "alice@example.test", AuthUser: "alice@example.test", Recipients: []*spool.Recipient{{Address: "auth@remote.test"}}},
		{From: "alice@example.test", Relay: true, Recipients: []*spool.Recipient{{Address: "relay@remote.test"}}},
		{From: "alice@example.test", Recipients: []*spool.Recipient{{Address: "stranger@remote.test"}}},
		{From: "bob@broken.test", AuthUser: "bob", Recipients: []*spool.Recipient{{Address: "broken@remote.test"}}},
	} {
		e.Arrived = start
		e.Recipients[0].State = spool.Pending
		m := msg
		if e.From == "bob@broken.test" {
			m = strings.Replace(msg, "alice@example.test", "bob@broken.test", 1)
		}
		if _, err := r.Spool.Submit(e, strings.NewReader(m)); err != nil {
			t.Fatal(err)
		}
	}
	pass(t, r)
	lookup := func(name string) ([]string, error) {
		rec, err := key.Record()
		if name != "sel._domainkey.example.test" {
			return nil, os.ErrNotExist
		}
		return []string{rec}, err
	}
	for _, rcpt := range []string{"auth@remote.test", "relay@remote.test"} {
		sent := dr.sent[rcpt]
		if !strings.HasPrefix(sent, "DKIM-Signature:") || !strings.HasSuffix(sent, msg) {
			t.Fatalf("%s got:\n%s", rcpt, sent)
		}
		vs, err := msgdkim.VerifyWithOptions(strings.NewReader(strings.ReplaceAll(strings.ReplaceAll(sent, "\r\n", "\n"), "\n", "\r\n")), &msgdkim.VerifyOptions{LookupTXT: lookup})
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("%s: %v %+v", rcpt, err, vs)
		}
	}
	if sent := dr.sent["stranger@remote.test"]; sent != msg {
		t.Fatalf("a stranger's mail was changed:\n%s", sent)
	}
	if !strings.Contains(logs.String(), "dkim: signed") {
		t.Errorf("no log line:\n%s", logs)
	}
	if sent := dr.sent["broken@remote.test"]; strings.Contains(sent, "DKIM-Signature") || !strings.Contains(sent, "bob@broken.test") {
		t.Errorf("with a broken key:\n%s", sent)
	}
	if !strings.Contains(logs.String(), `msg="dkim: sent unsigned"`) || !strings.Contains(logs.String(), "domain=broken.test err=") {
		t.Errorf("no warning:\n%s", logs)
	}
	if len(dr.files) == 0 {
		t.Fatal("no data file seen")
	}
	for _, f := range dr.files {
		if f != msg && !strings.Contains(f, "broken.test") {
			t.Fatalf("a data file changed:\n%s", f)
		}
	}
}
