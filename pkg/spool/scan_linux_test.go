package spool

import "testing"

func TestParseDirentsBad(t *testing.T) {
	rec := make([]byte, 32)
	nativeEndian.PutUint64(rec, 7)
	nativeEndian.PutUint16(rec[direntReclen:], 32)
	copy(rec[direntName:], "ABCDEFGH\x00")
	out, err := parseDirents(string(rec), nil)
	if err != nil || len(out) != 1 || out[0].ID != "ABCDEFGH" || out[0].Ino != 7 {
		t.Fatalf("good record: %+v %v", out, err)
	}
	nativeEndian.PutUint16(rec[direntReclen:], 200)
	if _, err := parseDirents(string(rec), nil); err == nil {
		t.Fatal("a record longer than the buffer was accepted")
	}
	nativeEndian.PutUint16(rec[direntReclen:], 3)
	if _, err := parseDirents(string(rec), nil); err == nil {
		t.Fatal("a record shorter than its header was accepted")
	}
}
