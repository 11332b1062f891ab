package mime

import (
	"bytes"
	"io"
	"testing"
)

// BenchmarkPack and BenchmarkWalk measure the encoder and the parser on a
// 16 MiB attachment in memory (bench/mime.sh measures the command).
func BenchmarkPack(b *testing.B) {
	data := randBytes(1, 16<<20)
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		Pack(io.Discard, PackOptions{Attachments: []Attachment{{Name: "x.bin", Reader: bytes.NewReader(data)}}})
	}
}

func BenchmarkWalk(b *testing.B) {
	data := randBytes(1, 16<<20)
	var msg bytes.Buffer
	Pack(&msg, PackOptions{Attachments: []Attachment{{Name: "x.bin", Reader: bytes.NewReader(data)}}})
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Walk(bytes.NewReader(msg.Bytes()), DefaultLimits, Handler{Begin: func(p *Part) io.Writer { return io.Discard }})
	}
}
