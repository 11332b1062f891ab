package check

import (
	"bytes"
	"io"
	"os"
	"testing"
	"testing/iotest"
)

// TestStaged: a message stays in memory up to memoryLimit and moves to an
// unlinked file beyond it; a follower reads it whole either way, and
// nothing is left in the directory.
func TestStaged(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{1000, memoryLimit, memoryLimit + 1, 3 * memoryLimit} {
		st := newStaged(dir)
		want := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		got := make(chan []byte)
		go func() { b, _ := io.ReadAll(st.follow()); got <- b }()
		for off := 0; off < size; off += 7000 {
			if _, err := st.Write(want[off:min(off+7000, size)]); err != nil {
				t.Fatal(err)
			}
		}
		st.finish(nil)
		if b := <-got; !bytes.Equal(b, want) {
			t.Errorf("%d octets: follower read %d", size, len(b))
		}
		if onDisk := st.f != nil; onDisk != (size > memoryLimit) {
			t.Errorf("%d octets: on disk %v", size, onDisk)
		}
		if b, _ := io.ReadAll(st.section(10)); !bytes.Equal(b, want[10:]) {
			t.Errorf("%d octets: section read %d", size, len(b))
		}
		st.close()
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("left in the directory: %v", ents)
		}
	}
}

// TestStagedSpare: a message read straight into the staging buffer
// (spare, wrote) starts in a buffer of stageStart octets, which doubles as
// it needs up to memoryLimit, and moves to a file beyond: the same octets
// either way. A 10 KB message stays in 16 KiB (what ten sessions hold
// between two collections), and only buffers up to stageKeep go back to
// the pool.
func TestStagedSpare(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{10 << 10, stageStart, stageStart + 1, memoryLimit, memoryLimit + 1, 3 * memoryLimit} {
		st := newStaged(dir)
		want := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		maxCap := 0
		for off := 0; off < size; {
			if p := st.spare(); p != nil {
				if len(p) < minSpare && cap(st.buf) < memoryLimit {
					t.Fatalf("%d octets: %d free at %d, want at least %d", size, len(p), off, minSpare)
				}
				n := copy(p, want[off:min(off+7000, size)])
				st.wrote(n)
				off += n
				maxCap = max(maxCap, cap(st.buf))
				continue
			}
			n := min(7000, size-off)
			if _, err := st.Write(want[off : off+n]); err != nil {
				t.Fatal(err)
			}
			off += n
		}
		st.finish(nil)
		b, _ := io.ReadAll(st.section(0))
		if !bytes.Equal(b, want) {
			t.Errorf("%d octets: read %d back, not the same", size, len(b))
		}
		if onDisk := st.f != nil; onDisk != (size > memoryLimit) {
			t.Errorf("%d octets: on disk %v", size, onDisk)
		}
		if size <= 10<<10 && maxCap > 16<<10 {
			t.Errorf("%d octets: a buffer of %d, want 16 KiB at most", size, maxCap)
		}
		if maxCap > memoryLimit {
			t.Errorf("%d octets: a buffer of %d, over %d", size, maxCap, memoryLimit)
		}
		st.close()
	}
	putBuffer(make([]byte, 0, stageKeep+1))
	for i := 0; i < 100; i++ {
		if b := buffers.Get().(*[]byte); cap(*b) > stageKeep {
			t.Fatalf("the pool gave a buffer of %d, over %d", cap(*b), stageKeep)
		}
	}
}

// TestFieldsReader: the message committed is its fields as they are, then
// the rest, whatever the size of the reads.
func TestFieldsReader(t *testing.T) {
	st := newStaged(t.TempDir())
	defer st.close()
	msg := "Received: from x\r\n\tby y\r\nFrom: a@b.test\r\n\r\nbody\r\n"
	st.Write([]byte(msg))
	st.finish(nil)
	hp := &headerParser{lim: DefaultHeaderLimits}
	hp.feed([]byte(msg), 0)
	ar := newField("Authentication-Results", "mx.test; spf=pass")
	m := &message{st: st, fields: append([]Field{ar}, hp.fields...), sepOff: hp.sepOff}
	want := string(ar.Raw) + msg
	for _, wrap := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader, iotest.HalfReader} {
		b, err := io.ReadAll(wrap(m.reader()))
		if err != nil || string(b) != want {
			t.Errorf("read %q, %v; want %q", b, err, want)
		}
	}
	m.newBody, m.body = true, []byte("new\r\n")
	if b, _ := io.ReadAll(iotest.OneByteReader(m.reader())); string(b) != string(ar.Raw)+msg[:len(msg)-len("\r\nbody\r\n")]+"\r\nnew\r\n" {
		t.Errorf("replaced body: read %q", b)
	}
}
