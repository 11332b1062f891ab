package listen

import (
	"os"
	"runtime/debug"
)

// OneSessionGCPercent is the collector's target in a process that serves
// one session and exits (inetd mode, Accept=yes units, a session process
// started for the mailbox's owner). With Go's default of 100 the first
// collection comes at a 4 MiB heap, which an IMAP SELECT of a 10,000-message
// folder passes: a collection that costs more than the session's own work
// and frees memory the process gives back at exit anyway. At 400 it comes
// at 16 MiB, and a session that holds more (a very large folder) is still
// collected, at five times what it holds. A daemon serving many sessions
// keeps the default: there, memory per session counts.
const OneSessionGCPercent = 400

// OneSessionGC sets the collector for a one-session process, unless the
// admin chose with GOGC.
func OneSessionGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(OneSessionGCPercent)
	}
}
