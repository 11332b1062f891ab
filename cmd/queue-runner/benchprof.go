//go:build benchprof

package main

// bench/ builds with -tags benchprof to take pprof profiles under load.
import _ "letterbox/pkg/benchprof"
