package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The service as systemd runs it: the built binary, started with NOTIFY_SOCKET and
// its stderr as "the journal", against the simulated tenant in another process.

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "presencebridge-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "presencebridge")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build presencebridge:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// simTenant runs `presencebridge simulate --write-config` and returns the path of
// the Presence.ini it wrote (metrics on a free port, so tests can run side by side).
func simTenant(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ready, err := os.Create(filepath.Join(dir, "ready.json"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binPath, "simulate", "--addr", "127.0.0.1:0", "--users", "20", "--auth", "secret",
		"--interval", "1s", "--pbx", "127.0.0.1:0", "--write-config", dir)
	cmd.Stdout = ready
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); ready.Close() })
	waitUntil(t, 30*time.Second, "the simulated tenant", func() bool {
		fi, err := os.Stat(ready.Name())
		return err == nil && fi.Size() > 0
	})
	return filepath.Join(dir, "Presence.ini") // with MetricsAddr = 127.0.0.1:0, as simulate writes it
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unit is one run of `presencebridge run` as systemd would start it.
type unit struct {
	cmd    *exec.Cmd
	stderr string // the file systemd's journal would read
	notify *net.UnixConn
	exited chan struct{}
	err    error
}

func startUnit(t *testing.T, config string) *unit {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	u := &unit{stderr: filepath.Join(dir, "journal"), notify: conn, exited: make(chan struct{})}
	f, err := os.Create(u.stderr)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	u.cmd = exec.Command(binPath, "--config", config, "run")
	u.cmd.Stderr = f
	u.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	go func() { u.err = u.cmd.Wait(); close(u.exited) }()
	t.Cleanup(func() {
		u.cmd.Process.Kill()
		<-u.exited
		conn.Close()
		if t.Failed() {
			t.Logf("journal of the unit:\n%s", u.journal())
		}
	})
	return u
}

func (u *unit) journal() string { b, _ := os.ReadFile(u.stderr); return string(b) }

// next returns the next sd_notify message, or "" after d.
func (u *unit) next(d time.Duration) string {
	buf := make([]byte, 256)
	u.notify.SetReadDeadline(time.Now().Add(d))
	n, err := u.notify.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func (u *unit) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-u.exited:
	case <-time.After(within):
		t.Fatalf("presencebridge did not exit within %s", within)
	}
	var ee *exec.ExitError
	if errors.As(u.err, &ee) {
		return ee.ExitCode()
	}
	if u.err != nil {
		t.Fatal(u.err)
	}
	return 0
}

// Ready is told once the configuration is read and the state file open; SIGTERM
// stops it cleanly, well inside systemd's TimeoutStopSec; a second instance on the
// same state file says so and exits at once instead of hanging; SIGHUP reloads.
func TestServiceLifecycle(t *testing.T) {
	config := simTenant(t)
	u := startUnit(t, config)
	if msg := u.next(30 * time.Second); msg != "READY=1" {
		t.Fatalf("systemd was told %q; want READY=1", msg)
	}
	waitUntil(t, 30*time.Second, "polling", func() bool { return strings.Contains(u.journal(), "Polling 20 users") })

	second := exec.Command(binPath, "--config", config, "run")
	var out bytes.Buffer
	second.Stderr = &out
	start := time.Now()
	err := second.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInUse {
		t.Fatalf("second instance: %v, stderr %q; want exit %d", err, out.String(), exitInUse)
	}
	if !strings.Contains(out.String(), "presencebridge is already running with the state file") || time.Since(start) > 10*time.Second {
		t.Fatalf("second instance took %s and said %q", time.Since(start), out.String())
	}

	u.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, 30*time.Second, "the reload", func() bool { return strings.Contains(u.journal(), "Configuration reloaded") })

	u.cmd.Process.Signal(syscall.SIGTERM)
	if msg := u.next(10 * time.Second); msg != "STOPPING=1" {
		t.Errorf("systemd was told %q at stop; want STOPPING=1", msg)
	}
	if code := u.exitCode(t, stopDeadline+5*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d; want 0", code)
	}
	j := u.journal()
	for _, want := range []string{"<6>level=INFO msg=\"presencebridge started\"", "<6>level=INFO msg=\"presencebridge stopped\""} {
		if !strings.Contains(j, want) {
			t.Errorf("journal lacks %q", want)
		}
	}
	for i, line := range strings.Split(strings.TrimSpace(j), "\n") {
		if len(line) < 3 || line[0] != '<' || line[2] != '>' {
			t.Errorf("journal line %d has no priority: %q", i+1, line)
		}
		if strings.Contains(line, "time=") {
			t.Errorf("journal line %d carries its own time (the journal stamps it): %q", i+1, line)
		}
	}
	if strings.Contains(j, "sim-secret") {
		t.Error("the client secret is in the journal")
	}
	// The state file was closed: a command can open it at once.
	if out, err := exec.Command(binPath, "--config", config, "status").CombinedOutput(); err != nil {
		t.Fatalf("status after the stop: %v\n%s", err, out)
	}
}

// A broken Presence.ini fails the start with exit code 3, which the unit's
// RestartPreventExitStatus keeps from a restart loop, and the journal says what to fix.
func TestServiceBadConfig(t *testing.T) {
	config := simTenant(t)
	raw, _ := os.ReadFile(config)
	os.WriteFile(config, []byte(strings.Replace(string(raw), "Interval = 1s", "Interval = 1 minute", 1)), 0o600)
	u := startUnit(t, config)
	if code := u.exitCode(t, 30*time.Second); code != exitConfig {
		t.Fatalf("exit code = %d; want %d", code, exitConfig)
	}
	if msg := u.next(100 * time.Millisecond); msg != "" {
		t.Errorf("systemd was told %q with a broken configuration", msg)
	}
	j := u.journal()
	if !strings.HasPrefix(j, "<3>presencebridge: ") || !strings.Contains(j, `[Polling] Interval = "1 minute"`) || !strings.Contains(j, "Presence.ini:") {
		t.Fatalf("journal does not name the file, line, key and value at error priority:\n%s", j)
	}
}

// What the MSI runs after copying the files on a silent install.
func TestConfigSetAsTheMSIRunsIt(t *testing.T) {
	dir := t.TempDir()
	example, _ := os.ReadFile("../../Presence.ini.example")
	path := filepath.Join(dir, "Presence.ini")
	os.WriteFile(path, example, 0o600)
	cmd := exec.Command(binPath, "--config", path, "config", "set", "--if-set",
		"Account.main.TenantID=fabrikam.onmicrosoft.com", "Account.main.ClientID=99999999-2222-3333-4444-555555555555",
		"Account.main.Auth=secret", "Account.main.Username=", "Account.main.ClientSecret=Xy7~secret")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("config set: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "Xy7~secret") {
		t.Fatal("the secret was printed")
	}
	raw, _ := os.ReadFile(path)
	got := string(raw)
	if !strings.Contains(got, "\nTenantID = fabrikam.onmicrosoft.com\n") || !strings.Contains(got, "\nClientSecret = enc:v1:") ||
		!strings.Contains(got, "\nUsername = presence-svc@contoso.onmicrosoft.com\n") {
		t.Fatalf("Presence.ini after config set:\n%s", got)
	}
	// Nothing given: nothing changes, exit 0 (an MSI installed with no properties).
	if out, err := exec.Command(binPath, "--config", path, "config", "set", "--if-set", "Account.main.TenantID=").CombinedOutput(); err != nil {
		t.Fatalf("config set with only empty values: %v\n%s", err, out)
	}
	if raw2, _ := os.ReadFile(path); string(raw2) != got {
		t.Fatal("config set with only empty values changed the file")
	}
	// A bad value: exit 3, the file unchanged.
	err = exec.Command(binPath, "--config", path, "config", "set", "Account.main.Auth=password").Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitConfig {
		t.Fatalf("config set of a bad value: %v; want exit %d", err, exitConfig)
	}
}
