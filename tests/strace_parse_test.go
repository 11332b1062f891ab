package tests

import "testing"

// TestParseStraceExitBeforeCloneReturns: a Go program's last thread can
// call exit_group before strace prints the result of the clone that made
// it (the creator is killed first); that exit is still the traced
// command's own. A stress run met this trace (TestDurabilityQueueMbox,
// once in -count=4 of the whole suite under load): the exit went
// unrecognised and the check reported that its moment never came.
func TestParseStraceExitBeforeCloneReturns(t *testing.T) {
	const trace = `16002 openat(AT_FDCWD</tmp>, "/etc/localtime", O_RDONLY) = 5</usr/share/zoneinfo/Etc/UTC>
16002 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, child_tid=0x7e}, 88) = 16010
16010 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, child_tid=0x7d} <unfinished ...>
16011 write(2<pipe:[1]>, "pass done\n", 10) = 10
16010 <... clone3 resumed> => {parent_tid=[16011]}, 88) = 16011
16010 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, child_tid=0x7c} <unfinished ...>
16012 exit_group(0)                     = ?
16010 <... clone3 resumed> <unfinished ...>) = ?
`
	tr, err := parseStrace(trace)
	if err != nil {
		t.Fatal(err)
	}
	exits := 0
	for _, c := range tr.Calls {
		if tr.exitOK()(c) {
			exits++
		}
	}
	if exits != 1 {
		t.Fatalf("the exit_group of thread 16012 (made by a clone whose result the trace lacks) is the command's own exit: found %d such exits, want 1", exits)
	}
	for pid, want := range map[int]int{16010: 16002, 16011: 16002, 16012: 16002} {
		if got := tr.process(pid); got != want {
			t.Errorf("thread %d belongs to process %d, want %d", pid, got, want)
		}
	}

	// A child process (a clone without CLONE_THREAD) is not the command.
	const child = `16002 clone3({flags=CLONE_VM|CLONE_VFORK, exit_signal=SIGCHLD} <unfinished ...>
16020 exit_group(0)                     = ?
16002 <... clone3 resumed> => {parent_tid=[16020]}, 88) = 16020
`
	tr, err = parseStrace(child)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range tr.Calls {
		if c.Name == "exit_group" && tr.exitOK()(c) {
			t.Fatalf("a child process's exit_group taken for the traced command's")
		}
	}
}
