// Command smtpd is bench/smtpd.sh's helper. It measures one run and prints
// the tables; it sends no mail itself (Postfix's smtp-source does).
//
//	smtpd run LABEL PORT MAILDIR PIDS -- SMTP-SOURCE ARGS…
//
// starts the client, times it (acceptance) and then the arrival of its
// messages in MAILDIR/new (end to end, when MAILDIR is not "-"), and
// appends one JSON line to stdout: rates, the CPU time of the client
// (from its rusage) and of the server (every process under PIDS, a comma
// list, from /proc, exited children included through their parents'
// cutime), and the machine's busy and iowait share over the run (from
// /proc/stat: other users of a shared machine show up there). With
// PROFILE_PIDS (a comma list) it sends those processes SIGUSR1 just before
// and just after, to bound their profiles (pkg/benchprof).
//
//	smtpd report FILE
//
// reads those lines and prints, per condition, the medians of each case
// beside Postfix with each run's ratio.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// result is one run of one server in one case.
type result struct {
	Label     string  `json:"label"` // condition/server/case/run
	Msgs      int     `json:"msgs"`
	Accept    float64 `json:"accept"` // msg/s until the client exits
	E2E       float64 `json:"e2e"`    // msg/s until the last one is in the Maildir
	ServerCPU float64 `json:"server_cpu_s"`
	ClientCPU float64 `json:"client_cpu_s"`
	AcceptSec float64 `json:"accept_s"`
	E2ESec    float64 `json:"e2e_s"`
	Busy      float64 `json:"busy"`   // machine CPU busy share, 0..1
	IOWait    float64 `json:"iowait"` // machine iowait share, 0..1
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "run":
		run(os.Args[2:])
	case "report":
		if len(os.Args) != 3 {
			usage()
		}
		report(os.Args[2])
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: smtpd run LABEL PORT MAILDIR PIDS -- SMTP-SOURCE ARGS… | smtpd report FILE")
	os.Exit(64)
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench/smtpd: "+format+"\n", a...)
	os.Exit(1)
}

func run(args []string) {
	if len(args) < 6 || args[4] != "--" {
		usage()
	}
	label, maildir, pids, source := args[0], args[2], args[3], args[5:]
	msgs := 0
	for i, a := range source {
		if a == "-m" && i+1 < len(source) {
			msgs, _ = strconv.Atoi(source[i+1])
		}
	}
	if msgs == 0 {
		die("smtp-source arguments need -m N")
	}
	roots := pidList(pids)
	already := 0
	if maildir != "-" {
		already = countFiles(filepath.Join(maildir, "new"))
	}
	profile := pidList(os.Getenv("PROFILE_PIDS"))
	signalAll(profile) // start the profiles (pkg/benchprof)
	cpu0, stat0 := treeCPU(roots), readStat()
	t0 := time.Now()
	cmd := exec.Command(source[0], source[1:]...)
	var errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &errOut, &errOut
	if err := cmd.Run(); err != nil {
		die("%s: %v: %s", source[0], err, lastLines(errOut.String(), 3))
	}
	t1 := time.Now()
	t2 := t1
	if maildir != "-" {
		deadline := t1.Add(5 * time.Minute)
		for countFiles(filepath.Join(maildir, "new")) < already+msgs {
			if time.Now().After(deadline) {
				die("%s: only %d of %d messages in %s after 5 minutes", label,
					countFiles(filepath.Join(maildir, "new"))-already, msgs, maildir)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t2 = time.Now()
	}
	cpu1, stat1 := treeCPU(roots), readStat()
	signalAll(profile) // and stop them
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	r := result{
		Label:     label,
		Msgs:      msgs,
		AcceptSec: t1.Sub(t0).Seconds(),
		E2ESec:    t2.Sub(t0).Seconds(),
		ServerCPU: cpu1 - cpu0,
		ClientCPU: tv(ru.Utime) + tv(ru.Stime),
	}
	r.Accept = float64(msgs) / r.AcceptSec
	if maildir != "-" {
		r.E2E = float64(msgs) / r.E2ESec
	}
	total := stat1.total - stat0.total
	if total > 0 {
		r.Busy = 1 - (stat1.idle-stat0.idle+stat1.iowait-stat0.iowait)/total
		r.IOWait = (stat1.iowait - stat0.iowait) / total
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

// pidList parses a comma list of pids ("" is none).
func pidList(s string) []int {
	var pids []int
	for _, p := range strings.Split(s, ",") {
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			die("bad pid %q", p)
		}
		pids = append(pids, n)
	}
	return pids
}

// signalAll toggles the benchprof profiles of pids with SIGUSR1.
func signalAll(pids []int) {
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGUSR1); err != nil {
			die("profile: signal %d: %v", p, err)
		}
	}
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " / ")
}

// countFiles counts the entries of dir without stat'ing them.
func countFiles(dir string) int {
	d, err := os.Open(dir)
	if err != nil {
		return 0
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(4096)
		n += len(names)
		if err != nil {
			return n
		}
	}
}

const clockTicks = 100 // USER_HZ on Linux

// treeCPU is the CPU time in seconds of the processes roots and all their
// descendants, with the children they have reaped.
func treeCPU(roots []int) float64 {
	type proc struct {
		ppid int
		cpu  float64
	}
	procs := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses: fields
		// start after the last ')'.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		var ticks float64
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseFloat(f[i], 64)
			ticks += v
		}
		procs[pid] = proc{ppid, ticks / clockTicks}
	}
	in := map[int]bool{}
	for _, r := range roots {
		in[r] = true
	}
	// Descendants: repeat until no new process joins (trees are shallow).
	for changed := true; changed; {
		changed = false
		for pid, p := range procs {
			if !in[pid] && in[p.ppid] {
				in[pid] = true
				changed = true
			}
		}
	}
	var sum float64
	for pid := range in {
		sum += procs[pid].cpu
	}
	return sum
}

type cpuStat struct{ total, idle, iowait float64 }

func readStat() cpuStat {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	fl := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal …
	var st cpuStat
	for i, v := range fl[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		st.total += x
		switch i {
		case 3:
			st.idle = x
		case 4:
			st.iowait = x
		}
	}
	return st
}

func report(file string) {
	f, err := os.Open(file)
	if err != nil {
		die("%v", err)
	}
	defer f.Close()
	// condition → case → server → runs
	type key struct{ cond, cas, server string }
	runs := map[key][]result{}
	var conds, cases []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r result
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		p := strings.Split(r.Label, "/") // condition/server/case/run
		if len(p) != 4 {
			continue
		}
		k := key{p[0], p[2], p[1]}
		runs[k] = append(runs[k], r)
		if !seen["c"+p[0]] {
			seen["c"+p[0]] = true
			conds = append(conds, p[0])
		}
		if !seen["k"+p[2]] {
			seen["k"+p[2]] = true
			cases = append(cases, p[2])
		}
	}
	type row struct {
		name string
		rate func(result) float64
		secs func(result) float64
	}
	rows := []row{
		{"accept", func(r result) float64 { return r.Accept }, func(r result) float64 { return r.AcceptSec }},
		{"SMTP->Maildir", func(r result) float64 { return r.E2E }, func(r result) float64 { return r.E2ESec }},
	}
	for _, c := range conds {
		fmt.Printf("\n%s — msg/s (median of runs); servers' CPU per message until the last delivery (ms); the client's CPU as a share of its wall time (100%% = one core busy: client-limited)\n", c)
		fmt.Printf("%-32s %8s %8s %7s   %-22s %7s %7s %6s %6s\n", "case", "letterbox", "postfix", "ratio", "ratio per run", "lb ms", "pf ms", "lb cli", "pf cli")
		var busy, iow []float64
		for _, cs := range cases {
			lb, pf := runs[key{c, cs, "letterbox"}], runs[key{c, cs, "postfix"}]
			if len(lb) == 0 || len(pf) == 0 {
				continue
			}
			for _, r := range append(append([]result{}, lb...), pf...) {
				busy = append(busy, r.Busy)
				iow = append(iow, r.IOWait)
			}
			for _, rw := range rows {
				if rw.rate(lb[0]) == 0 {
					continue
				}
				var per []string
				for i := 0; i < len(lb) && i < len(pf); i++ {
					per = append(per, fmt.Sprintf("%.2f", rw.rate(lb[i])/rw.rate(pf[i])))
				}
				ml, mp := median(lb, rw.rate), median(pf, rw.rate)
				// The client runs only until acceptance ends; the servers'
				// CPU is counted until the last delivery.
				cols := fmt.Sprintf("%7s %7s %5.0f%% %5.0f%%", "", "",
					median(lb, func(r result) float64 { return 100 * r.ClientCPU / r.AcceptSec }),
					median(pf, func(r result) float64 { return 100 * r.ClientCPU / r.AcceptSec }))
				if rw.name != "accept" {
					cols = fmt.Sprintf("%7.3f %7.3f %6s %6s",
						1000*median(lb, func(r result) float64 { return r.ServerCPU / float64(r.Msgs) }),
						1000*median(pf, func(r result) float64 { return r.ServerCPU / float64(r.Msgs) }), "", "")
				}
				fmt.Printf("%-32s %8.0f %8.0f %6.2fx   %-22s %s\n",
					rw.name+", "+cs, ml, mp, ml/mp, strings.Join(per, " "), cols)
			}
		}
		fmt.Printf("(machine over these runs, 2 cores = 100%%: busy median %.0f%%, iowait median %.0f%%)\n",
			100*medianF(busy), 100*medianF(iow))
	}
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return medianF(v)
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
