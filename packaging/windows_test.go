package packaging

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/platform/textfile"
	"github.com/presencebridge/presencebridge/internal/testkit/wine"
)

// The Windows side, executed: the MSI installed, upgraded and removed by Wine's
// msiexec, the service started and stopped by Wine's service manager, against
// the simulated tenant (HTTPS on loopback) and HTTP CTI receivers, DPAPI
// secrets written by the MSI's custom action and by `secret encrypt`.
//
// What Wine cannot show is not asserted: ACL enforcement (Wine derives a file's
// DACL from its Unix mode and keeps no other), the recovery actions read back
// (Wine accepts SetRecoveryActions but has no QueryServiceConfig2 for them),
// session 0, and an Event Log viewer (the entries are read from Wine's
// eventlog debug channel).

const (
	serviceName  = "presencebridge"
	installedExe = `C:\Program Files\presencebridge\presencebridge.exe`
	dataDir      = `C:\ProgramData\presencebridge`
	installedINI = dataDir + `\Presence.ini`
	serviceKey   = `HKLM\SYSTEM\CurrentControlSet\Services\presencebridge`
	simSecret    = "sim-secret" // what the simulated tenant takes as the client secret
	clientGUID   = "11111111-2222-3333-4444-555555555555"
	tokenRoute   = "POST /{tenant}/oauth2/v2.0/token"
)

// windowsExe cross-builds presencebridge.exe with version baked in.
func windowsExe(t *testing.T, version string) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "presencebridge.exe")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+version, "-o", exe, "../cmd/presencebridge")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=windows", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build for Windows: %v\n%s", err, out)
	}
	return exe
}

// simulated is `presencebridge simulate` (the Linux build) with its PBX side.
type simulated struct {
	URL, GraphURL, TenantID, CAFile string // from its ready line

	Dir    string // Presence.ini, users.csv and sim-ca.pem it wrote
	PBXURL string // its HTTP CTI receiver
	Users  []string

	logPath string
	client  *http.Client
}

func startSimulated(t *testing.T) *simulated {
	t.Helper()
	dir := t.TempDir()
	ready, err := os.Create(filepath.Join(dir, "ready.json"))
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "simulate.log"))
	if err != nil {
		t.Fatal(err)
	}
	// --rate 0: presence changes only when the test says so.
	cmd := exec.Command(binary(t, "linux"), "simulate", "--addr", "127.0.0.1:0", "--users", "20", "--rate", "0",
		"--auth", "secret", "--interval", "1s", "--pbx", "127.0.0.1:0", "--write-config", dir)
	cmd.Stdout, cmd.Stderr = ready, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		ready.Close()
		logf.Close()
	})
	s := &simulated{Dir: dir, logPath: logf.Name()}
	waitFor(t, 30*time.Second, "the simulated tenant", func() bool {
		var r struct{ URL, GraphURL, TenantID, CAFile string } // simulate's ready line
		raw, err := os.ReadFile(ready.Name())
		if err != nil || json.Unmarshal(raw, &r) != nil || r.URL == "" {
			return false
		}
		s.URL, s.GraphURL, s.TenantID, s.CAFile = r.URL, r.GraphURL, r.TenantID, r.CAFile
		return true
	})
	ini, err := os.ReadFile(filepath.Join(dir, "Presence.ini"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^URL = (http://\S+)`).FindSubmatch(ini)
	if m == nil {
		t.Fatalf("no [HTTP] URL in the simulated tenant's Presence.ini:\n%s", ini)
	}
	s.PBXURL = string(m[1])
	csv, err := os.ReadFile(filepath.Join(dir, "users.csv"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(csv)), "\n")[1:] {
		s.Users = append(s.Users, strings.SplitN(line, ";", 2)[0])
	}
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return s
}

// control calls the simulated tenant's /_sim API.
func (s *simulated) control(t *testing.T, method, path string, body, reply any) {
	t.Helper()
	var in bytes.Buffer
	if body != nil {
		json.NewEncoder(&in).Encode(body)
	}
	req, _ := http.NewRequest(method, s.URL+path, &in)
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s", method, path, res.Status)
	}
	if reply != nil {
		json.NewDecoder(res.Body).Decode(reply)
	}
}

func (s *simulated) setPresence(t *testing.T, upn, availability, activity string) {
	t.Helper()
	s.control(t, "POST", "/_sim/presence", map[string]string{"upn": upn, "availability": availability, "activity": activity}, nil)
}

// tokenRequests is how many token requests the tenant has answered.
func (s *simulated) tokenRequests(t *testing.T) int {
	t.Helper()
	var st struct {
		Endpoints map[string]int `json:"endpoints"`
	}
	s.control(t, "GET", "/_sim/stats?requests=false", nil, &st)
	return st.Endpoints[tokenRoute]
}

// pbxLog is what the simulated PBX side printed (a line per delivery).
func (s *simulated) pbxLog() string { b, _ := os.ReadFile(s.logPath); return string(b) }

// receiver is an HTTP CTI that accepts or refuses (503) on the test's word.
type receiver struct {
	URL     string
	mu      sync.Mutex
	refuse  bool
	got     []cti.Document // accepted
	refused []cti.Document
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{URL: "http://" + ln.Addr().String() + "/presence"}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var d cti.Document
		if err := json.NewDecoder(req.Body).Decode(&d); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.refuse {
			r.refused = append(r.refused, d)
			http.Error(w, "the CTI is down", http.StatusServiceUnavailable)
			return
		}
		r.got = append(r.got, d)
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *receiver) setRefuse(v bool) { r.mu.Lock(); r.refuse = v; r.mu.Unlock() }

// last is the newest accepted (or refused) document for upn.
func (r *receiver) last(upn string, refused bool) (cti.Document, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	docs := r.got
	if refused {
		docs = r.refused
	}
	for i := len(docs) - 1; i >= 0; i-- {
		if docs[i].UPN == upn {
			return docs[i], true
		}
	}
	return cti.Document{}, false
}

// withSeq finds the accepted document for upn with seq.
func (r *receiver) withSeq(upn string, seq uint64) (cti.Document, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.got {
		if d.UPN == upn && d.Seq == seq {
			return d, true
		}
	}
	return cti.Document{}, false
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// machine is the Windows machine under Wine.
type machine struct {
	p   *wine.Prefix
	ctx context.Context
}

// run runs a program and fails t if it could not run.
func (m machine) run(t *testing.T, prog string, args ...string) wine.Result {
	t.Helper()
	r, err := m.p.Run(m.ctx, prog, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ok runs a program that must succeed.
func (m machine) ok(t *testing.T, prog string, args ...string) wine.Result {
	t.Helper()
	r := m.run(t, prog, args...)
	if r.Code != 0 {
		t.Fatalf("%s %s: exit %d\n%s\nwine.log:\n%s", prog, masked(args), r.Code, r.Out(), m.p.LogTail(15))
	}
	return r
}

// masked is args for a message, with secret values left out.
func masked(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if k, _, ok := strings.Cut(a, "="); ok && strings.Contains(strings.ToLower(k), "secret") {
			a = k + "=(not shown)"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// pb runs the installed presencebridge.exe with the installed Presence.ini.
func (m machine) pb(t *testing.T, args ...string) wine.Result {
	t.Helper()
	return m.run(t, installedExe, append([]string{"--config", installedINI}, args...)...)
}

func (m machine) read(t *testing.T, winPath string) []byte {
	t.Helper()
	b, err := os.ReadFile(m.p.Path(winPath))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serviceLog is the service's log file ([General] LogFile, set by the test).
func (m machine) serviceLog() string {
	b, _ := os.ReadFile(m.p.Path(dataDir + `\presencebridge.log`))
	return string(b)
}

func (m machine) reg(t *testing.T, key, name string) string {
	t.Helper()
	v, err := m.p.RegValue(m.ctx, key, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// startService starts the service with net start and waits for RUNNING (Wine's
// net start says "started successfully" also for a service that stopped during
// its start).
func (m machine) startService(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	m.ok(t, "net", "start", serviceName)
	if st, err := m.p.WaitService(m.ctx, serviceName, wine.Running, 10*time.Second); err != nil {
		t.Fatalf("%v (%+v)\nservice log:\n%s", err, st, tail(m.serviceLog(), 20))
	}
	return time.Since(start)
}

func (m machine) stopService(t *testing.T) {
	t.Helper()
	m.ok(t, "net", "stop", serviceName)
	st, err := m.p.WaitService(m.ctx, serviceName, wine.Stopped, 25*time.Second)
	if err != nil || st.Win32ExitCode != 0 {
		t.Fatalf("after net stop: %+v, %v", st, err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// msiLog reads a log msiexec wrote (UTF-16 with a BOM on Windows, ASCII under Wine).
func msiLog(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	log, _, err := textfile.Decode(raw)
	if err != nil {
		t.Fatalf("msiexec's log %s: %v", path, err)
	}
	return log
}

func TestIntegrationWindows(t *testing.T) {
	wine.Require(t)
	require(t, "wixl", "msibuild", "msiinfo")
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// The prefix boots while the rest is built.
	var boot struct {
		p    *wine.Prefix
		err  error
		took time.Duration
		done chan struct{}
	}
	boot.done = make(chan struct{})
	wineDir := t.TempDir()
	go func() {
		defer close(boot.done)
		boot.p, boot.err = wine.Boot(ctx, wine.Options{Dir: wineDir})
		boot.took = time.Since(began)
	}()
	t.Cleanup(func() {
		<-boot.done
		if boot.p != nil {
			boot.p.Close()
		}
	})
	// Two releases: 0.9.2 upgrades 0.9.1.
	exe1, exe2 := windowsExe(t, "0.9.1"), windowsExe(t, "0.9.2")
	msi1, msi2 := buildMSIFrom(t, exe1, "0.9.1"), buildMSIFrom(t, exe2, "0.9.2")
	sim := startSimulated(t)
	// Everyone Available, so each change the test makes is one.
	for _, u := range sim.Users {
		sim.setPresence(t, u, "Available", "Available")
	}
	cti2 := startReceiver(t)
	built := time.Since(began)
	<-boot.done
	if boot.err != nil {
		t.Fatal(boot.err)
	}
	p := boot.p
	m := machine{p: p, ctx: ctx}
	t.Logf("builds and the simulated tenant %s; Wine prefix, booted beside them, %s", built.Round(time.Millisecond), boot.took.Round(time.Millisecond))
	defer func() {
		if t.Failed() {
			t.Logf("service log:\n%s\nwine.log:\n%s", tail(m.serviceLog(), 40), p.LogTail(40))
		}
	}()

	consoleRun := make(chan wine.Result, 1)
	var tokensBefore, tokensAtStart int
	var pendingSeq map[string]uint64
	var keptINI, keptUsers []byte
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		// A copied binary: service install registers it with the marker and the
		// Event Log source; uninstall removes it.
		{"service install of a copied binary", func(t *testing.T) {
			dir := p.Path(`C:\pb`)
			os.MkdirAll(dir, 0o755)
			for _, f := range []string{"Presence.ini", "users.csv", "sim-ca.pem"} {
				b, _ := os.ReadFile(filepath.Join(sim.Dir, f))
				os.WriteFile(filepath.Join(dir, f), b, 0o644)
			}
			b, _ := os.ReadFile(exe1)
			os.WriteFile(filepath.Join(dir, "presencebridge.exe"), b, 0o755)
			r := m.ok(t, `C:\pb\presencebridge.exe`, "--config", `C:\pb\Presence.ini`, "service", "install")
			if !strings.Contains(r.Stdout, "service install: done") {
				t.Errorf("service install said %q", r.Out())
			}
			img := m.reg(t, serviceKey, "ImagePath")
			if !strings.Contains(img, `C:\pb\presencebridge.exe`) || !strings.HasSuffix(img, `--config C:\pb\Presence.ini run --service`) {
				t.Errorf("ImagePath %q: not the copied exe with --config and run --service", img)
			}
			if v := m.reg(t, `HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\presencebridge`, "EventMessageFile"); !strings.Contains(v, "EventCreate.exe") {
				t.Errorf("Event Log source: EventMessageFile %q", v)
			}
			m.ok(t, `C:\pb\presencebridge.exe`, "--config", `C:\pb\Presence.ini`, "service", "uninstall")
			if _, err := p.ServiceStatus(ctx, serviceName); !errors.Is(err, wine.ErrNoService) {
				t.Errorf("after service uninstall: %v; want no such service", err)
			}
		}},

		// A silent first install with the account's properties.
		{"MSI first install", func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "install.log")
			m.ok(t, "msiexec", "/i", p.WinPath(msi1), "/qn", "/l*v", p.WinPath(logPath),
				"TENANTID="+sim.TenantID, "CLIENTID="+clientGUID, "AUTH=secret", "CLIENTSECRET="+simSecret)
			exe, _ := os.ReadFile(exe1)
			if !bytes.Equal(m.read(t, installedExe), exe) {
				t.Error("the installed exe is not the one built")
			}
			for _, f := range []string{`C:\Program Files\presencebridge\README.md`, `C:\Program Files\presencebridge\Presence.ini.example`,
				`C:\Program Files\presencebridge\presencebridge-dashboard.json`, dataDir + `\users.csv`} {
				if _, err := os.Stat(p.Path(f)); err != nil {
					t.Errorf("%s: %v", f, err)
				}
			}
			ini := string(m.read(t, installedINI))
			for _, want := range []string{"\r\nTenantID = " + sim.TenantID + "\r\n", "\r\nClientID = " + clientGUID + "\r\n", "\r\nAuth = secret\r\n", "\r\nClientSecret = enc:v1:"} {
				if !strings.Contains(ini, want) {
					t.Errorf("Presence.ini lacks %q", want)
				}
			}
			if strings.Contains(ini, simSecret) {
				t.Error("the client secret is in Presence.ini in clear")
			}
			log := msiLog(t, logPath)
			if !strings.Contains(log, "WriteSilentProperties") || strings.Contains(log, simSecret) {
				t.Errorf("the MSI log: custom action run %v, secret in it %v", strings.Contains(log, "WriteSilentProperties"), strings.Contains(log, simSecret))
			}
			// DPAPI, not the key file of other systems.
			if _, err := os.Stat(p.Path(dataDir + `\secret.key`)); err == nil {
				t.Error("a secret.key was written on Windows")
			}
			img := m.reg(t, serviceKey, "ImagePath")
			if !strings.Contains(img, installedExe) || !strings.HasSuffix(img, `--config "C:\ProgramData\presencebridge\Presence.ini" run --service`) {
				t.Errorf("ImagePath %q", img)
			}
			if v := m.reg(t, serviceKey, "ObjectName"); v != "LocalSystem" {
				t.Errorf("ObjectName %q", v)
			}
			if v := m.reg(t, serviceKey, "Start"); v != "0x2" {
				t.Errorf("Start %q; want 0x2 (automatic)", v)
			}
			if st, err := p.ServiceStatus(ctx, serviceName); err != nil || st.State != wine.Stopped {
				t.Errorf("the service after install: %+v, %v; want stopped (the engineer configures first)", st, err)
			}
			// The marker is for the service manager only. Wine's service
			// dispatcher takes 10 s to give up on a console program: the answer
			// is read after the next two steps.
			go func() {
				r, err := p.Run(ctx, installedExe, "--config", installedINI, "run", "--service")
				if err != nil {
					r.Code, r.Stderr = -1, err.Error()
				}
				consoleRun <- r
			}()
		}},

		// The engineer's part: point it at the tenant and the PBX, verify.
		{"configure and verify", func(t *testing.T) {
			for _, f := range []string{"users.csv", "sim-ca.pem"} {
				b, _ := os.ReadFile(filepath.Join(sim.Dir, f))
				os.WriteFile(p.Path(dataDir+`\`+f), b, 0o644)
			}
			// The simulated tenant knows its own app id only (a real one is a
			// GUID, as the MSI was given; a loopback LoginURL allows another).
			m.ok(t, installedExe, "--config", installedINI, "config", "set",
				"RichPresence.WinningTechnology=MSTeams", "Account.main.ClientID=presencebridge-daemon",
				"Microsoft.LoginURL="+sim.URL, "Microsoft.GraphURL="+sim.GraphURL,
				"Proxy.URL=direct", "Proxy.CAFile=sim-ca.pem", "HTTP.URL="+sim.PBXURL, "Polling.Interval=1s",
				"General.ControlAddr=127.0.0.1:0", "General.MetricsAddr=127.0.0.1:0", `General.LogFile=`+dataDir+`\presencebridge.log`)
			// verify decrypts the secret the MSI wrote and signs in with it.
			if r := m.pb(t, "verify"); r.Code != 0 || strings.Contains(r.Out(), simSecret) {
				t.Fatalf("verify: exit %d\n%s", r.Code, r.Out())
			}
		}},

		// secret encrypt: a DPAPI value that the service then signs in with.
		{"secret encrypt", func(t *testing.T) {
			cmd := p.Command(ctx, installedExe, "--config", installedINI, "secret", "encrypt")
			cmd.Stdin = strings.NewReader(simSecret + "\r\n")
			out, err := cmd.Output()
			enc := strings.TrimSpace(string(out))
			if err != nil || !strings.HasPrefix(enc, "enc:v1:") || strings.Contains(enc, simSecret) {
				t.Fatalf("secret encrypt: %v, %q", err, out)
			}
			if strings.Contains(string(m.read(t, installedINI)), enc) {
				t.Fatal("secret encrypt gave the value already in Presence.ini (DPAPI output is salted)")
			}
			m.ok(t, installedExe, "--config", installedINI, "config", "set", "Account.main.ClientSecret="+enc)
			if !strings.Contains(string(m.read(t, installedINI)), "\r\nClientSecret = "+enc+"\r\n") {
				t.Fatal("Presence.ini does not hold the encrypted value given")
			}
			// No token kept from verify: the service's first start signs in
			// with this value.
			if err := os.Remove(p.Path(dataDir + `\presencebridge.db`)); err != nil {
				t.Fatal(err)
			}
			tokensBefore = sim.tokenRequests(t)
		}},

		{"run --service from a console", func(t *testing.T) {
			select {
			case r := <-consoleRun:
				if r.Code != 2 || !strings.Contains(r.Stderr, "not started by the service manager") {
					t.Errorf("run --service from a console: exit %d, %q", r.Code, r.Out())
				}
			case <-time.After(60 * time.Second):
				t.Fatal("run --service from a console did not end")
			}
		}},

		// The service manager starts it; it answers at once, polls and delivers.
		{"service start", func(t *testing.T) {
			took := m.startService(t)
			t.Logf("net start to RUNNING: %s", took.Round(time.Millisecond))
			waitFor(t, 60*time.Second, "the first deliveries at the simulated PBX", func() bool {
				return strings.Contains(sim.pbxLog(), "HTTP  "+sim.Users[0])
			})
			sim.setPresence(t, sim.Users[0], "Busy", "InACall")
			waitFor(t, 30*time.Second, "the change at the simulated PBX", func() bool {
				return regexp.MustCompile(`HTTP  ` + regexp.QuoteMeta(sim.Users[0]) + `\s+oncall`).MatchString(sim.pbxLog())
			})
			var rep struct {
				Running  bool `json:"running"`
				Accounts []struct {
					SignIn struct {
						State string `json:"state"`
					} `json:"signIn"`
					Polling struct {
						Resolved int `json:"resolved"`
					} `json:"polling"`
				} `json:"accounts"`
			}
			r := m.pb(t, "status", "--json")
			if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil || r.Code != 0 {
				t.Fatalf("status --json: exit %d, %v\n%s", r.Code, err, r.Out())
			}
			if !rep.Running || len(rep.Accounts) != 1 || rep.Accounts[0].SignIn.State != "ok" || rep.Accounts[0].Polling.Resolved != len(sim.Users) {
				t.Errorf("status of the running service: %+v", rep)
			}
			if r := m.pb(t, "service", "status"); r.Code != 0 || r.Stdout != "running\n" {
				t.Errorf("service status: exit %d, %q", r.Code, r.Out())
			}
			log := m.serviceLog()
			for _, want := range []string{`msg="presencebridge started" version=0.9.1`, `folder=C:\ProgramData\presencebridge acl=D:`} {
				if !strings.Contains(log, want) {
					t.Errorf("the service log lacks %q", want)
				}
			}
			// The calls succeed; what Wine keeps of them is in the report.
			for _, bad := range []string{"Could not restrict", "Could not set the service's recovery actions", simSecret} {
				if strings.Contains(log, bad) {
					t.Errorf("the service log has %q", bad)
				}
			}
			// It signed in with the secret encrypt value (a wrong secret gets
			// no token, and nothing would have been polled).
			tokensAtStart = sim.tokenRequests(t)
			if tokensAtStart <= tokensBefore {
				t.Errorf("token requests %d before the start, %d after; want a sign-in with the new secret", tokensBefore, tokensAtStart)
			}
		}},

		// An edit of Presence.ini taken by service reload: the next change goes
		// to the new CTI.
		{"service reload", func(t *testing.T) {
			ini := m.read(t, installedINI)
			edited := bytes.Replace(ini, []byte("URL = "+sim.PBXURL), []byte("URL = "+cti2.URL), 1)
			if bytes.Equal(ini, edited) {
				t.Fatal("no [HTTP] URL line to edit")
			}
			os.WriteFile(m.p.Path(installedINI), edited, 0o644)
			if r := m.pb(t, "service", "reload"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "presencebridge service reload: ") {
				t.Fatalf("service reload: exit %d, %q", r.Code, r.Out())
			}
			waitFor(t, 10*time.Second, "the reload in the log", func() bool { return strings.Contains(m.serviceLog(), `why="reload asked"`) })
			sim.setPresence(t, sim.Users[1], "Busy", "InACall")
			waitFor(t, 30*time.Second, "the change at the new CTI", func() bool {
				d, ok := cti2.last(sim.Users[1], false)
				return ok && d.State == "oncall"
			})
		}},

		// Stop via the service manager while the CTI refuses: the pending states
		// stay in the state file.
		{"graceful stop keeps pending states", func(t *testing.T) {
			cti2.setRefuse(true)
			pendingSeq = map[string]uint64{}
			for _, u := range sim.Users[2:5] {
				sim.setPresence(t, u, "DoNotDisturb", "Presenting")
			}
			waitFor(t, 30*time.Second, "three refused changes", func() bool {
				for _, u := range sim.Users[2:5] {
					if _, ok := cti2.last(u, true); !ok {
						return false
					}
				}
				return true
			})
			for _, u := range sim.Users[2:5] {
				d, _ := cti2.last(u, true)
				pendingSeq[u] = d.Seq
			}
			start := time.Now()
			m.stopService(t)
			t.Logf("net stop to STOPPED: %s", time.Since(start).Round(time.Millisecond))
			log := m.serviceLog()
			if i, j := strings.LastIndex(log, `msg="presencebridge stopping"`), strings.LastIndex(log, `msg="presencebridge stopped"`); i < 0 || j < i || strings.Contains(log, "did not stop within") {
				t.Errorf("the log does not show a graceful stop:\n%s", tail(log, 10))
			}
		}},

		// The next start sends them first, with no new sign-in. Sign-in and
		// Graph hang meanwhile: RUNNING does not wait for the network, and the
		// kept states go out regardless.
		{"pending states sent after the next start", func(t *testing.T) {
			cti2.setRefuse(false)
			for _, path := range []string{"/token", "/openid-configuration", "/getPresencesByUserId", "/$batch", "')"} {
				sim.control(t, "POST", "/_sim/fault", map[string]any{"path": path, "delay": "30s", "count": -1}, nil)
			}
			defer sim.control(t, "DELETE", "/_sim/fault", nil, nil)
			took := m.startService(t)
			t.Logf("net start to RUNNING with Graph hanging: %s", took.Round(time.Millisecond))
			if !strings.Contains(m.serviceLog(), `msg="Delivering presence" targets=[http] pending=3`) {
				t.Errorf("the restarted service does not say it has the 3 pending states:\n%s", tail(m.serviceLog(), 10))
			}
			// Each arrives as it was kept: the same seq, DoNotDisturb/Presenting.
			deadline := time.Now().Add(30 * time.Second)
			for u, seq := range pendingSeq {
				for {
					d, ok := cti2.withSeq(u, seq)
					if ok && d.Teams.Activity == "Presenting" {
						break
					}
					if ok || time.Now().After(deadline) {
						last, _ := cti2.last(u, false)
						t.Fatalf("%s after the restart: kept seq %d arrived %v (%+v); last accepted %+v", u, seq, ok, d.Teams, last)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			if n := sim.tokenRequests(t); n != tokensAtStart {
				t.Errorf("token requests went from %d to %d across a restart; the state file's token should serve", tokensAtStart, n)
			}
		}},

		// A broken Presence.ini: the start fails with the service-specific exit
		// code 3 and the reason in the Event Log.
		{"broken Presence.ini fails the start", func(t *testing.T) {
			m.stopService(t)
			good := m.read(t, installedINI)
			broken := bytes.Replace(good, []byte("Interval = 1s"), []byte("Interval = 1 minute"), 1)
			os.WriteFile(m.p.Path(installedINI), broken, 0o644)
			defer os.WriteFile(m.p.Path(installedINI), good, 0o644)
			// The product's own start checks first and says what to fix.
			if r := m.pb(t, "service", "start"); r.Code != 3 || !strings.Contains(r.Stderr, `[Polling] Interval = "1 minute"`) {
				t.Errorf("service start with a broken INI: exit %d, %q", r.Code, r.Out())
			}
			m.run(t, "sc", "start", serviceName)
			st, err := p.WaitService(ctx, serviceName, wine.Stopped, 30*time.Second)
			if err != nil || st.Win32ExitCode != 1066 || st.ServiceExitCode != 3 {
				t.Fatalf("after a start with a broken INI: %+v, %v; want stopped, ERROR_SERVICE_SPECIFIC_ERROR (1066), exit code 3", st, err)
			}
			waitFor(t, 10*time.Second, "the Event Log entry", func() bool {
				events, _ := p.EventLog()
				for _, e := range events {
					if e.Type == "error" && strings.Contains(e.Text, `Presence.ini:`) && strings.Contains(e.Text, `[Polling] Interval = "1 minute"`) {
						return true
					}
				}
				return false
			})
		}},

		// A newer MSI over it: the engineer's files and the state stay, the
		// service is registered again with the marker, no new sign-in.
		{"upgrade", func(t *testing.T) {
			keptINI, keptUsers = m.read(t, installedINI), m.read(t, dataDir+`\users.csv`)
			// As an older install registered it: without the marker.
			m.ok(t, "sc", "delete", serviceName)
			m.ok(t, "sc", "create", serviceName, "binPath=", installedExe+` --config "`+installedINI+`" run`, "start=", "auto")
			m.ok(t, "msiexec", "/i", p.WinPath(msi2), "/qn")
			if !bytes.Equal(m.read(t, installedINI), keptINI) || !bytes.Equal(m.read(t, dataDir+`\users.csv`), keptUsers) {
				t.Error("the upgrade changed Presence.ini or users.csv")
			}
			if _, err := os.Stat(p.Path(dataDir + `\presencebridge.db`)); err != nil {
				t.Errorf("the state file after the upgrade: %v", err)
			}
			if r := m.pb(t, "version"); !strings.HasPrefix(r.Stdout, "presencebridge 0.9.2 ") {
				t.Errorf("version after the upgrade: %q", r.Stdout)
			}
			if img := m.reg(t, serviceKey, "ImagePath"); !strings.HasSuffix(img, " run --service") {
				t.Errorf("ImagePath after the upgrade %q: no --service", img)
			}
			m.startService(t)
			sim.setPresence(t, sim.Users[5], "Busy", "InACall")
			waitFor(t, 30*time.Second, "a change delivered by the upgraded service", func() bool {
				d, ok := cti2.last(sim.Users[5], false)
				return ok && d.State == "oncall"
			})
			if !strings.Contains(m.serviceLog(), `msg="presencebridge started" version=0.9.2`) {
				t.Error("the upgraded service did not log its start")
			}
			if n := sim.tokenRequests(t); n != tokensAtStart {
				t.Errorf("token requests went from %d to %d across the upgrade; the kept state file's token should serve", tokensAtStart, n)
			}
		}},

		{"downgrade refused", func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "downgrade.log")
			r := m.run(t, "msiexec", "/i", p.WinPath(msi1), "/qn", "/l*v", p.WinPath(logPath))
			if r.Code == 0 || !strings.Contains(msiLog(t, logPath), "WIX_DOWNGRADE_DETECTED") {
				t.Errorf("installing 0.9.1 over 0.9.2: exit %d; want a failure with the downgrade detected", r.Code)
			}
			if r := m.pb(t, "version"); !strings.HasPrefix(r.Stdout, "presencebridge 0.9.2 ") {
				t.Errorf("version after the refused downgrade: %q", r.Stdout)
			}
		}},

		{"uninstall keeps ProgramData", func(t *testing.T) {
			// The MSI's ServiceControl stops a running service itself, but once
			// in six runs under load Wine's msiexec removed files before the
			// service process had ended, and the exe (in use) stayed: stopping
			// first keeps this step about what uninstall keeps and removes.
			m.stopService(t)
			logPath := filepath.Join(t.TempDir(), "uninstall.log")
			m.ok(t, "msiexec", "/x", p.WinPath(msi2), "/qn", "/l*v", p.WinPath(logPath))
			if _, err := os.Stat(p.Path(installedExe)); err == nil {
				t.Errorf("the exe is still there; msiexec's log:\n%s", msiLog(t, logPath))
			}
			if _, err := p.ServiceStatus(ctx, serviceName); !errors.Is(err, wine.ErrNoService) {
				t.Errorf("the service after uninstall: %v; want no such service", err)
			}
			if !bytes.Equal(m.read(t, installedINI), keptINI) || !bytes.Equal(m.read(t, dataDir+`\users.csv`), keptUsers) {
				t.Error("Presence.ini or users.csv changed or went")
			}
			if _, err := os.Stat(p.Path(dataDir + `\presencebridge.db`)); err != nil {
				t.Errorf("the state file after uninstall: %v", err)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return
		}
	}
	t.Logf("Windows under Wine: %s in all", time.Since(began).Round(time.Millisecond))
}
