package queue

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"letterbox/pkg/spool"
)

// Listing a large queue (queue-runner list, mailq) costs what it prints:
// the ids come from one read of env/ (and, to select by state, the due
// times from the schedule index, as a pass takes them), and only the
// envelopes of the messages considered for printing are read, a batch at a
// time, while the output is written. --limit stops reading at that many
// messages; --domain has to read envelopes until it has found them.

// ListOptions selects the messages list prints.
type ListOptions struct {
	Limit  int    // at most this many (0: all)
	Domain string // only messages with a pending recipient at this domain
	State  string // "" (all), StateDue or StateDeferred
}

// Message states for ListOptions.State.
const (
	StateDue      = "due"      // a pass would work it now
	StateDeferred = "deferred" // waiting for its next retry
)

func (o *ListOptions) check() error {
	if o.Limit < 0 {
		return fmt.Errorf("--limit %d: want 0 (all) or more", o.Limit)
	}
	switch o.State {
	case "", StateDue, StateDeferred:
	default:
		return fmt.Errorf("--state %q: want %s or %s", o.State, StateDue, StateDeferred)
	}
	o.Domain = strings.TrimSuffix(strings.ToLower(strings.TrimPrefix(o.Domain, "@")), ".")
	return nil
}

// matches tells whether env, read at now, is one o selects.
func (o *ListOptions) matches(env *spool.Envelope, now time.Time) bool {
	switch o.State {
	case StateDue:
		if env.Due().After(now) {
			return false
		}
	case StateDeferred:
		if !env.Due().After(now) {
			return false
		}
	}
	if o.Domain == "" {
		return true
	}
	for _, rc := range env.Recipients {
		if rc.State == spool.Pending && strings.EqualFold(strings.TrimSuffix(rc.Address[strings.LastIndexByte(rc.Address, '@')+1:], "."), o.Domain) {
			return true
		}
	}
	return false
}

// List calls fn with each queued message o selects, in arrival order. It
// returns how many messages the queue holds.
func (r *Runner) List(o ListOptions, fn func(*spool.Envelope) error) (int, error) {
	if err := o.check(); err != nil {
		return 0, err
	}
	now := r.now()
	ids, queued, err := r.listIDs(o.State, now)
	if err != nil {
		return 0, err
	}
	// Envelopes are read a batch at a time by a few goroutines, one batch
	// ahead of the one being printed; a batch is small when few messages
	// are wanted.
	batch := 256
	if o.Limit > 0 && o.Domain == "" && o.Limit < batch {
		batch = o.Limit
	}
	type loaded struct {
		envs []*spool.Envelope
		errs []error
	}
	out := make(chan loaded, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(out)
		for start := 0; start < len(ids); start += batch {
			envs, errs := r.loadAll(ids[start:min(start+batch, len(ids))])
			select {
			case out <- loaded{envs, errs}:
			case <-stop:
				return
			}
		}
	}()
	n := 0
	for l := range out {
		for i, env := range l.envs {
			// An envelope that cannot be read is an error only when the
			// listing gets to it.
			if err := l.errs[i]; err != nil {
				return queued, err
			}
			if env == nil || !o.matches(env, now) {
				continue
			}
			if err := fn(env); err != nil {
				return queued, err
			}
			if n++; o.Limit > 0 && n == o.Limit {
				return queued, nil
			}
		}
	}
	return queued, nil
}

// listIDs returns the ids of the messages to consider, in arrival order,
// and how many are queued. For a state, the due times are the schedule
// index's (one stat for each envelope it does not know), and only the
// messages of that state are kept.
func (r *Runner) listIDs(state string, now time.Time) ([]string, int, error) {
	if state == "" {
		ids, err := r.Spool.IDs()
		return ids, len(ids), err
	}
	sch := r.readSchedule()
	var known func(string, uint64) (time.Time, bool)
	if sch.ents != nil {
		known = func(id string, ino uint64) (time.Time, bool) {
			e, ok := sch.ents[id]
			if !ok || e.ino != ino {
				return time.Time{}, false
			}
			return time.Unix(0, e.due), true
		}
	}
	stamps, _, err := r.Spool.ScanKnown(known)
	if err != nil {
		return nil, 0, err
	}
	var ids []string
	for _, s := range stamps {
		if due := !s.Due.After(now); due == (state == StateDue) {
			ids = append(ids, s.ID)
		}
	}
	sort.Strings(ids)
	return ids, len(stamps), nil
}

// listWorkers is how many goroutines read envelopes for a listing.
const listWorkers = 4

// loadAll reads the envelopes of ids, with their errors; one removed
// meanwhile (delivered) is nil, without error.
func (r *Runner) loadAll(ids []string) ([]*spool.Envelope, []error) {
	envs := make([]*spool.Envelope, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for w := 0; w < min(listWorkers, len(ids)); w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(ids); i += listWorkers {
				envs[i], errs[i] = r.Spool.Load(ids[i])
				if errors.Is(errs[i], spool.ErrNotFound) {
					envs[i], errs[i] = nil, nil
				}
			}
		}(w)
	}
	wg.Wait()
	return envs, errs
}

// JSONMessage is one element of `list --json` (DESIGN.md § The spool).
type JSONMessage struct {
	ID         string          `json:"id"`
	From       string          `json:"from"`
	Arrived    string          `json:"arrived"`
	Size       int64           `json:"size"`
	Recipients []JSONRecipient `json:"recipients"`
}

// JSONRecipient is one recipient in `list --json`.
type JSONRecipient struct {
	Address     string `json:"address"`
	State       string `json:"state"`
	Attempts    int    `json:"attempts"`
	NextAttempt string `json:"next_attempt"`
	LastError   string `json:"last_error"`
}

func jsonMessage(e *spool.Envelope) JSONMessage {
	m := JSONMessage{ID: e.ID, From: e.From, Arrived: e.Arrived.Format(time.RFC3339), Size: e.Size, Recipients: []JSONRecipient{}}
	for _, rc := range e.Recipients {
		next := rc.NextAttempt
		if next.IsZero() {
			next = e.Arrived
		}
		m.Recipients = append(m.Recipients, JSONRecipient{Address: rc.Address, State: string(rc.State),
			Attempts: rc.Attempts, NextAttempt: next.Format(time.RFC3339), LastError: rc.LastError})
	}
	return m
}

// jsonList writes one JSON array a message at a time, byte for byte what
// a json.Encoder with a two-space indent writes for the whole array.
type jsonList struct {
	w *bufio.Writer
	n int
}

func (j *jsonList) add(e *spool.Envelope) error {
	b, err := json.MarshalIndent(jsonMessage(e), "  ", "  ")
	if err != nil {
		return err
	}
	if j.n == 0 {
		j.w.WriteString("[\n  ")
	} else {
		j.w.WriteString(",\n  ")
	}
	j.n++
	_, err = j.w.Write(b)
	return err
}

func (j *jsonList) close() error {
	if j.n == 0 {
		j.w.WriteString("[]\n")
	} else {
		j.w.WriteString("\n]\n")
	}
	return j.w.Flush()
}

// table writes the queue as mailq does, a message at a time: id, size,
// arrival, sender, then each pending recipient after its last error; a
// total at the end.
type table struct {
	w        *bufio.Writer
	n        int
	total    int64
	filtered bool // options selected part of the queue
}

func (t *table) add(e *spool.Envelope) error {
	if t.n == 0 {
		fmt.Fprintf(t.w, "%-22s %8s %-20s %s\n", "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
	}
	t.n++
	t.total += e.Size
	from := e.From
	if from == "" {
		from = "MAILER-DAEMON"
	}
	fmt.Fprintf(t.w, "%-22s %8d %-20s %s\n", e.ID, e.Size, e.Arrived.Local().Format("Mon Jan _2 15:04:05"), from)
	for _, rc := range e.Recipients {
		if rc.State != spool.Pending {
			continue
		}
		if rc.LastError != "" {
			fmt.Fprintf(t.w, "%52s(%s)\n", "", rc.LastError)
		}
		fmt.Fprintf(t.w, "%52s%s\n", "", rc.Address)
	}
	_, err := fmt.Fprintln(t.w)
	return err
}

func (t *table) close(queued int) error {
	plural := func(n int) string {
		if n == 1 {
			return ""
		}
		return "s"
	}
	switch {
	case queued == 0:
		fmt.Fprintln(t.w, "Mail queue is empty")
	case t.filtered:
		fmt.Fprintf(t.w, "-- %d Kbytes in %d Request%s shown, of %d queued.\n", (t.total+1023)/1024, t.n, plural(t.n), queued)
	default:
		fmt.Fprintf(t.w, "-- %d Kbytes in %d Request%s.\n", (t.total+1023)/1024, t.n, plural(t.n))
	}
	return t.w.Flush()
}

// writeList prints what o selects to w, as JSON or as mailq's table.
func (r *Runner) writeList(w io.Writer, o ListOptions, asJSON bool) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if asJSON {
		j := &jsonList{w: bw}
		if _, err := r.List(o, j.add); err != nil {
			return err
		}
		return j.close()
	}
	t := &table{w: bw, filtered: o != ListOptions{}}
	queued, err := r.List(o, t.add)
	if err != nil {
		return err
	}
	return t.close(queued)
}
