// Package kamailio starts a real Kamailio SIP presence server (Debian's kamailio
// and kamailio-presence-modules) on loopback for presencebridge's integration
// tests, demo and benchmark, and watches presence on it with a small SIP
// subscriber of its own that shares no code with the publisher under test.
package kamailio

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

//go:embed kamailio.cfg.tmpl
var cfgTemplate string

// Options configure one Kamailio instance.
type Options struct {
	// Dir is the instance's work folder (config, db_text tables, log, certificates).
	Dir string
	// Domain is the presence domain; sip:x@Domain is local. Default "pbx.example".
	Domain string
	// Users are digest user names and passwords; empty turns authentication off.
	Users map[string]string
	// Challenge is "www" (401, the default) or "proxy" (407) for PUBLISH.
	Challenge string
	// TLS adds a TLS listener with a certificate for 127.0.0.1 and localhost,
	// signed by a CA written to Dir/ca.pem.
	TLS bool
	// Forward makes the instance an outbound proxy that authenticates (407 when
	// Users are set) and relays every request to this host:port over UDP.
	Forward string
	// Children is the number of worker processes per transport (default 4).
	Children int
	// Debug is Kamailio's log level (default 1: errors and warnings).
	Debug  int
	Logger *slog.Logger
}

// Server is a running Kamailio.
type Server struct {
	UDP, TCP, TLS string // 127.0.0.1:port of each listener (TLS empty without Options.TLS)
	CAFile        string // PEM CA of the TLS certificate
	Domain        string
	dir           string
	cmd           *exec.Cmd
	logFile       *os.File
	done          chan struct{}
	stopOnce      sync.Once
	stopErr       error
}

// Find returns the kamailio binary's path.
func Find() (string, error) {
	for _, p := range []string{"kamailio", "/usr/sbin/kamailio", "/usr/local/sbin/kamailio"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", errors.New("kamailio is not installed (apt-get install kamailio kamailio-presence-modules kamailio-tls-modules)")
}

// Require skips t when Kamailio is missing, or fails it when CI=true: CI must run
// the Kamailio tests, never skip them.
func Require(t testing.TB) string {
	t.Helper()
	path, err := Find()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v; CI must run the Kamailio tests (.ci/run installs it)", err)
		}
		t.Skipf("%v; skipping the Kamailio integration test", err)
	}
	return path
}

// Start writes the configuration and runs Kamailio in the foreground of its own
// process group, returning once it answers OPTIONS.
func Start(ctx context.Context, o Options) (*Server, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	if o.Dir == "" {
		return nil, errors.New("kamailio.Start: Options.Dir is required")
	}
	if o.Domain == "" {
		o.Domain = "pbx.example"
	}
	if o.Challenge == "" {
		o.Challenge = "www"
		if o.Forward != "" {
			o.Challenge = "proxy"
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
	dbDir := filepath.Join(o.Dir, "db")
	if err := os.MkdirAll(dbDir, 0o700); err != nil {
		return nil, err
	}
	if err := writeTables(dbDir, o.Users, o.Domain); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	s := &Server{UDP: fmt.Sprintf("127.0.0.1:%d", ports[0]), TCP: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Domain: o.Domain, dir: o.Dir, done: make(chan struct{})}
	data := map[string]any{"Debug": o.Debug, "Children": o.Children, "UDP": ports[0], "TCP": ports[1],
		"TLS": o.TLS, "TLSPort": ports[2], "Domain": o.Domain, "DB": dbDir, "Auth": len(o.Users) > 0,
		"Challenge": o.Challenge, "Forward": o.Forward, "TLSConfig": filepath.Join(o.Dir, "tls.cfg")}
	if o.TLS {
		s.TLS = fmt.Sprintf("127.0.0.1:%d", ports[2])
		if err := writeTLS(o.Dir); err != nil {
			return nil, err
		}
		s.CAFile = filepath.Join(o.Dir, "ca.pem")
	}
	var cfg bytes.Buffer
	if err := template.Must(template.New("cfg").Parse(cfgTemplate)).Execute(&cfg, data); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(o.Dir, "kamailio.cfg")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o600); err != nil {
		return nil, err
	}
	s.logFile, err = os.Create(filepath.Join(o.Dir, "kamailio.log"))
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "-f", cfgPath, "-DD", "-E", "-m", "256", "-M", "16", "-Y", o.Dir, "-w", o.Dir)
	s.cmd.Stdout, s.cmd.Stderr = s.logFile, s.logFile
	// Its own process group: Kamailio signals its whole group on SIGTERM.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := s.cmd.Start(); err != nil {
		s.logFile.Close()
		return nil, fmt.Errorf("start kamailio: %w", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	o.Logger.Info("Kamailio starting", "udp", s.UDP, "tcp", s.TCP, "tls", s.TLS, "forward", o.Forward)
	if err := s.waitReady(ctx, 10*time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\nkamailio log:\n%s", err, s.LogTail(30))
	}
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

// Stop ends Kamailio (SIGTERM, then SIGKILL after 5 s). It is safe to call twice.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		if s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.done
			}
			// Children left in the group (there should be none) go too.
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		}
		s.logFile.Close()
	})
	return s.stopErr
}

// LogTail returns the last n lines Kamailio logged.
func (s *Server) LogTail(n int) string {
	raw, _ := os.ReadFile(filepath.Join(s.dir, "kamailio.log"))
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// writeTables copies the db_text tables presence and auth_db need and adds the
// subscribers (ha1 and ha1b must both be set).
func writeTables(dir string, users map[string]string, domain string) error {
	const src = "/usr/share/kamailio/dbtext/kamailio"
	for _, name := range []string{"version", "presentity", "active_watchers", "watchers", "xcap", "subscriber"} {
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

// freePorts finds n distinct loopback ports free for both UDP and TCP.
func freePorts(n int) ([]int, error) {
	var ports []int
	var holds []io.Closer
	defer func() {
		for _, h := range holds {
			h.Close()
		}
	}()
	for tries := 0; len(ports) < n && tries < 100; tries++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			l.Close()
			continue
		}
		holds = append(holds, l, u)
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, errors.New("no free loopback ports")
	}
	return ports, nil
}

// writeTLS makes a CA and a server certificate for 127.0.0.1/localhost, and tls.cfg.
func writeTLS(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "presencebridge test SIP CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"server.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
		"tls.cfg": []byte(fmt.Sprintf("[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = %s\ncertificate = %s\n\n[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n",
			filepath.Join(dir, "server.key"), filepath.Join(dir, "server.pem"))),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
