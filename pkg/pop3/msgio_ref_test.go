package pop3

import (
	"bufio"
	"io"
	"sync"
)

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32*1024) }}

// writeMessageRef is writeMessage as it was before the IndexByte loop
// (bufio.Reader.ReadSlice per line): the new one must send the same bytes
// (FuzzWriteMessageSame). It sends r as a POP3 multi-line response body: CRLF line ends,
// lines starting with "." byte-stuffed, then the terminating ".". With
// bodyLines >= 0 (TOP) it stops after the header, the blank line and
// bodyLines lines of body. It returns the octets of content sent (without
// stuffing or the terminator).
func writeMessageRef(w *bufio.Writer, r io.Reader, bodyLines int) (int64, error) {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() { br.Reset(nil); readerPool.Put(br) }()

	var sent int64
	atStart := true   // the next byte begins a line
	pendCR := false   // a CR ended the previous chunk of a long line
	inBody := false   // the blank line after the header was sent
	lineEmpty := true // the current line has no content so far
	body := 0
	for {
		if bodyLines >= 0 && inBody && body >= bodyLines {
			break
		}
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if pendCR {
				pendCR = false
				if chunk[0] != '\n' {
					w.WriteByte('\r')
					sent++
					lineEmpty = false
				}
			}
			if atStart && chunk[0] == '.' {
				w.WriteByte('.')
			}
			if chunk[len(chunk)-1] == '\n' {
				content := chunk[:len(chunk)-1]
				if len(content) > 0 && content[len(content)-1] == '\r' {
					content = content[:len(content)-1]
				}
				w.Write(content)
				w.WriteString("\r\n")
				sent += int64(len(content)) + 2
				if len(content) > 0 {
					lineEmpty = false
				}
				if inBody {
					body++
				} else if lineEmpty {
					inBody = true
				}
				atStart, lineEmpty = true, true
			} else {
				if chunk[len(chunk)-1] == '\r' {
					chunk = chunk[:len(chunk)-1]
					pendCR = true
				}
				w.Write(chunk)
				sent += int64(len(chunk))
				if len(chunk) > 0 {
					lineEmpty = false
				}
				atStart = false
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if pendCR || !atStart {
				w.WriteString("\r\n")
				sent += 2
			}
			break
		}
		if err != nil {
			return sent, err
		}
	}
	_, err := w.WriteString(".\r\n")
	return sent, err
}
