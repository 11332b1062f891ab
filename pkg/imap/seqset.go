package imap

import (
	"sort"
	"strconv"
)

// star is "*" in a sequence set: the largest number in use.
const star = ^uint32(0)

// seqRange is lo:hi as the client wrote it (either may be star, lo may be
// above hi).
type seqRange struct{ lo, hi uint32 }

// seqSet is a sequence-set (RFC 9051 § 9) or "$", the saved result of the
// last SEARCH (RFC 5182).
type seqSet struct {
	ranges []seqRange
	saved  bool // "$"
}

// numSet is a resolved set: sorted, disjoint, non-adjacent closed ranges.
type numSet []seqRange

// resolve replaces "*" by max and normalizes the ranges. For sequence
// numbers max is the message count; for UIDs the highest UID (so that
// "559:*" always includes the last message, RFC 9051 § 6.4.9).
func (s seqSet) resolve(max uint32) numSet {
	out := make(numSet, 0, len(s.ranges))
	for _, r := range s.ranges {
		lo, hi := r.lo, r.hi
		if lo == star {
			lo = max
		}
		if hi == star {
			hi = max
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		out = append(out, seqRange{lo, hi})
	}
	return out.normalize()
}

// hasStar reports whether the set uses "*".
func (s seqSet) hasStar() bool {
	for _, r := range s.ranges {
		if r.lo == star || r.hi == star {
			return true
		}
	}
	return false
}

func (n numSet) normalize() numSet {
	if len(n) < 2 {
		return n
	}
	sort.Slice(n, func(i, j int) bool { return n[i].lo < n[j].lo })
	out := n[:1]
	for _, r := range n[1:] {
		last := &out[len(out)-1]
		if last.hi == star || r.lo <= last.hi+1 {
			if r.hi > last.hi {
				last.hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// contains reports whether v is in the set.
func (n numSet) contains(v uint32) bool {
	i := sort.Search(len(n), func(i int) bool { return n[i].hi >= v })
	return i < len(n) && n[i].lo <= v
}

// max is the largest number in the set (0 for none).
func (n numSet) max() uint32 {
	if len(n) == 0 {
		return 0
	}
	return n[len(n)-1].hi
}

// setOf builds a numSet from sorted numbers.
func setOf(nums []uint32) numSet {
	var out numSet
	for _, v := range nums {
		if l := len(out); l > 0 && out[l-1].hi+1 == v {
			out[l-1].hi = v
			continue
		}
		out = append(out, seqRange{v, v})
	}
	return out
}

// appendSet formats a set as IMAP writes it: "1:3,5".
func appendSet(b []byte, n numSet) []byte {
	for i, r := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(r.lo), 10)
		if r.hi != r.lo {
			b = append(b, ':')
			b = strconv.AppendUint(b, uint64(r.hi), 10)
		}
	}
	return b
}

func (n numSet) String() string { return string(appendSet(nil, n)) }

// formatSeqSet writes an unresolved set back ("*" kept).
func (s seqSet) String() string {
	if s.saved {
		return "$"
	}
	var b []byte
	num := func(v uint32) {
		if v == star {
			b = append(b, '*')
		} else {
			b = strconv.AppendUint(b, uint64(v), 10)
		}
	}
	for i, r := range s.ranges {
		if i > 0 {
			b = append(b, ',')
		}
		num(r.lo)
		if r.hi != r.lo {
			b = append(b, ':')
			num(r.hi)
		}
	}
	return string(b)
}
