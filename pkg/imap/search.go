package imap

import (
	"bufio"
	"io"
	"net/mail"
	"sort"
	"strconv"
	"strings"
	"time"

	"letterbox/pkg/mailstore"
	"letterbox/pkg/mime"
)

// searchCtx evaluates search keys over the selected folder.
type searchCtx struct {
	s       *session
	sel     *selected
	usesMod bool // a MODSEQ key was used: the result carries the highest
	err     error
	dates   *lazyDates // internal dates the snapshot lacks, read at the first need
}

// internalDate is m's internal date; false when it cannot be read (the
// message was expunged by someone else meanwhile: no date key matches it).
func (c *searchCtx) internalDate(m *mailstore.Msg) (time.Time, bool) {
	if !m.InternalDate.IsZero() {
		return m.InternalDate, true
	}
	if c.dates == nil {
		c.dates = &lazyDates{sel: c.sel}
	}
	t, ok := c.dates.of(m)
	if c.dates.err != nil && c.err == nil {
		c.err = c.dates.err
	}
	return t, ok
}

// searchMsg is one message under evaluation; header and text are read
// when a key needs them.
type searchMsg struct {
	seq  int // 0-based
	m    *mailstore.Msg
	hdr  *mime.Header
	text []string // decoded text parts (and, for TEXT, the header)
	read bool
}

// checkCharset: SEARCH takes UTF-8 and US-ASCII (RFC 9051 § 6.4.4).
func checkCharset(cs string) bool {
	switch cs {
	case "", "UTF-8", "US-ASCII", "UTF8":
		return true
	}
	return false
}

const badCharset = "BADCHARSET (UTF-8 US-ASCII)"

// run returns the sequence indexes of the messages that match k.
func (c *searchCtx) run(k *searchKey) ([]int, error) {
	// Sets resolve against the mailbox as the client knows it.
	if err := c.prepare(k); err != nil {
		return nil, err
	}
	var out []int
	j := 0
	msgs := c.sel.snap.Msgs
	for i, u := range c.sel.uids {
		for j < len(msgs) && msgs[j].UID < u {
			j++
		}
		if j == len(msgs) || msgs[j].UID != u {
			continue // expunged, not yet told
		}
		sm := &searchMsg{seq: i, m: &msgs[j]}
		if c.match(k, sm) {
			out = append(out, i)
		}
		if c.err != nil {
			return nil, c.err
		}
	}
	return out, nil
}

// prepare resolves sequence and UID sets, orders AND's sub-keys cheapest
// first, and notes MODSEQ.
func (c *searchCtx) prepare(k *searchKey) error {
	switch k.op {
	case "SEQ", "UID":
		idx, err := c.sel.resolveSet(k.set, k.op == "UID", true)
		if err != nil {
			return err
		}
		k.sub = nil
		k.num = 0
		k.set = seqSet{}
		k.idx = idx
	case "MODSEQ":
		c.usesMod = true
		c.s.condstore = true
	}
	for _, sub := range k.sub {
		if err := c.prepare(sub); err != nil {
			return err
		}
	}
	if k.op == "AND" {
		sort.SliceStable(k.sub, func(i, j int) bool { return keyCost(k.sub[i]) < keyCost(k.sub[j]) })
	}
	return nil
}

// keyCost: flags and sizes are in memory, headers need the file's
// beginning, text all of it.
func keyCost(k *searchKey) int {
	switch k.op {
	case "BODY", "TEXT":
		return 3
	case "BCC", "CC", "FROM", "SUBJECT", "TO", "HEADER", "SENTBEFORE", "SENTON", "SENTSINCE":
		return 2
	case "AND", "OR", "NOT":
		max := 0
		for _, s := range k.sub {
			if c := keyCost(s); c > max {
				max = c
			}
		}
		return max
	}
	return 1
}

func (c *searchCtx) match(k *searchKey, sm *searchMsg) bool {
	m := sm.m
	switch k.op {
	case "AND":
		for _, s := range k.sub {
			if !c.match(s, sm) {
				return false
			}
		}
		return true
	case "OR":
		return c.match(k.sub[0], sm) || c.match(k.sub[1], sm)
	case "NOT":
		return !c.match(k.sub[0], sm)
	case "ALL":
		return true
	case "SEQ", "UID":
		i := sort.SearchInts(k.idx, sm.seq)
		return i < len(k.idx) && k.idx[i] == sm.seq
	case "ANSWERED":
		return hasFlag(m.Flags, mailstore.FlagAnswered)
	case "DELETED":
		return hasFlag(m.Flags, mailstore.FlagDeleted)
	case "DRAFT":
		return hasFlag(m.Flags, mailstore.FlagDraft)
	case "FLAGGED":
		return hasFlag(m.Flags, mailstore.FlagFlagged)
	case "SEEN":
		return hasFlag(m.Flags, mailstore.FlagSeen)
	case "UNANSWERED":
		return !hasFlag(m.Flags, mailstore.FlagAnswered)
	case "UNDELETED":
		return !hasFlag(m.Flags, mailstore.FlagDeleted)
	case "UNDRAFT":
		return !hasFlag(m.Flags, mailstore.FlagDraft)
	case "UNFLAGGED":
		return !hasFlag(m.Flags, mailstore.FlagFlagged)
	case "UNSEEN":
		return !hasFlag(m.Flags, mailstore.FlagSeen)
	case "RECENT":
		return m.Recent
	case "OLD":
		return !m.Recent
	case "NEW":
		return m.Recent && !hasFlag(m.Flags, mailstore.FlagSeen)
	case "KEYWORD":
		return hasFlag(m.Flags, k.str)
	case "UNKEYWORD":
		return !hasFlag(m.Flags, k.str)
	case "LARGER":
		return m.Size > k.num
	case "SMALLER":
		return m.Size < k.num
	case "MODSEQ":
		return int64(m.ModSeq) >= k.num
	case "BEFORE", "ON", "SINCE":
		d, ok := c.internalDate(m)
		return ok && compareDate(dateOf(d), k.date, k.op)
	case "SENTBEFORE", "SENTON", "SENTSINCE":
		c.header(sm)
		// No valid Date: as old as can be, as Dovecot has it.
		d := time.Unix(0, 0).UTC()
		if t, err := mail.ParseDate(strings.TrimSpace(sm.hdr.Get("date"))); err == nil {
			d = t
		}
		return compareDate(dateOf(d), k.date, strings.TrimPrefix(k.op, "SENT"))
	case "FROM", "TO", "CC", "BCC", "SUBJECT":
		c.header(sm)
		return c.headerContains(sm, strings.ToLower(k.op), k.str)
	case "HEADER":
		c.header(sm)
		return c.headerContains(sm, strings.ToLower(k.fld), k.str)
	case "BODY", "TEXT":
		c.body(sm)
		needle := fold(k.str)
		if k.op == "TEXT" && c.headerAny(sm, needle) {
			return true
		}
		for _, t := range sm.text {
			if strings.Contains(t, needle) {
				return true
			}
		}
		return false
	}
	return false
}

func dateOf(t time.Time) time.Time {
	y, mo, d := t.Date()
	return time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
}

func compareDate(d, want time.Time, op string) bool {
	switch op {
	case "BEFORE":
		return d.Before(want)
	case "ON":
		return d.Equal(want)
	}
	return !d.Before(want) // SINCE: on or after
}

// fold is the case-insensitive form text is compared in.
func fold(s string) string { return strings.ToLower(s) }

func (c *searchCtx) header(sm *searchMsg) {
	if sm.hdr != nil {
		return
	}
	sm.hdr = &mime.Header{}
	rc, err := c.sel.view.Open(sm.m.UID)
	if err != nil {
		return // expunged meanwhile: matches no text key
	}
	defer rc.Close()
	_, text, err := readHeader(bufio.NewReaderSize(newCRLFReader(rc, false), 4096))
	if err == nil {
		sm.hdr = fields(text)
	}
}

// headerContains: a field (any of its occurrences) contains s, compared
// decoded and without case. An empty s matches any message with the field.
func (c *searchCtx) headerContains(sm *searchMsg, name, s string) bool {
	needle := fold(s)
	for _, f := range sm.hdr.Fields {
		if f[0] == name && strings.Contains(fold(decodeHeader(f[1])), needle) {
			return true
		}
	}
	return false
}

func (c *searchCtx) headerAny(sm *searchMsg, needle string) bool {
	for _, f := range sm.hdr.Fields {
		if strings.Contains(fold(decodeHeader(f[1])), needle) {
			return true
		}
	}
	return false
}

// decodeHeader decodes RFC 2047 words and reads raw 8-bit as UTF-8 (else
// Latin-1).
func decodeHeader(v string) string {
	if !validUTF8(v) {
		v, _ = mime.ToUTF8("", []byte(v))
	}
	return mime.DecodeWords(v)
}

// maxSearchText bounds the decoded text kept per message for BODY/TEXT.
const maxSearchText = 16 << 20

// body reads the header and the decoded text parts.
func (c *searchCtx) body(sm *searchMsg) {
	if sm.read {
		return
	}
	sm.read = true
	c.header(sm)
	rc, err := c.sel.view.Open(sm.m.UID)
	if err != nil {
		return
	}
	defer rc.Close()
	type textPart struct {
		cs  string
		buf *limitedBuffer
	}
	var parts []textPart
	budget := maxSearchText
	mime.Walk(newCRLFReader(rc, false), mime.DefaultLimits, mime.Handler{Begin: func(p *mime.Part) io.Writer {
		if p.Container || !strings.HasPrefix(p.Type, "text/") {
			return nil
		}
		lb := &limitedBuffer{budget: &budget}
		parts = append(parts, textPart{p.Charset, lb})
		return lb
	}})
	for _, p := range parts {
		t, _ := mime.ToUTF8(p.cs, p.buf.b)
		sm.text = append(sm.text, fold(t))
	}
}

// limitedBuffer keeps what its (shared) budget allows and drops the rest.
type limitedBuffer struct {
	b      []byte
	budget *int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := *l.budget; len(p) > room {
		p = p[:room]
	}
	l.b = append(l.b, p...)
	*l.budget -= len(p)
	return n, nil
}

func (s *session) cmdSearch(tag string, uid bool, a searchArgs) result {
	if !checkCharset(a.charset) {
		return no(badCharset, "Unsupported charset")
	}
	sel := s.sel
	ctx := &searchCtx{s: s, sel: sel}
	idx, err := ctx.run(a.key)
	if err != nil {
		if a.esearch && hasString(a.ret, "SAVE") {
			sel.saved = nil
		}
		return bad(err.Error())
	}
	nums := make([]uint32, len(idx))
	var highest uint64
	for k, i := range idx {
		if uid {
			nums[k] = sel.uids[i]
		} else {
			nums[k] = uint32(i + 1)
		}
		if m := sel.lookup(sel.uids[i]); m != nil && m.ModSeq > highest {
			highest = m.ModSeq
		}
	}
	if !a.esearch && !s.rev2 {
		b := append(s.scratch[:0], "* SEARCH"...)
		for _, n := range nums {
			b = append(b, ' ')
			b = strconv.AppendUint(b, uint64(n), 10)
		}
		if ctx.usesMod && len(nums) > 0 {
			b = append(b, " (MODSEQ "...)
			b = strconv.AppendUint(b, highest, 10)
			b = append(b, ')')
		}
		b = append(b, "\r\n"...)
		s.bw.Write(b)
		s.scratch = b[:0]
		return ok("SEARCH completed")
	}
	ret := a.ret
	if len(ret) == 0 {
		ret = []string{"ALL"}
	}
	s.writeESearch(tag, uid, ret, nums, idx, highest, ctx.usesMod)
	return ok("SEARCH completed")
}

// writeESearch answers with ESEARCH (RFC 4731; IMAP4rev2's only form) and
// keeps the result for "$" when SAVE is asked (RFC 5182).
func (s *session) writeESearch(tag string, uid bool, ret []string, nums []uint32, idx []int, highest uint64, usesMod bool) {
	sel := s.sel
	if hasString(ret, "SAVE") {
		keep := idx
		if (hasString(ret, "MIN") || hasString(ret, "MAX")) && !hasString(ret, "ALL") && !hasString(ret, "COUNT") && len(idx) > 0 {
			keep = nil
			if hasString(ret, "MIN") {
				keep = append(keep, idx[0])
			}
			if hasString(ret, "MAX") && idx[len(idx)-1] != idx[0] {
				keep = append(keep, idx[len(idx)-1])
			}
		}
		sel.saved = sel.uidsOf(keep)
		if len(ret) == 1 {
			return
		}
	}
	b := append(s.scratch[:0], "* ESEARCH (TAG "...)
	b = appendQuoted(b, tag)
	b = append(b, ')')
	if uid {
		b = append(b, " UID"...)
	}
	for _, r := range ret {
		switch r {
		case "MIN":
			if len(nums) > 0 {
				b = append(b, " MIN "...)
				b = strconv.AppendUint(b, uint64(nums[0]), 10)
			}
		case "MAX":
			if len(nums) > 0 {
				b = append(b, " MAX "...)
				b = strconv.AppendUint(b, uint64(nums[len(nums)-1]), 10)
			}
		case "COUNT":
			b = append(b, " COUNT "...)
			b = strconv.AppendInt(b, int64(len(nums)), 10)
		case "ALL":
			if len(nums) > 0 {
				b = append(b, " ALL "...)
				b = appendSet(b, setOf(nums))
			}
		}
	}
	if usesMod && len(nums) > 0 {
		b = append(b, " MODSEQ "...)
		b = strconv.AppendUint(b, highest, 10)
	}
	b = append(b, "\r\n"...)
	s.bw.Write(b)
	s.scratch = b[:0]
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
