// Package wine runs presencebridge's Windows code in presencebridge's tests: a
// throwaway Wine prefix (Debian's wine and wine64) with its own wineserver, the
// ProcessPrng stand-in DLL that Go programs need under Wine 8 (built from
// testdata/bcryptprimitives.c with Debian's gcc-mingw-w64-x86-64), and helpers
// to run Windows programs, msiexec, sc and net, and to read the registry and
// what the Event Log was told.
//
// What Wine shows and what it does not (checked with Wine 8.0 on Debian 12):
// programs, the service manager (services run in session 1, not 0), msiexec
// with custom actions, DPAPI and the registry behave; ACLs are neither kept nor
// enforced (a file's DACL is derived from its Unix mode bits); the Event Log
// has no reader (wevtutil is a stub), so ReportEvent's text is read from
// Wine's "eventlog" debug channel instead, long texts cut short; recovery
// actions are accepted but not stored (QueryServiceConfig2 fails).
package wine

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/procgroup"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

//go:embed testdata/bcryptprimitives.c
var processPrngSource []byte

// installHint is how to get what the harness needs on Debian or Ubuntu.
const installHint = "apt-get install -y wine wine64 gcc-mingw-w64-x86-64"

// Tools are the programs the harness runs.
type Tools struct {
	Loader string // the 64-bit loader, e.g. /usr/lib/wine/wine64
	Server string // wineserver, e.g. /usr/lib/wine/wineserver
	CC     string // x86_64-w64-mingw32-gcc, for the ProcessPrng stand-in
}

// Find returns the Wine loader, wineserver and the MinGW compiler. WINE and
// WINESERVER point at other binaries (or at missing ones, to check Require).
func Find() (Tools, error) {
	if !procgroup.Supported {
		return Tools{}, errors.New("the Wine test harness runs on Linux only")
	}
	loaders := []string{"wine64", "/usr/lib/wine/wine64", "/usr/lib64/wine/wine64", "/opt/wine-stable/bin/wine64"}
	if env := os.Getenv("WINE"); env != "" {
		loaders = []string{env}
	}
	var t Tools
	for _, l := range loaders {
		if p, err := exec.LookPath(l); err == nil {
			t.Loader = p
			break
		}
	}
	if t.Loader == "" {
		return Tools{}, errors.New("the 64-bit Wine loader (wine64) is not installed (install it with: " + installHint + ")")
	}
	servers := []string{filepath.Join(filepath.Dir(t.Loader), "wineserver"), "wineserver"}
	if env := os.Getenv("WINESERVER"); env != "" {
		servers = []string{env}
	}
	for _, s := range servers {
		if p, err := exec.LookPath(s); err == nil {
			t.Server = p
			break
		}
	}
	if t.Server == "" {
		return Tools{}, errors.New("wineserver is not installed (install it with: " + installHint + ")")
	}
	cc, err := exec.LookPath("x86_64-w64-mingw32-gcc")
	if err != nil {
		return Tools{}, errors.New("x86_64-w64-mingw32-gcc is not installed; it builds the ProcessPrng stand-in Go programs need under Wine 8 (install it with: " + installHint + ")")
	}
	t.CC = cc
	return t, nil
}

// Require returns the tools. When one is missing it skips t, or fails it when
// the environment has CI=true: CI must run the Windows tests, never skip them.
func Require(t testing.TB) Tools {
	t.Helper()
	tools, err := Find()
	testkit.Tool(t, "the Windows test under Wine", err)
	return tools
}

// Options configure a prefix.
type Options struct {
	// Dir holds the prefix (Dir/prefix), Wine's log (Dir/wine.log) and its
	// processes' TMPDIR (Dir/tmp). Required; tests pass t.TempDir().
	Dir string
	// Logger gets a line per boot and close; nil discards.
	Logger *slog.Logger
}

// Prefix is a booted Wine prefix with its own wineserver. Close it.
type Prefix struct {
	Dir string // WINEPREFIX

	tools     Tools
	log       *slog.Logger
	tmp       string // TMPDIR of its processes
	logPath   string
	logFile   *os.File
	server    *exec.Cmd
	serverEnd chan struct{}
	closeOnce sync.Once
}

// commandDebug is WINEDEBUG for the programs the tests run: Wine's own
// messages off, the program's output alone on stdout and stderr.
const commandDebug = "-all"

// sessionDebug is WINEDEBUG for the session (services.exe and every service it
// starts): the eventlog channel on, so ReportEvent's text reaches wine.log.
const sessionDebug = "-all,+eventlog"

// Boot creates a prefix under o.Dir: wineboot --init (about 6 s), the ProcessPrng
// stand-in in system32, then a wineserver of its own that lives until Close
// (killed with the test process should it die first), and the session's
// services with their output in Dir/wine.log. No display is used.
func Boot(ctx context.Context, o Options) (*Prefix, error) {
	tools, err := Find()
	if err != nil {
		return nil, err
	}
	if o.Dir == "" {
		return nil, errors.New("wine.Boot: Options.Dir is required (a work folder, e.g. t.TempDir())")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	built := time.Now()
	dll, err := processPrngDLL(ctx, tools.CC)
	if err != nil {
		return nil, err
	}
	o.Logger.Debug("ProcessPrng stand-in ready", "dll", dll, "took", time.Since(built).Round(time.Millisecond))
	p := &Prefix{Dir: filepath.Join(o.Dir, "prefix"), tools: tools, log: o.Logger, logPath: filepath.Join(o.Dir, "wine.log"),
		tmp: filepath.Join(o.Dir, "tmp"), serverEnd: make(chan struct{})}
	if err := os.MkdirAll(p.tmp, 0o700); err != nil {
		return nil, err
	}
	if p.logFile, err = os.Create(p.logPath); err != nil {
		return nil, err
	}
	start := time.Now()
	// wineboot --init under a wineserver of its own, which -k then ends (the
	// registry is saved): the prefix is complete before the session starts.
	boot := p.command(ctx, commandDebug, tools.Loader, "wineboot", "--init")
	boot.Stdout, boot.Stderr = p.logFile, p.logFile
	if err := boot.Run(); err != nil {
		// What wineboot started goes with its wineserver.
		_ = p.command(context.Background(), commandDebug, tools.Server, "-k").Run()
		p.logFile.Close()
		return nil, fmt.Errorf("wineboot --init in %s: %w\n%s", p.Dir, err, p.LogTail(20))
	}
	if out, err := p.command(ctx, commandDebug, tools.Server, "-k").CombinedOutput(); err != nil && !isExit(err, 1) {
		p.logFile.Close()
		return nil, fmt.Errorf("wineserver -k after wineboot: %w: %s", err, out)
	}
	o.Logger.Debug("wineboot --init done", "took", time.Since(start).Round(time.Millisecond))
	if err := installDLL(dll, p.Dir); err != nil {
		p.logFile.Close()
		return nil, err
	}
	if err := p.startServer(ctx); err != nil {
		p.logFile.Close()
		return nil, err
	}
	// The session: the first program on the new server starts services.exe,
	// which keeps this program's stderr (wine.log) and WINEDEBUG for itself and
	// the services it starts.
	session := p.command(ctx, sessionDebug, tools.Loader, "wineboot")
	session.Stdout, session.Stderr = p.logFile, p.logFile
	if err := session.Run(); err != nil {
		p.Close()
		return nil, fmt.Errorf("start the Wine session in %s: %w\n%s", p.Dir, err, p.LogTail(20))
	}
	o.Logger.Info("Wine prefix ready", "prefix", p.Dir, "took", time.Since(start).Round(time.Millisecond))
	return p, nil
}

// startServer runs wineserver in the foreground, persistent, as a child of
// this process, and waits until it serves the prefix.
func (p *Prefix) startServer(ctx context.Context) error {
	// wineserver works in $TMPDIR/wine-XXXXXX/server-DEV-INODE: once its
	// working folder is that one, it is about to listen there.
	serverDir, err := serverDirName(p.Dir)
	if err != nil {
		return err
	}
	p.server = p.command(context.Background(), commandDebug, p.tools.Server, "--foreground", "--persistent")
	p.server.Stdout, p.server.Stderr = p.logFile, p.logFile
	// Its own group; SIGKILL ends it should the test process die without Close:
	// its clients (every Wine process of the prefix, services included) then
	// exit with it.
	p.server.SysProcAttr = procgroup.Attr(syscall.SIGKILL)
	if err := p.server.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.tools.Server, err)
	}
	go func() { _ = p.server.Wait(); close(p.serverEnd) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", p.server.Process.Pid)); err == nil && filepath.Base(cwd) == serverDir {
			if _, err := os.Stat(filepath.Join(cwd, "socket")); err == nil {
				return nil
			}
		}
		select {
		case <-p.serverEnd:
			return fmt.Errorf("wineserver exited at start\n%s", p.LogTail(20))
		case <-ctx.Done():
			p.killServer()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.killServer()
			return fmt.Errorf("wineserver did not serve %s within 10 s", p.Dir)
		}
	}
}

func (p *Prefix) killServer() {
	procgroup.Kill(p.server.Process.Pid)
	<-p.serverEnd
}

// Close ends every Wine process of the prefix (wineserver -k, which also ends
// the server), waits for the server and keeps the prefix folder (the test's
// temp dir removes it). Safe to call more than once.
func (p *Prefix) Close() error {
	p.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := p.command(ctx, commandDebug, p.tools.Server, "-k").CombinedOutput(); err != nil && !isExit(err, 1) {
			p.log.Warn("wineserver -k failed", "prefix", p.Dir, "err", err.Error(), "output", string(out))
		}
		select {
		case <-p.serverEnd:
		case <-time.After(10 * time.Second):
			p.log.Warn("wineserver still running 10 s after -k, killing it", "pid", p.server.Process.Pid)
			p.killServer()
		}
		// A program started just before could have started a wineserver of its
		// own once ours was gone: that one goes too.
		_ = p.command(ctx, commandDebug, p.tools.Server, "-k").Run()
		p.logFile.Close()
		p.log.Info("Wine prefix closed", "prefix", p.Dir)
	})
	return nil
}

// environ is the environment of every Wine process: only what Wine needs, so
// that nothing from the test's environment (a proxy, PRESENCEBRIDGE_CONFIG, a
// display) reaches the Windows programs or the services.
func (p *Prefix) environ(debug string) []string {
	env := []string{
		"WINEPREFIX=" + p.Dir,
		"WINEDEBUG=" + debug,
		// No Mono or Gecko installers, no desktop menu entries.
		"WINEDLLOVERRIDES=winemenubuilder.exe=d;mscoree=d;mshtml=d",
		"LANG=C.UTF-8",
		// wineserver makes a socket folder per server in TMPDIR (and names it
		// in the prefix): it goes with the test's folder, not /tmp.
		"TMPDIR=" + p.tmp,
	}
	for _, k := range []string{"PATH", "HOME", "USER", "LOGNAME"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func (p *Prefix) command(ctx context.Context, debug, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = p.environ(debug)
	cmd.Dir = filepath.Dir(p.Dir) // the prefix folder does not exist before wineboot
	return cmd
}

// Command is a Windows program run by the Wine loader in the prefix: prog is a
// program of the prefix ("msiexec", `C:\Program Files\x\x.exe`) or a Linux path
// to an .exe. The caller sets its output and runs it; ctx kills it.
func (p *Prefix) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	return p.command(ctx, commandDebug, p.tools.Loader, append([]string{prog}, args...)...)
}

// Result is what a program printed and how it ended. Wine's own programs end
// their lines with CRLF; Stdout and Stderr have LF. Code is the exit code as
// Linux sees it: the low 8 bits of the Windows one (msiexec's 1603, "fatal
// error", is 67).
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Out is Stdout and Stderr together, for messages.
func (r Result) Out() string { return r.Stdout + r.Stderr }

// Run runs prog (see Command) to its end. The error is for a program that could
// not run or ran out of ctx; a program that failed has a non-zero Result.Code.
func (p *Prefix) Run(ctx context.Context, prog string, args ...string) (Result, error) {
	cmd := p.Command(ctx, prog, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: crlf(out.String()), Stderr: crlf(errb.String())}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return r, fmt.Errorf("wine %s %s: %w", prog, strings.Join(args, " "), ctx.Err())
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		return r, fmt.Errorf("wine %s: %w", prog, err)
	}
	return r, nil
}

func crlf(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }

// Service states as sc query prints them (SERVICE_STOPPED ... SERVICE_PAUSED).
const (
	Stopped         = 1
	StartPending    = 2
	StopPending     = 3
	Running         = 4
	ContinuePending = 5
	PausePending    = 6
	Paused          = 7
)

// ServiceStatus is a service's state from sc query.
type ServiceStatus struct {
	State           int    // Stopped, Running, ...
	StateName       string // "STOPPED", "RUNNING", ...
	Win32ExitCode   uint32 // 1066 (ERROR_SERVICE_SPECIFIC_ERROR) when ServiceExitCode is set
	ServiceExitCode uint32 // the service-specific exit code
}

// ErrNoService is returned for a service that is not installed.
var ErrNoService = errors.New("no such service")

var scField = regexp.MustCompile(`(?m)^\s*(STATE|WIN32_EXIT_CODE|SERVICE_EXIT_CODE)\s*:\s*(\d+)\s*(\S*)`)

// ServiceStatus queries a service with sc query (Wine's sc knows create, delete,
// start, stop and query; no qc or config).
func (p *Prefix) ServiceStatus(ctx context.Context, name string) (ServiceStatus, error) {
	r, err := p.Run(ctx, "sc", "query", name)
	if err != nil {
		return ServiceStatus{}, err
	}
	m := scField.FindAllStringSubmatch(r.Stdout, -1)
	if len(m) == 0 {
		if r.Code != 0 && strings.TrimSpace(r.Out()) == "" {
			return ServiceStatus{}, fmt.Errorf("sc query %s: %w", name, ErrNoService)
		}
		return ServiceStatus{}, fmt.Errorf("sc query %s: exit %d: %q", name, r.Code, r.Out())
	}
	var st ServiceStatus
	for _, f := range m {
		n, _ := strconv.ParseUint(f[2], 10, 32)
		switch f[1] {
		case "STATE":
			st.State, st.StateName = int(n), f[3]
		case "WIN32_EXIT_CODE":
			st.Win32ExitCode = uint32(n)
		case "SERVICE_EXIT_CODE":
			st.ServiceExitCode = uint32(n)
		}
	}
	return st, nil
}

// WaitService polls the service until it is in state (e.g. Running), and
// returns its last status; the error says the state it stayed in.
func (p *Prefix) WaitService(ctx context.Context, name string, state int, within time.Duration) (ServiceStatus, error) {
	deadline := time.Now().Add(within)
	for {
		st, err := p.ServiceStatus(ctx, name)
		if err == nil && st.State == state {
			return st, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return st, err
			}
			return st, fmt.Errorf("service %s is %s (%d) after %s, not in state %d", name, st.StateName, st.State, within, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ErrNoValue is returned for a registry key or value that does not exist.
var ErrNoValue = errors.New("no such registry key or value")

// RegValue reads a registry value with reg query, as reg prints it: REG_SZ
// text as is, a REG_DWORD as 0x..., REG_MULTI_SZ joined with \0.
func (p *Prefix) RegValue(ctx context.Context, key, name string) (string, error) {
	r, err := p.Run(ctx, "reg", "query", key, "/v", name)
	if err != nil {
		return "", err
	}
	if r.Code != 0 {
		if strings.Contains(r.Out(), "Unable to find") {
			return "", fmt.Errorf(`%s\%s: %w`, key, name, ErrNoValue)
		}
		return "", fmt.Errorf(`reg query %s /v %s: exit %d: %s`, key, name, r.Code, r.Out())
	}
	for _, line := range strings.Split(r.Stdout, "\n") {
		f := strings.SplitN(strings.TrimSpace(line), "    ", 3)
		if len(f) == 3 && strings.EqualFold(f[0], name) && strings.HasPrefix(f[1], "REG_") {
			return f[2], nil
		}
		if len(f) == 2 && strings.EqualFold(f[0], name) && strings.HasPrefix(f[1], "REG_") {
			return "", nil // an empty value
		}
	}
	return "", fmt.Errorf("reg query %s /v %s: no value in %q", key, name, r.Stdout)
}

// WinPath is a Linux path as Windows programs in the prefix see it (Z: is /).
func (p *Prefix) WinPath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return "Z:" + strings.ReplaceAll(abs, "/", `\`)
}

// Path is the Linux path of a C: path of the prefix (`C:\ProgramData\x`).
func (p *Prefix) Path(winPath string) string {
	rest, ok := strings.CutPrefix(winPath, `C:\`)
	if !ok {
		rest, _ = strings.CutPrefix(winPath, `c:\`)
	}
	return filepath.Join(p.Dir, "drive_c", filepath.FromSlash(strings.ReplaceAll(rest, `\`, "/")))
}

// Event is one ReportEvent call as Wine's eventlog channel shows it.
type Event struct {
	Type string // "error", "warning" or "information"
	Text string // the first string, unescaped; Wine cuts long ones (ending in ...)
}

var eventLine = regexp.MustCompile(`^[0-9a-f]+:(err|warn|trace):eventlog:ReportEventW L"(.*)"(\.\.\.)?$`)

// EventLog returns what services of this prefix reported to the Event Log so
// far, oldest first. Wine keeps no Event Log to query: ReportEvent writes its
// text to the eventlog debug channel (error events at err, warnings at warn,
// the rest at trace), which the session sends to wine.log.
func (p *Prefix) EventLog() ([]Event, error) {
	raw, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil, err
	}
	var events []Event
	for _, line := range strings.Split(string(raw), "\n") {
		m := eventLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		e := Event{Type: map[string]string{"err": "error", "warn": "warning", "trace": "information"}[m[1]], Text: unescapeDebugStr(m[2])}
		if m[3] != "" {
			e.Text += "..."
		}
		events = append(events, e)
	}
	return events, nil
}

// unescapeDebugStr undoes Wine's debugstr_w escapes (\" \\ \n \r \t \xNNNN).
func unescapeDebugStr(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'x':
			if i+4 < len(s) {
				if n, err := strconv.ParseUint(s[i+1:i+5], 16, 16); err == nil {
					b.WriteRune(rune(n))
					i += 4
					continue
				}
			}
			b.WriteByte('x')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// LogTail returns the last n lines of wine.log, for failure messages.
func (p *Prefix) LogTail(n int) string {
	raw, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func isExit(err error, code int) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == code
}

// The ProcessPrng stand-in is built once per test process, into a folder that
// Cleanup removes.
var dllBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func processPrngDLL(ctx context.Context, cc string) (string, error) {
	dllBuild.once.Do(func() {
		dllBuild.dir, dllBuild.err = os.MkdirTemp("", "presencebridge-wine-dll-")
		if dllBuild.err != nil {
			return
		}
		src := filepath.Join(dllBuild.dir, "bcryptprimitives.c")
		if dllBuild.err = os.WriteFile(src, processPrngSource, 0o644); dllBuild.err != nil {
			return
		}
		out := filepath.Join(dllBuild.dir, "bcryptprimitives.dll")
		cmd := exec.CommandContext(ctx, cc, "-shared", "-O2", "-s", "-o", out, src, "-ladvapi32")
		if b, err := cmd.CombinedOutput(); err != nil {
			dllBuild.err = fmt.Errorf("build the ProcessPrng stand-in: %s: %w\n%s", cc, err, b)
			return
		}
		dllBuild.path = out
	})
	return dllBuild.path, dllBuild.err
}

// installDLL copies the stand-in into the prefix's system32, unless Wine has a
// bcryptprimitives.dll of its own there (Wine 9 and later).
func installDLL(dll, prefix string) error {
	dst := filepath.Join(prefix, "drive_c", "windows", "system32", "bcryptprimitives.dll")
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	src, err := os.Open(dll)
	if err != nil {
		return err
	}
	defer src.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("install the ProcessPrng stand-in: %w", err)
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Cleanup removes the ProcessPrng stand-in built for this test process. Call it
// from TestMain after m.Run.
func Cleanup() {
	if dllBuild.dir != "" {
		os.RemoveAll(dllBuild.dir)
	}
}
