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

// destination returns the scheduling group of a message: the destination
// of its first due remote recipient, or "" for a message with only local
// work (or none we can see: process decides then).
func (r *Runner) destination(id string, flush bool) string {
	env, err := r.Spool.Load(id)
	if err != nil {
		return ""
	}
	now := r.now()
	for _, rc := range env.Recipients {
		if rc.State != spool.Pending || !flush && rc.NextAttempt.After(now) {
			continue
		}
		dests, err := r.Router.Resolve(rc.Address)
		if err != nil {
			continue
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
	}
	return ""
}

// A group is the queued messages of one destination; a pool is the slots
// that groups share. Local-only messages have a pool of their own, so
// that no remote destination, however slow, delays local delivery; remote
// groups share the other pool, each capped, so that the messages of a
// dead destination can hold only their cap of it.
type group struct {
	key     string
	pool    *pool
	queue   []string
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

// dispatcher works messages, each under its own lock, Workers at once per
// pool and PerDestination per remote destination, and the notifications
// they produce. A message that hangs (a peer that accepts and never
// answers) holds one slot of its destination until remote's timeouts end
// it; the other destinations go on meanwhile. A pass uses one dispatcher
// and waits for it to run dry; the daemon keeps one across its passes, so
// that a pass never waits for a hung message and a message still being
// worked is not queued twice.
type dispatcher struct {
	r     *Runner
	ctx   context.Context
	flush bool
	per   int

	mu            sync.Mutex
	local, remote pool
	groups        map[string]*group
	known         map[string]bool // queued or running
	st            Stats           // since the last take
	next          time.Time       // earliest due time of the messages worked since the last take
	wg            sync.WaitGroup
	worked        chan struct{} // poked (never blocking) when a message was worked
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
		groups: map[string]*group{}, known: map[string]bool{}, worked: make(chan struct{}, 1)}
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

// add queues the messages ids that are not queued or running already, and
// starts what the limits allow.
func (d *dispatcher) add(ids ...string) {
	type classified struct{ id, key string }
	var in []classified
	d.mu.Lock()
	for _, id := range ids {
		if !d.known[id] {
			d.known[id] = true
			in = append(in, classified{id: id})
		}
	}
	d.mu.Unlock()
	// Outside the lock: it reads envelopes.
	for i := range in {
		in[i].key = d.r.destination(in[i].id, d.flush)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range in {
		g := d.groups[c.key]
		if g == nil {
			g = &group{key: c.key, pool: &d.remote, cap: d.per}
			if c.key == "" {
				g.pool, g.cap = &d.local, d.local.size
			}
			d.groups[c.key] = g
		}
		g.queue = append(g.queue, c.id)
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
	notices, due := d.r.process(d.ctx, id, d.flush, &one)
	d.mu.Lock()
	g.running--
	g.pool.running--
	delete(d.known, id)
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
	defer d.mu.Unlock()
	for _, g := range d.groups {
		for _, id := range g.queue {
			delete(d.known, id)
		}
	}
	d.groups = map[string]*group{}
	d.local.ready, d.remote.ready = nil, nil
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
