package spool

import (
	"bytes"
	"testing"
)

// Benchmarks of the spool's per-message paths. The spool lives in the
// test's temporary directory: TMPDIR=/var/tmp puts it on a disk,
// TMPDIR=/dev/shm on a tmpfs (where a barrier costs nothing and only CPU
// counts). Run with go test -bench . -benchmem ./pkg/spool.

// benchData is 10 KB of message, as bench/smtpd.sh sends.
var benchData = bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 160)

// BenchmarkSubmit: durable Submits from ten writers at once (as smtpd's
// sessions), sharing the committer's rounds.
func BenchmarkSubmit(b *testing.B) {
	s := open(b)
	b.SetParallelism(5) // × GOMAXPROCS writers
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Submit(testEnv(), bytes.NewReader(benchData)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	if rounds := s.rounds.Load(); rounds > 0 {
		b.ReportMetric(float64(b.N)/float64(rounds), "msg/barrier")
	}
}

// BenchmarkSubmitOne: one writer, each Submit waiting alone for its two
// barriers (a lone client, or reused connections on an idle server).
func BenchmarkSubmitOne(b *testing.B) {
	s := open(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Submit(testEnv(), bytes.NewReader(benchData)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnvelope: encoding and decoding an envelope of two recipients.
func BenchmarkEnvelope(b *testing.B) {
	env := testEnv()
	env.ID, env.Size = NewID(), 10240
	text := env.Format()
	b.Run("format", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for i := 0; i < b.N; i++ {
			buf = env.appendFormat(buf[:0])
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := Parse(text); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLoad: reading an envelope back, as queue-runner does for
// every message it works on.
func BenchmarkLoad(b *testing.B) {
	s := open(b)
	id, err := s.Submit(testEnv(), bytes.NewReader(benchData))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Load(id); err != nil {
			b.Fatal(err)
		}
	}
}
