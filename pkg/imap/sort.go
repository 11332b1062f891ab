package imap

import (
	"net/mail"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SORT and THREAD (RFC 5256, and RFC 5957's DISPLAYFROM/DISPLAYTO).

// sortMsg is what sorting and threading read of one message.
type sortMsg struct {
	idx     int // sequence index
	num     uint32
	arrival time.Time
	sent    time.Time
	size    int64
	hdr     func(string) string
	subject string // base subject
}

func (s *session) sortMsgs(idx []int, uid bool, ctx *searchCtx) []*sortMsg {
	sel := s.sel
	out := make([]*sortMsg, 0, len(idx))
	for _, i := range idx {
		m := sel.lookup(sel.uids[i])
		if m == nil {
			continue
		}
		sm := &searchMsg{seq: i, m: m}
		ctx.header(sm)
		h := sm.hdr
		// A message whose date cannot be read (expunged meanwhile) sorts
		// as of 1970 (zero Unix time).
		arrival, ok := ctx.internalDate(m)
		if !ok {
			arrival = time.Unix(0, 0)
		}
		x := &sortMsg{idx: i, arrival: arrival, size: m.Size, hdr: h.Get}
		x.num = uint32(i + 1)
		if uid {
			x.num = m.UID
		}
		x.sent = arrival
		if t, err := mail.ParseDate(strings.TrimSpace(h.Get("date"))); err == nil {
			x.sent = t
		}
		x.sent = x.sent.UTC()
		x.subject = baseSubject(decodeHeader(h.Get("subject")))
		out = append(out, x)
	}
	return out
}

func (s *session) cmdSort(uid bool, a sortArgs) result {
	if !checkCharset(a.charset) {
		return no(badCharset, "Unsupported charset")
	}
	ctx := &searchCtx{s: s, sel: s.sel}
	idx, err := ctx.run(a.key)
	if err != nil {
		return bad(err.Error())
	}
	msgs := s.sortMsgs(idx, uid, ctx)
	if ctx.err != nil {
		return s.storeError("sort", ctx.err)
	}
	keys := make([][]string, len(msgs))
	for i, m := range msgs {
		keys[i] = make([]string, len(a.criteria))
		for j, c := range a.criteria {
			keys[i][j] = sortKey(m, c.key)
		}
	}
	order := make([]int, len(msgs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(x, y int) bool {
		mx, my := msgs[order[x]], msgs[order[y]]
		for j, c := range a.criteria {
			cmp := compareSortKey(c.key, mx, my, keys[order[x]][j], keys[order[y]][j])
			if cmp == 0 {
				continue
			}
			if c.reverse {
				cmp = -cmp
			}
			return cmp < 0
		}
		return mx.idx < my.idx
	})
	b := append(s.scratch[:0], "* SORT"...)
	for _, o := range order {
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(msgs[o].num), 10)
	}
	b = append(b, "\r\n"...)
	s.bw.Write(b)
	s.scratch = b[:0]
	return ok("SORT completed")
}

// sortKey is the text a criterion compares (upper case: i;ascii-casemap).
func sortKey(m *sortMsg, key string) string {
	switch key {
	case "CC", "FROM", "TO":
		return strings.ToUpper(firstMailbox(m.hdr(strings.ToLower(key))))
	case "DISPLAYFROM", "DISPLAYTO":
		return strings.ToUpper(displayName(m.hdr(strings.ToLower(strings.TrimPrefix(key, "DISPLAY")))))
	case "SUBJECT":
		return strings.ToUpper(m.subject)
	}
	return ""
}

func compareSortKey(key string, x, y *sortMsg, kx, ky string) int {
	switch key {
	case "ARRIVAL":
		return compareTime(x.arrival, y.arrival)
	case "DATE":
		return compareTime(x.sent, y.sent)
	case "SIZE":
		switch {
		case x.size < y.size:
			return -1
		case x.size > y.size:
			return 1
		}
		return 0
	}
	return strings.Compare(kx, ky)
}

func compareTime(a, b time.Time) int {
	switch {
	case a.Before(b):
		return -1
	case a.After(b):
		return 1
	}
	return 0
}

// firstMailbox is the addr-mailbox of the first address as ENVELOPE has
// it (a group's name for a group), RFC 5256 § 3.
func firstMailbox(v string) string {
	for _, a := range parseAddresses(v) {
		if !a.groupEnd {
			return a.mailbox
		}
	}
	return ""
}

// displayName (RFC 5957): the first address's display name, decoded, or
// its addr-spec.
func displayName(v string) string {
	for _, a := range parseAddresses(v) {
		if a.groupStart || a.groupEnd {
			continue
		}
		if a.name != "" {
			return decodeHeader(a.name)
		}
		if a.host != "" {
			return a.mailbox + "@" + a.host
		}
		return a.mailbox
	}
	return ""
}

// baseSubject extracts the base subject (RFC 5256 § 2.1).
func baseSubject(s string) string {
	// (1) whitespace runs to one space.
	s = strings.Join(strings.Fields(s), " ")
	for {
		// (2) trailing "(fwd)" and whitespace.
		for {
			t := strings.TrimRight(s, " ")
			if strings.HasSuffix(strings.ToLower(t), "(fwd)") {
				t = t[:len(t)-5]
			}
			if t == s {
				break
			}
			s = t
		}
		// (3), (4): leaders and blobs, until nothing changes.
		for {
			t := stripLeader(s)
			if b := stripBlob(t); b != "" {
				t = b
			}
			if t == s {
				break
			}
			s = t
		}
		// (5) "[fwd: … ]".
		l := strings.ToLower(s)
		if strings.HasPrefix(l, "[fwd:") && strings.HasSuffix(s, "]") {
			s = strings.TrimSpace(s[5 : len(s)-1])
			continue
		}
		return s
	}
}

// stripLeader removes one subj-leader: leading spaces, or blobs followed
// by "re", "fw" or "fwd", an optional blob and ":".
func stripLeader(s string) string {
	if strings.HasPrefix(s, " ") {
		return strings.TrimLeft(s, " ")
	}
	t := s
	for {
		b := skipBlob(t)
		if b == t {
			break
		}
		t = b
	}
	l := strings.ToLower(t)
	var rest string
	switch {
	case strings.HasPrefix(l, "re"):
		rest = t[2:]
	case strings.HasPrefix(l, "fwd"):
		rest = t[3:]
	case strings.HasPrefix(l, "fw"):
		rest = t[2:]
	default:
		return s
	}
	rest = strings.TrimLeft(rest, " ")
	rest = skipBlob(rest)
	if !strings.HasPrefix(rest, ":") {
		return s
	}
	return rest[1:]
}

// skipBlob removes a leading "[…]" (no brackets inside) and spaces after.
func skipBlob(s string) string {
	if !strings.HasPrefix(s, "[") {
		return s
	}
	i := strings.IndexAny(s[1:], "[]")
	if i < 0 || s[1+i] != ']' {
		return s
	}
	return strings.TrimLeft(s[i+2:], " ")
}

// stripBlob removes a leading blob when something is left after it.
func stripBlob(s string) string {
	t := skipBlob(s)
	if t == s || t == "" {
		return ""
	}
	return t
}

// threadNode is a THREAD container (RFC 5256 § 3): a message, or a dummy
// for a referenced message that is not in the set.
type threadNode struct {
	msg      *sortMsg
	parent   *threadNode
	children []*threadNode
}

func (n *threadNode) isAncestorOf(o *threadNode) bool {
	for p := o; p != nil; p = p.parent {
		if p == n {
			return true
		}
	}
	return false
}

func (n *threadNode) unlink() {
	if p := n.parent; p != nil {
		for i, c := range p.children {
			if c == n {
				p.children = append(p.children[:i:i], p.children[i+1:]...)
				break
			}
		}
		n.parent = nil
	}
}

func (n *threadNode) link(parent *threadNode) {
	n.unlink()
	n.parent = parent
	parent.children = append(parent.children, n)
}

// date is the thread sort date: the message's, or a dummy's first child's.
func (n *threadNode) date() (time.Time, int) {
	if n.msg != nil {
		return n.msg.sent, n.msg.idx
	}
	if len(n.children) > 0 {
		return n.children[0].date()
	}
	return time.Time{}, 0
}

func sortNodes(ns []*threadNode) {
	sort.SliceStable(ns, func(i, j int) bool {
		ti, ii := ns[i].date()
		tj, ij := ns[j].date()
		if c := compareTime(ti, tj); c != 0 {
			return c < 0
		}
		return ii < ij
	})
}

// msgIDs extracts <…> message ids from a References or In-Reply-To value.
func msgIDs(v string) []string {
	var out []string
	for {
		i := strings.IndexByte(v, '<')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return out
		}
		id := strings.TrimSpace(v[i+1 : i+j])
		if id != "" && !strings.ContainsAny(id, " \t<") {
			out = append(out, id)
		}
		v = v[i+j+1:]
		if len(out) > 1000 {
			return out
		}
	}
}

func threadReferences(msgs []*sortMsg) []*threadNode {
	byID := map[string]*threadNode{}
	var all []*threadNode
	get := func(id string) *threadNode {
		if n := byID[id]; n != nil {
			return n
		}
		n := &threadNode{}
		byID[id] = n
		all = append(all, n)
		return n
	}
	for k, m := range msgs {
		ids := msgIDs(m.hdr("message-id"))
		id := ""
		if len(ids) > 0 {
			id = ids[0]
		}
		var n *threadNode
		if id != "" && byID[id] != nil && byID[id].msg == nil {
			n = byID[id]
		} else {
			if id == "" || byID[id] != nil {
				id = "\x00unique" + strconv.Itoa(k) // missing or duplicate id
			}
			n = get(id)
		}
		n.msg = m
		refs := msgIDs(m.hdr("references"))
		if len(refs) == 0 {
			if irt := msgIDs(m.hdr("in-reply-to")); len(irt) > 0 {
				refs = irt[:1]
			}
		}
		// A: link the references in order, without loops, keeping
		// existing parents.
		var prev *threadNode
		for _, r := range refs {
			c := get(r)
			if prev != nil && c.parent == nil && c != prev && !c.isAncestorOf(prev) {
				c.link(prev)
			}
			prev = c
		}
		// B: the message's parent is the last reference.
		if prev != nil && prev != n && !n.isAncestorOf(prev) {
			n.link(prev)
		} else {
			n.unlink()
		}
	}
	// 2: the root set.
	var roots []*threadNode
	for _, n := range all {
		if n.parent == nil {
			roots = append(roots, n)
		}
	}
	// 3: prune dummies.
	roots = prune(roots, true)
	// 4: sort the roots.
	for _, r := range roots {
		sortTree(r)
	}
	sortNodes(roots)
	// 5: gather threads by base subject.
	subjectOf := func(n *threadNode) (string, bool) {
		m := n.msg
		if m == nil && len(n.children) > 0 {
			m = n.children[0].msg
		}
		if m == nil {
			return "", false
		}
		return m.subject, isReply(m.hdr("subject"))
	}
	table := map[string]*threadNode{}
	for _, r := range roots {
		subj, re := subjectOf(r)
		if subj == "" {
			continue
		}
		old := table[subj]
		if old == nil || (r.msg == nil && old.msg != nil) {
			table[subj] = r
			continue
		}
		_, oldRe := subjectOf(old)
		if old.msg != nil && oldRe && !re {
			table[subj] = r
		}
	}
	var out []*threadNode
	for _, r := range roots {
		subj, re := subjectOf(r)
		t := table[subj]
		if subj == "" || t == nil || t == r {
			out = append(out, r)
			continue
		}
		_, tRe := subjectOf(t)
		switch {
		case t.msg == nil && r.msg == nil:
			for _, c := range append([]*threadNode(nil), r.children...) {
				c.link(t)
			}
		case t.msg == nil:
			r.link(t)
		case r.msg == nil:
			t.link(r)
			out = append(out, r)
			table[subj] = r
			removeNode(&out, t)
		case !tRe && re:
			r.link(t)
		case tRe && !re:
			t.link(r)
			out = append(out, r)
			table[subj] = r
			removeNode(&out, t)
		default:
			d := &threadNode{}
			for i, x := range out {
				if x == t {
					out[i] = d
				}
			}
			t.link(d)
			r.link(d)
			table[subj] = d
		}
	}
	// 6: sort again.
	for _, r := range out {
		sortTree(r)
	}
	sortNodes(out)
	return out
}

func removeNode(list *[]*threadNode, n *threadNode) {
	for i, x := range *list {
		if x == n {
			*list = append((*list)[:i], (*list)[i+1:]...)
			return
		}
	}
}

func isReply(subject string) bool {
	s := decodeHeader(subject)
	s = strings.Join(strings.Fields(s), " ")
	return stripLeader(s) != s || strings.HasSuffix(strings.ToLower(s), "(fwd)") || strings.HasPrefix(strings.ToLower(s), "[fwd:")
}

// prune removes dummies without children and promotes the children of
// other dummies (at the root only when there is one child).
func prune(ns []*threadNode, root bool) []*threadNode {
	var out []*threadNode
	for _, n := range ns {
		n.children = prune(n.children, false)
		for _, c := range n.children {
			c.parent = n
		}
		if n.msg != nil {
			out = append(out, n)
			continue
		}
		switch {
		case len(n.children) == 0:
		case !root || len(n.children) == 1:
			for _, c := range n.children {
				c.parent = n.parent
			}
			out = append(out, n.children...)
		default:
			out = append(out, n)
		}
	}
	return out
}

func sortTree(n *threadNode) {
	for _, c := range n.children {
		sortTree(c)
	}
	sortNodes(n.children)
}

// threadOrderedSubject: threads of one base subject, by sent date; each
// thread's first message is the parent of the others.
func threadOrderedSubject(msgs []*sortMsg) []*threadNode {
	sorted := append([]*sortMsg(nil), msgs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].subject != sorted[j].subject {
			return strings.ToUpper(sorted[i].subject) < strings.ToUpper(sorted[j].subject)
		}
		if c := compareTime(sorted[i].sent, sorted[j].sent); c != 0 {
			return c < 0
		}
		return sorted[i].idx < sorted[j].idx
	})
	var roots []*threadNode
	var cur *threadNode
	curSubj := ""
	for _, m := range sorted {
		subj := strings.ToUpper(m.subject)
		if cur == nil || subj != curSubj {
			cur = &threadNode{msg: m}
			curSubj = subj
			roots = append(roots, cur)
			continue
		}
		(&threadNode{msg: m}).link(cur)
	}
	sortNodes(roots)
	return roots
}

// appendThread writes a thread: "(a b (c)(d))".
func appendThread(b []byte, n *threadNode) []byte {
	b = append(b, '(')
	b = appendThreadBody(b, n)
	return append(b, ')')
}

func appendThreadBody(b []byte, n *threadNode) []byte {
	first := true
	for {
		if n.msg != nil {
			if !first {
				b = append(b, ' ')
			}
			b = strconv.AppendUint(b, uint64(n.msg.num), 10)
			first = false
		}
		switch len(n.children) {
		case 0:
			return b
		case 1:
			if n.msg == nil {
				// A dummy with one child: that child stands for it.
				n = n.children[0]
				continue
			}
			n = n.children[0]
			continue
		}
		if !first {
			b = append(b, ' ')
		}
		for _, c := range n.children {
			b = appendThread(b, c)
		}
		return b
	}
}

func (s *session) cmdThread(uid bool, a threadArgs) result {
	if !checkCharset(a.charset) {
		return no(badCharset, "Unsupported charset")
	}
	if a.algorithm != "REFERENCES" && a.algorithm != "ORDEREDSUBJECT" {
		return bad("Unknown thread algorithm")
	}
	ctx := &searchCtx{s: s, sel: s.sel}
	idx, err := ctx.run(a.key)
	if err != nil {
		return bad(err.Error())
	}
	msgs := s.sortMsgs(idx, uid, ctx)
	if ctx.err != nil {
		return s.storeError("sort", ctx.err)
	}
	var roots []*threadNode
	if a.algorithm == "REFERENCES" {
		roots = threadReferences(msgs)
	} else {
		roots = threadOrderedSubject(msgs)
	}
	b := append(s.scratch[:0], "* THREAD"...)
	if len(roots) > 0 {
		b = append(b, ' ')
	}
	for _, r := range roots {
		b = appendThread(b, r)
	}
	b = append(b, "\r\n"...)
	s.bw.Write(b)
	s.scratch = b[:0]
	return ok("THREAD completed")
}
