package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/delivery"
)

var errFull = &delivery.Error{Temporary: true, Status: "4.2.2", Err: errors.New("full")}

// deferred submits n messages to bob, who is full, and passes until the
// index knows every envelope as it now is.
func deferred(t *testing.T, r *Runner, b *box, n int) []string {
	t.Helper()
	b.fail["bob@example.test"] = errFull
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, submit(t, r, "alice@example.test", start, "bob@example.test"))
	}
	if st := pass(t, r); st.Stat != n || st.Deferred != n {
		t.Fatalf("first pass: %+v", st)
	}
	// The deferral rewrote every envelope (new inodes): stat'ed once more.
	if st := pass(t, r); st.Stat != n || st.Messages != 0 {
		t.Fatalf("second pass: %+v", st)
	}
	return ids
}

func TestScheduleIndex(t *testing.T) {
	r, b, c, _ := newRunner(t)
	ids := deferred(t, r, b, 5)
	c.add(10 * time.Second)
	if st := pass(t, r); st.Stat != 0 || st.Queued != 5 || st.Messages != 0 || !st.Next.Equal(start.Add(time.Minute)) {
		t.Fatalf("steady pass should use the index alone: %+v", st)
	}
	// New mail: only it is stat'ed, and it is delivered in that pass.
	submit(t, r, "alice@example.test", start, "carol@example.test")
	if st := pass(t, r); st.Stat != 1 || st.Queued != 6 || st.Delivered != 1 {
		t.Fatalf("after new mail: %+v", st)
	}
	// An update (replace by rename, as every update is) is seen.
	l, err := r.Spool.Lock(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	env := l.Envelope
	env.Recipients[0].NextAttempt = start
	if err := l.Update(env); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	delete(b.fail, "bob@example.test")
	if st := pass(t, r); st.Stat != 1 || st.Queued != 5 || st.Messages != 1 || st.Delivered != 1 {
		t.Fatalf("after an update: %+v", st)
	}
	// An index that says otherwise than the envelopes is believed: proof
	// that the pass trusted it...
	s := forgeDue(t, r, ids[1])
	s.verified = time.Now().UnixNano()
	r.writeSchedule(s)
	if st := pass(t, r); st.Stat != 0 || st.Messages != 0 {
		t.Fatalf("the index was not used: %+v", st)
	}
	// ...until the index is older than ScanEvery: then every envelope is
	// stat'ed again.
	r.ScanEvery = time.Nanosecond
	if st := pass(t, r); st.Stat != 4 || st.Messages != 1 || st.Delivered != 1 {
		t.Fatalf("full scan after ScanEvery: %+v", st)
	}
}

// forgeDue makes id due now in its envelope (an update, so a new inode)
// and returns a valid index of the queue that says it is due in a day.
func forgeDue(t *testing.T, r *Runner, id string) schedule {
	t.Helper()
	l, err := r.Spool.Lock(id)
	if err != nil {
		t.Fatal(err)
	}
	env := l.Envelope
	env.Recipients[0].NextAttempt = start
	if err := l.Update(env); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	stamps, _, err := r.Spool.ScanKnown(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	s := schedule{verified: now, scanned: now, ents: map[string]stamp{}}
	for _, e := range stamps {
		s.ents[e.ID] = stamp{ino: e.Ino, due: e.Due.UnixNano()}
	}
	s.ents[id] = stamp{ino: s.ents[id].ino, due: start.Add(24 * time.Hour).UnixNano()}
	return s
}

// TestScheduleIndexDamaged: whatever happened to the index file (a crash
// while writing it, a disk error, a newer version), a pass stats every
// envelope and finds what is due.
func TestScheduleIndexDamaged(t *testing.T) {
	damages := map[string]func([]byte) []byte{
		"intact":    func(b []byte) []byte { return b },
		"truncated": func(b []byte) []byte { return b[:len(b)/2] },
		"no end":    func(b []byte) []byte { return b[:bytes.LastIndex(b, []byte("end "))] },
		"bit flip":  func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 1; return b },
		"empty":     func([]byte) []byte { return nil },
		"version":   func(b []byte) []byte { return bytes.Replace(b, []byte("schedule 2"), []byte("schedule 9"), 1) },
		// Checksums recomputed below for these: only the content is wrong.
		"bad entry": func(b []byte) []byte {
			i := bytes.Index(b, []byte("\nhead ")) + 1
			j := i + bytes.IndexByte(b[i:], '\n') + 1
			return append(append(bytes.Clone(b[:j]), "X 1 1\n"...), b[j:]...)
		},
		"count":      func(b []byte) []byte { return bytes.Replace(b, []byte("\nentries 3\n"), []byte("\nentries 4\n"), 1) },
		"header":     func(b []byte) []byte { return bytes.Replace(b, []byte("\nentries 3\n"), []byte("\nentries 4\n"), 1) },
		"directory?": func([]byte) []byte { return []byte("garbage\n") },
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			r, b, _, logs := newRunner(t)
			ids := deferred(t, r, b, 3)
			s := forgeDue(t, r, ids[2])
			delete(b.fail, "bob@example.test")
			idx := filepath.Join(r.Spool.Dir, "schedule")
			text := damage(formatSchedule(&s))
			switch name {
			case "count", "bad entry", "version":
				text = resum(text)
			case "header":
				// Only the end checksum recomputed.
				body := text[:bytes.LastIndex(text, []byte("end "))]
				text = append(body, "end "+crcHex(body)+"\n"...)
			}
			if err := os.WriteFile(idx, text, 0o600); err != nil {
				t.Fatal(err)
			}
			// A fresh Runner, as a cron pass is: nothing cached in memory.
			r.sched = nil
			st := pass(t, r)
			if name == "intact" {
				// The control: a valid index is believed.
				if st.Stat != 0 || st.Messages != 0 {
					t.Fatalf("intact index not used: %+v", st)
				}
				return
			}
			why := map[string]string{"truncated": "no end line", "no end": "no end line", "bit flip": "checksum mismatch",
				"empty": "no end line", "version": "not letterbox-schedule 2", "bad entry": "bad entry",
				"count": "header says 4", "header": "header checksum mismatch", "directory?": "no end line"}[name]
			if !strings.Contains(logs.String(), why) {
				t.Fatalf("damage %s not refused for %q:\n%s", name, why, logs)
			}
			if st.Stat != 3 || st.Messages != 1 || st.Delivered != 1 {
				t.Fatalf("damaged index (%s): %+v\n%s", name, st, logs)
			}
			// And the index is whole again.
			b2, _ := os.ReadFile(idx)
			// (Written from the scan at the start of the pass: the message
			// delivered since is still in it, until the next pass.)
			if s, err := parseSchedule(b2); err != nil || len(s.ents) != 3 {
				t.Fatalf("index after the pass: %v, %d entries", err, len(s.ents))
			}
		})
	}
}

// TestScheduleIndexLaterScanKept: a slow pass does not put back an index
// older than the one a faster pass wrote meanwhile.
func TestScheduleIndexLaterScanKept(t *testing.T) {
	r, b, _, _ := newRunner(t)
	deferred(t, r, b, 2)
	idx := filepath.Join(r.Spool.Dir, "schedule")
	text, _ := os.ReadFile(idx)
	s, err := parseSchedule(text)
	if err != nil {
		t.Fatal(err)
	}
	s.scanned = time.Now().Add(30 * time.Second).UnixNano()
	later := formatSchedule(&s)
	if err := os.WriteFile(idx, later, 0o600); err != nil {
		t.Fatal(err)
	}
	submit(t, r, "alice@example.test", start, "carol@example.test")
	if st := pass(t, r); st.Delivered != 1 || st.Stat != 1 {
		t.Fatalf("pass: %+v", st)
	}
	if got, _ := os.ReadFile(idx); !bytes.Equal(got, later) {
		t.Fatal("an index from a later scan was overwritten")
	}
	// An index from much further ahead is a clock that stepped back: it
	// is replaced, or no pass could ever write one again.
	s.scanned = time.Now().Add(time.Hour).UnixNano()
	if err := os.WriteFile(idx, formatSchedule(&s), 0o600); err != nil {
		t.Fatal(err)
	}
	submit(t, r, "alice@example.test", start, "carol@example.test")
	pass(t, r)
	got, _ := os.ReadFile(idx)
	if cur, err := parseSchedule(got); err != nil || cur.scanned > time.Now().UnixNano() {
		t.Fatalf("an index from an hour ahead was kept (%v)", err)
	}
}

func TestScheduleFormatRoundTrip(t *testing.T) {
	s := schedule{cleaned: 1, verified: 2, scanned: 3, ents: map[string]stamp{
		"0CVT4R8M3G5J2ABCDEFGH": {ino: 12, due: 1700000000000000000},
		"0CVT4R8M3G5J2ABCDEFGI": {ino: 1 << 40, due: 5},
	}}
	got, err := parseSchedule(formatSchedule(&s))
	if err != nil {
		t.Fatal(err)
	}
	if got.cleaned != 1 || got.verified != 2 || got.scanned != 3 || len(got.ents) != 2 {
		t.Fatalf("header: %+v", got)
	}
	for id, e := range s.ents {
		if got.ents[id] != e {
			t.Fatalf("%s: got %+v, want %+v", id, got.ents[id], e)
		}
	}
}

func crcHex(b []byte) string { return fmt.Sprintf("%x", crc32.ChecksumIEEE(b)) }

// resum recomputes both checksums of an index text.
func resum(text []byte) []byte {
	i := bytes.Index(text, []byte("\nhead ")) + 1
	j := i + bytes.IndexByte(text[i:], '\n') + 1
	head := text[:i]
	out := append(bytes.Clone(head), "head "+crcHex(head)+"\n"...)
	body := append(out, text[j:bytes.LastIndex(text, []byte("end "))]...)
	return append(body, "end "+crcHex(body)+"\n"...)
}

// ageEnv sets env/'s modification time an hour back, as if nothing had
// been renamed into it for that long.
func ageEnv(t *testing.T, r *Runner) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(r.Spool.Dir, "env"), old, old); err != nil {
		t.Fatal(err)
	}
}

// TestScheduleIdleSkip: while env/ is unchanged and the earliest due time
// has not come, a pass does not even read env/; any change, or that time
// coming, ends it.
func TestScheduleIdleSkip(t *testing.T) {
	r, b, c, _ := newRunner(t)
	deferred(t, r, b, 3)
	if st := pass(t, r); st.Skipped {
		t.Fatalf("skipped although env/ changed less than 2 s ago: %+v", st)
	}
	ageEnv(t, r)
	if st := pass(t, r); st.Skipped || st.Stat != 0 { // records env/'s time
		t.Fatalf("pass recording env/'s time: %+v", st)
	}
	c.add(10 * time.Second)
	st := pass(t, r)
	if !st.Skipped || st.Queued != 3 || !st.Next.Equal(start.Add(time.Minute)) {
		t.Fatalf("idle pass not skipped: %+v", st)
	}
	// New mail renames into env/: the next pass reads it.
	submit(t, r, "alice@example.test", start, "carol@example.test")
	if st := pass(t, r); st.Skipped || st.Stat != 1 || st.Delivered != 1 {
		t.Fatalf("after new mail: %+v", st)
	}
	ageEnv(t, r)
	pass(t, r)
	if st := pass(t, r); !st.Skipped {
		t.Fatalf("idle again: %+v", st)
	}
	// The earliest due time coming ends it too.
	delete(b.fail, "bob@example.test")
	c.add(time.Minute)
	if st := pass(t, r); st.Skipped || st.Delivered != 3 {
		t.Fatalf("due time reached: %+v", st)
	}
	// And a flush never skips.
	submit(t, r, "alice@example.test", start, "bob@example.test")
	b.fail["bob@example.test"] = errFull
	pass(t, r)
	ageEnv(t, r)
	pass(t, r)
	delete(b.fail, "bob@example.test")
	st, err := r.Pass(context.Background(), true)
	if err != nil || st.Skipped || st.Delivered != 1 {
		t.Fatalf("flush: %+v %v", st, err)
	}
}
