package wine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// goExe cross-builds testdata/prng for Windows.
func goExe(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "prng.exe")
	cmd := exec.Command("go", "build", "-o", exe, "./testdata/prng")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=windows", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build testdata/prng for Windows: %v\n%s", err, out)
	}
	return exe
}

// A prefix runs Go programs (the ProcessPrng stand-in works), gives their
// output and exit codes, reads the registry and the service manager, and Close
// ends every Wine process it started.
func TestIntegrationPrefix(t *testing.T) {
	Require(t)
	exe := goExe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	p, err := Boot(ctx, Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	t.Logf("prefix booted in %s", time.Since(start).Round(time.Millisecond))

	t.Run("go program", func(t *testing.T) {
		hexLine := regexp.MustCompile(`^[0-9a-f]{32}\n$`)
		first, err := p.Run(ctx, exe)
		if err != nil || first.Code != 0 || !hexLine.MatchString(first.Stdout) {
			t.Fatalf("prng.exe: %v, %+v\nwine.log:\n%s", err, first, p.LogTail(20))
		}
		second, err := p.Run(ctx, exe, "exit", "3")
		if err != nil || second.Code != 3 {
			t.Fatalf("prng.exe exit 3: %v, code %d", err, second.Code)
		}
		if second.Stdout == first.Stdout {
			t.Errorf("two runs printed the same random bytes %q: ProcessPrng is not random", first.Stdout)
		}
	})

	t.Run("registry", func(t *testing.T) {
		const key = `HKLM\Software\presencebridge-test`
		for _, args := range [][]string{{"/v", "Text", "/t", "REG_SZ", "/d", "a value"}, {"/v", "Number", "/t", "REG_DWORD", "/d", "42"}} {
			if r, err := p.Run(ctx, "reg", append([]string{"add", key}, append(args, "/f")...)...); err != nil || r.Code != 0 {
				t.Fatalf("reg add %v: %v %+v", args, err, r)
			}
		}
		for name, want := range map[string]string{"Text": "a value", "Number": "0x2a"} {
			if got, err := p.RegValue(ctx, key, name); err != nil || got != want {
				t.Errorf("RegValue %s = %q, %v; want %q", name, got, err, want)
			}
		}
		if _, err := p.RegValue(ctx, key, "Missing"); !errors.Is(err, ErrNoValue) {
			t.Errorf("RegValue of a missing value: %v; want ErrNoValue", err)
		}
	})

	t.Run("service manager", func(t *testing.T) {
		// Wine's Event Log service runs in every session.
		st, err := p.ServiceStatus(ctx, "eventlog")
		if err != nil || st.State != Running || st.StateName != "RUNNING" {
			t.Errorf("eventlog service: %+v, %v", st, err)
		}
		if _, err := p.ServiceStatus(ctx, "presencebridge-none"); !errors.Is(err, ErrNoService) {
			t.Errorf("status of a service that is not installed: %v; want ErrNoService", err)
		}
	})

	t.Run("paths", func(t *testing.T) {
		if got := p.Path(`C:\windows\system32\bcryptprimitives.dll`); got != filepath.Join(p.Dir, "drive_c/windows/system32/bcryptprimitives.dll") {
			t.Errorf("Path = %s", got)
		} else if _, err := os.Stat(got); err != nil {
			t.Errorf("the stand-in is not in system32: %v", err)
		}
		// A program given a Z: path reads the Linux file.
		if got := p.WinPath("/tmp/x y"); got != `Z:\tmp\x y` {
			t.Errorf("WinPath = %s", got)
		}
		f := filepath.Join(t.TempDir(), "probe.txt")
		os.WriteFile(f, []byte("hello from Linux\r\n"), 0o644)
		if r, err := p.Run(ctx, "cmd", "/c", "type", p.WinPath(f)); err != nil || r.Stdout != "hello from Linux\n" {
			t.Errorf("cmd /c type %s: %v, %+v", p.WinPath(f), err, r)
		}
	})

	t.Run("close ends every process", func(t *testing.T) {
		sleeper := p.Command(context.Background(), exe, "sleep")
		out, err := sleeper.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		// It runs once it has printed its line.
		if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
			t.Fatalf("the sleeping program did not start: %v", err)
		}
		exited := make(chan struct{})
		go func() { io.Copy(io.Discard, out); sleeper.Wait(); close(exited) }()
		server := p.server.Process.Pid
		p.Close()
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			sleeper.Process.Kill()
			t.Fatal("a Windows program of the prefix outlived Close")
		}
		if err := exec.Command("kill", "-0", fmt.Sprint(server)).Run(); err == nil {
			t.Errorf("wineserver (pid %d) outlived Close", server)
		}
		// No process still runs from the prefix (services.exe, the Event Log ...).
		if left := processesOf(t, p.Dir); len(left) > 0 {
			t.Errorf("processes of the prefix left after Close: %v", left)
		}
	})
}

// testLog writes the harness's log lines to the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// processesOf lists the live processes whose environment names the prefix.
func processesOf(t *testing.T, prefix string) []string {
	t.Helper()
	if runtime.GOOS != "linux" {
		return nil
	}
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, e := range procs {
		env, err := os.ReadFile(e)
		if err != nil || !strings.Contains(string(env), "WINEPREFIX="+prefix+"\x00") {
			continue
		}
		status, _ := os.ReadFile(filepath.Join(filepath.Dir(e), "stat"))
		if f := strings.Fields(string(status)); len(f) > 2 && f[2] == "Z" {
			continue // a zombie: ended, not yet reaped by its parent
		}
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(e), "cmdline"))
		left = append(left, strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return left
}

// EventLog reads ReportEvent's text as Wine's eventlog channel writes it.
func TestEventLogLines(t *testing.T) {
	dir := t.TempDir()
	p := &Prefix{Dir: filepath.Join(dir, "prefix"), logPath: filepath.Join(dir, "wine.log")}
	log := strings.Join([]string{
		`00b4:trace:eventlog:ServiceMain starting Event Log Service`,
		`014c:warn:eventlog:ReportEventW L"level=WARN msg=\"Account has no users\" account=main"`,
		`01e0:err:eventlog:ReportEventW L"presencebridge: Presence.ini:72: [Polling] Interval = \"10 minutes\": not a duration"`,
		`0148:trace:eventlog:ReportEventW L"level=INFO folder=C:\\ProgramData\\presencebridge tab\there \x00e9"`,
		`0148:trace:eventlog:ReportEventW L"a long line cut by Wine"...`,
		`wine: some other line`,
	}, "\n")
	os.WriteFile(p.logPath, []byte(log+"\n"), 0o644)
	got, err := p.EventLog()
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{"warning", `level=WARN msg="Account has no users" account=main`},
		{"error", `presencebridge: Presence.ini:72: [Polling] Interval = "10 minutes": not a duration`},
		{"information", "level=INFO folder=C:\\ProgramData\\presencebridge tab\there é"},
		{"information", "a long line cut by Wine..."},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("EventLog =\n%q\nwant\n%q", got, want)
	}
}

// Without Wine, Require skips a developer's run but fails CI's.
func TestRequireFailsUnderCI(t *testing.T) {
	testkit.CheckToolUnderCI(t, "WINE", "apt-get install", func(tb testing.TB) { Require(tb) })
}
