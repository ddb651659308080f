//go:build linux

package procgroup

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A child that forks a grandchild is started in its own group; Kill ends both,
// and the test's own group is untouched (the test survives).
func TestKillEndsTheGroup(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60 & echo $!; wait")
	cmd.SysProcAttr = Attr(syscall.SIGKILL)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var grandchild int
	buf := make([]byte, 32)
	n, _ := out.Read(buf)
	for _, c := range buf[:n] {
		if c >= '0' && c <= '9' {
			grandchild = grandchild*10 + int(c-'0')
		}
	}
	if grandchild == 0 {
		t.Fatalf("no grandchild PID in %q", buf[:n])
	}
	if pgid, _ := syscall.Getpgid(cmd.Process.Pid); pgid != cmd.Process.Pid {
		t.Errorf("child's process group = %d, want its own (%d)", pgid, cmd.Process.Pid)
	}
	Kill(cmd.Process.Pid)
	_ = cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(grandchild, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still runs after Kill", grandchild)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Signal reaches the child and the grandchild it forked.
func TestSignalReachesTheGroup(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60 & echo $!; wait")
	cmd.SysProcAttr = Attr(syscall.SIGKILL)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	n, _ := out.Read(buf)
	grandchild, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		Kill(cmd.Process.Pid)
		t.Fatalf("no grandchild PID in %q", buf[:n])
	}
	Signal(cmd.Process.Pid, syscall.SIGTERM)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		Kill(cmd.Process.Pid)
		t.Fatal("the child still runs 5 s after Signal(SIGTERM)")
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(grandchild, 0) == nil {
		if time.Now().After(deadline) {
			Kill(cmd.Process.Pid)
			t.Fatalf("grandchild %d still runs after Signal(SIGTERM)", grandchild)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
