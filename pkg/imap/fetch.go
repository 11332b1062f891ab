package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"

	"letterbox/pkg/mailstore"
	"letterbox/pkg/mime"
)

// fetchMsg holds what one message's FETCH needed so far.
type fetchMsg struct {
	s   *session
	m   *mailstore.Msg
	hdr struct {
		done   bool
		end    int64
		text   []byte
		fields *mime.Header
	}
	st      *structure
	rc      io.ReadSeekCloser
	flushed bool // part of the response already went out
}

func (s *session) cmdFetch(uid bool, a fetchArgs) result {
	defer s.releaseBuffers()
	sel := s.sel
	idx, err := sel.resolve(a.set, uid)
	if err != nil {
		return bad(err.Error())
	}
	items := a.items
	hasUID, hasModSeq, setSeen, content := false, false, false, false
	for _, it := range items {
		switch it.name {
		case "UID":
			hasUID = true
		case "MODSEQ":
			hasModSeq = true
		case "RFC822", "RFC822.TEXT":
			setSeen, content = true, true
		case "RFC822.HEADER", "BINARY.SIZE":
			content = true
		case "BODY", "BINARY":
			setSeen = setSeen || it.bracket && !it.peek
			content = content || it.bracket
		}
	}
	if content || len(idx) >= 64 {
		s.useFetchWriter()
	}
	if uid && !hasUID {
		items = append([]fetchItem{{name: "UID"}}, items...)
	}
	if a.changedSince > 0 || hasModSeq {
		s.condstore = true
	}
	if a.changedSince > 0 && !hasModSeq {
		items = append(items, fetchItem{name: "MODSEQ"})
	}
	if a.vanished {
		var known numSet
		if !a.set.saved {
			top := uint32(0)
			if n := len(sel.uids); n > 0 {
				top = sel.uids[n-1]
			}
			if sel.snap.UIDNext > 0 && sel.snap.UIDNext-1 > top {
				top = sel.snap.UIDNext - 1
			}
			known = a.set.resolve(top)
		}
		s.writeVanishedEarlier(a.changedSince, known)
	}
	// BODY[…] without PEEK marks messages \Seen (RFC 9051 § 6.4.5), before
	// the responses, which then show the new flags.
	seen := map[uint32]*mailstore.Msg{}
	if setSeen && !sel.readOnly {
		var unseen []uint32
		for _, i := range idx {
			if m := sel.lookup(sel.uids[i]); m != nil && !hasFlag(m.Flags, mailstore.FlagSeen) {
				unseen = append(unseen, m.UID)
			}
		}
		if len(unseen) > 0 {
			changed, _, err := sel.view.Store(unseen, mailstore.StoreAdd, []string{mailstore.FlagSeen}, 0)
			if err != nil {
				s.log.Error("fetch: setting \\Seen", "folder", sel.name, "err", err)
			}
			for k := range changed {
				m := &changed[k]
				if old := sel.lookup(m.UID); old != nil {
					m.Recent = old.Recent
				}
				seen[m.UID] = m
			}
		}
	}
	wantDate := false
	for _, it := range items {
		wantDate = wantDate || it.name == "INTERNALDATE"
	}
	dates := lazyDates{sel: sel, idx: idx}
	gone, unknownCTE := false, false
	for _, i := range idx {
		u := sel.uids[i]
		m := seen[u]
		if m != nil {
			sel.modseq[i] = m.ModSeq
		} else if m = sel.lookupAt(u, i); m == nil {
			gone = true
			continue
		}
		if a.changedSince > 0 && m.ModSeq <= a.changedSince {
			continue
		}
		if wantDate && m.InternalDate.IsZero() {
			d, ok := dates.of(m)
			if dates.err != nil {
				return s.storeError("fetch", dates.err)
			}
			if !ok {
				gone = true // its file went before its date was read
				continue
			}
			dm := *m
			dm.InternalDate = d
			m = &dm
		}
		err := s.fetchOne(i, m, items, seen[u] != nil)
		switch {
		case err == nil:
		case errors.Is(err, mailstore.ErrExpunged):
			gone = true
		case errors.Is(err, errUnknownCTE):
			unknownCTE = true
		default:
			return s.storeError("fetch", err)
		}
		if s.closeAfter != "" {
			return no("SERVERBUG", "A message could not be read; please reconnect")
		}
	}
	if unknownCTE {
		return no("UNKNOWN-CTE", "Cannot decode a part's content-transfer-encoding")
	}
	if gone {
		return no("EXPUNGEISSUED", "Some of the requested messages no longer exist")
	}
	return ok("FETCH completed")
}

// fetchOne writes one message's FETCH response. flagsChanged adds FLAGS
// when the fetch itself set \Seen. An error before any of the response
// went out drops it; after, the response is closed and the session ends
// (the client cannot tell a cut literal from data).
func (s *session) fetchOne(i int, m *mailstore.Msg, items []fetchItem, flagsChanged bool) error {
	f := &fetchMsg{s: s, m: m}
	defer f.close()
	b := append(s.scratch[:0], "* "...)
	b = strconv.AppendInt(b, int64(i+1), 10)
	b = append(b, " FETCH ("...)
	hasFlags := false
	for _, it := range items {
		if it.name == "FLAGS" {
			hasFlags = true
		}
	}
	if flagsChanged && !hasFlags {
		items = append([]fetchItem{{name: "FLAGS"}}, items...)
	}
	utf8OK := s.utf8Names()
	var cteErr error
	for k, it := range items {
		if k > 0 {
			b = append(b, ' ')
		}
		var err error
		switch it.name {
		case "FLAGS":
			b = append(b, "FLAGS "...)
			b = appendFlags(b, m.Flags, m.Recent && !s.rev2)
		case "UID":
			b = append(b, "UID "...)
			b = strconv.AppendUint(b, uint64(m.UID), 10)
		case "INTERNALDATE":
			b = append(b, "INTERNALDATE "...)
			b = appendDateTime(b, m.InternalDate)
		case "RFC822.SIZE":
			b = append(b, "RFC822.SIZE "...)
			b = strconv.AppendInt(b, m.Size, 10)
		case "MODSEQ":
			b = append(b, "MODSEQ ("...)
			b = strconv.AppendUint(b, m.ModSeq, 10)
			b = append(b, ')')
		case "ENVELOPE":
			if err = f.header(); err == nil {
				b = append(b, "ENVELOPE "...)
				b = appendEnvelope(b, f.hdr.fields, utf8OK)
			}
		case "BODYSTRUCTURE", "BODY":
			if it.name == "BODY" && it.bracket {
				b, err = f.section(b, it)
			} else if err = f.structure(); err == nil {
				b = append(b, it.name...)
				b = append(b, ' ')
				b = appendBodyStructure(b, f.st.root, it.name == "BODYSTRUCTURE", utf8OK)
			}
		case "RFC822":
			b, err = f.section(b, fetchItem{name: "RFC822"})
		case "RFC822.HEADER":
			b, err = f.section(b, fetchItem{name: "RFC822.HEADER", sec: section{spec: "HEADER"}})
		case "RFC822.TEXT":
			b, err = f.section(b, fetchItem{name: "RFC822.TEXT", sec: section{spec: "TEXT"}})
		case "BINARY", "BINARY.SIZE":
			b, err = f.binary(b, it)
			if errors.Is(err, errUnknownCTE) {
				cteErr, err = err, nil
				b = append(b, "BINARY["+partString(it.sec.part)+"] NIL"...)
			}
		}
		if err != nil {
			if !f.flushed {
				s.scratch = b[:0]
				return err
			}
			s.log.Error("fetch: message unreadable mid-response", "folder", s.sel.name, "uid", m.UID, "err", err)
			s.closeAfter = "io-error"
			break
		}
	}
	b = append(b, ")\r\n"...)
	s.bw.Write(b)
	s.scratch = b[:0]
	return cteErr
}

// open returns the message's file, opened once per FETCH response so that
// a rename (flags) or an expunge meanwhile cannot cut it short; every
// reader starts from its beginning.
func (f *fetchMsg) open() (io.Reader, error) {
	if f.rc == nil {
		rc, err := f.s.sel.view.Open(f.m.UID)
		if err != nil {
			return nil, err
		}
		f.rc = rc
	} else if _, err := f.rc.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f.rc, nil
}

func (f *fetchMsg) close() {
	if f.rc != nil {
		f.rc.Close()
	}
}

// header reads the message's header.
func (f *fetchMsg) header() error {
	if f.hdr.done {
		return nil
	}
	rc, err := f.open()
	if err != nil {
		return err
	}
	end, text, err := readHeader(bufio.NewReaderSize(newCRLFReader(rc, false), 4096))
	if err != nil {
		return err
	}
	f.hdr.done = true
	f.hdr.end, f.hdr.text = end, text
	f.hdr.fields = fields(text)
	return nil
}

// structure parses the message (the last one parsed is kept: clients
// often fetch BODYSTRUCTURE, then parts).
func (f *fetchMsg) structure() error {
	if f.st != nil {
		return nil
	}
	c := &f.s.stCache
	if c.view == f.s.sel.view && c.uid == f.m.UID && c.st != nil {
		f.st = c.st
		return nil
	}
	rc, err := f.open()
	if err != nil {
		return err
	}
	st, err := parseStructure(newCRLFReader(rc, false))
	if err != nil {
		return err
	}
	f.st = st
	c.view, c.uid, c.st = f.s.sel.view, f.m.UID, st
	return nil
}

// section appends "NAME[SEC]<origin> literal" for BODY[…], RFC822,
// RFC822.HEADER and RFC822.TEXT.
func (f *fetchMsg) section(b []byte, it fetchItem) ([]byte, error) {
	name := it.name
	if name == "BODY" {
		name = "BODY[" + it.sec.String() + "]"
	}
	var sp span
	switch {
	case it.sec.part == nil && it.sec.spec == "":
		sp = span{start: 0, end: f.m.Size}
	case it.sec.part == nil:
		if err := f.header(); err != nil {
			return b, err
		}
		switch it.sec.spec {
		case "TEXT":
			sp = span{start: f.hdr.end, end: f.m.Size}
		case "HEADER":
			sp = span{start: 0, end: f.hdr.end}
		default:
			sp = span{text: headerFields(f.hdr.text, it.sec.fields, it.sec.spec == "HEADER.FIELDS.NOT")}
		}
	default:
		if err := f.structure(); err != nil {
			return b, err
		}
		sp = f.st.sectionSpan(it.sec)
		if sp.text == nil && (it.sec.spec == "HEADER.FIELDS" || it.sec.spec == "HEADER.FIELDS.NOT") && sp.end > sp.start {
			hdr, err := f.read(sp.start, sp.end)
			if err != nil {
				return b, err
			}
			sp = span{text: headerFields(hdr, it.sec.fields, it.sec.spec == "HEADER.FIELDS.NOT")}
		}
	}
	b = append(b, name...)
	if it.partial {
		b = append(b, '<')
		b = strconv.AppendUint(b, uint64(it.offset), 10)
		b = append(b, '>')
	}
	b = append(b, ' ')
	return f.literal(b, sp, it)
}

// literal appends the span (cut by a partial fetch) as a literal, or
// streams it straight to the connection.
func (f *fetchMsg) literal(b []byte, sp span, it fetchItem) ([]byte, error) {
	s := f.s
	if sp.text != nil {
		t := sp.text
		if it.partial {
			t = cut(t, it.offset, it.count)
		}
		b = append(b, '{')
		b = strconv.AppendInt(b, int64(len(t)), 10)
		b = append(b, "}\r\n"...)
		b = append(b, t...)
		s.fetchedBytes += int64(len(t))
		return b, nil
	}
	start, end := sp.start, sp.end
	if end < start {
		end = start
	}
	if it.partial {
		start += int64(it.offset)
		if start > end {
			start = end
		}
		if start+int64(it.count) < end {
			end = start + int64(it.count)
		}
	}
	n := end - start
	b = append(b, '{')
	b = strconv.AppendInt(b, n, 10)
	b = append(b, "}\r\n"...)
	if n == 0 {
		return b, nil
	}
	rc, err := f.open()
	if err != nil {
		return b, err
	}
	if s.crlf == nil {
		s.crlf = crlfPool.Get().(*crlfReader)
	}
	src := s.crlf.reset(rc, true)
	if start > 0 {
		if _, err := io.CopyN(io.Discard, src, start); err != nil && err != io.EOF {
			return b, err
		}
	}
	// The response so far goes out, then the content straight from the
	// file: a 35 MiB body is never held in memory.
	s.bw.Write(b)
	b = b[:0]
	f.flushed = true
	got, err := s.copyOut(src, n)
	s.fetchedBytes += got
	s.fetched++
	if got < n {
		// The file is shorter than its size said: pad to keep the
		// protocol in step, and end the session so the client refetches.
		s.log.Error("message shorter than its size", "folder", s.sel.name, "uid", f.m.UID, "size", f.m.Size, "err", err)
		pad := bytes.Repeat([]byte{' '}, 4096)
		for rem := n - got; rem > 0; {
			k := rem
			if k > int64(len(pad)) {
				k = int64(len(pad))
			}
			s.bw.Write(pad[:k])
			rem -= k
		}
		s.closeAfter = "message-changed"
	}
	return b, nil
}

// Buffers for sending FETCH responses, shared by the sessions: an idle
// session holds none.
var (
	crlfPool = sync.Pool{New: func() any { return newCRLFReader(nil, true) }}
	// fetchWriters buffer a FETCH's responses in 64 KiB writes: with the
	// session's 4 KiB writer a body went out as two or three writes (the
	// response's start, the body, then its end with the next message's
	// start), each a wake-up of the client on a pipe or a socket.
	fetchWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, fetchBufSize) }}
)

const fetchBufSize = 64 << 10

// useFetchWriter makes the session's writer a pooled 64 KiB one for a
// FETCH of many messages or of content; releaseBuffers puts the small one
// back. What the small one holds goes out first.
func (s *session) useFetchWriter() {
	if s.small != nil {
		return
	}
	if s.bw.Buffered() > 0 {
		if err := s.bw.Flush(); err != nil {
			return // the connection failed: the next write reports it
		}
	}
	w := fetchWriters.Get().(*bufio.Writer)
	// onlyWriter: with nothing buffered, bufio's ReadFrom would hand a
	// body to the connection's own ReadFrom, unbuffered, were it to have
	// one.
	w.Reset(onlyWriter{s.conn})
	s.small, s.bw = s.bw, w
}

// copyOut sends n octets of src through the session's writer, which reads
// them into its buffer (64 KiB during a FETCH) and writes it when full.
func (s *session) copyOut(src io.Reader, n int64) (int64, error) {
	return io.CopyN(s.bw, src, n)
}

// onlyWriter hides any ReadFrom of the writer it holds.
type onlyWriter struct{ io.Writer }

// releaseBuffers gives the FETCH buffers back when a command is done.
func (s *session) releaseBuffers() {
	if s.crlf != nil {
		s.crlf.reset(nil, true)
		crlfPool.Put(s.crlf)
		s.crlf = nil
	}
	if s.small != nil {
		w := s.bw
		w.Flush() // an error is the connection's: the next write reports it
		w.Reset(nil)
		fetchWriters.Put(w)
		s.bw, s.small = s.small, nil
	}
}

func cut(t []byte, off, count uint32) []byte {
	if int64(off) >= int64(len(t)) {
		return t[:0]
	}
	t = t[off:]
	if int64(count) < int64(len(t)) {
		t = t[:count]
	}
	return t
}

// read returns bytes [start, end) of the message (CRLF form).
func (f *fetchMsg) read(start, end int64) ([]byte, error) {
	rc, err := f.open()
	if err != nil {
		return nil, err
	}
	src := newCRLFReader(rc, false)
	if _, err := io.CopyN(io.Discard, src, start); err != nil {
		return nil, err
	}
	buf := make([]byte, end-start)
	n, err := io.ReadFull(src, buf)
	if err == io.ErrUnexpectedEOF {
		err = nil
	}
	return buf[:n], err
}

// errUnknownCTE: BINARY of a part whose encoding we cannot decode (RFC
// 3516 § 4.3: NO [UNKNOWN-CTE]).
var errUnknownCTE = errors.New("unknown content-transfer-encoding")

// binary appends BINARY[part]<origin> or BINARY.SIZE[part] (RFC 3516):
// the part with its transfer encoding undone.
func (f *fetchMsg) binary(b []byte, it fetchItem) ([]byte, error) {
	if err := f.structure(); err != nil {
		return b, err
	}
	var p *part
	if len(it.sec.part) == 0 {
		p = nil
	} else if p = f.st.find(it.sec.part); p == nil {
		if it.name == "BINARY.SIZE" {
			return append(b, "BINARY.SIZE["+partString(it.sec.part)+"] 0"...), nil
		}
		return append(b, "BINARY["+partString(it.sec.part)+"] NIL"...), nil
	}
	var data []byte
	if p == nil || p.Container || isIdentityCTE(p.Encoding) {
		sp := span{start: 0, end: f.m.Size}
		if p != nil {
			sp = span{start: p.BodyOffset, end: p.End}
		}
		var err error
		if data, err = f.read(sp.start, sp.end); err != nil {
			return b, err
		}
	} else {
		switch p.Encoding {
		case "base64", "quoted-printable":
		default:
			return b, errUnknownCTE
		}
		var buf bytes.Buffer
		rc, err := f.open()
		if err != nil {
			return b, err
		}
		err = mime.Walk(newCRLFReader(rc, false), structureLimits, mime.Handler{Begin: func(mp *mime.Part) io.Writer {
			if mp.ID == p.ID {
				return &buf
			}
			return nil
		}})
		if err != nil {
			return b, err
		}
		data = buf.Bytes()
	}
	sec := "[" + partString(it.sec.part) + "]"
	if it.name == "BINARY.SIZE" {
		b = append(b, "BINARY.SIZE"+sec+" "...)
		return strconv.AppendInt(b, int64(len(data)), 10), nil
	}
	if it.partial {
		data = cut(data, it.offset, it.count)
	}
	b = append(b, "BINARY"+sec...)
	if it.partial {
		b = append(b, '<')
		b = strconv.AppendUint(b, uint64(it.offset), 10)
		b = append(b, '>')
	}
	b = append(b, ' ')
	if bytes.IndexByte(data, 0) >= 0 {
		b = append(b, '~')
	}
	b = append(b, '{')
	b = strconv.AppendInt(b, int64(len(data)), 10)
	b = append(b, "}\r\n"...)
	f.s.fetchedBytes += int64(len(data))
	return append(b, data...), nil
}

func isIdentityCTE(e string) bool {
	switch e {
	case "", "7bit", "8bit", "binary":
		return true
	}
	return false
}

func partString(p []uint32) string {
	return section{part: p}.String()
}
