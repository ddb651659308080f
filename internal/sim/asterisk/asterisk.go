// Package asterisk starts a real Asterisk 22 (the build in ../shared/pbx beside
// the repository, see Find) on loopback as a second PBX for presencebridge's
// tests: phones that register and call each other through it, dialplan hints
// that combine each phone with the device states presencebridge drives (ARI
// Stasis:, AMI Custom:), and the SUBSCRIBE Event: dialog / presence service that
// BLF keys and presencebridge's watcher use.
package asterisk

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/procgroup"
)

//go:embed conf/*.conf
var confFiles embed.FS

// Options configure one Asterisk instance. Empty fields get the defaults named.
type Options struct {
	// Dir is the instance's work folder: etc/ (the configuration written here),
	// db/ (astdb: device states persist there across Restart), asterisk.log.
	// Required; tests pass t.TempDir().
	Dir string
	// Domain is the host tests put in SIP URIs (sip:1000@Domain) and the digest
	// realm. Asterisk itself serves any host part. Default "pbx.example".
	Domain string
	// Users are the phones: extension -> digest password. Each gets a PJSIP
	// endpoint (auth and one registered contact), a hint and a Dial() of its
	// own extension. Default 1000 and 1001 with generated passwords.
	Users map[string]string
	// Subscriber is the endpoint presencebridge's own watcher SUBSCRIBEs as,
	// with digest auth (user Subscriber, SubscriberPassword). Default
	// "presencebridge" with a generated password.
	Subscriber, SubscriberPassword string
	// ARIUser and ARIPassword are the ari.conf user. Default "presencebridge"
	// with a generated password.
	ARIUser, ARIPassword string
	// AMIUser and AMIPassword are the manager.conf user (read and write all).
	// Default "presencebridge" with a generated password.
	AMIUser, AMIPassword string
	// Hint is the devices of each user's hint, with {ext} replaced by the
	// extension. Default "PJSIP/{ext}&Stasis:teams-{ext}&Custom:teams-{ext}":
	// the phone, the ARI-driven device and the AMI-driven one.
	Hint string
	// Dialplan is added to the users' context as it is (e.g. an extension that
	// branches on DEVICE_STATE(Stasis:teams-1000)).
	Dialplan string
	// SIPDebug logs every SIP message to asterisk.log (pjsip debug=yes).
	SIPDebug bool
	// Logger gets one line per start and stop; nil discards.
	Logger *slog.Logger
}

// Context is the dialplan context of every endpoint: the users' extensions and
// hints, and Options.Dialplan.
const Context = "phones"

// Watcher is the endpoint that may SUBSCRIBE without authentication: the From
// user of internal/sim/kamailio's independent watcher (kamailio.WatchEvent).
const Watcher = "watcher"

// Server is a running Asterisk. Stop it with Stop.
type Server struct {
	SIPAddr string            // 127.0.0.1:port of the SIP UDP transport
	Domain  string            // Options.Domain: the host of URI and the digest realm
	Users   map[string]string // extension -> digest password (Options.Users)
	// Subscriber and SubscriberPassword: presencebridge's SUBSCRIBE endpoint.
	Subscriber, SubscriberPassword string
	ARIURL                         string // http://127.0.0.1:port/ari
	ARIUser, ARIPassword           string
	AMIAddr                        string // 127.0.0.1:port of the manager interface
	AMIUser, AMIPassword           string

	home     string  // the unpacked Asterisk (Find)
	opts     Options // as filled in by Start, for Restart
	ports    []int   // SIP, HTTP, AMI
	run      string  // astrundir (control socket)
	shortRun bool    // run is a folder of its own in the system's temp folder
	cmd      *exec.Cmd
	logFile  *os.File
	done     chan struct{}
	stopOnce sync.Once
}

// URI is the SIP URI of an extension here, e.g. "sip:1000@pbx.example".
func (s *Server) URI(ext string) string { return "sip:" + ext + "@" + s.Domain }

// Start writes the configuration into Dir/etc, runs Asterisk in the foreground
// in its own session on free loopback ports, and returns once it is fully
// booted (`core waitfullybooted`) and holds its SIP, HTTP and AMI ports (under
// a second; it gives up after 15 s with the log tail in the error). ctx bounds the
// start only, not the server's life.
func Start(ctx context.Context, o Options) (*Server, error) {
	home, err := Find()
	if err != nil {
		return nil, err
	}
	if err := o.fill(); err != nil {
		return nil, err
	}
	// Another process may take a port between FreePorts and Asterisk's bind:
	// try again on fresh ports then.
	return procgroup.RetryPortTaken(o.Logger, "Asterisk", func() (*Server, error) { return launch(ctx, home, o, nil) })
}

// fill validates o and sets defaults.
func (o *Options) fill() error {
	if o.Dir == "" {
		return errors.New("asterisk.Start: Options.Dir is required (a work folder, e.g. t.TempDir())")
	}
	dir, err := filepath.Abs(o.Dir) // asterisk.conf names folders by absolute path
	if err != nil {
		return fmt.Errorf("asterisk.Start: Options.Dir %q: %w", o.Dir, err)
	}
	o.Dir = dir
	if o.Domain == "" {
		o.Domain = "pbx.example"
	}
	if !isName(o.Domain, ".-") {
		return fmt.Errorf("asterisk.Start: Domain %q is not a host name", o.Domain)
	}
	if o.Users == nil {
		o.Users = map[string]string{"1000": password(), "1001": password()}
	} else {
		o.Users = copyMap(o.Users)
	}
	if o.Subscriber == "" {
		o.Subscriber = "presencebridge"
	}
	for ext, pw := range o.Users {
		if !isName(ext, "") {
			return fmt.Errorf("asterisk.Start: extension %q: use letters and digits only", ext)
		}
		if ext == o.Subscriber || ext == Watcher {
			return fmt.Errorf("asterisk.Start: extension %q is also the name of the %s endpoint", ext, ext)
		}
		if !isSecret(pw) {
			return fmt.Errorf("asterisk.Start: the password of extension %s is empty or holds a character a .conf file cannot carry", ext)
		}
	}
	if !isName(o.Subscriber, "-_") || o.Subscriber == Watcher {
		return fmt.Errorf("asterisk.Start: Subscriber %q: use letters, digits, - and _, and not %q", o.Subscriber, Watcher)
	}
	for _, c := range []struct {
		name      string
		user, pwd *string
	}{{"Subscriber", nil, &o.SubscriberPassword}, {"ARI", &o.ARIUser, &o.ARIPassword}, {"AMI", &o.AMIUser, &o.AMIPassword}} {
		if c.user != nil {
			if *c.user == "" {
				*c.user = "presencebridge"
			}
			if !isName(*c.user, "-_") {
				return fmt.Errorf("asterisk.Start: %sUser %q: use letters, digits, - and _", c.name, *c.user)
			}
		}
		if *c.pwd == "" {
			*c.pwd = password()
		}
		if !isSecret(*c.pwd) {
			return fmt.Errorf("asterisk.Start: the %s password holds a character a .conf file cannot carry", c.name)
		}
	}
	if o.Hint == "" {
		o.Hint = "PJSIP/{ext}&Stasis:teams-{ext}&Custom:teams-{ext}"
	}
	if strings.ContainsAny(o.Hint, "\r\n;") {
		return fmt.Errorf("asterisk.Start: Hint %q: one line of devices joined by &, without ;", o.Hint)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// isName reports whether v is non-empty and made of ASCII letters, digits and
// the characters in extra.
func isName(v, extra string) bool {
	return v != "" && strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"+extra) == ""
}

// isSecret reports whether a password can stand in a .conf value: not empty,
// printable, no ";" (a comment) and no surrounding blanks.
func isSecret(v string) bool {
	if v == "" || strings.TrimSpace(v) != v || strings.Contains(v, ";") {
		return false
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// password is a generated password: 16 hex digits.
func password() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func copyMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Restart stops s and starts Asterisk again on the same ports and in the same
// folder, as a PBX restarted by its admin: astdb (device states, registrations)
// persists. s is stopped either way; use the returned Server.
func (s *Server) Restart(ctx context.Context) (*Server, error) {
	s.Stop()
	return launch(ctx, s.home, s.opts, s.ports)
}

// user is one phone as the templates see it.
type user struct{ Ext, Password, Hint string }

// launch starts one Asterisk on ports (nil: fresh ones) and waits for it.
func launch(ctx context.Context, home string, o Options, ports []int) (*Server, error) {
	if ports == nil {
		var err error
		if ports, err = procgroup.FreePorts(3); err != nil {
			return nil, err
		}
	}
	s := &Server{SIPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]), Domain: o.Domain, Users: copyMap(o.Users),
		Subscriber: o.Subscriber, SubscriberPassword: o.SubscriberPassword,
		ARIURL: fmt.Sprintf("http://127.0.0.1:%d/ari", ports[1]), ARIUser: o.ARIUser, ARIPassword: o.ARIPassword,
		AMIAddr: fmt.Sprintf("127.0.0.1:%d", ports[2]), AMIUser: o.AMIUser, AMIPassword: o.AMIPassword,
		home: home, opts: o, ports: ports, done: make(chan struct{})}
	if err := s.writeConfig(); err != nil {
		s.removeRun()
		return nil, err
	}
	var err error
	s.logFile, err = os.OpenFile(filepath.Join(o.Dir, "asterisk.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.removeRun()
		return nil, fmt.Errorf("asterisk log: %w", err)
	}
	// -f: foreground, -n: no colour codes in the log.
	s.cmd = exec.Command(filepath.Join(home, "sbin", "asterisk"), "-C", s.confPath(), "-f", "-n")
	s.cmd.Env = s.env()
	s.cmd.Dir = o.Dir
	s.cmd.Stdout, s.cmd.Stderr = s.logFile, s.logFile
	s.cmd.SysProcAttr = procgroup.Attr(syscall.SIGTERM)
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		s.logFile.Close()
		s.removeRun()
		return nil, fmt.Errorf("start %s: %w", s.cmd.Path, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx, 15*time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w (config %s)\nasterisk log:\n%s", err, s.confPath(), s.LogTail(30))
	}
	o.Logger.Info("Asterisk ready", "sip", s.SIPAddr, "ari", s.ARIURL, "ami", s.AMIAddr,
		"pid", s.cmd.Process.Pid, "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

// confPath is the asterisk.conf that names every folder.
func (s *Server) confPath() string { return filepath.Join(s.opts.Dir, "etc", "asterisk.conf") }

// env is the environment of Asterisk and of its remote console: its own
// libraries (libasteriskpj, libasteriskssl) come from home/lib.
func (s *Server) env() []string {
	return append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(s.home, "lib"))
}

// maxSocketPath is the longest path of a Unix socket Linux takes (sun_path
// holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// writeConfig writes Dir/etc/*.conf and makes the folders they name. The run
// folder (the control socket, asterisk.ctl) is Dir/run unless that path is too
// long for a Unix socket; then it is a folder of its own in the system's temp
// folder, removed by Stop.
func (s *Server) writeConfig() error {
	o := s.opts
	etc := filepath.Join(o.Dir, "etc")
	for _, d := range []string{"etc", "var", "db", "keys", "spool", "cache", "agi", "log"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o700); err != nil {
			return fmt.Errorf("asterisk work folder: %w", err)
		}
	}
	s.run = filepath.Join(o.Dir, "run")
	if len(filepath.Join(s.run, "asterisk.ctl")) > maxSocketPath {
		run, err := os.MkdirTemp("", "pb-asterisk-")
		if err != nil {
			return fmt.Errorf("asterisk run folder: %w", err)
		}
		s.run, s.shortRun = run, true
	} else if err := os.MkdirAll(s.run, 0o700); err != nil {
		return fmt.Errorf("asterisk work folder: %w", err)
	}
	exts := make([]string, 0, len(o.Users))
	for ext := range o.Users {
		exts = append(exts, ext)
	}
	sort.Strings(exts)
	users := make([]user, len(exts))
	for i, ext := range exts {
		users[i] = user{Ext: ext, Password: o.Users[ext], Hint: strings.ReplaceAll(o.Hint, "{ext}", ext)}
	}
	data := map[string]any{"Version": Version, "Home": s.home, "Dir": o.Dir, "Etc": etc, "Run": s.run, "Verbose": 1,
		"SIPPort": s.ports[0], "HTTPPort": s.ports[1], "AMIPort": s.ports[2], "Domain": o.Domain, "Context": Context,
		"Users": users, "Subscriber": o.Subscriber, "SubscriberPassword": o.SubscriberPassword, "Watcher": Watcher,
		"ARIUser": o.ARIUser, "ARIPassword": o.ARIPassword, "AMIUser": o.AMIUser, "AMIPassword": o.AMIPassword,
		"Dialplan": strings.TrimSpace(o.Dialplan), "SIPDebug": o.SIPDebug}
	// Files Asterisk reads at start and logs an ERROR or WARNING for when they
	// are missing: empty ones (its defaults) keep asterisk.log to what matters.
	for _, name := range []string{"acl.conf", "ccss.conf", "cdr.conf", "cel.conf", "features.conf", "indications.conf",
		"pjproject.conf", "stasis.conf", "udptl.conf", "websocket_client.conf"} {
		p := filepath.Join(etc, name)
		if err := os.WriteFile(p, []byte("; Asterisk's defaults (presencebridge test PBX)\n"), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	files, err := confFiles.ReadDir("conf")
	if err != nil {
		return err
	}
	for _, f := range files {
		raw, err := confFiles.ReadFile("conf/" + f.Name())
		if err != nil {
			return err
		}
		var b bytes.Buffer
		if err := template.Must(template.New(f.Name()).Parse(string(raw))).Execute(&b, data); err != nil {
			return fmt.Errorf("asterisk %s template: %w", f.Name(), err)
		}
		p := filepath.Join(etc, f.Name())
		if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// waitReady waits for the control socket, then for `core waitfullybooted`, then
// until Asterisk itself holds its SIP, HTTP and AMI ports (it boots on when a
// bind fails, so an answer on a port could be another process's).
func (s *Server) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	ctl := filepath.Join(s.run, "asterisk.ctl")
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		if _, err := os.Stat(ctl); err == nil {
			break
		}
		select {
		case <-s.done:
			return errors.New("asterisk exited during start")
		case <-ctx.Done():
			return fmt.Errorf("asterisk made no control socket %s within %s: %w", ctl, limit, ctx.Err())
		case <-poll.C:
		}
	}
	for {
		out, err := s.CLI(ctx, "core waitfullybooted")
		if err == nil && strings.Contains(out, "fully booted") {
			break
		}
		select {
		case <-s.done:
			return errors.New("asterisk exited during start")
		case <-ctx.Done():
			return fmt.Errorf("asterisk not fully booted within %s (last answer %q, %v)", limit, out, err)
		case <-poll.C:
		}
	}
	// The listeners are bound while the modules load, before "fully booted";
	// a short grace covers a slow /proc read all the same.
	var missing []string
	for range 50 {
		if missing = s.portsNotHeld(); len(missing) == 0 {
			return nil
		}
		select {
		case <-s.done:
			return errors.New("asterisk exited during start")
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		}
	}
	return fmt.Errorf("%w: asterisk does not hold %s", procgroup.ErrPortTaken, strings.Join(missing, ", "))
}

// portsNotHeld lists the listeners Asterisk's process does not hold.
func (s *Server) portsNotHeld() []string {
	mine := socketInodes(s.cmd.Process.Pid)
	var missing []string
	for _, l := range []struct {
		what, table string
		port        int
	}{{"SIP udp", "udp", s.ports[0]}, {"HTTP tcp", "tcp", s.ports[1]}, {"AMI tcp", "tcp", s.ports[2]}} {
		if !mine[boundInode(l.table, l.port)] {
			missing = append(missing, fmt.Sprintf("%s 127.0.0.1:%d", l.what, l.port))
		}
	}
	return missing
}

// CLI runs one command on Asterisk's console (`asterisk -rx`) and returns what
// it printed, e.g. CLI(ctx, "core show hints").
func (s *Server) CLI(ctx context.Context, command string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.home, "sbin", "asterisk"), "-C", s.confPath(), "-rx", command)
	cmd.Env = s.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("asterisk -rx %q: %w", command, err)
	}
	return string(out), nil
}

// SetDeviceState sets a device Asterisk's ARI controls (device "teams-1000" is
// Stasis:teams-1000, which the default hints name) to state (NOT_INUSE, INUSE,
// BUSY, UNAVAILABLE, RINGING, ONHOLD...) with PUT /ari/deviceStates: a test's
// way to make a hint busy or idle without a call.
func (s *Server) SetDeviceState(ctx context.Context, device, state string) error {
	u := s.ARIURL + "/deviceStates/" + url.PathEscape("Stasis:"+device) + "?deviceState=" + url.QueryEscape(state)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(s.ARIUser, s.ARIPassword)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ARI PUT device state %s=%s: %w", device, state, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
	if res.StatusCode != http.StatusNoContent {
		return fmt.Errorf("ARI PUT device state %s=%s: %s %s", device, state, res.Status, bytes.TrimSpace(body))
	}
	return nil
}

// Stop ends Asterisk: SIGTERM to its PID (it shuts down and closes astdb), then
// SIGKILL to its group after 5 s; whatever is left in its group goes too. Safe
// to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		pid := s.cmd.Process.Pid
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.opts.Logger.Warn("Asterisk ignored SIGTERM for 5 s, killing it", "pid", pid)
			procgroup.Kill(pid)
			<-s.done
		}
		procgroup.Kill(pid)
		s.logFile.Close()
		s.removeRun()
		s.opts.Logger.Info("Asterisk stopped", "sip", s.SIPAddr)
	})
	return nil
}

// PID is the process ID of the Asterisk process.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// removeRun removes a run folder of its own (see writeConfig).
func (s *Server) removeRun() {
	if s.shortRun {
		os.RemoveAll(s.run)
	}
}

// LogTail returns the last n lines of Dir/asterisk.log, for test failure messages.
func (s *Server) LogTail(n int) string {
	raw, _ := os.ReadFile(filepath.Join(s.opts.Dir, "asterisk.log"))
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
