package queue

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The schedule hint (<spool>/schedule) lets a pass over a large queue with
// nothing due skip the scan: it records the modification time of env/ seen
// by the last pass that changed nothing, and the earliest due time it saw.
// Every submission, update and removal renames or unlinks in env/ and so
// changes that time; if it is unchanged and the earliest due time has not
// come, no message can be due. The hint is only recorded when env/ was last
// changed well before the pass began (slack covers coarse file system
// timestamps), so a change during the pass cannot hide behind an equal
// timestamp. It is only a hint: missing or unreadable, a pass scans.
type schedule struct {
	valid    bool
	envMtime int64 // ns
	next     int64 // ns; 0 = the queue was empty
	cleaned  int64 // ns; when crash leftovers were last removed
}

const scheduleSlack = 2 * time.Second

func (r *Runner) schedulePath() string { return filepath.Join(r.Spool.Dir, "schedule") }

func (r *Runner) readSchedule() schedule {
	var s schedule
	b, err := os.ReadFile(r.schedulePath())
	if err != nil {
		return s
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 5 || lines[0] != "letterbox-schedule 1" {
		return s
	}
	vals := make([]int64, 4)
	for i := range vals {
		v, err := strconv.ParseInt(lines[i+1], 10, 64)
		if err != nil {
			return schedule{}
		}
		vals[i] = v
	}
	return schedule{valid: vals[0] == 1, envMtime: vals[1], next: vals[2], cleaned: vals[3]}
}

func (r *Runner) writeSchedule(s schedule) {
	valid := 0
	if s.valid {
		valid = 1
	}
	text := fmt.Sprintf("letterbox-schedule 1\n%d\n%d\n%d\n%d\n", valid, s.envMtime, s.next, s.cleaned)
	tmp := filepath.Join(r.Spool.Dir, "tmp", "schedule."+strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		return
	}
	if os.Rename(tmp, r.schedulePath()) != nil {
		os.Remove(tmp)
	}
}

func (r *Runner) envMtime() int64 {
	fi, err := os.Stat(filepath.Join(r.Spool.Dir, "env"))
	if err != nil {
		return 0
	}
	return fi.ModTime().UnixNano()
}
