package tests

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/spool"
)

// qSubmit puts a message in e's spool as smtpd would.
func qSubmit(t testing.TB, e *env, from string, rcpts []string, msg string) string {
	t.Helper()
	sp, err := spool.Open(e.Spool)
	must(t, err)
	env := &spool.Envelope{From: from, Arrived: time.Now()}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, &spool.Recipient{Address: r, State: spool.Pending})
	}
	id, err := sp.Submit(env, strings.NewReader(msg))
	must(t, err)
	return id
}

func qMsg(n int) string {
	return fmt.Sprintf("From: alice@example.test\r\nTo: bob@example.test\r\nSubject: test %d\r\nMessage-ID: <%d@test>\r\n\r\nbody %d\r\nend-of-message-%d\r\n", n, n, n, n)
}

// qMailbox returns the Maildir of local@example.test.
func qMailbox(e *env, local string) string { return filepath.Join(e.MailRoot, "example.test", local) }

func qCount(t testing.TB, dir string) int {
	return len(maildirFiles(t, dir, "new")) + len(maildirFiles(t, dir, "cur"))
}

// qSpoolEmpty reports whether no message is left in the spool. A spool
// that is not there fails the test: it is not an empty one.
func qSpoolEmpty(t testing.TB, e *env) bool {
	t.Helper()
	for _, sub := range []string{"env", "data"} {
		ents, err := os.ReadDir(filepath.Join(e.Spool, sub))
		if err != nil {
			t.Fatalf("no spool to look in: %v", err)
		}
		if len(ents) > 0 {
			return false
		}
	}
	return true
}

// qRun runs queue-runner and fails the test on a non-zero exit.
func qRun(t testing.TB, e *env, args ...string) string {
	t.Helper()
	out, errs, code := e.run("", "queue-runner", args...)
	if code != 0 {
		t.Fatalf("queue-runner %v: exit %d\n%s%s", args, code, out, errs)
	}
	return out
}

// qDaemon starts queue-runner --daemon and waits until it is idle.
func qDaemon(t testing.TB, e *env, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	c := e.cmd("queue-runner", append([]string{"--daemon"}, args...)...)
	logs := &syncBuffer{}
	c.Stderr = logs
	must(t, c.Start())
	t.Cleanup(func() {
		c.Process.Signal(syscall.SIGTERM)
		c.Wait()
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	waitFor(t, 10*time.Second, "the daemon to be idle", func() bool { return strings.Contains(logs.String(), "msg=idle") })
	return c, logs
}

func TestQueuePassDelivers(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	id := qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(1))
	_, errs, code := e.run("", "queue-runner")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	files := maildirFiles(t, qMailbox(e, "bob"), "new")
	if len(files) != 1 {
		t.Fatalf("maildir new/: %v\n%s", files, errs)
	}
	b, _ := os.ReadFile(files[0])
	if !strings.HasPrefix(string(b), "Return-Path: <alice@example.test>") || !strings.Contains(string(b), "end-of-message-1") {
		t.Fatalf("delivered:\n%s", b)
	}
	if !qSpoolEmpty(t, e) {
		t.Fatal("spool not empty")
	}
	if !strings.Contains(errs, "id="+id) || !strings.Contains(errs, "msg=delivered") {
		t.Fatalf("logs lack id=%s:\n%s", id, errs)
	}
}

func TestQueueDaemonTrigger(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	qDaemon(t, e, "--interval", "1h")
	start := time.Now()
	qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(1))
	waitFor(t, time.Second, "delivery after the trigger", func() bool { return qCount(t, qMailbox(e, "bob")) == 1 })
	t.Logf("submit to delivery: %v", time.Since(start))
	waitFor(t, 5*time.Second, "an empty spool", func() bool { return qSpoolEmpty(t, e) })
}

func TestQueueUnknownUserDSN(t *testing.T) {
	e := newEnv(t)
	e.addUser("alice@example.test", "pw")
	qSubmit(t, e, "alice@example.test", []string{"nobody@example.test"}, qMsg(7))
	qRun(t, e)
	files := maildirFiles(t, qMailbox(e, "alice"), "new")
	if len(files) != 1 {
		t.Fatalf("alice's maildir: %v", files)
	}
	out := python(t, `
import sys, email, email.policy
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
assert m["Return-Path"] == "<>", m["Return-Path"]
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status"
assert m["Auto-Submitted"] == "auto-replied"
assert "MAILER-DAEMON@mx.example.test" in m["From"]
parts = list(m.iter_parts())
ds = parts[1]
assert ds.get_content_type() == "message/delivery-status"
blocks = ds.get_payload()
r = blocks[1]
print(r["Final-Recipient"], "|", r["Action"], "|", r["Status"], "|", r["Diagnostic-Code"])
orig = parts[2].get_payload()[0]
print(orig["Subject"])
`, files[0])
	if !strings.Contains(out, "rfc822; nobody@example.test | failed | 5.1.1 | x-unix;") || !strings.Contains(out, "no such user") ||
		!strings.Contains(out, "test 7") {
		t.Fatalf("python saw:\n%s", out)
	}
	if !qSpoolEmpty(t, e) {
		t.Fatal("spool not empty")
	}
}

func TestQueueMDA(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	e.addUser("alice@example.test", "pw")
	out := filepath.Join(e.Dir, "mda-out")
	ctl := filepath.Join(e.Dir, "mda-exit")
	must(t, os.Mkdir(out, 0o700))
	must(t, os.WriteFile(ctl, []byte("75"), 0o600))
	// The MDA: delivers bob's mail into a file, fails as ctl says.
	mda := fmt.Sprintf(`code=$(cat %s); if [ "$code" != 0 ]; then cat >/dev/null; echo "mda says no ($RECIPIENT)" >&2; exit $code; fi; cat > %s/"$RECIPIENT.$SENDER.$LOCAL.$DOMAIN"`, ctl, out)
	args := []string{"--mda", mda, "--retry-after", "1s", "--max-retry-interval", "1s"}
	id := qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(1))
	qRun(t, e, args...)
	js := qRun(t, e, "list", "--json")
	var list []map[string]any
	must(t, json.Unmarshal([]byte(js), &list))
	if len(list) != 1 || list[0]["id"] != id {
		t.Fatalf("list: %s", js)
	}
	rc := list[0]["recipients"].([]any)[0].(map[string]any)
	if rc["state"] != "pending" || rc["attempts"].(float64) != 1 || !strings.Contains(rc["last_error"].(string), "mda says no") {
		t.Fatalf("after exit 75: %v", rc)
	}
	// Not due yet: nothing happens; then retried after the backoff.
	must(t, os.WriteFile(ctl, []byte("0"), 0o600))
	waitFor(t, 5*time.Second, "the retry", func() bool {
		qRun(t, e, args...)
		return qSpoolEmpty(t, e)
	})
	if _, err := os.Stat(filepath.Join(out, "bob@example.test.alice@example.test.bob.example.test")); err != nil {
		ents, _ := os.ReadDir(out)
		t.Fatalf("mda output: %v %v", err, ents)
	}
	if !qSpoolEmpty(t, e) {
		t.Fatal("spool not empty")
	}
}

func TestQueueMDABounceStderr(t *testing.T) {
	e := newEnv(t)
	e.addUser("alice@example.test", "pw")
	e.addUser("bob@example.test", "pw")
	// bob's mail fails permanently through the MDA; alice's (the bounce)
	// is delivered in-process... so use an MDA that only refuses bob.
	mda := `if [ "$LOCAL" = bob ]; then echo "quota exceeded for $RECIPIENT" >&2; exit 1; fi; exec cat > "` + e.Dir + `/got.$LOCAL"`
	qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(4))
	qRun(t, e, "--mda", mda)
	b, err := os.ReadFile(filepath.Join(e.Dir, "got.alice"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "quota exceeded for bob@example.test") || !strings.Contains(string(b), "Status: 5.3.0") {
		t.Fatalf("bounce lacks the stderr:\n%s", b)
	}
}

func TestQueueCronAndDaemonNoDuplicates(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	const n = 150
	for i := 0; i < n; i++ {
		qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(i))
	}
	qDaemon(t, e, "--interval", "1h")
	var wg sync.WaitGroup
	for j := 0; j < 3; j++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.run("", "queue-runner", "flush")
		}()
	}
	wg.Wait()
	waitFor(t, 30*time.Second, "an empty spool", func() bool { return qSpoolEmpty(t, e) })
	box := qMailbox(e, "bob")
	if c := qCount(t, box); c != n {
		t.Fatalf("%d messages delivered, want %d", c, n)
	}
	seen := map[string]bool{}
	for _, f := range maildirFiles(t, box, "new") {
		b, _ := os.ReadFile(f)
		s := string(b)
		i := strings.Index(s, "Subject: ")
		subj := s[i : i+strings.Index(s[i:], "\r\n")]
		if seen[subj] {
			t.Fatalf("%s delivered twice", subj)
		}
		seen[subj] = true
	}
}

func TestQueueListShowRemoveFlush(t *testing.T) {
	// Remote mail goes to a closed loopback port: no DNS, a temporary error.
	e := newEnv(t, `route = ["*=127.0.0.1:1"]`)
	e.addUser("bob@example.test", "pw")
	if out := qRun(t, e, "list"); !strings.Contains(out, "Mail queue is empty") {
		t.Fatalf("empty list: %q", out)
	}
	id1 := qSubmit(t, e, "alice@example.test", []string{"bob@example.test", "far@remote.test"}, qMsg(1))
	id2 := qSubmit(t, e, "", []string{"bob@example.test"}, qMsg(2))
	out := qRun(t, e, "list")
	for _, want := range []string{id1, id2, "alice@example.test", "MAILER-DAEMON", "far@remote.test", "in 2 Requests"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	// Options after the subcommand work as before it.
	var list []struct {
		ID         string `json:"id"`
		From       string `json:"from"`
		Arrived    string `json:"arrived"`
		Size       int64  `json:"size"`
		Recipients []struct {
			Address     string `json:"address"`
			State       string `json:"state"`
			Attempts    int    `json:"attempts"`
			NextAttempt string `json:"next_attempt"`
			LastError   string `json:"last_error"`
		} `json:"recipients"`
	}
	js, errs, code := e.run("", "queue-runner", "list", "--json", "--config", e.Config, "--log-level", "warn")
	if code != 0 {
		t.Fatal(errs)
	}
	must(t, json.Unmarshal([]byte(js), &list))
	if len(list) != 2 || list[0].ID != id1 || list[0].Size != int64(len(qMsg(1))) || len(list[0].Recipients) != 2 ||
		list[1].From != "" {
		t.Fatalf("json: %s", js)
	}
	if _, err := time.Parse(time.RFC3339, list[0].Arrived); err != nil {
		t.Fatal(err)
	}
	if _, err := time.Parse(time.RFC3339, list[0].Recipients[0].NextAttempt); err != nil {
		t.Fatal(err)
	}
	out = qRun(t, e, "show", id1)
	if !strings.Contains(out, "letterbox-envelope 1") || !strings.Contains(out, "Subject: test 1") || strings.Contains(out, "body 1") {
		t.Fatalf("show:\n%s", out)
	}
	if _, _, code := e.run("", "queue-runner", "show", "0000000000NOPE"); code == 0 {
		t.Fatal("show of a missing id succeeded")
	}
	qRun(t, e, "remove", id2)
	if _, _, code := e.run("", "queue-runner", "remove", id2); code == 0 {
		t.Fatal("second remove succeeded")
	}
	// flush: bob delivered, the remote recipient stays queued.
	qRun(t, e, "flush")
	if c := qCount(t, qMailbox(e, "bob")); c != 1 {
		t.Fatalf("bob has %d messages, want 1 (id2 was removed)", c)
	}
	js = qRun(t, e, "--log-level", "warn", "list", "--json")
	must(t, json.Unmarshal([]byte(js), &list))
	if len(list) != 1 || list[0].Recipients[0].State != "delivered" || list[0].Recipients[1].State != "pending" ||
		list[0].Recipients[1].Attempts != 1 || list[0].Recipients[1].LastError == "" {
		t.Fatalf("after flush: %s", js)
	}
}

// TestQueueListSelect: list's --limit, --domain and --state through the
// binary, with the JSON shape of DESIGN.md, mailq's table with its total
// of a selection, and a bad --state refused with a usage error.
func TestQueueListSelect(t *testing.T) {
	e := newEnv(t, `route = ["*=127.0.0.1:1"]`)
	var ids []string
	for i := 0; i < 6; i++ {
		dom := "remote.test"
		if i%2 == 1 {
			dom = "other.test"
		}
		ids = append(ids, qSubmit(t, e, "alice@example.test", []string{fmt.Sprintf("u%d@%s", i, dom)}, qMsg(i)))
	}
	// A pass defers the first four (connection refused); two arrive later.
	sp, err := spool.Open(e.Spool)
	must(t, err)
	for _, id := range ids[4:] {
		l, err := sp.Lock(id)
		must(t, err)
		_ = l // held through the pass: it cannot work them
		defer l.Unlock()
	}
	qRun(t, e)
	type msg struct {
		ID         string `json:"id"`
		Recipients []struct {
			Address string `json:"address"`
			State   string `json:"state"`
		} `json:"recipients"`
	}
	list := func(args ...string) []string {
		t.Helper()
		var got []msg
		must(t, json.Unmarshal([]byte(qRun(t, e, append([]string{"list", "--json"}, args...)...)), &got))
		var out []string
		for _, m := range got {
			out = append(out, m.ID)
		}
		return out
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, ids},
		{[]string{"--limit", "2"}, ids[:2]},
		{[]string{"--domain", "other.test"}, []string{ids[1], ids[3], ids[5]}},
		{[]string{"--state", "deferred"}, ids[:4]},
		{[]string{"--state=due", "--domain", "OTHER.TEST"}, ids[5:]},
		{[]string{"--state", "deferred", "--domain", "remote.test", "--limit", "1"}, ids[:1]},
	} {
		if got := list(c.args...); strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("list --json %v: %v, want %v", c.args, got, c.want)
		}
	}
	out := qRun(t, e, "list", "--domain", "other.test", "--limit", "2")
	if !strings.Contains(out, ids[1]) || !strings.Contains(out, ids[3]) || strings.Contains(out, ids[5]) ||
		!strings.Contains(out, "in 2 Requests shown, of 6 queued.") {
		t.Fatalf("list --domain other.test --limit 2:\n%s", out)
	}
	if _, errs, code := e.run("", "queue-runner", "list", "--state", "stuck"); code != 64 || !strings.Contains(errs, "--state") {
		t.Fatalf("--state stuck: exit %d\n%s", code, errs)
	}
}

// TestQueueCrash kills queue-runner at random instants while it delivers
// and checks that nothing is lost or half-delivered.
func TestQueueCrash(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	const n = 100
	for i := 0; i < n; i++ {
		qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(i))
	}
	rng := rand.New(rand.NewSource(1))
	box := qMailbox(e, "bob")
	// Kills that landed while the runner held a message's lock: in the
	// middle of a message's work, not between messages or after the pass.
	kills, midMessage := 0, 0
	const roundTimeout = time.Minute
	for round := 0; round < 2*n && !qSpoolEmpty(t, e); round++ {
		// Kill once the runner has delivered a few more messages: it
		// is then in the middle of its work, whatever the machine's speed.
		target := qCount(t, box) + 1 + rng.Intn(4)
		c := e.cmd("queue-runner", "--log-level", "error", "--concurrency", "4")
		must(t, c.Start())
		deadline := time.Now().Add(roundTimeout)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
	watch:
		for {
			select {
			case <-done:
				break watch
			default:
			}
			if qCount(t, box) >= target {
				if holdsFlock(t, c.Process.Pid) {
					midMessage++
				}
				c.Process.Signal(syscall.SIGKILL)
				<-done
				kills++
				break
			}
			if time.Now().After(deadline) {
				c.Process.Kill()
				<-done
				t.Fatalf("round %d: queue-runner delivered %d messages, not %d, in %v", round, qCount(t, box), target, roundTimeout)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	qRun(t, e) // a last pass nobody kills
	if ents := mustReadDir(t, filepath.Join(e.Spool, "env")); len(ents) != 0 {
		t.Fatalf("%d messages left in the spool after the last pass", len(ents))
	}
	// Data files of notifications killed before their commit point are
	// garbage, removed by age; none are expected here (no DSNs).
	if ents := mustReadDir(t, filepath.Join(e.Spool, "data")); len(ents) != 0 {
		t.Fatalf("%d data files left", len(ents))
	}
	seen := map[int]int{}
	for _, f := range append(maildirFiles(t, box, "new"), maildirFiles(t, box, "cur")...) {
		b, _ := os.ReadFile(f)
		var k int
		if _, err := fmt.Sscanf(string(b[strings.Index(string(b), "Subject: test "):]), "Subject: test %d", &k); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !strings.HasSuffix(string(b), fmt.Sprintf("end-of-message-%d\r\n", k)) {
			t.Fatalf("partial message in the Maildir: %s", f)
		}
		seen[k]++
	}
	dups := 0
	for i := 0; i < n; i++ {
		if seen[i] == 0 {
			t.Errorf("message %d lost", i)
		}
		dups += seen[i] - 1
	}
	t.Logf("%d kills (%d while a message was locked), %d duplicates", kills, midMessage, dups)
	if midMessage == 0 {
		t.Fatal("no kill landed while queue-runner held a message's lock: the test proved nothing")
	}
	// A kill between a delivery and the envelope update repeats that
	// delivery; with --concurrency 4 a pass works up to 4 local messages
	// at once, so a kill can repeat at most that many.
	if dups > 4*kills {
		t.Fatalf("%d duplicates for %d kills: at most 4 per kill", dups, kills)
	}
	if kills < 10 {
		t.Fatalf("only %d kills: the test proved little", kills)
	}
}

// holdsFlock reports whether process pid holds an flock(2) lock (a
// message's lock, the index's) right now, from /proc/locks.
func holdsFlock(t testing.TB, pid int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/locks")
	must(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[1] == "FLOCK" && f[4] == strconv.Itoa(pid) {
			return true
		}
	}
	return false
}

// TestQueueDropAsNobody: a user who may not write the spool submits with
// sendmail (which falls back to the drop directory); queue-runner takes
// the file in, with that user as the submitter, and delivers it.
func TestQueueDropAsNobody(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Fatalf("running sendmail as nobody needs root and setpriv(1): euid %d, %v", os.Geteuid(), err)
	}
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	qRun(t, e, "list") // creates the spool as root
	// nobody must reach the config, the users file and the commands.
	for _, p := range []string{e.Dir, filepath.Dir(e.Dir), filepath.Dir(bin(t, "sendmail"))} {
		must(t, os.Chmod(p, 0o711))
	}
	for _, p := range []string{e.Config, e.Users, e.Aliases, bin(t, "sendmail")} {
		must(t, os.Chmod(p, 0o755))
	}
	c := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin(t, "sendmail"), "bob@example.test")
	c.Env = append(os.Environ(), "LETTERBOX_CONFIG="+e.Config)
	c.Stdin = strings.NewReader("Subject: from nobody\n\nhello\n")
	out, err := bounded(t, c).CombinedOutput()
	if err != nil {
		t.Fatalf("sendmail as nobody: %v\n%s", err, out)
	}
	drops := mustReadDir(t, filepath.Join(e.Spool, "drop"))
	if len(drops) != 1 {
		t.Fatalf("drop dir: %v\n%s", drops, out)
	}
	if envs := mustReadDir(t, filepath.Join(e.Spool, "env")); len(envs) != 0 {
		t.Fatal("nobody wrote the spool directly")
	}
	_, errs, code := e.run("", "queue-runner")
	if code != 0 {
		t.Fatal(errs)
	}
	if !strings.Contains(errs, "drop taken in") || !strings.Contains(errs, "user=nobody") {
		t.Fatalf("log:\n%s", errs)
	}
	files := maildirFiles(t, qMailbox(e, "bob"), "new")
	if len(files) != 1 {
		t.Fatalf("bob's maildir: %v\n%s", files, errs)
	}
	if drops := mustReadDir(t, filepath.Join(e.Spool, "drop")); len(drops) != 0 {
		t.Fatalf("drop not removed: %v", drops)
	}
}

// TestQueueRemoteViaSmtpd: remote recipients go through the remote hook
// (pkg/remote) to another letterbox's smtpd on loopback (--route): one is
// accepted and lands in the other host's spool, one is refused with 550
// and comes back to the sender as a DSN quoting the remote reply.
func TestQueueRemoteViaSmtpd(t *testing.T) {
	far := newEnv(t)
	conf, _ := os.ReadFile(far.Config)
	must(t, os.WriteFile(far.Config, []byte(strings.Replace(string(conf), `domains = ["example.test"]`, `domains = ["remote.test"]`, 1)), 0o600))
	far.addUser("carol@remote.test", "pw")
	srv := far.start("smtpd", "")

	e := newEnv(t, fmt.Sprintf(`route = ["remote.test=%s"]`, srv.Addr))
	e.addUser("alice@example.test", "pw")
	qSubmit(t, e, "alice@example.test", []string{"carol@remote.test", "nobody@remote.test"}, qMsg(5))
	_, errs, code := e.run("", "queue-runner")
	if code != 0 {
		t.Fatal(errs)
	}
	if !qSpoolEmpty(t, e) {
		t.Fatalf("spool not empty:\n%s", errs)
	}
	// The accepted one is in the far spool; its pass delivers it.
	qRun(t, far)
	got := maildirFiles(t, filepath.Join(far.MailRoot, "remote.test", "carol"), "new")
	if len(got) != 1 {
		t.Fatalf("carol's maildir: %v", got)
	}
	// The refused one bounced, quoting the remote reply.
	dsns := maildirFiles(t, qMailbox(e, "alice"), "new")
	if len(dsns) != 1 {
		t.Fatalf("alice's maildir: %v\n%s", dsns, errs)
	}
	b, _ := os.ReadFile(dsns[0])
	if !strings.Contains(string(b), "Final-Recipient: rfc822; nobody@remote.test") || !strings.Contains(string(b), "Diagnostic-Code: smtp; 550") ||
		strings.Contains(string(b), "Final-Recipient: rfc822; carol@") {
		t.Fatalf("dsn:\n%s", b)
	}
}
