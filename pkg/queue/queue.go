// Package queue works the spool: it delivers each due message's pending
// recipients (locally in-process, through an --mda command, or through a
// RemoteDeliverer), reschedules temporary failures with doubling backoff,
// sends one delay warning and, on permanent failure or expiry, one RFC 3464
// bounce per message per pass. It is queue-runner(8)'s engine.
//
// Order of durable steps for a message, so that a crash loses nothing:
// deliver, then record the outcome in the envelope (a crash in between
// delivers once more on the next pass: at least once, never zero); a
// notification is committed to the spool before the envelope that
// asks for it is updated.
package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"letterbox/pkg/delivery"
	"letterbox/pkg/dsn"
	"letterbox/pkg/remote"
	"letterbox/pkg/route"
	"letterbox/pkg/spool"
)

// Resolver maps an address to its destinations (*route.Router).
type Resolver interface {
	Resolve(addr string) ([]route.Destination, error)
}

// RemoteDeliverer sends one message to recipients at one domain
// (*remote.Client). It returns one result per recipient, in order.
type RemoteDeliverer interface {
	Deliver(ctx context.Context, domain, from string, rcpts []string, open func() (io.ReadCloser, error)) ([]remote.Result, error)
}

// Runner is the queue engine. Zero durations take the defaults below.
type Runner struct {
	Spool      *spool.Spool
	Router     Resolver
	Remote     RemoteDeliverer // nil: remote recipients stay queued
	Signer     Signer          // DKIM-signs our mail to other hosts (sign.go); nil: none
	Hostname   string
	Postmaster string // where failed bounces go
	MDA        string // when set, local mailboxes are delivered by piping to this command

	RetryAfter       time.Duration // first retry; doubles after each failure
	MaxRetryInterval time.Duration // cap of the backoff
	WarnAfter        time.Duration // delay warning after this long (negative: never)
	BounceAfter      time.Duration // give up after this long
	GarbageAge       time.Duration // Clean's age for crash leftovers
	Interval         time.Duration // the daemon's longest sleep
	MDATimeout       time.Duration // how long one local delivery may take
	ScanEvery        time.Duration // longest trust in the schedule index before a full scan

	// Workers is how many messages with remote recipients are worked at
	// once (--concurrency), and separately how many local-only ones.
	// PerDestination caps the messages worked at once for one remote
	// destination (--concurrency-per-domain), never above Workers-1, so
	// a destination that hangs leaves a slot for the others.
	Workers        int
	PerDestination int

	Now func() time.Time // the clock (tests move it)
	Log *slog.Logger

	// Pickup admits drop files (local users' sendmail): the trace field
	// naming the file's owner, and a warning for a forged sender
	// (submission.Pickup). nil: taken in as they are (tests).
	Pickup spool.Pickup

	// Owners says whom each local delivery runs as when queue-runner runs
	// as root (a child process with the mailbox owner's credentials).
	Owners delivery.Owners

	// deliverLocal is Owners.Deliver, replaceable in tests.
	deliverLocal func(ctx context.Context, d route.Destination, sender string, r io.Reader) error
	// Tests: flushRemovals replaces the daemon's Spool.SyncRemovals;
	// daemonHook is told when the daemon stops ("stopping": its flusher
	// of removals told to end, the last flush not yet begun).
	flushRemovals func() error
	daemonHook    func(event string)

	// The schedule index this process last read or wrote, and the
	// identity of its file then (schedule.go).
	schedMu  sync.Mutex
	sched    *schedule
	schedKey fileKey
}

// Defaults of the schedule (DESIGN.md § The spool).
const (
	DefaultRetryAfter       = 15 * time.Minute
	DefaultMaxRetryInterval = 4 * time.Hour
	DefaultWarnAfter        = 4 * time.Hour
	DefaultBounceAfter      = 120 * time.Hour
	DefaultGarbageAge       = 36 * time.Hour
	DefaultInterval         = 5 * time.Minute
	DefaultWorkers          = 4
	DefaultPerDestination   = 4
)

// ErrRemoteUnavailable is the temporary error of remote recipients when
// no RemoteDeliverer is configured.
var ErrRemoteUnavailable = errors.New("remote delivery not available")

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.Default()
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Backoff returns the wait before the next attempt after attempts failed
// ones: RetryAfter, doubling, capped at MaxRetryInterval.
func (r *Runner) Backoff(attempts int) time.Duration {
	d := orDefault(r.RetryAfter, DefaultRetryAfter)
	max := orDefault(r.MaxRetryInterval, DefaultMaxRetryInterval)
	for i := 1; i < attempts && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// Stats counts what a pass did.
type Stats struct {
	Messages  int // messages worked on
	Delivered int // recipients
	Deferred  int
	Bounced   int
	Notices   int       // DSNs queued
	Locked    int       // messages skipped: another process held them
	Queued    int       // envelopes the scan found
	Stat      int       // of those, how many it had to stat (not known to the schedule index)
	Skipped   bool      // env/ unchanged since the last scan and nothing due: not even read
	Next      time.Time // when the earliest remaining message is due (zero: none)
}

// Pass works every message that is due (every pending recipient, when
// flush) once, taking in drop files first. Messages another process holds
// locked are skipped. Notifications it queues are worked in the same pass.
func (r *Runner) Pass(ctx context.Context, flush bool) (Stats, error) {
	work, st, err := r.scan(flush)
	if err != nil {
		return st, err
	}
	d := r.newDispatcher(ctx, flush)
	d.addAll(work)
	d.wait()
	done, next := d.take()
	done.Queued, done.Stat, done.Skipped = st.Queued, st.Stat, st.Skipped
	done.Next = earliest(st.Next, next)
	// The pass's removals (finish) are made durable here, all with one
	// fsync of env/, before the pass reports success: a crash after a
	// pass that exited 0 delivers nothing twice.
	if d.removedSince() {
		if err := r.Spool.SyncRemovals(); err != nil {
			return done, err
		}
	}
	return done, ctx.Err()
}

// earliest returns the earlier of two times, a zero one counting as none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// scan takes in drop files, removes crash leftovers now and then, and
// returns the ids of the messages due (every message, when flush), oldest
// first, with Stats's Queued, Stat and Next (the earliest due time of the
// others) filled in.
func (r *Runner) scan(flush bool) ([]string, Stats, error) {
	var st Stats
	for _, t := range r.Spool.TakeDrops(r.Pickup) {
		if t.Err != nil {
			r.log().Warn("drop refused", "drop", t.Drop, "user", t.User, "err", t.Err)
		} else {
			r.log().Info("drop taken in", "id", t.ID, "drop", t.Drop, "user", t.User)
		}
	}
	now := r.now()
	wall := time.Now()
	scanEvery := orDefault(r.ScanEvery, DefaultScanEvery)
	garbageAge := orDefault(r.GarbageAge, DefaultGarbageAge)
	fresh := func(s *schedule) bool {
		v := time.Unix(0, s.verified)
		return !wall.Before(v) && wall.Sub(v) <= scanEvery
	}
	if !flush {
		// Nothing renamed into or out of env/ since the last scan, and
		// its earliest due time not come: nothing is due.
		h, ok := readScheduleHeader(r.schedulePath())
		if ok && h.envMtime != 0 && h.envMtime == r.envMtime() && (h.next == 0 || now.UnixNano() < h.next) &&
			fresh(&h) && now.Sub(time.Unix(0, h.cleaned)) <= garbageAge/8 {
			st.Queued, st.Skipped = int(h.count), true
			if h.next != 0 {
				st.Next = time.Unix(0, h.next)
			}
			r.log().Debug("scan skipped: env/ unchanged, nothing due", "messages", h.count)
			return nil, st, nil
		}
	}
	sch := r.readSchedule()
	dirty := false
	if now.Sub(time.Unix(0, sch.cleaned)) > garbageAge/8 {
		sch.cleaned, dirty = now.UnixNano(), true
		if n, err := r.Spool.Clean(garbageAge); err != nil {
			r.log().Warn("cleaning the spool", "err", err)
		} else if n > 0 {
			r.log().Info("removed crash leftovers", "files", n)
		}
	}
	full := sch.ents == nil || !fresh(&sch)
	var known func(string, uint64) (time.Time, bool)
	if !full {
		known = func(id string, ino uint64) (time.Time, bool) {
			e, ok := sch.ents[id]
			if !ok || e.ino != ino {
				return time.Time{}, false
			}
			return time.Unix(0, e.due), true
		}
	}
	m0 := r.envMtime()
	ents, stats, err := r.Spool.ScanKnown(known)
	if err != nil {
		return nil, st, err
	}
	st.Queued, st.Stat = len(ents), stats
	r.log().Debug("scanned", "messages", len(ents), "stat", stats, "full", full)
	var work []string
	var first time.Time // the earliest due time of all
	for _, e := range ents {
		first = earliest(first, e.Due)
		if flush || !e.Due.After(now) {
			work = append(work, e.ID)
		} else if st.Next.IsZero() || e.Due.Before(st.Next) {
			st.Next = e.Due
		}
	}
	var envMtime, next int64
	if m0 != 0 && time.Unix(0, m0).Before(wall.Add(-envSlack)) {
		envMtime = m0
	}
	if !first.IsZero() {
		next = first.UnixNano()
	}
	// Every envelope matched the index and none left: the index is still
	// exact, and rewriting it would only cost time.
	if full || dirty || stats > 0 || len(ents) != len(sch.ents) || envMtime != sch.envMtime || next != sch.next {
		ns := schedule{cleaned: sch.cleaned, verified: sch.verified, scanned: wall.UnixNano(),
			envMtime: envMtime, next: next, ents: make(map[string]stamp, len(ents))}
		if full {
			ns.verified = wall.UnixNano()
		}
		for _, e := range ents {
			if e.Ino != 0 {
				ns.ents[e.ID] = stamp{ino: e.Ino, due: e.Due.UnixNano()}
			}
		}
		r.writeSchedule(ns)
	}
	// Ids sort like their arrival times: oldest mail first.
	sort.Strings(work)
	return work, st, nil
}

func (st *Stats) add(o Stats) {
	st.Messages += o.Messages
	st.Delivered += o.Delivered
	st.Deferred += o.Deferred
	st.Bounced += o.Bounced
	st.Notices += o.Notices
	st.Locked += o.Locked
}

// outcome of one recipient in one attempt.
type outcome struct {
	done      bool // delivered
	temporary bool
	status    string
	diag      string
	remote    bool

	// Across a recipient's destinations (an alias may expand to several):
	// how many were delivered, and whether the temporary failures were all
	// remote addresses (retryRemote), which can then be retried on their own.
	delivered   int
	localTemp   bool
	retryRemote []string
}

// process delivers to message s.id's due recipients (every pending one,
// when flush) at destination key, inside the message's session
// (dispatch.go), whose first item takes the message's lock. Delivered and
// deferred recipients are recorded in the envelope in memory (leave or
// finish writes it); permanent failures wait for finish, which reports
// them all in one DSN. It returns when its deferred recipients are next
// due.
func (r *Runner) process(ctx context.Context, s *session, key string, flush bool, st *Stats) time.Time {
	log := r.log().With("id", s.id)
	s.mu.Lock()
	if !s.tried {
		s.tried = true
		l, err := r.Spool.Lock(s.id)
		switch {
		case err == nil:
			s.l = l
			st.Messages++
		case errors.Is(err, spool.ErrLocked):
			st.Locked++
			log.Debug("locked by another runner, skipped")
		case !errors.Is(err, spool.ErrNotFound):
			log.Error("cannot lock", "err", err)
		}
	}
	if s.l == nil {
		s.mu.Unlock()
		return time.Time{}
	}
	env := s.l.Envelope
	now := r.now()
	var due []*spool.Recipient
	for _, rc := range env.Recipients {
		if rc.State == spool.Pending && (flush || !rc.NextAttempt.After(now)) && !s.claimed[rc] && r.recipientKey(rc.Address) == key {
			s.claimed[rc] = true
			due = append(due, rc)
		}
	}
	s.mu.Unlock()
	if len(due) == 0 {
		return time.Time{}
	}
	// Outside the session's lock: the other destinations' items go on.
	outs := r.deliverAll(ctx, s.l, env, due, log)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.changed = true
	var next time.Time
	bounceAt := env.Arrived.Add(orDefault(r.BounceAfter, DefaultBounceAfter))
	for i, rc := range due {
		o := outs[i]
		rc.Attempts++
		switch {
		case o.done:
			rc.State = spool.Delivered
			rc.LastError = ""
			st.Delivered++
			log.Info("delivered", "rcpt", rc.Address)
			delete(s.claimed, rc)
			continue
		case o.temporary && now.Before(bounceAt) && o.delivered > 0 && !o.localTemp && len(o.retryRemote) > 0:
			// Some of an alias's destinations got the message: retrying
			// the recipient would deliver to them again, so only the
			// remote addresses that failed are kept, as recipients of
			// their own.
			rc.State = spool.Delivered
			orig := rc.Original
			if orig == "" {
				orig = rc.Address
			}
			at := now.Add(r.Backoff(rc.Attempts))
			if at.After(bounceAt) {
				at = bounceAt
			}
			for _, a := range o.retryRemote {
				env.Recipients = append(env.Recipients, &spool.Recipient{Address: a, Original: orig, State: spool.Pending,
					Attempts: rc.Attempts, NextAttempt: at, LastError: o.diag})
			}
			next = earliest(next, at)
			st.Deferred++
			log.Info("deferred", "rcpt", rc.Address, "partly_delivered", o.delivered, "retry", strings.Join(o.retryRemote, ","), "err", o.diag)
			delete(s.claimed, rc)
			continue
		case o.temporary && now.Before(bounceAt):
			rc.LastError = o.diag
			rc.NextAttempt = now.Add(r.Backoff(rc.Attempts))
			if rc.NextAttempt.After(bounceAt) {
				rc.NextAttempt = bounceAt
			}
			next = earliest(next, rc.NextAttempt)
			st.Deferred++
			log.Info("deferred", "rcpt", rc.Address, "attempts", rc.Attempts, "next", rc.NextAttempt.Format(time.RFC3339), "err", o.diag)
			delete(s.claimed, rc)
			continue
		case o.temporary:
			o.diag = "gave up after " + now.Sub(env.Arrived).Round(time.Second).String() + ": " + o.diag
		}
		// Still pending (and claimed) until finish has queued the DSN
		// that reports it: a crash before then retries it, never loses
		// its report.
		st.Bounced++
		log.Info("bounced", "rcpt", rc.Address, "status", o.status, "err", o.diag)
		s.bounced = append(s.bounced, bounce{rc: rc, report: dsn.Recipient{Final: rc.Address, Original: rc.Original, Action: dsn.Failed,
			Status: o.status, Diagnostic: o.diag, Remote: o.remote, LastAttempt: now}})
	}
	return next
}

// bounce is a recipient that failed for good, waiting for its DSN.
type bounce struct {
	rc     *spool.Recipient
	report dsn.Recipient
}

// save writes the session's envelope while other items of the message are
// still at work; s.mu is held.
func (r *Runner) save(s *session) {
	if err := s.l.Update(s.l.Envelope); err != nil {
		r.log().Error("cannot update the envelope", "id", s.id, "err", err)
	}
	s.changed = false
}

// finish ends a message's session after its last item: one DSN for its
// permanent failures, the delay warning when due, then the envelope is
// written, or the message removed when no recipient is left pending. It
// returns the ids of the notifications it queued and when the message is
// next due. s.mu is held and s.l is the message's lock.
func (r *Runner) finish(s *session, st *Stats) ([]string, time.Time) {
	l, env := s.l, s.l.Envelope
	log := r.log().With("id", s.id)
	now := r.now()
	var notices []string
	if len(s.bounced) > 0 {
		failed := make([]dsn.Recipient, len(s.bounced))
		for i, b := range s.bounced {
			failed[i] = b.report
		}
		if nid := r.notify(l, env, failed, log); nid != "" {
			notices = append(notices, nid)
			st.Notices++
		}
		for _, b := range s.bounced {
			b.rc.State = spool.Bounced
			b.rc.LastError = b.report.Diagnostic
			delete(s.claimed, b.rc)
		}
		s.bounced = nil
	}
	pending := false
	for _, rc := range env.Recipients {
		if rc.State == spool.Pending {
			pending = true
		}
	}
	if !pending {
		// Durable with the next fsync of env/ the dispatcher's owner runs
		// (Pass, Daemon): one for many removals.
		if err := l.RemoveUnsynced(); err != nil {
			log.Error("cannot remove", "err", err)
			return notices, time.Time{}
		}
		s.removed = true
		log.Info("removed", "reason", "all recipients done")
		return notices, time.Time{}
	}
	bounceAt := env.Arrived.Add(orDefault(r.BounceAfter, DefaultBounceAfter))
	if r.warnDue(env, now) {
		var delayed []dsn.Recipient
		for _, rc := range env.Recipients {
			if rc.State == spool.Pending {
				delayed = append(delayed, dsn.Recipient{Final: rc.Address, Original: rc.Original, Action: dsn.Delayed,
					Status: statusOf(rc.LastError, "4.0.0"), Diagnostic: rc.LastError, LastAttempt: now, WillRetryUntil: bounceAt})
			}
		}
		if nid := r.notify(l, env, delayed, log); nid != "" {
			notices = append(notices, nid)
			st.Notices++
		}
		env.Warned = now
	}
	// A message not warned about yet is due again when the warning is.
	if warnAt, ok := r.warnTime(env); ok {
		for _, rc := range env.Recipients {
			if rc.State == spool.Pending && rc.NextAttempt.After(warnAt) && warnAt.After(now) {
				rc.NextAttempt = warnAt
			}
		}
	}
	r.save(s)
	return notices, env.Due()
}

// warnTime is when a delay warning for env is due, if one ever is: not for
// the null sender (nobody to warn) nor our own notices.
func (r *Runner) warnTime(env *spool.Envelope) (time.Time, bool) {
	w := orDefault(r.WarnAfter, DefaultWarnAfter)
	if w < 0 || env.From == "" || env.Notice != "" || !env.Warned.IsZero() {
		return time.Time{}, false
	}
	return env.Arrived.Add(w), true
}

func (r *Runner) warnDue(env *spool.Envelope, now time.Time) bool {
	t, ok := r.warnTime(env)
	return ok && !now.Before(t)
}

// deliverAll attempts every due recipient and returns their outcomes.
func (r *Runner) deliverAll(ctx context.Context, l *spool.Locked, env *spool.Envelope, due []*spool.Recipient, log *slog.Logger) []outcome {
	outs := make([]outcome, len(due))
	type remoteRef struct {
		i    int
		addr string
	}
	byDomain := map[string][]remoteRef{}
	var domains []string
	// Per recipient, the results of its destinations: all must succeed.
	remoteOf := make([][]remoteRef, len(due))
	for i, rc := range due {
		dests, err := r.Router.Resolve(rc.Address)
		if err != nil {
			outs[i] = routeOutcome(err)
			continue
		}
		outs[i] = outcome{done: true}
		for _, d := range dests {
			if d.Kind == route.Remote {
				dom := d.Address[strings.LastIndexByte(d.Address, '@')+1:]
				if _, ok := byDomain[dom]; !ok {
					domains = append(domains, dom)
				}
				ref := remoteRef{i, d.Address}
				byDomain[dom] = append(byDomain[dom], ref)
				remoteOf[i] = append(remoteOf[i], ref)
				continue
			}
			if d.Original == "" {
				d.Original = rc.Original
			}
			d = junkFolder(env, d)
			err := r.local(ctx, l, env.From, d)
			if err != nil {
				log.Debug("local delivery failed", "rcpt", rc.Address, "dest", d.Kind.String(), "err", err)
			} else {
				log.Debug("local delivery", "rcpt", rc.Address, "dest", d.Kind.String(), "to", d.Address+d.Path+d.Command)
			}
			o := localOutcome(err)
			if o.done {
				o.delivered = 1
			}
			o.localTemp = o.temporary
			outs[i] = merge(outs[i], o)
		}
	}
	data := r.remoteData(l, env, log)
	for _, dom := range domains {
		refs := byDomain[dom]
		addrs := make([]string, len(refs))
		for j, ref := range refs {
			addrs[j] = ref.addr
		}
		var res []remote.Result
		var err error
		if r.Remote == nil {
			err = ErrRemoteUnavailable
		} else {
			res, err = r.Remote.Deliver(ctx, dom, env.From, addrs, data)
		}
		for j, ref := range refs {
			var o outcome
			switch {
			case j < len(res):
				rs := res[j]
				o = outcome{done: !rs.Temporary && rs.Code/100 == 2, temporary: rs.Temporary, status: rs.Status, diag: rs.Message, remote: rs.Code != 0}
				if rs.Code != 0 && !strings.HasPrefix(rs.Message, fmt.Sprint(rs.Code)) {
					o.diag = fmt.Sprintf("%d %s %s", rs.Code, rs.Status, rs.Message)
				}
			case err != nil:
				o = outcome{temporary: true, status: "4.4.0", diag: err.Error()}
			default:
				o = outcome{temporary: true, status: "4.4.0", diag: "no result from remote delivery"}
			}
			log.Debug("remote delivery", "rcpt", ref.addr, "domain", dom, "done", o.done, "diag", o.diag)
			if o.done {
				o.delivered = 1
			}
			if o.temporary {
				o.retryRemote = []string{ref.addr}
			}
			outs[ref.i] = merge(outs[ref.i], o)
		}
	}
	return outs
}

// merge combines the outcomes of one recipient's destinations: a
// temporary failure wins (the recipient is retried), then a permanent one.
func merge(a, b outcome) outcome {
	var m outcome
	switch {
	case a.temporary:
		m = a
	case b.temporary:
		m = b
	case !a.done:
		m = a
	default:
		m = b
	}
	m.delivered = a.delivered + b.delivered
	m.localTemp = a.localTemp || b.localTemp
	m.retryRemote = append(append([]string(nil), a.retryRemote...), b.retryRemote...)
	return m
}

func routeOutcome(err error) outcome {
	switch {
	case errors.Is(err, route.ErrNoSuchUser):
		return outcome{status: "5.1.1", diag: err.Error()}
	case errors.Is(err, route.ErrLoop):
		return outcome{status: "5.4.6", diag: err.Error()}
	case errors.Is(err, route.ErrBadAddress):
		return outcome{status: "5.1.3", diag: err.Error()}
	case errors.Is(err, route.ErrNotAllowed):
		return outcome{status: "5.3.0", diag: err.Error()}
	}
	return outcome{temporary: true, status: "4.3.0", diag: err.Error()}
}

func localOutcome(err error) outcome {
	if err == nil {
		return outcome{done: true}
	}
	var de *delivery.Error
	if errors.As(err, &de) {
		return outcome{temporary: de.Temporary, status: de.Status, diag: err.Error()}
	}
	return outcome{temporary: true, status: "4.3.0", diag: err.Error()}
}

// statusOf picks an enhanced status code out of an error text.
func statusOf(text, def string) string {
	for _, f := range strings.Fields(text) {
		if len(f) >= 5 && (f[0] == '4' || f[0] == '5') && f[1] == '.' && strings.Count(f, ".") == 2 {
			return strings.TrimRight(f, ",;:")
		}
	}
	return def
}

// local delivers to one local destination, in-process or through the MDA.
func (r *Runner) local(ctx context.Context, l *spool.Locked, sender string, d route.Destination) error {
	if r.MDA != "" && (d.Kind == route.Maildir || d.Kind == route.Mbox) {
		// The MDA runs as the mailbox's owner, found from the mailbox.
		d = route.Destination{Kind: route.Pipe, Command: r.MDA, Path: d.Path, Address: d.Address, Original: d.Original, User: d.User}
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(r.MDATimeout, 10*time.Minute))
	defer cancel()
	data := l.Data()
	defer data.Close()
	if r.deliverLocal != nil {
		return r.deliverLocal(ctx, d, sender, data)
	}
	return r.Owners.Deliver(ctx, d, sender, data)
}

// notify queues a DSN about env: to the sender; for the null sender, to
// the postmaster once; a failed postmaster notice is dropped with a log
// line (never bounce a bounce). It returns the notice's queue id.
func (r *Runner) notify(l *spool.Locked, env *spool.Envelope, rcpts []dsn.Recipient, log *slog.Logger) string {
	to, notice := env.From, spool.NoticeDSN
	if env.From == "" {
		if env.Notice == spool.NoticePostmaster || rcpts[0].Action == dsn.Delayed {
			log.Warn("double bounce dropped", "rcpts", len(rcpts), "err", rcpts[0].Diagnostic)
			return ""
		}
		to, notice = r.postmaster(), spool.NoticePostmaster
	}
	data := l.Data()
	defer data.Close()
	msg, err := dsn.Build(&dsn.Report{Hostname: r.Hostname, To: to, QueueID: env.ID, Arrived: env.Arrived,
		Date: r.now(), Recipients: rcpts, Original: data, OriginalSize: env.Size})
	if err != nil {
		log.Error("cannot build a DSN", "err", err)
		return ""
	}
	nenv := &spool.Envelope{From: "", Arrived: r.now(), Notice: notice,
		Recipients: []*spool.Recipient{{Address: to, State: spool.Pending}}}
	nid, err := r.Spool.Submit(nenv, strings.NewReader(string(msg)))
	if err != nil {
		log.Error("cannot queue a DSN", "err", err)
		return ""
	}
	log.Info("dsn queued", "dsn", nid, "to", to, "action", rcpts[0].Action, "rcpts", len(rcpts))
	return nid
}

// syncRemovals makes the daemon's removals so far durable.
func (r *Runner) syncRemovals() {
	flush := r.Spool.SyncRemovals
	if r.flushRemovals != nil {
		flush = r.flushRemovals
	}
	if err := flush(); err != nil {
		r.log().Error("removals not flushed: a crash may deliver their messages again", "err", err)
	}
}

func (r *Runner) hook(event string) {
	if r.daemonHook != nil {
		r.daemonHook(event)
	}
}

func (r *Runner) postmaster() string {
	if r.Postmaster != "" {
		return r.Postmaster
	}
	return "postmaster"
}

// Daemon runs passes until ctx ends: at once when the trigger FIFO is
// poked, else when the earliest message is due, at least every Interval.
// Its passes don't wait for the messages they start: one dispatcher works
// them across passes, so a message hung on a dead destination delays
// neither the next pass nor the mail it finds.
func (r *Runner) Daemon(ctx context.Context) error {
	tr, err := r.Spool.Listen()
	if err != nil {
		return err
	}
	defer tr.Close()
	d := r.newDispatcher(ctx, false)
	// The removals of delivered messages are made durable in batches,
	// beside the deliveries: removals made while an fsync of env/ runs
	// share the next one, and no delivery waits for one (Postfix's queue
	// manager does not flush its removals at all). A crash before the
	// fsync may bring back a message delivered just before: it is
	// delivered again (queue-runner(8), CRASHES).
	stopSync := make(chan struct{})
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		for {
			select {
			case <-stopSync:
				return // the last removals are Daemon's to flush
			default:
			}
			select {
			case <-d.removals:
				r.syncRemovals()
			case <-stopSync:
				return
			}
		}
	}()
	defer func() {
		// On the way out the running messages end with ctx (their
		// delivery is interrupted and recorded as a temporary failure),
		// and what they and the others removed since the last fsync
		// began is made durable.
		d.wait()
		close(stopSync)
		r.hook("stopping")
		<-synced
		if d.removedSince() {
			r.syncRemovals()
		}
	}()
	interval := orDefault(r.Interval, DefaultInterval)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var deadline time.Time
	arm := func(at time.Time) {
		wait := time.Until(at)
		if wait < 10*time.Millisecond {
			wait = 10 * time.Millisecond
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		deadline = time.Now().Add(wait)
		r.log().Debug("idle", "wake_in", wait.String())
	}
	for {
		work, st, err := r.scan(false)
		if err != nil && ctx.Err() == nil {
			r.log().Error("pass failed", "err", err)
		}
		d.addAll(work)
		at := time.Now().Add(interval)
		if !st.Next.IsZero() && st.Next.Before(at) {
			at = st.Next
		}
		arm(at)
	wait:
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-tr.C:
			if !ok {
				return errors.New("queue: trigger FIFO closed")
			}
		case <-timer.C:
		case <-d.worked:
			done, next := d.take()
			if done.Messages > 0 {
				r.log().Debug("worked", "messages", done.Messages, "delivered", done.Delivered, "deferred", done.Deferred, "bounced", done.Bounced)
			}
			if !next.IsZero() && next.Before(deadline) {
				arm(next)
			}
			goto wait
		}
	}
}
