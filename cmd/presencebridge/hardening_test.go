package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Defects found in field trials, seen from outside: the real binary against the
// simulated tenant.

// A users file with a 40,000-character UPN and a 10 MB row: verify --offline names
// the rows, and run skips them and keeps running (it exited 1 with bbolt's "key
// too large", and systemd restarted into it every 5 s).
func TestRunSkipsOversizedRows(t *testing.T) {
	config := simTenant(t)
	usersFile := filepath.Join(filepath.Dir(config), "users.csv")
	f, err := os.OpenFile(usersFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "%s@contoso.example;sip:9998@pbx.example;9998;X\r\n", strings.Repeat("x", 40_000))
	fmt.Fprintf(f, "big@contoso.example;sip:%s@pbx.example;9999;Big\r\n", strings.Repeat("9", 10<<20))
	f.Close()
	out, err := exec.Command(binPath, "--config", config, "verify", "--offline").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 rows skipped") || !strings.Contains(string(out), "users.csv:22: UPN \"xxxx") ||
		!strings.Contains(string(out), "users.csv:23: the SIP URI of \"big@contoso.example\" is 10485776 characters long") {
		t.Fatalf("verify --offline: %v\n%.3000s", err, out)
	}
	u := startUnit(t, config)
	if msg := u.next(30 * time.Second); msg != "READY=1" {
		t.Fatalf("systemd was told %q; want READY=1", msg)
	}
	waitUntil(t, 30*time.Second, "polling", func() bool { return strings.Contains(u.journal(), "Polling 20 users") })
	select {
	case <-u.exited:
		t.Fatalf("run exited: %v", u.err)
	case <-time.After(2 * time.Second):
	}
	if j := u.journal(); len(j) > 1<<20 {
		t.Errorf("the journal holds %d bytes: the oversized row was logged whole", len(j))
	}
}

// A StateFile that is a folder, and a users file with only its header: both are
// configuration errors (exit 3, which systemd does not restart into), said at
// error priority; the header-only file starts once confirmed with users apply.
func TestRunRefusesStateFolderAndEmptyUsers(t *testing.T) {
	config := simTenant(t)
	dir := filepath.Dir(config)
	raw, _ := os.ReadFile(config)
	os.Mkdir(filepath.Join(dir, "state"), 0o700)
	os.WriteFile(config, []byte(strings.Replace(string(raw), "StateFile = presencebridge.db", "StateFile = state", 1)), 0o600)
	u := startUnit(t, config)
	if code := u.exitCode(t, 30*time.Second); code != exitConfig {
		t.Fatalf("StateFile is a folder: exit %d; want %d", code, exitConfig)
	}
	if j := u.journal(); !strings.HasPrefix(j, "<3>presencebridge: ") || !strings.Contains(j, "[General] StateFile") || !strings.Contains(j, "this is a folder") {
		t.Fatalf("journal:\n%s", j)
	}

	os.WriteFile(config, raw, 0o600)
	os.WriteFile(filepath.Join(dir, "users.csv"), []byte("UPN;SIP URI;Extension;Name\r\n"), 0o644)
	u = startUnit(t, config)
	if code := u.exitCode(t, 30*time.Second); code != exitConfig {
		t.Fatalf("header-only users file: exit %d; want %d", code, exitConfig)
	}
	if j := u.journal(); !strings.Contains(j, "lists no users (only a header, comments or blank lines)") || !strings.Contains(j, "users apply --allow-mass-removal") {
		t.Fatalf("journal:\n%s", j)
	}
	out, err := exec.Command(binPath, "--config", config, "users", "apply").CombinedOutput()
	if code := exitCodeOf(err); code != exitConfig || !strings.Contains(string(out), "lists no users") {
		t.Fatalf("users apply without the flag: exit %d\n%s", code, out)
	}
	out, err = exec.Command(binPath, "--config", config, "users", "apply", "--allow-mass-removal").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "users.csv: 0 users; the PBX shows 0 users") || !strings.Contains(string(out), "Confirmed") {
		t.Fatalf("users apply --allow-mass-removal: %v\n%s", err, out)
	}
	u = startUnit(t, config)
	if msg := u.next(30 * time.Second); msg != "READY=1" {
		t.Fatalf("after the confirmation systemd was told %q; want READY=1", msg)
	}
}

// SIGTERM while the users file is still being read (a wrong, huge file) stops run
// at once; it used to go on reading and ignore the stop.
func TestRunStopsWhileLoading(t *testing.T) {
	config := simTenant(t)
	f, err := os.Create(filepath.Join(filepath.Dir(config), "users.csv"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	w.WriteString("UPN,Extension\n")
	for i := range 600_000 {
		fmt.Fprintf(w, "user%07d@contoso.example,%d\n", i, i)
	}
	w.Flush()
	f.Close()
	u := startUnit(t, config)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	u.cmd.Process.Signal(syscall.SIGTERM)
	if code := u.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM while loading; want 0", code)
	}
	if took := time.Since(start); !strings.Contains(u.journal(), "stopped while starting") {
		t.Fatalf("run did not stop while loading (it exited after %s):\n%s", took, u.journal())
	}
}

func exitCodeOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// help, --help and -h print the usage and exit 0 (help was an unknown command).
func TestHelp(t *testing.T) {
	for _, arg := range []string{"help", "--help", "-h"} {
		out, err := exec.Command(binPath, arg).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Usage:") || !strings.Contains(string(out), "users apply") {
			t.Errorf("presencebridge %s: %v\n%s", arg, err, out)
		}
	}
}
