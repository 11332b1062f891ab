package check

import (
	"bytes"
	"io"
	"os"
	"testing"
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
