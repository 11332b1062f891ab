// Command mutate proves the tests guard what the code promises: it applies
// each mutation of a list (scripts/mutations.txt: delete or neutralise one
// fsync, syncfs, directory flush, privilege drop, check, delay …) to a
// scratch copy of the tree, runs the tests named for it, and prints a
// table: mutation, file:line, the tests that failed (or MISSED). It also
// lists every flush in the code that no mutation covers, so a new fsync
// without a test shows up.
//
// Usage (from the top of the tree; see scripts/mutate.sh):
//
//	go run ./scripts/mutate [-list FILE] [-only REGEXP] [-j N] [-no-baseline]
//
// It exits 1 when a mutation is missed, a row is stale (its text is not
// in the file, or is there more than once), a mutated tree does not
// build, the unmutated tests fail, or a flush is uncovered.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

var keep bool

// mutation is one row of the list.
type mutation struct {
	ID      string
	File    string // relative to the tree
	After   string // optional: the text is searched from the first line containing this
	Find    string // text on one line, replaced…
	Replace string // …by this
	Tests   []testRun
	Claim   string
	// NotRun, when set, says why the row cannot run here (a line not
	// built on Linux, a path one file system cannot take, a Sync that is
	// no flush): it is listed, not run, and covers its line.
	NotRun string
	line   int // where the text was found (1-based)
}

// testRun is a package and a -run pattern.
type testRun struct {
	Pkg, Run string
}

func (t testRun) String() string { return t.Pkg + " -run '" + t.Run + "'" }

// result of one mutation.
type result struct {
	m      *mutation
	status string // caught, MISSED, STALE, BUILD, TIMEOUT
	caught []string
	detail string
	took   time.Duration
}

func main() {
	list := flag.String("list", "scripts/mutations.txt", "the mutation list")
	only := flag.String("only", "", "run only the mutations whose id matches this regular expression")
	jobs := flag.Int("j", 2, "mutations tested at once")
	noBase := flag.Bool("no-baseline", false, "don't run the tests on the unmutated tree first")
	timeout := flag.Duration("timeout", 6*time.Minute, "per test run")
	flag.BoolVar(&keep, "keep", false, "keep the scratch trees (their paths are printed)")
	check := flag.Bool("check", false, "only check the list: stale rows and uncovered flushes, no test run")
	flag.Parse()

	root, err := os.Getwd()
	if err != nil {
		fatal(err)
	}
	muts, err := readList(*list)
	if err != nil {
		fatal(err)
	}
	var sel []*mutation
	var onlyRE *regexp.Regexp
	if *only != "" {
		onlyRE = regexp.MustCompile(*only)
	}
	for _, m := range muts {
		if onlyRE == nil || onlyRE.MatchString(m.ID) {
			sel = append(sel, m)
		}
	}
	files, err := treeFiles(root)
	if err != nil {
		fatal(err)
	}
	// One snapshot of the tree, taken now: edits made while the mutations
	// run don't leak into them.
	snap, err := scratch(root, files)
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(snap)
	root = snap
	failed := false

	// Locate every row first: stale rows are reported, not run.
	var results []*result
	var runnable []*mutation
	for _, m := range sel {
		if err := locate(root, m); err != nil {
			fmt.Fprintf(os.Stderr, "mutate: %s: STALE: %v\n", m.ID, err)
			results = append(results, &result{m: m, status: "STALE", detail: err.Error()})
			failed = true
			continue
		}
		if m.NotRun != "" {
			results = append(results, &result{m: m, status: "n/a", detail: m.NotRun})
			continue
		}
		runnable = append(runnable, m)
	}

	if *check {
		runnable = nil
		*noBase = true
	}
	if !*noBase {
		// The unmutated tree must pass the tests, or a "caught" means
		// nothing.
		// One run per package, its -run patterns joined.
		var base []testRun
		byPkg := map[string]int{}
		seen := map[string]bool{}
		for _, m := range runnable {
			for _, tr := range m.Tests {
				if seen[tr.String()] {
					continue
				}
				seen[tr.String()] = true
				if i, ok := byPkg[tr.Pkg]; ok {
					base[i].Run += "|" + tr.Run
					continue
				}
				byPkg[tr.Pkg] = len(base)
				base = append(base, tr)
			}
		}
		fmt.Fprintf(os.Stderr, "mutate: baseline: %d test runs on the unmutated tree\n", len(base))
		dir, err := scratch(root, files)
		if err != nil {
			fatal(err)
		}
		baseFailed := false
		for _, tr := range base {
			out, err := goTest(dir, tr, *timeout)
			if err != nil {
				fmt.Fprintf(os.Stderr, "mutate: baseline %s fails on the unmutated tree:\n%s\n", tr, tail(out, 40))
				baseFailed = true
			} else if strings.Contains(out, "no tests to run") {
				fmt.Fprintf(os.Stderr, "mutate: baseline %s runs no test\n", tr)
				baseFailed = true
			}
		}
		os.RemoveAll(dir)
		if baseFailed {
			fmt.Fprintln(os.Stderr, "mutate: fix the baseline first")
			os.RemoveAll(snap)
			os.Exit(1)
		}
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan *mutation)
	for w := 0; w < *jobs; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				r := runMutation(root, files, m, *timeout)
				mu.Lock()
				results = append(results, r)
				fmt.Fprintf(os.Stderr, "mutate: %-32s %-8s %s (%v)\n", m.ID, r.status, strings.Join(r.caught, ", "), r.took.Round(time.Second))
				mu.Unlock()
			}
		}()
	}
	for _, m := range runnable {
		work <- m
	}
	close(work)
	wg.Wait()

	sort.SliceStable(results, func(i, j int) bool { return index(muts, results[i].m) < index(muts, results[j].m) })
	fmt.Println("| mutation | file:line | claim | caught by |")
	fmt.Println("|---|---|---|---|")
	for _, r := range results {
		where := r.m.File
		if r.m.line > 0 {
			where = fmt.Sprintf("%s:%d", r.m.File, r.m.line)
		}
		by := strings.Join(r.caught, ", ")
		switch r.status {
		case "caught":
		case "n/a":
			by = "n/a: " + r.detail
		case "MISSED":
			by = "**MISSED**"
			failed = true
		default:
			by = "**" + r.status + "**: " + oneLine(r.detail)
			failed = true
		}
		fmt.Printf("| %s | %s | %s | %s |\n", r.m.ID, where, r.m.Claim, by)
	}

	// Every flush in the code must be the line of some mutation.
	if onlyRE == nil {
		unc, err := uncovered(root, files, muts)
		if err != nil {
			fatal(err)
		}
		if len(unc) > 0 {
			failed = true
			fmt.Println()
			fmt.Println("Flushes no mutation covers (add rows to " + *list + "):")
			for _, u := range unc {
				fmt.Println("  UNCOVERED " + u)
			}
		}
	}
	os.RemoveAll(snap)
	if failed {
		os.Exit(1)
	}
}

func index(ms []*mutation, m *mutation) int {
	for i, x := range ms {
		if x == m {
			return i
		}
	}
	return len(ms)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mutate:", err)
	os.Exit(2)
}

// readList parses the mutation list: blocks of "key: value" lines, each
// starting with "id:"; "#" starts a comment line. Keys: id, file, after,
// find, replace, test (repeatable: "PKG RUN-REGEXP"), claim.
func readList(path string) ([]*mutation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []*mutation
	var cur *mutation
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY: VALUE", path, n)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if key == "id" {
			cur = &mutation{ID: val}
			out = append(out, cur)
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("%s:%d: %s before the first id", path, n, key)
		}
		switch key {
		case "file":
			cur.File = val
		case "after":
			cur.After = val
		case "find":
			cur.Find = val
		case "replace":
			cur.Replace = val
		case "test":
			pkg, run, _ := strings.Cut(val, " ")
			run, ok := strings.CutPrefix(strings.TrimSpace(run), "-run ")
			if !ok || strings.TrimSpace(run) == "" {
				return nil, fmt.Errorf("%s:%d: want test: PACKAGE -run REGEXP", path, n)
			}
			cur.Tests = append(cur.Tests, testRun{Pkg: pkg, Run: strings.TrimSpace(run)})
		case "claim":
			cur.Claim = val
		case "notrun":
			cur.NotRun = val
		default:
			return nil, fmt.Errorf("%s:%d: unknown key %q", path, n, key)
		}
	}
	for _, m := range out {
		if m.File == "" || m.Find == "" || len(m.Tests) == 0 {
			return nil, fmt.Errorf("%s: mutation %s needs file, find and test", path, m.ID)
		}
	}
	return out, sc.Err()
}

// locate finds the row's line: the one line (after the line holding
// After, if set) that contains Find.
func locate(root string, m *mutation) error {
	b, err := os.ReadFile(filepath.Join(root, m.File))
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	start := 0
	if m.After != "" {
		start = -1
		for i, l := range lines {
			if strings.Contains(l, m.After) {
				start = i
				break
			}
		}
		if start < 0 {
			return fmt.Errorf("%q not found in %s", m.After, m.File)
		}
	}
	var hits []int
	for i := start; i < len(lines); i++ {
		if strings.Contains(lines[i], m.Find) {
			hits = append(hits, i)
		}
	}
	switch {
	case len(hits) == 0:
		return fmt.Errorf("%q not found in %s", m.Find, m.File)
	case len(hits) > 1 && m.After == "":
		return fmt.Errorf("%q is on %d lines of %s: add after: to pick one", m.Find, len(hits), m.File)
	}
	m.line = hits[0] + 1
	return nil
}

// apply rewrites the row's line in the scratch tree dir.
func apply(dir string, m *mutation) error {
	p := filepath.Join(dir, m.File)
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	lines[m.line-1] = strings.Replace(lines[m.line-1], m.Find, m.Replace, 1)
	return os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644)
}

// treeFiles lists the files of the working tree (tracked and new, not
// ignored), so uncommitted work is tested too.
func treeFiles(root string) ([]string, error) {
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files: %w", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" {
			continue
		}
		if _, err := os.Lstat(filepath.Join(root, f)); err == nil {
			files = append(files, f)
		}
	}
	return files, nil
}

// scratch copies the tree's files into a new temporary directory.
func scratch(root string, files []string) (string, error) {
	dir, err := os.MkdirTemp("", "letterbox-mutate-")
	if err != nil {
		return "", err
	}
	for _, f := range files {
		src, dst := filepath.Join(root, f), filepath.Join(dir, f)
		fi, err := os.Lstat(src)
		if err != nil {
			return "", err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			l, err := os.Readlink(src)
			if err != nil {
				return "", err
			}
			if err := os.Symlink(l, dst); err != nil {
				return "", err
			}
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			return "", err
		}
	}
	return dir, nil
}

var failLine = regexp.MustCompile(`(?m)^\s*--- FAIL: (\S+)`)

// runMutation tests one mutation in its own scratch tree.
func runMutation(root string, files []string, m *mutation, timeout time.Duration) *result {
	start := time.Now()
	r := &result{m: m}
	dir, err := scratch(root, files)
	if err != nil {
		r.status, r.detail = "ERROR", err.Error()
		return r
	}
	if keep {
		fmt.Fprintf(os.Stderr, "mutate: %s: scratch tree %s\n", m.ID, dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if err := apply(dir, m); err != nil {
		r.status, r.detail = "ERROR", err.Error()
		return r
	}
	if out, err := exec.Command("go", "-C", dir, "vet", "./"+filepath.Dir(m.File)).CombinedOutput(); err != nil {
		r.status, r.detail = "BUILD", "the mutated tree does not build or vet: "+tail(string(out), 5)
		r.took = time.Since(start)
		return r
	}
	for _, tr := range m.Tests {
		out, err := goTest(dir, tr, timeout)
		if err == nil && strings.Contains(out, "no tests to run") {
			r.status, r.detail = "NOTESTS", tr.String()+" runs no test"
			r.took = time.Since(start)
			return r
		}
		if err == nil {
			continue
		}
		names := failLine.FindAllStringSubmatch(out, -1)
		for _, n := range names {
			if !strings.Contains(n[1], "/") { // top-level tests only
				r.caught = append(r.caught, n[1])
			}
		}
		if len(names) == 0 {
			if errors.Is(err, context.DeadlineExceeded) || strings.Contains(out, "panic: test timed out") {
				r.caught = append(r.caught, "(timeout: "+tr.String()+")")
			} else {
				r.status, r.detail = "BUILD", tail(out, 5)
				r.took = time.Since(start)
				return r
			}
		}
	}
	r.took = time.Since(start)
	if len(r.caught) == 0 {
		r.status = "MISSED"
	} else {
		r.status = "caught"
	}
	return r
}

// goTest runs one test run in dir; err is non-nil when it failed.
func goTest(dir string, tr testRun, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	args := []string{"test", "-count=1", "-timeout", timeout.String()}
	if tr.Run != "" {
		args = append(args, "-run", tr.Run)
	}
	args = append(args, tr.Pkg)
	c := exec.CommandContext(ctx, "go", args...)
	c.Dir = dir
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return out.String(), err
}

// flushSite matches a line of Go code that flushes to disk.
var flushSite = regexp.MustCompile(`\.Sync\(\)|\bFsync\(|\bFdatasync\(|\bSyncfs\(|\bsync[A-Z]\w*Dir\(|\bsyncDir\(|\bfsyncDir\(|\bbarrier\(`)

// uncovered lists the flushes (file:line: text) in non-test Go code of
// the tree that no mutation's line is.
func uncovered(root string, files []string, muts []*mutation) ([]string, error) {
	covered := map[string]bool{}
	for _, m := range muts {
		if m.line == 0 {
			locate(root, m)
		}
		if m.line > 0 {
			covered[fmt.Sprintf("%s:%d", m.File, m.line)] = true
		}
	}
	var out []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".go") || strings.HasSuffix(f, "_test.go") ||
			!(strings.HasPrefix(f, "pkg/") || strings.HasPrefix(f, "cmd/")) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, err
		}
		for i, l := range strings.Split(string(b), "\n") {
			t := strings.TrimSpace(l)
			if strings.HasPrefix(t, "//") || strings.HasPrefix(t, "func ") || !flushSite.MatchString(t) {
				continue
			}
			// A method named Sync that is not a flush (mailstore's View)
			// is declared, not called: "func" lines are skipped above.
			key := fmt.Sprintf("%s:%d", f, i+1)
			if !covered[key] {
				out = append(out, key+": "+t)
			}
		}
	}
	return out, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
