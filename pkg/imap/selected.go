package imap

import (
	"errors"
	"sort"
	"strconv"
	"strings"
	"time"

	"letterbox/pkg/mailstore"
)

// selected is the open mailbox as the client knows it. uids is the
// sequence order (UID order); a UID stays until its expunge was told,
// which may wait: EXPUNGE cannot be sent during FETCH, STORE and SEARCH.
type selected struct {
	name        string
	view        View
	readOnly    bool
	uidValidity uint32
	uids        []uint32
	modseq      []uint64 // per sequence number: the MODSEQ whose flags the client was told
	snap        mailstore.Snapshot
	keywords    map[string]bool // keywords announced in FLAGS
	recent      int             // \Recent count told (IMAP4rev1)
	expungeTold bool            // expunges told since the last update: RECENT may follow
	saved       []uint32        // SEARCHRES "$": UIDs
}

func (sel *selected) close() {
	if err := sel.view.Close(); err != nil {
		_ = err // the view has nothing to flush; a failed close loses nothing
	}
}

// lookup finds a message of the current snapshot by UID.
func (sel *selected) lookup(uid uint32) *mailstore.Msg {
	return sel.lookupAt(uid, -1)
}

// lookupAt is lookup with a guess at the index (the sequence index, which
// is the snapshot's index while nothing was expunged or added): a FETCH of
// 10,000 messages then searches none.
func (sel *selected) lookupAt(uid uint32, guess int) *mailstore.Msg {
	ms := sel.snap.Msgs
	if guess >= 0 && guess < len(ms) && ms[guess].UID == uid {
		return &ms[guess]
	}
	i := sort.Search(len(ms), func(i int) bool { return ms[i].UID >= uid })
	if i < len(ms) && ms[i].UID == uid {
		return &ms[i]
	}
	return nil
}

// errBadSet: a sequence number the mailbox does not have.
var errBadSet = errors.New("Invalid messageset")

// resolve returns the sequence indexes (0-based, ascending) that set
// names: sequence numbers, or UIDs with uid. A sequence number the
// mailbox does not have is an error (in an empty mailbox, "*" too), as
// Dovecot has it.
func (sel *selected) resolve(set seqSet, uid bool) ([]int, error) {
	return sel.resolveSet(set, uid, false)
}

// resolveSet is resolve; lenient (SEARCH) drops numbers out of range
// instead.
func (sel *selected) resolveSet(set seqSet, uid, lenient bool) ([]int, error) {
	n := len(sel.uids)
	if set.saved {
		var out []int
		j := 0
		for _, u := range sel.saved {
			for j < n && sel.uids[j] < u {
				j++
			}
			if j < n && sel.uids[j] == u {
				out = append(out, j)
			}
		}
		return out, nil
	}
	if !uid {
		for _, r := range set.ranges {
			if (n == 0 || r.lo != star && int64(r.lo) > int64(n) || r.hi != star && int64(r.hi) > int64(n)) && !lenient {
				return nil, errBadSet
			}
		}
		if n == 0 {
			return nil, nil
		}
		rs := set.resolve(uint32(n))
		var out []int
		for _, r := range rs {
			if r.hi > uint32(n) {
				r.hi = uint32(n)
			}
			for v := r.lo; v <= r.hi && v != 0; v++ {
				out = append(out, int(v)-1)
				if v == r.hi {
					break
				}
			}
		}
		return out, nil
	}
	if n == 0 {
		return nil, nil
	}
	rs := set.resolve(sel.uids[n-1])
	var out []int
	for _, r := range rs {
		i := sort.Search(n, func(i int) bool { return sel.uids[i] >= r.lo })
		for ; i < n && sel.uids[i] <= r.hi; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}

// uidsOf maps sequence indexes to UIDs.
func (sel *selected) uidsOf(idx []int) []uint32 {
	out := make([]uint32, len(idx))
	for i, x := range idx {
		out[i] = sel.uids[x]
	}
	return out
}

// load takes a first snapshot.
func (sel *selected) load(snap mailstore.Snapshot) {
	sel.snap = snap
	sel.uidValidity = snap.UIDValidity
	sel.uids = make([]uint32, len(snap.Msgs))
	sel.modseq = make([]uint64, len(snap.Msgs))
	sel.keywords = map[string]bool{}
	for i := range snap.Msgs {
		m := &snap.Msgs[i]
		sel.uids[i] = m.UID
		sel.modseq[i] = m.ModSeq
		sel.addKeywords(m.Flags)
		if m.Recent {
			sel.recent++
		}
	}
}

// addKeywords notes m's keywords; true when one is new.
func (sel *selected) addKeywords(flags []string) bool {
	added := false
	for _, f := range flags {
		if !strings.HasPrefix(f, `\`) && !sel.keywords[f] {
			sel.keywords[f] = true
			added = true
		}
	}
	return added
}

func (sel *selected) flagsResponse() string {
	b := []byte(`FLAGS (\Answered \Flagged \Deleted \Seen \Draft`)
	for _, k := range sel.sortedKeywords() {
		b = append(b, ' ')
		b = append(b, k...)
	}
	return string(append(b, ')'))
}

func (sel *selected) sortedKeywords() []string {
	ks := make([]string, 0, len(sel.keywords))
	for k := range sel.keywords {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// removeExpunged drops the given sequence indexes (ascending) and tells
// the client: EXPUNGE from the highest number down, or VANISHED.
func (s *session) removeExpunged(idx []int) {
	if len(idx) == 0 {
		return
	}
	sel := s.sel
	if s.qresync {
		uids := sel.uidsOf(idx)
		sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
		s.untagged("VANISHED " + setOf(uids).String())
	} else {
		b := s.scratch[:0]
		for k := len(idx) - 1; k >= 0; k-- {
			b = append(b, "* "...)
			b = strconv.AppendInt(b, int64(idx[k]+1), 10)
			b = append(b, " EXPUNGE\r\n"...)
		}
		s.bw.Write(b)
		s.scratch = b[:0]
	}
	j, k := 0, 0
	for i := range sel.uids {
		if k < len(idx) && idx[k] == i {
			k++
			continue
		}
		sel.uids[j], sel.modseq[j] = sel.uids[i], sel.modseq[i]
		j++
	}
	sel.uids, sel.modseq = sel.uids[:j], sel.modseq[:j]
	sel.expungeTold = true
}

// removeUIDs is removeExpunged by UID (this session's own EXPUNGE, MOVE).
func (s *session) removeUIDs(uids []uint32) {
	if len(uids) == 0 {
		return
	}
	set := setOf(sortedCopy(uids))
	var idx []int
	for i, u := range s.sel.uids {
		if set.contains(u) {
			idx = append(idx, i)
		}
	}
	s.removeExpunged(idx)
}

func sortedCopy(u []uint32) []uint32 {
	c := append([]uint32(nil), u...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c
}

// errUIDValidity: the folder was replaced under the session.
var errUIDValidity = errors.New("UIDVALIDITY changed")

// update looks for changes in the selected folder and tells the client:
// expunges (when allowed), new keywords, new messages, flag changes.
func (s *session) update(allowExpunge bool) error {
	sel := s.sel
	snap, err := sel.view.Sync()
	if err != nil {
		return err
	}
	if snap.UIDValidity != sel.uidValidity {
		s.bye("[UIDVALIDITY] Mailbox was replaced; please reconnect")
		s.closeAfter = "uidvalidity-changed"
		return errUIDValidity
	}
	msgs := snap.Msgs
	told := false // expunges told
	if allowExpunge {
		var gone []int
		j := 0
		for i, u := range sel.uids {
			for j < len(msgs) && msgs[j].UID < u {
				j++
			}
			if j == len(msgs) || msgs[j].UID != u {
				gone = append(gone, i)
			}
		}
		s.removeExpunged(gone)
	}
	told, sel.expungeTold = sel.expungeTold, false
	sel.snap = snap
	// New messages: UIDs above the last one known.
	var last uint32
	if n := len(sel.uids); n > 0 {
		last = sel.uids[n-1]
	}
	first := sort.Search(len(msgs), func(i int) bool { return msgs[i].UID > last })
	newKeywords := false
	for i := first; i < len(msgs); i++ {
		m := &msgs[i]
		sel.uids = append(sel.uids, m.UID)
		sel.modseq = append(sel.modseq, m.ModSeq)
		newKeywords = sel.addKeywords(m.Flags) || newKeywords
	}
	// Flag changes of the messages known before.
	var changed []int
	j := 0
	for i := 0; i < len(sel.uids)-(len(msgs)-first); i++ {
		u := sel.uids[i]
		for j < first && msgs[j].UID < u {
			j++
		}
		if j < first && msgs[j].UID == u && msgs[j].ModSeq != sel.modseq[i] {
			changed = append(changed, i)
			sel.modseq[i] = msgs[j].ModSeq
			newKeywords = sel.addKeywords(msgs[j].Flags) || newKeywords
		}
	}
	if newKeywords {
		s.untagged(sel.flagsResponse())
		if !sel.readOnly {
			s.untagged("OK [PERMANENTFLAGS " + permanentFlags(sel) + "] Flags permitted")
		}
	}
	if first < len(msgs) {
		s.untagged(strconv.Itoa(len(sel.uids)) + " EXISTS")
	}
	if !s.rev2 {
		recent := 0
		for i := range msgs {
			if msgs[i].Recent {
				recent++
			}
		}
		// With the message count: after new messages, or expunges told.
		if first < len(msgs) || told && recent != sel.recent {
			sel.recent = recent
			s.untagged(strconv.Itoa(recent) + " RECENT")
		}
	}
	for _, i := range changed {
		if m := sel.lookup(sel.uids[i]); m != nil {
			s.writeFlagsFetch(i, m, s.qresync)
		}
	}
	return nil
}

// writeFlagsFetch tells a message's flags: "* n FETCH ([UID u ]FLAGS (…)
// [MODSEQ (m)])".
func (s *session) writeFlagsFetch(i int, m *mailstore.Msg, withUID bool) {
	s.writeFetchUpdate(i, m, withUID, true)
}

// writeFetchUpdate writes FLAGS, MODSEQ (when CONDSTORE is on) or both
// (RFC 7162 § 3.1.3: a silent STORE still tells the MODSEQ); UID with UID
// commands and QRESYNC.
func (s *session) writeFetchUpdate(i int, m *mailstore.Msg, withUID, flags bool) {
	b := s.scratch[:0]
	b = append(b, "* "...)
	b = strconv.AppendInt(b, int64(i+1), 10)
	b = append(b, " FETCH ("...)
	if withUID || s.qresync {
		b = append(b, "UID "...)
		b = strconv.AppendUint(b, uint64(m.UID), 10)
		b = append(b, ' ')
	}
	if flags {
		b = append(b, "FLAGS "...)
		b = appendFlags(b, m.Flags, m.Recent && !s.rev2)
		if s.condstore {
			b = append(b, ' ')
		}
	}
	if s.condstore {
		b = append(b, "MODSEQ ("...)
		b = strconv.AppendUint(b, m.ModSeq, 10)
		b = append(b, ')')
	}
	b = append(b, ")\r\n"...)
	s.bw.Write(b)
	s.scratch = b[:0]
}

func permanentFlags(sel *selected) string {
	if sel.readOnly {
		return "()"
	}
	b := []byte(`(\Answered \Flagged \Deleted \Seen \Draft`)
	for _, k := range sel.sortedKeywords() {
		b = append(b, ' ')
		b = append(b, k...)
	}
	return string(append(b, ` \*)`...))
}

// storeError maps a store error to a tagged NO.
func (s *session) storeError(op string, err error) result {
	switch {
	case errors.Is(err, mailstore.ErrNoMailbox):
		return no("NONEXISTENT", "Mailbox does not exist")
	case errors.Is(err, mailstore.ErrExists):
		return no("ALREADYEXISTS", "Mailbox already exists")
	case errors.Is(err, mailstore.ErrBadName):
		return no("CANNOT", "Invalid mailbox name")
	case errors.Is(err, mailstore.ErrInbox):
		return no("CANNOT", "Not allowed on INBOX")
	case errors.Is(err, mailstore.ErrHasChildren):
		return no("INUSE", "Mailbox has children; delete them first")
	case errors.Is(err, mailstore.ErrTooBig):
		return no("TOOBIG", "Message too big")
	case errors.Is(err, mailstore.ErrNoKeywords):
		return no("LIMIT", "No room for another keyword in this mailbox")
	case errors.Is(err, mailstore.ErrReadOnly):
		return no("READ-ONLY", "Mailbox is read-only")
	case errors.Is(err, mailstore.ErrExpunged):
		return no("EXPUNGEISSUED", "Some messages were expunged meanwhile")
	case errors.Is(err, mailstore.ErrBadFlag):
		return no("CANNOT", "Invalid flag")
	case errors.Is(err, mailstore.ErrSpecialUse):
		return no("USEATTR", "Special-use attribute not supported")
	}
	s.log.Error(op, "err", err)
	return no("SERVERBUG", op+" failed; the error is logged")
}

func (s *session) cmdSelect(a selectArgs, readOnly bool) result {
	if a.qresync != nil && !s.qresync {
		return bad("QRESYNC is not enabled")
	}
	if s.sel != nil {
		s.closeMailbox()
		s.state = stateAuth
		// RFC 7162 asks for it with QRESYNC; Dovecot says it always, and
		// clients ignore codes they don't know.
		s.untagged("OK [CLOSED] Previous mailbox closed")
	}
	view, err := s.store.Select(a.name, readOnly)
	if err != nil {
		return s.storeError("select", err)
	}
	snap, err := view.Sync()
	if err != nil {
		view.Close()
		return s.storeError("select", err)
	}
	if a.condstore {
		s.condstore = true
	}
	sel := &selected{name: a.name, view: view, readOnly: readOnly || view.ReadOnly()}
	sel.load(snap)
	s.sel, s.state = sel, stateSelected
	s.selects++
	s.untagged(sel.flagsResponse())
	s.untagged("OK [PERMANENTFLAGS " + permanentFlags(sel) + "] Flags permitted")
	s.untagged(strconv.Itoa(len(sel.uids)) + " EXISTS")
	if !s.rev2 {
		s.untagged(strconv.Itoa(sel.recent) + " RECENT")
		for i := range snap.Msgs {
			if !hasFlag(snap.Msgs[i].Flags, mailstore.FlagSeen) {
				s.untagged("OK [UNSEEN " + strconv.Itoa(i+1) + "] First unseen")
				break
			}
		}
	}
	s.untagged("OK [UIDVALIDITY " + strconv.FormatUint(uint64(snap.UIDValidity), 10) + "] UIDs valid")
	s.untagged("OK [UIDNEXT " + strconv.FormatUint(uint64(snap.UIDNext), 10) + "] Predicted next UID")
	s.untagged("OK [HIGHESTMODSEQ " + strconv.FormatUint(snap.HighestModSeq, 10) + "] Highest")
	if s.rev2 {
		s.untagged("LIST () \".\" " + s.mailboxString(a.name))
	}
	if q := a.qresync; q != nil && q.uidValidity == snap.UIDValidity {
		s.qresyncSelect(q)
	}
	code := "READ-WRITE"
	if sel.readOnly {
		code = "READ-ONLY"
	}
	res := okCode(code, a2s(readOnly, "EXAMINE", "SELECT")+" completed")
	res.noUpdate = true
	return res
}

func a2s(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

func hasFlag(flags []string, f string) bool {
	for _, g := range flags {
		if strings.EqualFold(g, f) {
			return true
		}
	}
	return false
}

// qresyncSelect tells what changed since the client's modseq (RFC 7162
// § 3.2.5): VANISHED (EARLIER), then the flags of changed messages.
func (s *session) qresyncSelect(q *qresyncParams) {
	sel := s.sel
	var known numSet
	if q.knownUIDs != nil {
		known = q.knownUIDs.resolve(0)
	}
	s.writeVanishedEarlier(q.modSeq, known)
	for i := range sel.snap.Msgs {
		m := &sel.snap.Msgs[i]
		if m.ModSeq > q.modSeq {
			s.writeFlagsFetch(i, m, true)
		}
	}
}

// writeVanishedEarlier sends "* VANISHED (EARLIER) uids": the UIDs within
// known (nil: all) expunged after modseq; when the store no longer knows
// that far back, every UID within known below UIDNEXT that is not here.
func (s *session) writeVanishedEarlier(modseq uint64, known numSet) {
	sel := s.sel
	uids, exact := sel.view.Vanished(modseq)
	var out numSet
	if exact {
		var keep []uint32
		for _, u := range sortedCopy(uids) {
			if (known == nil || known.contains(u)) && sel.lookup(u) == nil {
				keep = append(keep, u)
			}
		}
		out = setOf(keep)
	} else {
		top := sel.snap.UIDNext - 1
		if top == 0 || sel.snap.UIDNext == 0 {
			return
		}
		if known == nil {
			known = numSet{{1, top}}
		}
		out = missing(known, sel.snap.Msgs, top)
	}
	if len(out) > 0 {
		s.untagged("VANISHED (EARLIER) " + out.String())
	}
}

// missing returns the numbers in known (up to top) that no message has.
func missing(known numSet, msgs []mailstore.Msg, top uint32) numSet {
	var out numSet
	add := func(lo, hi uint32) {
		if lo <= hi {
			out = append(out, seqRange{lo, hi})
		}
	}
	for _, r := range known {
		lo, hi := r.lo, r.hi
		if hi > top {
			hi = top
		}
		if lo > hi {
			continue
		}
		i := sort.Search(len(msgs), func(i int) bool { return msgs[i].UID >= lo })
		cur := lo
		for ; i < len(msgs) && msgs[i].UID <= hi; i++ {
			if msgs[i].UID > cur {
				add(cur, msgs[i].UID-1)
			}
			cur = msgs[i].UID + 1
		}
		if cur <= hi {
			add(cur, hi)
		}
	}
	return out.normalize()
}

// cmdClose: CLOSE expunges silently (unless read-only); UNSELECT does not.
func (s *session) cmdClose(expunge bool) result {
	sel := s.sel
	if expunge && !sel.readOnly {
		removed, err := sel.view.Expunge(nil)
		if err != nil {
			s.log.Error("close: expunge", "folder", sel.name, "err", err)
		}
		s.expunged += len(removed)
	}
	s.closeMailbox()
	s.state = stateAuth
	res := ok(a2s(expunge, "CLOSE", "UNSELECT") + " completed")
	res.noUpdate = true
	return res
}

func (s *session) cmdExpunge(a expungeArgs) result {
	sel := s.sel
	if sel.readOnly {
		return no("READ-ONLY", "Mailbox is read-only")
	}
	var uids []uint32
	if a.set != nil {
		idx, err := sel.resolve(*a.set, true)
		if err != nil {
			return bad(err.Error())
		}
		uids = sel.uidsOf(idx)
		if len(uids) == 0 {
			return ok("EXPUNGE completed")
		}
	}
	removed, err := sel.view.Expunge(uids)
	s.removeUIDs(removed)
	s.expunged += len(removed)
	if err != nil {
		return s.storeError("expunge", err)
	}
	return ok("EXPUNGE completed")
}

// idleKeepalive is how often an idling client hears "* OK Still here",
// which keeps NAT state alive (Dovecot's imap_idle_notify_interval).
var idleKeepalive = 2 * time.Minute

func (s *session) cmdIdle() result {
	// The watch begins before the continuation: a change the client makes
	// (or sees made) once it has "+" must wake us, and one made between
	// the last command's update and the watch is looked for below.
	var changed <-chan struct{}
	if s.sel != nil {
		var stop func()
		changed, stop = s.sel.view.Watch()
		defer stop()
	}
	s.bw.WriteString("+ idling\r\n")
	if s.sel != nil {
		s.conn.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if err := s.update(true); err != nil && s.closeAfter != "" {
			s.bw.Flush()
			return result{written: true, end: s.closeAfter}
		}
	}
	if err := s.bw.Flush(); err != nil {
		return result{written: true, end: "write-error"}
	}
	type line struct {
		done bool
		err  error
	}
	lines := make(chan line, 1)
	s.conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if s.interrupted.Load() {
		s.conn.SetReadDeadline(time.Now())
	}
	go func() {
		err := s.rd.readLine()
		lines <- line{done: err == nil && strings.EqualFold(string(s.rd.line), "DONE"), err: err}
	}()
	keep := time.NewTicker(idleKeepalive)
	defer keep.Stop()
	for {
		select {
		case l := <-lines:
			if l.err != nil {
				var se *syntaxError
				if errors.As(l.err, &se) {
					return bad("Expected DONE")
				}
				return result{written: true, end: s.readFailed(l.err)}
			}
			s.rd.pos = len(s.rd.line)
			if !l.done {
				return bad("Expected DONE")
			}
			return ok("IDLE terminated")
		case <-changed:
			s.conn.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
			if err := s.update(true); err != nil && s.closeAfter != "" {
				s.conn.SetReadDeadline(time.Now())
				<-lines
				return result{written: true, end: s.closeAfter}
			}
			if err := s.bw.Flush(); err != nil {
				s.conn.SetReadDeadline(time.Now())
				<-lines
				return result{written: true, end: "write-error"}
			}
		case <-keep.C:
			s.conn.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
			s.untagged("OK Still here")
			s.bw.Flush()
		case <-s.stop:
			<-lines // the interrupt's deadline ends the read at once
			s.bye("Server shutting down")
			return result{written: true, end: "shutdown"}
		}
	}
}
