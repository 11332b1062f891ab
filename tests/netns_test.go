//go:build linux

package tests

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Network namespaces of the tests' own (root only), in two kinds:
//
//   - netns: an anonymous namespace owned by one locked thread, with only
//     loopback (make run's fixed ports, TestRunExamples);
//   - netLab: named namespaces (ip netns) as hosts of a small network,
//     each with an address of 198.51.100.0/24 (TEST-NET-2) on a veth pair
//     to one bridge, which lives in a namespace of its own. No namespace
//     has a route out and the root namespace holds no end of any link, so
//     no packet leaves the lab. Everything is removed when the test ends,
//     failed or not, and namespaces left by a run that crashed (their
//     names carry the prefix and the dead process's pid) are removed
//     before a new lab is made.

// netns is a network namespace of the test's own, with its loopback up;
// commands started through do run in it, and inherit it.
type netns struct {
	jobs chan func()
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	ns := &netns{jobs: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		// The namespace belongs to this thread only: the thread is never
		// unlocked, so it ends with this goroutine rather than serve
		// others in the wrong namespace. Processes started from it
		// inherit its namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		ready <- loopbackUp()
		for f := range ns.jobs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("a network namespace for make run's fixed ports (needs root): %v", err)
	}
	t.Cleanup(func() { close(ns.jobs) })
	return ns
}

// do runs f on the namespace's thread.
func (ns *netns) do(t *testing.T, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	ns.jobs <- func() { errc <- f() }
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// loopbackUp sets lo up in the calling thread's network namespace, which
// gives it 127.0.0.1/8.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// labPrefix starts the name of every namespace a netLab makes.
const labPrefix = "lbt-"

// netLab is a network of named namespaces; see above.
type netLab struct {
	t      *testing.T
	prefix string // labPrefix + tag + "-" + pid + "-"
	sw     string // the bridge's namespace
	hosts  int
}

// newNetLab makes an empty lab; tag names the test (short: it is part of
// every namespace's name).
func newNetLab(t *testing.T, tag string) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip (iproute2) is needed for the network namespaces: %v", err)
	}
	removeStaleNamespaces(t, labPrefix+tag+"-")
	l := &netLab{t: t, prefix: fmt.Sprintf("%s%s-%d-", labPrefix, tag, os.Getpid())}
	l.sw = l.prefix + "sw"
	// Registered before any namespace exists: it runs last, after the
	// processes started in the lab have been stopped by their own
	// cleanups, and removes whatever was made even when a step failed.
	t.Cleanup(func() {
		for _, ns := range l.namespaces() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("removing namespace %s: %v %s", ns, err, out)
			}
		}
		if left := l.namespaces(); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	})
	l.ip("netns", "add", l.sw)
	l.ip("-n", l.sw, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.sw, "link", "set", "br0", "up")
	return l
}

// host adds a host with addr (198.51.100.x) and returns its namespace's
// name.
func (l *netLab) host(name, addr string) string {
	l.t.Helper()
	l.hosts++
	ns := l.prefix + name
	port := fmt.Sprintf("p%d", l.hosts)
	l.ip("netns", "add", ns)
	l.ip("-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	l.ip("-n", l.sw, "link", "set", port, "master", "br0", "up")
	l.ip("-n", ns, "link", "set", "lo", "up")
	l.ip("-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
	l.ip("-n", ns, "link", "set", "eth0", "up")
	return ns
}

// command is name with args run inside the host namespace ns.
func (l *netLab) command(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

func (l *netLab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// namespaces lists this lab's namespaces.
func (l *netLab) namespaces() []string {
	var out []string
	for _, ns := range listNamespaces(l.t) {
		if strings.HasPrefix(ns, l.prefix) {
			out = append(out, ns)
		}
	}
	return out
}

func listNamespaces(t *testing.T) []string {
	t.Helper()
	b, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

// removeStaleNamespaces deletes the namespaces named prefix<pid>-… whose
// process is gone (a run killed before its cleanup).
func removeStaleNamespaces(t *testing.T, prefix string) {
	t.Helper()
	for _, ns := range listNamespaces(t) {
		rest, ok := strings.CutPrefix(ns, prefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		t.Logf("removing namespace %s left by a run that died (pid %d)", ns, pid)
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("removing stale namespace %s: %v %s", ns, err, out)
		}
	}
}
