// Package benchprof lets bench/ take pprof profiles of a server under
// load, in a binary built with the build tag benchprof (without the tag
// the package is empty and the commands carry no profiler).
//
// With LETTERBOX_PROFILE_DIR set, each SIGUSR1 toggles profiling: the
// first starts a CPU profile into DIR/cpu.N and writes the allocation
// profile so far to DIR/allocs.N.start; the next stops the CPU profile and
// writes DIR/allocs.N.end, so `go tool pprof -base allocs.N.start
// allocs.N.end` is what the window allocated. N counts windows from 1. A
// profile so bounded covers exactly the run the bench times, which a
// fixed-length HTTP profile cannot.
package benchprof
