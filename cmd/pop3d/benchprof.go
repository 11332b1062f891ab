//go:build benchprof

package main

// bench/ builds with -tags benchprof to take pprof profiles under load
// (bench/pop3's driver, -profile, signals the session's pop3d).
import _ "letterbox/pkg/benchprof"
