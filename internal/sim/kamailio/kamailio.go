// Package kamailio starts a real Kamailio SIP presence server (Debian's kamailio
// and kamailio-presence-modules) on loopback for presencebridge's integration
// tests, demo and benchmark, and watches presence on it with a small SIP
// subscriber of its own that shares no code with the publisher under test. It
// serves Event: presence (presence_xml, PIDF) and Event: dialog
// (presence_dialoginfo, RFC 4235 dialog-info, what BLF keys subscribe to).
// With Options.PBX it is also a small PBX (registrar, proxy, dialog state served
// as Event: dialog) that phones of package sipua register with and call through.
package kamailio

import (
	"bytes"
	"context"
	"crypto/md5"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/pki"
	"github.com/presencebridge/presencebridge/internal/sim/procgroup"
)

//go:embed kamailio.cfg.tmpl
var cfgTemplate string

// Options configure one Kamailio instance.
type Options struct {
	// Dir is the instance's work folder (kamailio.cfg, db_text tables in Dir/db,
	// kamailio.log, certificates). Required; tests pass t.TempDir().
	Dir string
	// Domain is the presence domain and a local alias, so sip:x@Domain is served
	// here; it is also the digest realm. Default "pbx.example".
	Domain string
	// Users are digest user names and passwords; empty turns authentication off.
	Users map[string]string
	// Challenge is "www" (401 WWW-Authenticate, the default) or "proxy"
	// (407 Proxy-Authenticate) for PUBLISH. SUBSCRIBE is never challenged.
	Challenge string
	// TLS adds a TLS listener with a certificate for 127.0.0.1 and localhost,
	// signed by a fresh CA written to Dir/ca.pem.
	TLS bool
	// Forward turns the instance into an outbound proxy instead of a presence
	// server: it challenges initial requests with 407 when Users are set and
	// relays every request to Forward (host:port) over UDP. A preloaded
	// Route: <sip:proxy;lr> is consumed; SUBSCRIBE dialogs are record-routed.
	Forward string
	// PBX makes the presence server a small PBX as well: a registrar (REGISTER,
	// digest-challenged with 401 when Users are set) and a proxy for calls
	// between registered phones (INVITE to sip:user@Domain looked up in the
	// location table, 404 when not registered, 407-challenged when Users are
	// set; record-routed, so ACK and BYE pass through it). The dialog module
	// tracks each call and pua_dialoginfo publishes its state (early,
	// confirmed, terminated) for caller and callee to this same server, where
	// presence_dialoginfo serves it to SUBSCRIBE Event: dialog watchers, beside
	// Event: presence. Registrations and calls are held in memory only: a
	// Restart loses them, and phones must register again. Not with Forward.
	//
	// A PBX has one UDP worker (Children applies to TCP): with several, the
	// 180 and 200 of one call are handled at once by two workers, their
	// dialog states reach pua out of order or before pua knows the ETag of
	// the previous one, and a stale "early" or "confirmed" dialog stays
	// published for the dialog's lifetime (12 h). Seen here with four workers
	// in 3 of 40 calls one after the other (phones answering at once) and in
	// 100 of 600 watcher checks over 10 rounds of 15 simultaneous calls;
	// with one worker, in none of 200 and 150 such calls.
	PBX bool
	// MemoryPresentities keeps the publications in memory only (presence's
	// publ_cache = 2) instead of in the db_text table. db_text finds a row by
	// reading the whole table, and Kamailio 5.6 looks a publication up there
	// for every modification and for every new dialog-info publication that
	// holds a dialog (to replace an older one of the same dialog): with 15,000
	// users that is a scan of 15,000 rows each, and a burst of 15,000 new
	// Event: dialog publications takes about 70 s here instead of 10 s, and
	// 15,000 modifications minutes. A real installation's database has
	// indexes; the benchmarks use this. In this mode a publication's refresh
	// (SIP-If-Match, no body) makes Kamailio 5.6.3 notify the watchers with no
	// body, which a phone shows as idle, so the tests with watchers leave it
	// off.
	MemoryPresentities bool
	// Children is the number of worker processes per transport (default 4;
	// UDP has one with PBX).
	Children int
	// Debug is Kamailio's log level, -3 (critical) to 3 (debug). Default 1 (notice).
	Debug int
	// Logger gets one line per start and stop; nil discards.
	Logger *slog.Logger
}

// Server is a running Kamailio. Stop it with Stop.
type Server struct {
	UDP, TCP, TLS string // 127.0.0.1:port of each listener (TLS empty without Options.TLS)
	CAFile        string // PEM CA of the TLS server certificate (empty without Options.TLS)
	Domain        string // the presence domain (Options.Domain)

	bin      string
	opts     Options // as filled in by Start, for Restart
	ports    []int
	cmd      *exec.Cmd
	logFile  *os.File
	done     chan struct{}
	stopOnce sync.Once
}

// installHint is how to get Kamailio on Debian or Ubuntu.
const installHint = "apt-get install -y kamailio kamailio-presence-modules kamailio-tls-modules"

// Find returns the kamailio binary's path, from PATH or /usr/sbin.
func Find() (string, error) {
	if !procgroup.Supported {
		return "", errors.New("the Kamailio test server runs on Linux only")
	}
	candidates := []string{"kamailio", "/usr/sbin/kamailio", "/usr/local/sbin/kamailio"}
	if env := os.Getenv("KAMAILIO"); env != "" {
		candidates = []string{env} // a binary elsewhere, or a missing one (the tests check how that is handled)
	}
	for _, p := range candidates {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", errors.New("kamailio is not installed (install it with: " + installHint + ")")
}

// Start writes Dir/kamailio.cfg and the db_text tables, runs Kamailio in the
// foreground in its own session on free loopback ports, and returns once it
// answers OPTIONS over UDP (about 0.1 s here; it gives up after 10 s with the
// log tail in the error). ctx bounds the start only, not the server's life.
func Start(ctx context.Context, o Options) (*Server, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	if err := o.fill(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.dbDir(), 0o700); err != nil {
		return nil, fmt.Errorf("kamailio work folder: %w", err)
	}
	if err := writeTables(o.dbDir(), o.Users, o.Domain); err != nil {
		return nil, err
	}
	if o.TLS {
		if err := writeTLS(o.Dir); err != nil {
			return nil, fmt.Errorf("kamailio TLS certificate: %w", err)
		}
	}
	// Another process may take a port between FreePorts and Kamailio's bind:
	// try again on fresh ports then.
	return procgroup.RetryPortTaken(o.Logger, "Kamailio", func() (*Server, error) { return launch(ctx, bin, o, nil) })
}

// dbDir is the folder of the db_text tables.
func (o *Options) dbDir() string { return filepath.Join(o.Dir, "db") }

// fill validates o and sets defaults.
func (o *Options) fill() error {
	if o.Dir == "" {
		return errors.New("kamailio.Start: Options.Dir is required (a work folder, e.g. t.TempDir())")
	}
	if o.Domain == "" {
		o.Domain = "pbx.example"
	}
	if strings.Trim(o.Domain, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != "" {
		return fmt.Errorf("kamailio.Start: Domain %q is not a host name", o.Domain)
	}
	switch o.Challenge {
	case "":
		o.Challenge = "www"
	case "www", "proxy":
	default:
		return fmt.Errorf("kamailio.Start: Challenge %q: use \"www\" (401) or \"proxy\" (407)", o.Challenge)
	}
	if o.Forward != "" {
		if _, _, err := net.SplitHostPort(o.Forward); err != nil {
			return fmt.Errorf("kamailio.Start: Forward %q must be host:port: %w", o.Forward, err)
		}
		if o.PBX {
			return errors.New("kamailio.Start: PBX and Forward do not go together: a PBX serves calls itself, a Forward proxy relays everything")
		}
	}
	for u := range o.Users {
		if u == "" || strings.ContainsAny(u, ":@\n\r ") {
			return fmt.Errorf("kamailio.Start: user name %q cannot go into the subscriber table", u)
		}
	}
	if o.Children <= 0 {
		o.Children = 4
	}
	if o.Debug == 0 {
		o.Debug = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Restart stops s and starts Kamailio again on the same ports and in the same
// folder, as a PBX restarted by its admin. With forget, its tables start empty:
// the publications and subscriptions it held are gone (a presence server that
// keeps them in memory, or lost its database). With Options.PBX, registrations
// and calls in progress are lost either way (Kamailio keeps them in memory):
// phones must register again before they can be called, and a call in
// progress at the restart stays published as it was until its dialog lifetime
// ends (12 h; the new Kamailio knows neither the call nor pua's ETags) unless
// forget clears it. s is stopped either way; use the returned Server.
func (s *Server) Restart(ctx context.Context, forget bool) (*Server, error) {
	s.Stop()
	if forget {
		if err := writeTables(s.opts.dbDir(), s.opts.Users, s.opts.Domain); err != nil {
			return nil, err
		}
	}
	return launch(ctx, s.bin, s.opts, s.ports)
}

// launch starts one Kamailio on ports (nil: fresh ones) and waits for it.
func launch(ctx context.Context, bin string, o Options, ports []int) (*Server, error) {
	if ports == nil {
		var err error
		if ports, err = procgroup.FreePorts(3); err != nil {
			return nil, err
		}
	}
	s := &Server{UDP: fmt.Sprintf("127.0.0.1:%d", ports[0]), TCP: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Domain: o.Domain, bin: bin, opts: o, ports: ports, done: make(chan struct{})}
	if o.TLS {
		s.TLS = fmt.Sprintf("127.0.0.1:%d", ports[2])
		s.CAFile = filepath.Join(o.Dir, "ca.pem")
	}
	udpChildren := o.Children
	if o.PBX {
		udpChildren = 1 // see Options.PBX
	}
	data := map[string]any{"Debug": o.Debug, "Children": o.Children, "UDPChildren": udpChildren, "UDP": ports[0], "TCP": ports[1],
		"TLS": o.TLS, "TLSPort": ports[2], "Domain": o.Domain, "DB": o.dbDir(), "Auth": len(o.Users) > 0,
		"Challenge": o.Challenge, "Forward": o.Forward, "PBX": o.PBX, "TLSConfig": filepath.Join(o.Dir, "tls.cfg"),
		"MemoryPresentities": o.MemoryPresentities}
	var cfg bytes.Buffer
	if err := template.Must(template.New("cfg").Parse(cfgTemplate)).Execute(&cfg, data); err != nil {
		return nil, fmt.Errorf("kamailio.cfg template: %w", err)
	}
	cfgPath := filepath.Join(o.Dir, "kamailio.cfg")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", cfgPath, err)
	}
	var err error
	s.logFile, err = os.OpenFile(filepath.Join(o.Dir, "kamailio.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kamailio log: %w", err)
	}
	s.cmd = exec.Command(bin, "-f", cfgPath, "-DD", "-E", "-m", "256", "-M", "16", "-Y", o.Dir, "-w", o.Dir)
	s.cmd.Stdout, s.cmd.Stderr = s.logFile, s.logFile
	s.cmd.SysProcAttr = procgroup.Attr(syscall.SIGTERM) // Kamailio signals its whole group on SIGTERM: not ours
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		s.logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx, 10*time.Second); err != nil {
		s.Stop()
		tail := s.LogTail(30)
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", procgroup.ErrPortTaken, err)
		}
		return nil, fmt.Errorf("%w (config %s)\nkamailio log:\n%s", err, cfgPath, tail)
	}
	o.Logger.Info("Kamailio ready", "udp", s.UDP, "tcp", s.TCP, "tls", s.TLS, "forward", o.Forward, "pbx", o.PBX,
		"pid", s.cmd.Process.Pid, "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

// waitReady sends OPTIONS over UDP until Kamailio answers.
func (s *Server) waitReady(ctx context.Context, limit time.Duration) error {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer conn.Close()
	dst, _ := net.ResolveUDPAddr("udp", s.UDP)
	deadline := time.Now().Add(limit)
	buf := make([]byte, 4096)
	for i := 0; time.Now().Before(deadline); i++ {
		select {
		case <-s.done:
			return errors.New("kamailio exited during start")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-ready-%d\r\nMax-Forwards: 70\r\nFrom: <sip:probe@%s>;tag=r%d\r\nTo: <sip:%s>\r\nCall-ID: ready-%d@presencebridge\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
			s.UDP, conn.LocalAddr(), i, s.Domain, i, s.UDP, i)
		conn.WriteTo([]byte(msg), dst)
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := conn.ReadFrom(buf); err == nil && bytes.HasPrefix(buf[:n], []byte("SIP/2.0 ")) {
			return nil
		}
	}
	return fmt.Errorf("kamailio did not answer OPTIONS on %s within %s", s.UDP, limit)
}

// Stop ends Kamailio: SIGTERM to its PID (it passes the signal on to its
// group), again to the whole group every 200 ms while it runs, then SIGKILL to
// the group after 5 s. Safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		pid := s.cmd.Process.Pid
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		// Stopped just after it became ready (a Restart), about one time in
		// four here one worker outlives the SIGTERM the main process passes
		// on (it stays in epoll_wait), and the main process waits for it
		// until SIGKILL. A second SIGTERM to the group ends it at once.
		again := time.NewTicker(200 * time.Millisecond)
		defer again.Stop()
		giveUp := time.After(5 * time.Second)
	wait:
		for {
			select {
			case <-s.done:
				break wait
			case <-again.C:
				procgroup.Signal(pid, syscall.SIGTERM)
			case <-giveUp:
				s.opts.Logger.Warn("Kamailio ignored SIGTERM for 5 s, killing it", "pid", pid)
				procgroup.Kill(pid)
				<-s.done
				break wait
			}
		}
		// Workers left behind in its group (there should be none) go too.
		procgroup.Kill(pid)
		s.logFile.Close()
		s.opts.Logger.Info("Kamailio stopped", "udp", s.UDP)
	})
	return nil
}

// LogTail returns the last n lines of Dir/kamailio.log, for test failure messages.
func (s *Server) LogTail(n int) string {
	raw, _ := os.ReadFile(filepath.Join(s.opts.Dir, "kamailio.log"))
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// writeTables copies the db_text tables presence, pua and auth_db need and adds
// the subscribers (ha1 and ha1b must both be set).
func writeTables(dir string, users map[string]string, domain string) error {
	const src = "/usr/share/kamailio/dbtext/kamailio"
	for _, name := range []string{"version", "presentity", "active_watchers", "watchers", "xcap", "pua", "subscriber"} {
		raw, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return fmt.Errorf("read Kamailio's db_text table %s (is kamailio installed?): %w", name, err)
		}
		if name == "subscriber" {
			names := make([]string, 0, len(users))
			for u := range users {
				names = append(names, u)
			}
			sort.Strings(names)
			var b bytes.Buffer
			b.Write(raw)
			for i, u := range names {
				pw := users[u]
				fmt.Fprintf(&b, "%d:%s:%s:%s:%s:%s\n", i+1, u, domain, pw,
					md5hex(u+":"+domain+":"+pw), md5hex(u+"@"+domain+":"+domain+":"+pw))
			}
			raw = b.Bytes()
		}
		switch name {
		case "presentity":
			// pua's PUBLISHes (PBX mode) carry no Contact: presence stores an
			// empty sender, db_text writes it back as a null at shutdown and
			// then refuses the whole table at the next start ("null value not
			// allowed"), so Kamailio would not start again after a call.
			raw = bytes.Replace(raw, []byte(" sender(string) "), []byte(" sender(string,null) "), 1)
		case "active_watchers":
			// presence writes its subscriptions at shutdown without flags;
			// db_text refused every row ("null value not allowed - field 25"),
			// so a Restart without forget lost them all.
			raw = bytes.Replace(raw, []byte(" flags(int) "), []byte(" flags(int,null) "), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// writeTLS makes a CA (ca.pem) and a server certificate for 127.0.0.1/localhost
// signed by it (server.pem, server.key), valid for a day, and tls.cfg.
func writeTLS(dir string) error {
	ca, err := pki.NewCA(pki.Options{CommonName: "presencebridge test SIP CA"})
	if err != nil {
		return err
	}
	srv, err := ca.Issue(pki.Options{CommonName: "127.0.0.1", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		return err
	}
	if err := srv.WriteFiles(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf("[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = %s\ncertificate = %s\n\n[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n",
		filepath.Join(dir, "server.key"), filepath.Join(dir, "server.pem"))
	return os.WriteFile(filepath.Join(dir, "tls.cfg"), []byte(cfg), 0o600)
}
