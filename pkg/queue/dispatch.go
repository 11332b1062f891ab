package queue

import (
	"context"
	"strings"
	"sync"
	"time"

	"letterbox/pkg/route"
	"letterbox/pkg/spool"
)

// destinationKeyer is implemented by a RemoteDeliverer that knows where
// a domain's mail really goes (a route to a smarthost serves many domains,
// and its connection limit is the one that counts).
type destinationKeyer interface {
	DestinationKey(domain string) string
}

// recipientKey returns the scheduling group of a recipient: the
// destination of its first remote route, or "" when it has none (local
// mailboxes, or an address the router refuses, which process answers).
func (r *Runner) recipientKey(addr string) string {
	dests, err := r.Router.Resolve(addr)
	if err != nil {
		return ""
	}
	for _, d := range dests {
		if d.Kind != route.Remote {
			continue
		}
		dom := strings.TrimSuffix(strings.ToLower(d.Address[strings.LastIndexByte(d.Address, '@')+1:]), ".")
		if k, ok := r.Remote.(destinationKeyer); ok {
			return k.DestinationKey(dom)
		}
		return dom
	}
	return ""
}

// keys returns the scheduling groups of message id's due recipients (every
// pending one, when flush), each once, in recipient order. A message with
// none due (or none we can see) gets the local group: process decides then
// (it removes a finished message, warns about a late one).
func (r *Runner) keys(id string, flush bool) []string {
	env, err := r.Spool.Load(id)
	if err != nil {
		return []string{""}
	}
	now := r.now()
	var keys []string
	seen := map[string]bool{}
	for _, rc := range env.Recipients {
		if rc.State != spool.Pending || !flush && rc.NextAttempt.After(now) {
			continue
		}
		if k := r.recipientKey(rc.Address); !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return []string{""}
	}
	return keys
}

// The unit of work is an item: the due recipients of one message at one
// destination (its group), so that the recipients of one message at a dead
// domain and at a live one are scheduled, capped and delivered apart, and
// the dead one never delays the live one. A group is the queued items of
// one destination; a pool is the slots that groups share. The local group
// (local recipients) has a pool of its own, so that no remote destination,
// however slow, delays local delivery; remote groups share the other pool,
// each capped, so that a dead destination can hold only its cap of it.
type group struct {
	key     string
	pool    *pool
	queue   []string // message ids
	running int
	cap     int
	ready   bool // in pool.ready
}

type pool struct {
	size, running int
	ready         []*group // groups with queued work and a free slot of their own, round robin
}

func (p *pool) mark(g *group) {
	if !g.ready && len(g.queue) > 0 && g.running < g.cap {
		g.ready = true
		p.ready = append(p.ready, g)
	}
}

// dispatcher works items, Workers at once per pool and PerDestination per
// remote destination, and the notifications they produce. The items of
// one message share one session (its lock and envelope). An item that
// hangs (a peer that accepts and never answers) holds one slot of its
// destination until remote's timeouts end it; the other destinations, the
// same message's included, go on meanwhile. A pass uses one dispatcher and
// waits for it to run dry; the daemon keeps one across its passes, so that
// a pass never waits for a hung item and an item still being worked is not
// queued twice.
type dispatcher struct {
	r     *Runner
	ctx   context.Context
	flush bool
	per   int

	mu            sync.Mutex
	local, remote pool
	groups        map[string]*group
	known         map[item]bool  // queued or running
	outstanding   map[string]int // items queued or running, per message
	sessions      map[string]*session
	st            Stats     // since the last take
	next          time.Time // earliest due time of the messages worked since the last take
	wg            sync.WaitGroup
	worked        chan struct{} // poked (never blocking) when a message was worked
	// removals is poked (never blocking) when a message was removed
	// without the fsync of env/ that makes it durable (removedSince).
	removals chan struct{}
}

// noteRemoval records that a message left the spool, not yet durably.
func (d *dispatcher) noteRemoval() {
	select {
	case d.removals <- struct{}{}:
	default:
	}
}

// removedSince reports whether a message was removed since the last
// removedSince or receive from d.removals, and forgets it: the caller
// then fsyncs env/.
func (d *dispatcher) removedSince() bool {
	select {
	case <-d.removals:
		return true
	default:
		return false
	}
}

func (r *Runner) newDispatcher(ctx context.Context, flush bool) *dispatcher {
	total := r.Workers
	if total <= 0 {
		total = DefaultWorkers
	}
	per := r.PerDestination
	if per <= 0 {
		per = DefaultPerDestination
	}
	if per > total-1 {
		per = max(total-1, 1)
	}
	return &dispatcher{r: r, ctx: ctx, flush: flush, per: per,
		local: pool{size: total}, remote: pool{size: total},
		groups: map[string]*group{}, known: map[item]bool{}, outstanding: map[string]int{}, sessions: map[string]*session{},
		worked: make(chan struct{}, 1), removals: make(chan struct{}, 1)}
}

// addAll adds ids a slice at a time, so that the first messages are
// being worked while the envelopes of the later ones are read to group
// them (a flush of a large queue).
func (d *dispatcher) addAll(ids []string) {
	const batch = 256
	for len(ids) > 0 && d.ctx.Err() == nil {
		n := min(len(ids), batch)
		d.add(ids[:n]...)
		ids = ids[n:]
	}
}

// item is the share of message id that goes to destination key.
type item struct{ id, key string }

// add queues the items of messages ids that are not queued or running
// already, and starts what the limits allow.
func (d *dispatcher) add(ids ...string) {
	// Outside the lock: it reads envelopes.
	var in []item
	for _, id := range ids {
		for _, k := range d.r.keys(id, d.flush) {
			in = append(in, item{id, k})
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, it := range in {
		if d.known[it] {
			continue
		}
		d.known[it] = true
		d.outstanding[it.id]++
		g := d.groups[it.key]
		if g == nil {
			g = &group{key: it.key, pool: &d.remote, cap: d.per}
			if it.key == "" {
				g.pool, g.cap = &d.local, d.local.size
			}
			d.groups[it.key] = g
		}
		g.queue = append(g.queue, it.id)
		g.pool.mark(g)
	}
	d.start()
}

// start launches what the limits allow; d.mu is held.
func (d *dispatcher) start() {
	if d.ctx.Err() != nil {
		return
	}
	for _, p := range []*pool{&d.local, &d.remote} {
		for p.running < p.size && len(p.ready) > 0 {
			g := p.ready[0]
			p.ready = p.ready[1:]
			g.ready = false
			id := g.queue[0]
			g.queue = g.queue[1:]
			g.running++
			p.running++
			d.wg.Add(1)
			go d.work(g, id)
			// Back to the end of the line: one message per group in turn.
			p.mark(g)
		}
	}
}

func (d *dispatcher) work(g *group, id string) {
	defer d.wg.Done()
	var one Stats
	s := d.join(id)
	due := d.r.process(d.ctx, s, g.key, d.flush, &one)
	notices, next := d.leave(s, &one)
	due = earliest(due, next)
	d.mu.Lock()
	g.running--
	g.pool.running--
	delete(d.known, item{id, g.key})
	d.st.add(one)
	d.next = earliest(d.next, due)
	g.pool.mark(g)
	if len(g.queue) == 0 && g.running == 0 {
		delete(d.groups, g.key)
	}
	d.start()
	d.mu.Unlock()
	// Notices are worked at once, in the same pass (before wg.Done, so
	// that wait sees them).
	if len(notices) > 0 {
		d.add(notices...)
	}
	select {
	case d.worked <- struct{}{}:
	default:
	}
}

// wait returns when nothing is queued or running. After the context
// ended, queued messages are dropped and only the running ones awaited.
func (d *dispatcher) wait() {
	d.wg.Wait()
	d.mu.Lock()
	for _, g := range d.groups {
		for _, id := range g.queue {
			delete(d.known, item{id, g.key})
		}
	}
	d.groups = map[string]*group{}
	d.local.ready, d.remote.ready = nil, nil
	d.outstanding = map[string]int{}
	// The sessions whose last items were dropped: finished here, so that
	// what their other items did is written and their locks released.
	var left []*session
	for _, s := range d.sessions {
		left = append(left, s)
	}
	d.mu.Unlock()
	for _, s := range left {
		var one Stats
		s.mu.Lock()
		if !s.closed && s.running == 0 {
			d.close(s, &one)
		}
		s.mu.Unlock()
		d.mu.Lock()
		d.st.add(one)
		d.mu.Unlock()
	}
}

// take returns the counts of the messages worked since the last take, and
// the earliest time one of them is due again.
func (d *dispatcher) take() (Stats, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, next := d.st, d.next
	d.st, d.next = Stats{}, time.Time{}
	return st, next
}

// A session is one message worked by this process: its first item takes
// the message's lock (so that no other process works it meanwhile) and
// loads the envelope, every item of the message works on that envelope in
// memory, and the last one to leave, when no other item of the message is
// queued, finishes the message (finish: one DSN for all its permanent
// failures) and releases the lock. An item claims the recipients it delivers to, so two
// items never deliver to the same one.
type session struct {
	id string

	mu      sync.Mutex // guards what follows
	running int        // items inside
	closed  bool       // finished: a later item opens a new session
	tried   bool       // the lock was tried
	l       *spool.Locked
	claimed map[*spool.Recipient]bool
	// bounced are the permanent failures of the items so far: they are
	// recorded and reported (one DSN) when the last item leaves.
	bounced []bounce
	changed bool // outcomes not yet in the envelope file
	removed bool // finish took the message out of the spool
}

// join enters message id's session, opening one if none is open.
func (d *dispatcher) join(id string) *session {
	for {
		d.mu.Lock()
		s := d.sessions[id]
		if s == nil {
			s = &session{id: id, claimed: map[*spool.Recipient]bool{}}
			d.sessions[id] = s
		}
		d.mu.Unlock()
		s.mu.Lock()
		if !s.closed {
			s.running++
			s.mu.Unlock()
			return s
		}
		s.mu.Unlock()
		d.mu.Lock()
		if d.sessions[id] == s {
			delete(d.sessions, id)
		}
		d.mu.Unlock()
	}
}

// leave takes an item out of its session. When the message has other
// items running or queued here, the outcomes so far are written to the
// envelope (a recipient delivered is never delivered again, whatever
// happens to the others). The last one finishes the message and returns
// finish's notices and due time.
func (d *dispatcher) leave(s *session, st *Stats) ([]string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	d.mu.Lock()
	d.outstanding[s.id]--
	last := s.running == 0 && d.outstanding[s.id] <= 0
	if d.outstanding[s.id] <= 0 {
		delete(d.outstanding, s.id)
	}
	d.mu.Unlock()
	if !last {
		if s.changed {
			d.r.save(s)
		}
		return nil, time.Time{}
	}
	return d.close(s, st)
}

// close finishes a session that no item is in and releases its lock; s.mu
// is held. It is closed only then, and taken out of the map after that:
// an item of this message arriving meanwhile waits on s.mu, then opens a
// session of its own that can take the lock.
func (d *dispatcher) close(s *session, st *Stats) ([]string, time.Time) {
	var notices []string
	var due time.Time
	if s.l != nil {
		notices, due = d.r.finish(s, st)
		s.l.Unlock()
		if s.removed {
			d.noteRemoval()
		}
	}
	s.closed = true
	d.mu.Lock()
	if d.sessions[s.id] == s {
		delete(d.sessions, s.id)
	}
	d.mu.Unlock()
	return notices, due
}
