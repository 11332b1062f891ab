package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/spool"
)

// listed runs writeList and returns its output.
func listed(t *testing.T, r *Runner, o ListOptions, asJSON bool) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.writeList(&b, o, asJSON); err != nil {
		t.Fatalf("list %+v: %v", o, err)
	}
	return b.String()
}

// TestListJSONStreamed: the streamed array is byte for byte what a
// json.Encoder with a two-space indent writes for the whole queue, for
// an empty queue, one message and several.
func TestListJSONStreamed(t *testing.T) {
	r, _, _, _ := newRunner(t)
	for n := 0; n <= 3; n++ {
		if n > 0 {
			submit(t, r, "alice@example.test", start.Add(time.Duration(n)*time.Second), fmt.Sprintf("u%d@remote.test", n), "bob@example.test")
		}
		envs, err := r.Spool.List()
		if err != nil {
			t.Fatal(err)
		}
		all := make([]JSONMessage, 0, len(envs))
		for _, e := range envs {
			all = append(all, jsonMessage(e))
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			t.Fatal(err)
		}
		if got := listed(t, r, ListOptions{}, true); got != want.String() {
			t.Fatalf("%d messages: streamed\n%s\nwant\n%s", n, got, want.String())
		}
	}
}

// corrupt makes message id's envelope unreadable to Parse, keeping its
// mtime (its due time), so that a listing that reads it fails.
func corrupt(t *testing.T, r *Runner, id string) {
	t.Helper()
	p := filepath.Join(r.Spool.Dir, "env", id)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("not an envelope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

// TestListReadsWhatItPrints: --limit reads the first envelopes only (a
// damaged one far behind is never opened), --state takes due times from
// the schedule index and reads only the messages of that state, and
// --domain selects by pending recipient, reading envelopes until --limit
// have matched; the full listing does read the
// damaged envelope and says so.
func TestListReadsWhatItPrints(t *testing.T) {
	r, _, c, _ := newRunner(t)
	var ids []string
	for i := 0; i < 40; i++ {
		rc := fmt.Sprintf("u%d@remote.test", i)
		if i%10 == 3 {
			rc = fmt.Sprintf("u%d@Other.Test", i)
		}
		ids = append(ids, submit(t, r, "alice@example.test", start.Add(time.Duration(i)*time.Second), rc))
	}
	// Messages 20 and on are deferred an hour (as a pass leaves them).
	for _, id := range ids[20:] {
		l, err := r.Spool.Lock(id)
		if err != nil {
			t.Fatal(err)
		}
		l.Envelope.Recipients[0].Attempts = 1
		l.Envelope.Recipients[0].NextAttempt = start.Add(time.Hour)
		if err := l.Update(l.Envelope); err != nil {
			t.Fatal(err)
		}
		l.Unlock()
	}
	c.add(time.Minute)
	if _, _, err := r.scan(false); err != nil { // writes the schedule index
		t.Fatal(err)
	}
	corrupt(t, r, ids[39])

	if _, err := r.List(ListOptions{}, func(*spool.Envelope) error { return nil }); err == nil {
		t.Fatal("a listing of everything did not report the damaged envelope")
	}
	got := func(o ListOptions) []string {
		t.Helper()
		var out []string
		if _, err := r.List(o, func(e *spool.Envelope) error { out = append(out, e.ID); return nil }); err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		return out
	}
	if g := got(ListOptions{Limit: 3}); strings.Join(g, " ") != strings.Join(ids[:3], " ") {
		t.Fatalf("--limit 3: %v", g)
	}
	if g := got(ListOptions{State: StateDue}); strings.Join(g, " ") != strings.Join(ids[:20], " ") {
		t.Fatalf("--state due: %v", g)
	}
	if g := got(ListOptions{State: StateDeferred, Limit: 2}); strings.Join(g, " ") != strings.Join(ids[20:22], " ") {
		t.Fatalf("--state deferred --limit 2: %v", g)
	}
	if g := got(ListOptions{Domain: "other.test.", Limit: 4}); strings.Join(g, " ") != strings.Join([]string{ids[3], ids[13], ids[23], ids[33]}, " ") {
		t.Fatalf("--domain other.test. --limit 4: %v", g)
	}
	if g := got(ListOptions{Domain: "@OTHER.test", State: StateDue}); strings.Join(g, " ") != ids[3]+" "+ids[13] {
		t.Fatalf("--domain @OTHER.test --state due: %v", g)
	}
	for _, bad := range []ListOptions{{State: "stuck"}, {Limit: -1}} {
		if _, err := r.List(bad, func(*spool.Envelope) error { return nil }); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestListTable: mailq's table, its total, and the total of a selection.
func TestListTable(t *testing.T) {
	r, _, _, _ := newRunner(t)
	if out := listed(t, r, ListOptions{}, false); out != "Mail queue is empty\n" {
		t.Fatalf("empty queue: %q", out)
	}
	id1 := submit(t, r, "alice@example.test", start, "far@remote.test", "bob@example.test")
	id2 := submit(t, r, "", start.Add(time.Second), "carol@example.test")
	out := listed(t, r, ListOptions{}, false)
	for _, want := range []string{"-Queue ID-", id1, id2, "alice@example.test", "MAILER-DAEMON", "far@remote.test", "carol@example.test", "-- 1 Kbytes in 2 Requests.\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	out = listed(t, r, ListOptions{Domain: "remote.test"}, false)
	if !strings.Contains(out, id1) || strings.Contains(out, id2) || !strings.HasSuffix(out, "-- 1 Kbytes in 1 Request shown, of 2 queued.\n") {
		t.Fatalf("--domain remote.test:\n%s", out)
	}
	out = listed(t, r, ListOptions{Domain: "nowhere.test"}, false)
	if strings.Contains(out, "-Queue ID-") || out != "-- 0 Kbytes in 0 Requests shown, of 2 queued.\n" {
		t.Fatalf("nothing selected:\n%s", out)
	}
}
