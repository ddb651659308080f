package simulate_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/sim/simulate/simconfig"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// A bad command line is a *UsageError: the flag package's own complaints are
// printed already, the command's are for the caller to print.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		printed bool
		msg     string // the error's text
		stderr  string // in what Main printed
	}{
		{[]string{"--bogus"}, true, "flag provided but not defined: -bogus", "Usage: presencebridge simulate [flags]"},
		{[]string{"--help"}, true, flag.ErrHelp.Error(), "write Presence.ini, users.csv and the CA certificate"},
		{[]string{"--auth", "password"}, false, `--auth "password": use devicecode or secret`, ""},
		{[]string{"--call", "user00001:user00002"}, true, `invalid value "user00001:user00002" for flag -call: want FROM:TO:AFTER:DURATION, e.g. user00001:user00002:20s:8s`, "Usage: presencebridge simulate [flags]"},
		{[]string{"--call", "user00001:user00002:soon:8s"}, true, `invalid value "user00001:user00002:soon:8s" for flag -call: AFTER "soon": want a duration of 0 or more, e.g. 20s`, "Usage:"},
		{[]string{"--call", "user00001:user00002:1s:0s"}, true, `invalid value "user00001:user00002:1s:0s" for flag -call: DURATION "0s": want a duration above 0 and at most 24h, e.g. 8s`, "Usage:"},
		{[]string{"--call", "user00001:user00002:1s:8s"}, false, "--call needs --kamailio-pbx: the calls go through Kamailio as a small PBX", ""},
		{[]string{"--secret-users", "2", "--auth", "secret"}, false, "--secret-users 2 needs --auth devicecode: with --auth secret the one account signs in with the client secret already", ""},
		{[]string{"--secret-users", "4", "--users", "3"}, false, "--secret-users 4: use 0 to --users (3)", ""},
		{[]string{"--apps", "0"}, false, "--apps 0: use 1 or more", ""},
		// Checked against the tenant's users, before Kamailio is started.
		{[]string{"--addr", "127.0.0.1:0", "--users", "3", "--kamailio-pbx", "--call", "user00001:nobody:1s:8s"}, false,
			`--call user00001:nobody: "nobody" is not a simulated user (use a UPN or the name before the @, e.g. user00001)`, "level=INFO"},
	} {
		var stdout, stderr bytes.Buffer
		err := simulate.Main(tc.args, &stdout, &stderr)
		var usage *simulate.UsageError
		if !errors.As(err, &usage) || usage.Printed != tc.printed || err.Error() != tc.msg {
			t.Errorf("%v: %#v, want a UsageError %q (printed: %v)", tc.args, err, tc.msg, tc.printed)
		}
		if !strings.Contains(stderr.String(), tc.stderr) || (tc.stderr == "" && stderr.Len() > 0) || stdout.Len() > 0 {
			t.Errorf("%v: stdout %q, stderr %q; want nothing on stdout and %q on stderr", tc.args, stdout.String(), stderr.String(), tc.stderr)
		}
	}
}

// simulation is a Run of the simulate command in this process.
type simulation struct {
	ready  simulate.Ready
	cfg    *config.Config
	stderr *testkit.Buffer
	stop   func() error // ends Run and returns its error
}

func startSimulate(t *testing.T, args ...string) *simulation {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &simulation{stderr: &testkit.Buffer{}}
	done := make(chan error, 1)
	go func() {
		err := simulate.Run(ctx, append([]string{"--addr", "127.0.0.1:0", "--rate", "0", "--write-config", dir}, args...), pw, s.stderr)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	s.stop = sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() { s.stop() })
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v\n%s", err, s.stderr)
	}
	go io.Copy(io.Discard, pr)
	if err := json.Unmarshal([]byte(line), &s.ready); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	if s.cfg, err = config.Load(filepath.Join(dir, "Presence.ini")); err != nil {
		t.Fatalf("the written Presence.ini: %v", err)
	}
	return s
}

// waitLine waits until the simulation printed a line that starts with prefix
// on stderr and returns that line.
func (s *simulation) waitLine(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, l := range strings.Split(s.stderr.String(), "\n") {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("simulate never printed a line starting %q:\n%s", prefix, s.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// simulate --pbx prints its ready line, writes a configuration that reaches the
// tenant and names its CTI receiver, and the receiver prints what arrives with
// how long after the Teams change it came.
func TestSimulateWithHTTPReceiver(t *testing.T) {
	s := startSimulate(t, "--users", "4", "--auth", "secret", "--pbx", "127.0.0.1:0")
	r := s.ready
	if r.Users != 4 || !strings.HasPrefix(r.URL, "https://127.0.0.1:") || r.GraphURL != r.URL+"/v1.0" || r.Authority != r.URL+"/"+r.TenantID {
		t.Errorf("ready line %+v", r)
	}
	if s.cfg.Microsoft.LoginURL != r.URL || s.cfg.Microsoft.GraphURL != r.GraphURL || s.cfg.Proxy.CAFile != r.CAFile ||
		len(s.cfg.Accounts) != 1 || s.cfg.Accounts[0].TenantID != r.TenantID || s.cfg.Accounts[0].Auth != config.AuthSecret {
		t.Errorf("written config: [Microsoft] %+v, CAFile %s, accounts %+v; want the ready line's tenant, a secret account", s.cfg.Microsoft, s.cfg.Proxy.CAFile, s.cfg.Accounts)
	}
	list, _, err := users.Load(s.cfg.UsersFile)
	if err != nil || len(list) != 4 {
		t.Fatalf("users file: %d users, %v; want 4", len(list), err)
	}
	if !strings.HasPrefix(s.cfg.HTTP.URL, "http://127.0.0.1:") || r.HTTPURL != s.cfg.HTTP.URL {
		t.Fatalf("[HTTP] URL %q, ready line's httpURL %q; want the receiver in both", s.cfg.HTTP.URL, r.HTTPURL)
	}
	if r.SIPServer != "" || r.CallURL != "" || s.cfg.PBX.Watching() {
		t.Errorf("ready line sipServer %q, callURL %q, [PBX] Watch %q; want no Kamailio, no calls, no watch", r.SIPServer, r.CallURL, s.cfg.PBX.Watch.Watch)
	}

	// The tenant's TLS chains to the CA file the ready line names.
	pem, err := os.ReadFile(r.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	post := func(body string) int {
		t.Helper()
		resp, err := client.Post(s.cfg.HTTP.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	upn := list[1].UPN
	if code := post("not json"); code != http.StatusBadRequest {
		t.Errorf("a body that is no document: %d, want 400", code)
	}
	ctl, err := client.Post(r.URL+"/_sim/presence", "application/json",
		strings.NewReader(`{"upn":"`+upn+`","availability":"Busy","activity":"InACall"}`))
	if err != nil {
		t.Fatal(err)
	}
	var changed struct {
		At time.Time `json:"changedAt"`
	}
	json.NewDecoder(ctl.Body).Decode(&changed)
	ctl.Body.Close()
	if ctl.StatusCode/100 != 2 || changed.At.IsZero() {
		t.Fatalf("the tenant's control API refused a presence change: %s", ctl.Status)
	}
	doc, _ := json.Marshal(cti.Document{UPN: upn, State: "oncall", Note: "In a call", Reason: "change",
		Teams: cti.Teams{Availability: "Busy", Activity: "InACall"}})
	if code := post(string(doc)); code != http.StatusNoContent {
		t.Errorf("a document: %d, want 204", code)
	}
	if line := s.waitLine(t, "HTTP  "+upn); !strings.Contains(line, `oncall   "In a call"`) || !strings.Contains(line, "(Teams Busy/InACall; ") || !regexp.MustCompile(`; [0-9]+\.[0-9]{2} s after the Teams change at [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}\)$`).MatchString(line) {
		t.Errorf("printed %q; want the document and its latency from the Teams change", line)
	}
	// The arrivals endpoint matches each document with the tenant's change of
	// that state (on the tenant's clock), the state at start, or nothing.
	var atStart struct{ Availability, Activity string }
	got, err := client.Get(r.URL + "/_sim/sessions?upn=" + list[2].UPN)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(got.Body).Decode(&atStart)
	got.Body.Close()
	for _, d := range []cti.Document{{UPN: list[2].UPN, Teams: cti.Teams{Availability: atStart.Availability, Activity: atStart.Activity}},
		{UPN: list[3].UPN, Teams: cti.Teams{Availability: "PresenceUnknown", Activity: "PresenceUnknown"}}} {
		doc, _ := json.Marshal(d)
		if code := post(string(doc)); code != http.StatusNoContent {
			t.Errorf("a document: %d, want 204", code)
		}
	}
	arrivals := func(query string) (simulate.Arrivals, int) {
		t.Helper()
		resp, err := http.Get(r.ArrivalsURL + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a simulate.Arrivals
		json.NewDecoder(resp.Body).Decode(&a)
		return a, resp.StatusCode
	}
	all, code := arrivals("?since=" + changed.At.Format(time.RFC3339Nano))
	type seen struct {
		upn, match string
		changeAt   time.Time
	}
	var gotSeen []seen
	for _, a := range all.Arrivals {
		if a.Target != simulate.TargetHTTP || a.At.Before(changed.At) {
			t.Errorf("arrival %+v: want target http, at or after the change (%s)", a, changed.At)
		}
		gotSeen = append(gotSeen, seen{a.UPN, a.Match, a.ChangeAt})
	}
	wantSeen := []seen{{upn, simulate.MatchChange, changed.At}, {list[2].UPN, simulate.MatchStart, time.Time{}}, {list[3].UPN, simulate.MatchNone, time.Time{}}}
	if code != http.StatusOK || !slices.EqualFunc(gotSeen, wantSeen, func(a, b seen) bool { return a.upn == b.upn && a.match == b.match && a.changeAt.Equal(b.changeAt) }) {
		t.Errorf("arrivals: %d %+v; want 200 and %+v", code, gotSeen, wantSeen)
	}
	// A state the tenant never showed is no user's first Teams state.
	if f := all.First[simulate.TargetHTTP]; f.Users != 2 || f.Last.IsZero() || f.Unmatched != 1 {
		t.Errorf("first arrivals %+v; want 2 users and 1 arrival unmatched", all.First)
	}
	if summary, code := arrivals(""); code != http.StatusOK || summary.Arrivals != nil || summary.First[simulate.TargetHTTP].Users != 2 {
		t.Errorf("arrivals without since: %d %+v; want the first arrivals only", code, summary)
	}
	if _, code := arrivals("?since=yesterday"); code != http.StatusBadRequest {
		t.Errorf("arrivals since=yesterday: %d, want 400", code)
	}
	// Without --kamailio-pbx there is no PBX to call through; the endpoint says so.
	call, err := client.Post(strings.TrimSuffix(s.cfg.HTTP.URL, "/presence")+simulate.CallPath, "application/json",
		strings.NewReader(`{"from":"user00001","to":"user00002","duration":"1s"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(call.Body)
	call.Body.Close()
	if call.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "start simulate with --kamailio-pbx") {
		t.Errorf("POST %s without a PBX: %s %s; want 503 naming --kamailio-pbx", simulate.CallPath, call.Status, body)
	}
	if err := s.stop(); err != nil {
		t.Errorf("Run after its context ended: %v", err)
	}
	if _, err := client.Post(s.cfg.HTTP.URL, "application/json", strings.NewReader(string(doc))); err == nil {
		t.Error("the receiver still answers after simulate stopped")
	}
	if _, err := os.Stat(r.CAFile); err != nil {
		t.Errorf("the CA file the ready line names: %v", err)
	}
}

// TestIntegrationSimulateKamailio: simulate --kamailio runs a real Kamailio, names
// it in the written [SIP] and prints the NOTIFYs its watchers get for what is
// published there.
func TestIntegrationSimulateKamailio(t *testing.T) {
	testkit.Need(t, "the Kamailio integration test", kamailio.Find)
	s := startSimulate(t, "--users", "3", "--auth", "devicecode", "--kamailio", "2")
	if !strings.HasPrefix(s.cfg.SIP.Server, "127.0.0.1:") {
		t.Fatalf("[SIP] Server %q, want the Kamailio simulate runs", s.cfg.SIP.Server)
	}
	if a := s.cfg.Accounts; len(a) != 1 || a[0].ID != "demo" || a[0].Auth != config.AuthDeviceCode || a[0].Username == "" {
		t.Errorf("accounts %+v, want demo signing in with the device code", a)
	}
	p, err := sip.New(sip.Options{Settings: s.cfg.SIP, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	list, _, err := users.Load(s.cfg.UsersFile)
	if err != nil {
		t.Fatal(err)
	}
	u := list[1] // watched: simulate watches the first two users
	now := time.Now().UTC()
	errs := p.Send(context.Background(), []delivery.Item{{User: u, Seq: 1, Reason: "change", Queued: now,
		State:  presence.State{UPN: u.UPN, Availability: presence.Busy, Activity: presence.ActInACall, Seen: now, Changed: now},
		Mapped: presence.Mapped{State: "oncall", Basic: "open", Activity: "on-the-phone", Note: "In a call"}}})
	if errs[0] != nil {
		t.Fatalf("PUBLISH to simulate's Kamailio: %v", errs[0])
	}
	line := s.waitLine(t, "SIP   "+u.SIPURI+" ")
	if !strings.Contains(line, "NOTIFY basic=open   activity=on-the-phone") || !strings.Contains(line, `note="In a call"`) {
		t.Errorf("printed %q; want the published state as the watcher got it", line)
	}
}

// tenantClient is an HTTP client that trusts the simulated tenant's CA.
func (s *simulation) tenantClient(t *testing.T) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(s.ready.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// waitLines waits until the simulation printed n lines that start with prefix
// and contain each of parts, and returns the last of them.
func (s *simulation) waitLines(t *testing.T, n int, prefix string, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var found []string
	lines:
		for _, l := range strings.Split(s.stderr.String(), "\n") {
			if !strings.HasPrefix(l, prefix) {
				continue
			}
			for _, p := range parts {
				if !strings.Contains(l, p) {
					continue lines
				}
			}
			found = append(found, l)
		}
		if len(found) >= n {
			return found[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("simulate printed %d lines starting %q with %q, want %d:\n%s", len(found), prefix, parts, n, s.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIntegrationSimulateCalls: with --kamailio-pbx simulate runs Kamailio as a
// small PBX, writes [PBX] Watch = dialog with a second account that may write
// presence (--secret-users), places the --call it was given and the calls POST
// /_sim/call asks for through Kamailio (a dialog watcher sees them confirmed and
// ended), prints each step, and prints each setPresence and clearPresence the
// tenant answers with what Teams shows then.
func TestIntegrationSimulateCalls(t *testing.T) {
	testkit.Need(t, "the Kamailio integration test", kamailio.Find)
	s := startSimulate(t, "--users", "3", "--auth", "devicecode", "--secret-users", "2", "--pbx", "127.0.0.1:0",
		"--kamailio-pbx", "--call", "user00003:user00001:0s:500ms")
	r := s.ready
	if r.SIPServer == "" || s.cfg.SIP.Server != r.SIPServer || s.cfg.PBX.Watch.Watch != "dialog" ||
		r.CallURL != strings.TrimSuffix(r.HTTPURL, "/presence")+simulate.CallPath {
		t.Fatalf("ready line %+v, [SIP] Server %q, [PBX] Watch %q; want Kamailio in both, Watch = dialog and the call endpoint beside the receiver",
			r, s.cfg.SIP.Server, s.cfg.PBX.Watch.Watch)
	}
	if a := s.cfg.Accounts; len(a) != 2 || a[0].Auth != config.AuthDeviceCode || a[1].ID != simconfig.SecretAccountID || a[1].Auth != config.AuthSecret {
		t.Errorf("accounts %+v; want the device-code account and app with the client secret", a)
	}
	list, _, err := users.Load(s.cfg.UsersFile)
	if err != nil || len(list) != 3 {
		t.Fatalf("users file: %d users, %v", len(list), err)
	}
	anna, bob, carl := list[0], list[1], list[2]

	// The scripted call: carl calls anna at once, for half a second.
	s.waitLine(t, "CALL  "+carl.UPN+" -> "+anna.UPN+" calling ("+carl.SIPURI+" -> "+anna.SIPURI+"; Teams shows ")
	s.waitLine(t, "CALL  "+carl.UPN+" -> "+anna.UPN+" answered; hangs up in 500ms")
	s.waitLine(t, "CALL  "+carl.UPN+" -> "+anna.UPN+" hung up after 0.5 s")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watcher, err := kamailio.WatchEvent(ctx, r.SIPServer, bob.SIPURI, "dialog")
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	client := s.tenantClient(t)
	post := func(url, contentType, body string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, bad := range []struct {
		body string
		code int
		says string
	}{
		{`{"from":"user00001"}`, http.StatusBadRequest, `want {"from":"user00001","to":"user00002","duration":"8s"}`},
		{`{"from":"user00001","to":"user00002","duration":"forever"}`, http.StatusBadRequest, `duration "forever": want a duration above 0`},
		{`{"from":"user00001","to":"nobody","duration":"1s"}`, http.StatusNotFound, `"nobody": not a simulated user`},
		{`{"from":"user00001","to":"user00001@contoso.example","duration":"1s"}`, http.StatusBadRequest, "a phone cannot call itself"},
	} {
		code, body := post(r.CallURL, "application/json", bad.body)
		var problem struct{ Error string }
		if err := json.Unmarshal([]byte(body), &problem); code != bad.code || err != nil || !strings.Contains(problem.Error, bad.says) {
			t.Errorf("POST %s %s: %d %s; want %d saying %s", simulate.CallPath, bad.body, code, body, bad.code, bad.says)
		}
	}

	// anna calls bob for 2 s; meanwhile an app with the secret (as presencebridge
	// would) shows the call in Teams, and clears it after the hang-up. bob, who
	// was Available, went Away in Teams himself during the call.
	if _, err := postControl(client, r.URL, bob.UPN, "Available", "Available"); err != nil {
		t.Fatal(err)
	}
	code, body := post(r.CallURL, "application/json", `{"from":"user00001","to":"user00002","duration":"2s"}`)
	var info struct {
		From, FromURI, To, ToURI, CallID string
		Answered, HangupAt               time.Time
	}
	if err := json.Unmarshal([]byte(body), &info); code != http.StatusOK || err != nil || info.From != anna.UPN || info.FromURI != anna.SIPURI ||
		info.To != bob.UPN || info.ToURI != bob.SIPURI || info.CallID == "" || info.HangupAt.Sub(info.Answered) != 2*time.Second {
		t.Fatalf("POST %s: %d %s (%v); want 200 with the answered call of %s to %s", simulate.CallPath, code, body, err, anna.UPN, bob.UPN)
	}
	if _, err := watcher.WaitFor(ctx, func(n kamailio.Notify) bool { return n.Confirmed() }); err != nil {
		t.Fatalf("the PBX never showed %s in a call: %v", bob.SIPURI, err)
	}
	code, body = post(strings.TrimSuffix(r.Authority, "/")+"/oauth2/v2.0/token", "application/x-www-form-urlencoded",
		"grant_type=client_credentials&client_id="+s.cfg.Accounts[1].ClientID+"&client_secret="+graphsim.DefaultDaemonSecret+
			"&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default")
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &tok); code != http.StatusOK || err != nil || tok.AccessToken == "" {
		t.Fatalf("client-credentials token: %d (%v)", code, err)
	}
	write := func(op, body string) int {
		t.Helper()
		code, _ := post(r.GraphURL+"/users/"+bob.UPN+"/presence/"+op, "application/json", body, "Authorization", "Bearer "+tok.AccessToken)
		return code
	}
	app := s.cfg.Accounts[1].ClientID
	if code := write("setPresence", `{"sessionId":"`+app+`","availability":"Busy","activity":"InAMeeting"}`); code != http.StatusBadRequest {
		t.Errorf("setPresence Busy/InAMeeting: %d, want 400", code)
	}
	s.waitLines(t, 1, "TEAMS "+bob.UPN+" ", " setPresence Busy/InAMeeting by "+app+" refused: 400 BadRequest")
	if code := write("setPresence", `{"sessionId":"`+app+`","availability":"Busy","activity":"InACall","expirationDuration":"PT5M"}`); code != http.StatusOK {
		t.Fatalf("setPresence: %d", code)
	}
	line := s.waitLines(t, 1, "TEAMS "+bob.UPN+" ", " Busy/InACall (setPresence by "+app+", for 5m0s; ")
	if !strings.HasSuffix(line, " s after the call was answered)") {
		t.Errorf("printed %q; want how long after the call's answer it came", line)
	}
	if _, err := postControl(client, r.URL, bob.UPN, "Away", "Away"); err != nil {
		t.Fatal(err)
	}
	if _, err := watcher.WaitFor(ctx, func(n kamailio.Notify) bool { return !n.Confirmed() }); err != nil {
		t.Fatalf("the PBX never showed %s's call ended: %v", bob.SIPURI, err)
	}
	s.waitLine(t, "CALL  "+anna.UPN+" -> "+bob.UPN+" hung up after 2.0 s")
	if code := write("clearPresence", `{"sessionId":"`+app+`"}`); code != http.StatusOK {
		t.Fatalf("clearPresence: %d", code)
	}
	line = s.waitLines(t, 1, "TEAMS "+bob.UPN+" ", " back to Away/Away (clearPresence by "+app+"; ")
	if !strings.HasSuffix(line, " s after the hang-up; the user's own state changed during the call, from Available/Available)") {
		t.Errorf("printed %q; want how long after the hang-up it came, and that bob's own state changed during the call", line)
	}
	// A second clear finds no session: Graph answers 404, shown as refused.
	if code := write("clearPresence", `{"sessionId":"`+app+`"}`); code != http.StatusNotFound {
		t.Errorf("a second clearPresence: %d, want 404", code)
	}
	s.waitLines(t, 1, "TEAMS "+bob.UPN+" ", " clearPresence by "+app+" refused: 404 NotFound")
	if err := s.stop(); err != nil {
		t.Errorf("Run after its context ended: %v", err)
	}
}

// postControl sets upn's own presence through the tenant's control API.
func postControl(client *http.Client, tenant, upn, availability, activity string) (int, error) {
	resp, err := client.Post(tenant+"/_sim/presence", "application/json",
		strings.NewReader(`{"upn":"`+upn+`","availability":"`+availability+`","activity":"`+activity+`"}`))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, errors.New("control API: " + resp.Status)
	}
	return resp.StatusCode, nil
}
