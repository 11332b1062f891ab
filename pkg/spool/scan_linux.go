package spool

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

// readInodes reads every valid queue id in the directory d with its inode
// number, using getdents64 directly: os.File.Readdirnames drops the inode,
// and a stat per entry to get it back is what this avoids.
func readInodes(d *os.File) ([]Stamp, error) {
	// queue-runner reads env/ on every pass, and a busy server pokes it
	// into a pass per commit: the buffer is reused, not allocated (and
	// cleared) each time.
	bp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bp)
	buf := *bp
	var out []Stamp
	fd := int(d.Fd())
	for {
		n, err := syscall.ReadDirent(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("getdents: %w", err)
		}
		if n <= 0 {
			return out, nil
		}
		// One string per buffer, which the ids are cut from: one
		// allocation per few thousand entries instead of one each.
		out, err = parseDirents(string(buf[:n]), out)
		if err != nil {
			return nil, err
		}
	}
}

var direntBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Offsets in struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen;
// u8 d_type; char d_name[]; }.
const (
	direntIno    = 0
	direntReclen = 16
	direntName   = 19
)

// nativeEndian is the byte order of the kernel's structs.
var nativeEndian binary.ByteOrder = func() binary.ByteOrder {
	x := uint16(1)
	if *(*byte)(unsafe.Pointer(&x)) == 1 {
		return binary.LittleEndian
	}
	return binary.BigEndian
}()

// parseDirents appends the valid queue ids of a getdents64 buffer to out.
// Other names (".", "..", anything a person left there) are skipped, as
// Scan skips them.
func parseDirents(b string, out []Stamp) ([]Stamp, error) {
	for len(b) > 0 {
		if len(b) < direntName+1 {
			return out, fmt.Errorf("getdents: truncated record (%d bytes left)", len(b))
		}
		reclen := int(nativeEndian.Uint16([]byte(b[direntReclen : direntReclen+2])))
		if reclen < direntName+1 || reclen > len(b) {
			return out, fmt.Errorf("getdents: bad record length %d", reclen)
		}
		name := b[direntName:reclen]
		if i := strings.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if ValidID(name) {
			ino := nativeEndian.Uint64([]byte(b[direntIno : direntIno+8]))
			out = append(out, Stamp{ID: name, Ino: ino})
		}
		b = b[reclen:]
	}
	return out, nil
}
