package delivery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/internal/testwait"
	"letterbox/pkg/privsep"
	"letterbox/pkg/privsep/privseptest"
	"letterbox/pkg/route"
	"letterbox/pkg/sysexits"
	"letterbox/pkg/users"
)

// TestMain lets this test binary be DeliverAs's child, as deliver and
// queue-runner are.
func TestMain(m *testing.M) {
	if IsOwnerChild() {
		os.Exit(OwnerChildMain())
	}
	os.Exit(m.Run())
}

// A delivery as another user runs in a process with that user's uid, gid
// and groups (real, effective, saved), in /, with HOME, USER, LOGNAME,
// SHELL of the owner and nothing of root's environment but PATH, TZ and
// the locale; what it writes is the owner's.
func TestDeliverAsChildCredentials(t *testing.T) {
	u := privseptest.NewUser(t)
	t.Setenv("ROOT_SECRET", "root's environment")
	t.Setenv("TZ", "Europe/Paris")
	out := u.Path("out")
	cmd := `{ grep -E '^(Uid|Gid|Groups):' /proc/self/status; pwd; env; } > ` + out
	d := route.Destination{Kind: route.Pipe, Command: cmd, Address: "u@example.test",
		User: &users.User{Name: "u@example.test", Home: u.Home}, Path: u.Path("Maildir")}
	if err := (Owners{}).Deliver(context.Background(), d, "s@example.test", strings.NewReader("x\n")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	id := strconv.FormatUint(uint64(u.UID), 10)
	gid := strconv.FormatUint(uint64(u.GID), 10)
	for _, want := range []string{
		"Uid:\t" + id + "\t" + id + "\t" + id + "\t" + id,
		"Gid:\t" + gid + "\t" + gid + "\t" + gid + "\t" + gid,
		"\n/\n", "HOME=" + u.Home + "\n", "USER=" + u.Name + "\n", "LOGNAME=" + u.Name + "\n",
		"SHELL=/bin/sh\n", "TZ=Europe/Paris\n", "RECIPIENT=u@example.test\n", "SENDER=s@example.test\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the child's view lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(got, fmt.Sprint(u.Group)) {
		t.Errorf("the child lacks the supplementary group %d:\n%s", u.Group, got)
	}
	for _, leak := range []string{"ROOT_SECRET", childEnvVar} {
		if strings.Contains(got, leak) {
			t.Errorf("the child's environment holds %s:\n%s", leak, got)
		}
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != u.UID {
		t.Errorf("the pipe's file belongs to uid %d, not %d", st.Uid, u.UID)
	}
}

// A child's failure keeps its meaning across the process boundary: a
// Maildir that cannot be made is still ErrCantCreate (deliver exits 73),
// temporary, and a pipe's permanent failure stays permanent.
func TestDeliverAsChildErrors(t *testing.T) {
	u := privseptest.NewUser(t)
	file := u.Path("file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	u.Chown(t, file)
	err := DeliverAs(context.Background(), u.Cred, route.Destination{Kind: route.Maildir, Path: filepath.Join(file, "Maildir"), Address: "u@x"}, "", strings.NewReader("x\n"))
	var de *Error
	if !errors.As(err, &de) || !de.Temporary || !errors.Is(err, ErrCantCreate) || ExitCode(err) != sysexits.CantCreat {
		t.Errorf("Maildir under a file: %v (exit %d)", err, ExitCode(err))
	}
	err = DeliverAs(context.Background(), u.Cred, route.Destination{Kind: route.Pipe, Command: "echo no such list >&2; exit 67", Address: "u@x"}, "", strings.NewReader("x\n"))
	if !errors.As(err, &de) || de.Temporary || de.Status != "5.3.0" || !errors.Is(err, ErrPipe) || !strings.Contains(err.Error(), "no such list") {
		t.Errorf("a pipe's permanent failure: %v", err)
	}
	if err := DeliverAs(context.Background(), u.Cred, route.Destination{Kind: route.Maildir, Path: u.Path("Maildir"), Address: "u@x"}, "", strings.NewReader("x\n")); err != nil {
		t.Errorf("an ordinary delivery: %v", err)
	}
}

// A delivery that outlives its time is killed with everything it started
// (the child's process group), and fails temporarily.
func TestDeliverAsChildTimeout(t *testing.T) {
	u := privseptest.NewUser(t)
	marker := "sleep 3" + strconv.Itoa(os.Getpid()%1000) + "7"
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := DeliverAs(ctx, u.Cred, route.Destination{Kind: route.Pipe, Command: "sh -c '" + marker + "' & " + marker + "; wait", Address: "u@x"}, "", strings.NewReader("x\n"))
	var de *Error
	if !errors.As(err, &de) || !de.Temporary {
		t.Fatalf("a delivery past its deadline: %v, want a temporary failure", err)
	}
	// The kill is sent to the whole group before DeliverAs returns; the
	// processes die as the kernel gets to them.
	testwait.Until(t, 10*time.Second, "no process of the delivery left ("+marker+")", func() bool {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), marker) {
				return false
			}
		}
		return true
	})
}

// Owner: a user's mailbox belongs to the users file's ids or the home's
// owner; a root-owned alias's pipe runs as default-privs, never root; an
// alias file's own owner runs its pipes.
func TestOwners(t *testing.T) {
	u := privseptest.NewUser(t)
	o := Owners{DefaultPrivs: "nobody"}
	c, err := o.Owner(route.Destination{Kind: route.Maildir, Path: u.Path("Maildir"), User: &users.User{Home: u.Home}})
	if err != nil || c.UID != u.UID || c.GID != u.GID {
		t.Errorf("a mailbox in %s's home: %v %v", u.Name, c, err)
	}
	nobody, err := privsep.LookupUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := o.Owner(route.Destination{Kind: route.Pipe, Command: "true"}); err != nil || !c.Same(nobody) {
		t.Errorf("a root alias's pipe: %v %v, want nobody", c, err)
	}
	if c, err := o.Owner(route.Destination{Kind: route.Pipe, Command: "true", AliasOwner: int(u.UID)}); err != nil || c.UID != u.UID {
		t.Errorf("a pipe of %s's aliases: %v %v", u.Name, c, err)
	}
	if _, err := (Owners{DefaultPrivs: "root"}).Owner(route.Destination{Kind: route.Pipe, Command: "true"}); !errors.Is(err, ErrDefaultPrivsRoot) {
		t.Errorf("default-privs root: %v, want ErrDefaultPrivsRoot", err)
	}
	if c, err := PathOwner(u.Path("Maildir")); err != nil || c.UID != u.UID {
		t.Errorf("PathOwner of a missing Maildir in %s's home: %v %v", u.Name, c, err)
	}
	if c, err := PathOwner(filepath.Join(t.TempDir(), "Maildir")); err != nil || c.UID != 0 {
		t.Errorf("PathOwner of a missing Maildir in root's directory: %v %v", c, err)
	}
}
