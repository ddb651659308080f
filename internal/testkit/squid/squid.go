// Package squid starts a real Squid (Debian's squid-openssl) on loopback for
// presencebridge's proxy tests: no authentication, Basic (basic_ncsa_auth with a
// password file written here), NTLM (ntlm_fake_auth, which accepts any user, so
// the handshake itself is what is tested), Negotiate carrying NTLM
// (negotiate_wrapper_auth), and TLS inspection (ssl-bump with a CA generated
// here). It reads Squid's access log back, so a test can assert that its traffic
// really went through the proxy and as which user.
package squid

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/procgroup"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

//go:embed squid.conf.tmpl
var confTemplate string

// Options configure one Squid instance. The zero value is a proxy without
// authentication that lets CONNECT through to any loopback port.
type Options struct {
	// Basic turns on Basic authentication with these users and passwords
	// (basic_ncsa_auth; the password file holds MD5-crypt hashes).
	Basic map[string]string
	// NTLM turns on NTLM authentication with ntlm_fake_auth: any user name and
	// password pass once the three-message handshake is complete.
	NTLM bool
	// Negotiate turns on Negotiate authentication through negotiate_wrapper_auth,
	// which hands NTLM tokens to ntlm_fake_auth (there is no Kerberos here).
	Negotiate bool
	// Bump turns on TLS inspection (ssl-bump): Squid decrypts every CONNECT
	// with certificates it mints from a CA generated for this instance
	// (Server.CAFile) and opens its own TLS connection to the target.
	Bump bool
	// UpstreamCAFile is a PEM file of CAs Squid trusts for the targets when
	// Bump is on (e.g. the simulated tenant's CA); Start copies it into Dir.
	UpstreamCAFile string
	// Hosts are extra names Squid resolves (name -> loopback IP), written to
	// its hosts file beside /etc/hosts' entries: a target can then have a
	// name that clients do not treat as loopback (Go's HTTPS_PROXY handling
	// never proxies localhost or 127.0.0.1).
	Hosts map[string]string
	// Logger gets one line per start and stop; nil discards.
	Logger *slog.Logger
}

// Server is a running Squid. Stop it with Stop.
type Server struct {
	Addr   string // 127.0.0.1:port of the proxy
	URL    string // http://127.0.0.1:port
	CAFile string // PEM CA of the ssl-bump certificates (empty without Options.Bump)
	Dir    string // work folder: squid.conf, logs, password file; removed by Stop

	service  string // squid -n name: shared memory segments are named after it
	log      *slog.Logger
	cmd      *exec.Cmd
	out      *os.File
	done     chan struct{}
	stopOnce sync.Once
}

// Request is one line of Squid's access log.
type Request struct {
	Time   time.Time
	Status int    // the status Squid answered the client with (407, 200, ...)
	Method string // CONNECT, GET, ...
	URL    string // host:port for CONNECT
	User   string // the authenticated user; "" when none
	Scheme string // the scheme of the request's Proxy-Authorization; "" when none
}

// installHint is how to get Squid on Debian or Ubuntu.
const installHint = "apt-get install -y squid-openssl"

// Find returns the squid binary's path, from PATH or /usr/sbin, and checks
// that the helpers the modes need are installed beside it.
func Find() (string, error) {
	if !procgroup.Supported {
		return "", errors.New("the Squid test proxy runs on Linux only")
	}
	candidates := []string{"squid", "/usr/sbin/squid"}
	if env := os.Getenv("SQUID"); env != "" {
		candidates = []string{env} // a binary elsewhere, or a missing one to check Require
	}
	for _, p := range candidates {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		for _, h := range []string{"basic_ncsa_auth", "ntlm_fake_auth", "negotiate_wrapper_auth", "security_file_certgen"} {
			if _, err := os.Stat(filepath.Join(helperDir, h)); err != nil {
				return "", fmt.Errorf("squid is installed but its helper %s is missing (install it with: %s)", filepath.Join(helperDir, h), installHint)
			}
		}
		return path, nil
	}
	return "", errors.New("squid is not installed (install it with: " + installHint + ")")
}

// helperDir is where Debian installs Squid's helpers.
const helperDir = "/usr/lib/squid"

// Require returns the squid binary's path. When Squid is missing it skips t,
// or fails it when the environment has CI=true: CI must run the proxy tests,
// never skip them.
func Require(t testing.TB) string {
	t.Helper()
	return testkit.Need(t, "the Squid integration test", Find)
}

// Start writes a squid.conf into a fresh work folder, runs Squid in the
// foreground (-N) in its own session on a free loopback port and returns once
// the port accepts connections (about a second; it gives up after 15 s with the
// log tail in the error). ctx bounds the start only, not the server's life.
func Start(ctx context.Context, o Options) (*Server, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for u := range o.Basic {
		if u == "" || strings.ContainsAny(u, ":\n\r") {
			return nil, fmt.Errorf("squid.Start: user name %q cannot go into the password file", u)
		}
	}
	for name, ip := range o.Hosts {
		if a := net.ParseIP(ip); a == nil || !a.IsLoopback() || name == "" || strings.ContainsAny(name, " \t\n#") {
			return nil, fmt.Errorf("squid.Start: Hosts[%q] = %q: want a host name and a loopback IP (the proxy only reaches loopback)", name, ip)
		}
	}
	if o.UpstreamCAFile != "" && !o.Bump {
		return nil, errors.New("squid.Start: UpstreamCAFile is for Bump (TLS inspection) only")
	}
	// Squid started as root runs as the proxy user, which must reach the work
	// folder: a t.TempDir() sits in a folder only root may enter, so the
	// folder is made here, under the system temp folder, and owned by it.
	dir, err := os.MkdirTemp("", "presencebridge-squid-")
	if err != nil {
		return nil, fmt.Errorf("squid work folder: %w", err)
	}
	s, err := start(ctx, bin, dir, o)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func start(ctx context.Context, bin, dir string, o Options) (*Server, error) {
	runAs, uid, gid, err := runUser()
	if err != nil {
		return nil, err
	}
	if len(o.Basic) > 0 {
		if err := writePasswd(filepath.Join(dir, "passwd"), o.Basic); err != nil {
			return nil, err
		}
	}
	if err := writeHosts(filepath.Join(dir, "hosts"), o.Hosts); err != nil {
		return nil, err
	}
	caFile := ""
	if o.UpstreamCAFile != "" {
		// A copy the proxy user can read wherever the original lives.
		raw, err := os.ReadFile(o.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("squid.Start: UpstreamCAFile: %w", err)
		}
		o.UpstreamCAFile = filepath.Join(dir, "upstream-ca.pem")
		if err := os.WriteFile(o.UpstreamCAFile, raw, 0o644); err != nil {
			return nil, err
		}
	}
	if o.Bump {
		if err := writeBumpCA(dir); err != nil {
			return nil, fmt.Errorf("ssl-bump CA: %w", err)
		}
		caFile = filepath.Join(dir, "bump-ca.pem")
		db := filepath.Join(dir, "ssl_db")
		if out, err := exec.CommandContext(ctx, filepath.Join(helperDir, "security_file_certgen"), "-c", "-s", db, "-M", "4MB").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initialise the certificate database %s: %v: %s", db, err, bytes.TrimSpace(out))
		}
	}
	if uid >= 0 {
		if err := chownTree(dir, uid, gid); err != nil {
			return nil, fmt.Errorf("hand the work folder to the %s user: %w", runAs, err)
		}
	}
	// Another process may take the port between freePort and Squid's bind:
	// try again on a fresh port then.
	s, err := procgroup.RetryPortTaken(o.Logger, "Squid", func() (*Server, error) { return launch(ctx, bin, dir, runAs, o) })
	if err != nil {
		return nil, err
	}
	s.CAFile = caFile
	return s, nil
}

// runUser says which user Squid runs as: when started as root it must switch
// to an unprivileged one (Debian's "proxy"); otherwise it runs as the caller.
func runUser() (name string, uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return "", -1, -1, nil
	}
	u, err := user.Lookup("proxy")
	if err != nil {
		return "", -1, -1, fmt.Errorf("squid runs as the proxy user when started as root, but there is none (%v); install %s", err, "squid-openssl")
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return u.Username, uid, gid, nil
}

func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// launch starts one Squid on a fresh port and waits for it.
func launch(ctx context.Context, bin, dir, runAs string, o Options) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		Addr:    fmt.Sprintf("127.0.0.1:%d", port),
		Dir:     dir,
		service: fmt.Sprintf("pbsquid%d", port),
		log:     o.Logger,
		done:    make(chan struct{}),
	}
	s.URL = "http://" + s.Addr
	data := map[string]any{
		"Port": port, "Dir": dir, "User": runAs, "Bump": o.Bump, "UpstreamCAFile": o.UpstreamCAFile,
		"Basic": len(o.Basic) > 0, "NTLM": o.NTLM, "Negotiate": o.Negotiate,
		"Auth": len(o.Basic) > 0 || o.NTLM || o.Negotiate,
	}
	var conf bytes.Buffer
	if err := template.Must(template.New("conf").Parse(confTemplate)).Execute(&conf, data); err != nil {
		return nil, fmt.Errorf("squid.conf template: %w", err)
	}
	confPath := filepath.Join(dir, "squid.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", confPath, err)
	}
	// Squid writes its start-up complaints to stderr before cache.log is open.
	s.out, err = os.Create(filepath.Join(dir, "squid.out"))
	if err != nil {
		return nil, fmt.Errorf("squid output file: %w", err)
	}
	s.cmd = exec.Command(bin, "-N", "-n", s.service, "-f", confPath)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = procgroup.Attr(syscall.SIGKILL)
	begin := time.Now()
	if err := s.cmd.Start(); err != nil {
		s.out.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx, 15*time.Second); err != nil {
		s.stop(false)
		tail := s.LogTail(30)
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", procgroup.ErrPortTaken, err)
		}
		return nil, fmt.Errorf("%w (config %s)\nsquid log:\n%s", err, confPath, tail)
	}
	o.Logger.Info("Squid ready", "addr", s.Addr, "pid", s.cmd.Process.Pid, "basic", len(o.Basic) > 0, "ntlm", o.NTLM,
		"negotiate", o.Negotiate, "bump", o.Bump, "took", time.Since(begin).Round(time.Millisecond))
	return s, nil
}

// waitReady waits until cache.log says the port accepts connections. It does
// not connect to find out: Squid would log the probe as a request.
func (s *Server) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("squid exited during start")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		raw, _ := os.ReadFile(filepath.Join(s.Dir, "cache.log"))
		if bytes.Contains(raw, []byte("HTTP Socket connections at")) && bytes.Contains(raw, []byte("local="+s.Addr)) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("squid did not listen on %s within %s", s.Addr, limit)
}

// Stop ends Squid and its helpers with SIGKILL to their process group (a test
// proxy holds nothing worth Squid's graceful shutdown, which takes 2 to 3 s),
// then removes the shared memory segments named after this instance and the
// work folder. Safe to call more than once.
func (s *Server) Stop() error {
	s.stop(true)
	return nil
}

func (s *Server) stop(removeDir bool) {
	s.stopOnce.Do(func() {
		procgroup.Kill(s.cmd.Process.Pid)
		_ = s.cmd.Process.Kill() // where there are no process groups
		<-s.done
		s.out.Close()
		shm, _ := filepath.Glob("/dev/shm/" + s.service + "-*")
		for _, f := range shm {
			os.Remove(f)
		}
		s.log.Info("Squid stopped", "addr", s.Addr)
	})
	if removeDir {
		os.RemoveAll(s.Dir)
	}
}

// LogTail returns the last n lines of Squid's start-up output and cache.log,
// for test failure messages. Neither holds a password.
func (s *Server) LogTail(n int) string {
	var lines []string
	for _, name := range []string{"squid.out", "cache.log"} {
		raw, _ := os.ReadFile(filepath.Join(s.Dir, name))
		if t := strings.TrimRight(string(raw), "\n"); t != "" {
			lines = append(lines, strings.Split(t, "\n")...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Requests returns what Squid has logged so far, oldest first. Squid logs a
// CONNECT when the tunnel closes: close the client's idle connections first,
// and use WaitRequests to wait for the line.
func (s *Server) Requests() ([]Request, error) {
	f, err := os.Open(filepath.Join(s.Dir, "access.log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Request
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		r, err := parseLine(sc.Text())
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// WaitRequests polls the access log until ok accepts what it holds, and
// returns it; after d it returns the last read with an error.
func (s *Server) WaitRequests(d time.Duration, ok func([]Request) bool) ([]Request, error) {
	deadline := time.Now().Add(d)
	for {
		rs, err := s.Requests()
		if err == nil && ok(rs) {
			return rs, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("squid's access log did not show the expected requests within %s", d)
			}
			return rs, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// parseLine reads one line of the "presencebridge" logformat:
// %ts.%03tu %>Hs %rm %ru %#un %#{Proxy-Authorization}>h, the last two
// URL-encoded ("-" when empty). Of the Proxy-Authorization header only the
// scheme is kept: the rest is a password (Basic) or a token.
func parseLine(line string) (Request, error) {
	bad := func(why string) (Request, error) {
		return Request{}, fmt.Errorf("squid access log line %q: %s", redactLine(line), why)
	}
	fields := strings.Split(line, " ")
	if len(fields) != 6 {
		return bad(fmt.Sprintf("%d fields, want 6", len(fields)))
	}
	var r Request
	secs, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return bad("bad time")
	}
	r.Time = time.UnixMilli(int64(secs * 1000))
	if r.Status, err = strconv.Atoi(fields[1]); err != nil {
		return bad("bad status")
	}
	r.Method, r.URL = fields[2], fields[3]
	if fields[4] != "-" {
		if r.User, err = url.PathUnescape(fields[4]); err != nil {
			return bad("bad user field")
		}
	}
	if fields[5] != "-" {
		authz, err := url.PathUnescape(fields[5])
		if err != nil {
			return bad("bad Proxy-Authorization field")
		}
		r.Scheme, _, _ = strings.Cut(authz, " ")
	}
	return r, nil
}

// redactLine keeps a malformed log line out of test output past its URL.
func redactLine(line string) string {
	f := strings.SplitN(line, " ", 5)
	if len(f) < 5 {
		return "(" + strconv.Itoa(len(line)) + " bytes)"
	}
	return strings.Join(f[:4], " ") + " ..."
}

// Users lists the distinct users of requests with status, sorted.
func Users(rs []Request, status int) []string {
	seen := map[string]bool{}
	for _, r := range rs {
		if r.Status == status && r.User != "" {
			seen[r.User] = true
		}
	}
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// writeHosts writes /etc/hosts followed by hosts, for Squid's hosts_file.
func writeHosts(path string, hosts map[string]string) error {
	base, err := os.ReadFile("/etc/hosts")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read /etc/hosts: %w", err)
	}
	var b bytes.Buffer
	b.Write(base)
	b.WriteString("\n# added by presencebridge's squid harness\n")
	names := make([]string, 0, len(hosts))
	for n := range hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s\n", hosts[n], n)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// freePort finds a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
