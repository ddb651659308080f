package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
)

// latencyFlags are the knobs of `bench latency`.
type latencyFlags struct {
	users, watch, accounts, budget int
	rate                           float64 // Teams changes per second across the tenant
	duration                       time.Duration
	interval                       string // [Polling] Interval as written; empty: left out
	http, sip                      bool
	targets                        string
	cpuProfile, memProfile         string
	logPath                        string
	markdown                       bool
}

// Latency runs `presencebridge bench latency` with args (what follows
// "latency"): the simulated tenant (a child process, `simulate`, with its CTI
// receiver and, for SIP, Kamailio and an independent watcher) with --users
// users changing --rate times a second in all, and presencebridge in this
// process (app.Open and Run, as `run` does) with a Presence.ini that names
// the tenant, the targets and the budget and keeps the product's defaults
// for the rest. It prints the latency from each Teams change to its state's
// arrival at each target, measured by the tenant's process on its one clock
// (not presencebridge's own figures), over --duration of steady state after
// the first good cycle, with the budget used, the 429s, presencebridge's
// CPU, peak memory and state file, the cold start and a warm restart. Bad
// arguments return a *simulate.UsageError (printed already when the flag
// package found them).
func Latency(args []string, stdout, stderr io.Writer) error {
	f, err := latencyArgs(args, stderr)
	if err != nil {
		return err
	}
	if f.sip {
		if _, err := kamailio.Find(); err != nil {
			return fmt.Errorf("--targets %s: the SIP target of this bench is Kamailio: %w; or measure --targets http only", f.targets, err)
		}
	}
	// A closed stdout (piped into head) stops the run too, so the work folder
	// is removed and the tenant stopped, as on Ctrl-C.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
	defer stop()
	b := &latencyBench{f: f, stderr: stderr}
	defer b.close()
	if err := b.start(); err != nil {
		return err
	}
	res, err := b.run(ctx)
	if err != nil {
		return err
	}
	res.print(stdout, f)
	return nil
}

// latencyArgs reads the command line of `bench latency`.
func latencyArgs(args []string, stderr io.Writer) (latencyFlags, error) {
	var f latencyFlags
	fs := flag.NewFlagSet("bench latency", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&f.users, "users", 50000, "simulated users")
	fs.Float64Var(&f.rate, "rate", 50, "Teams presence changes per second across the tenant (the simulated tenant's rate per user per hour is this × 3600 / --users)")
	fs.DurationVar(&f.duration, "duration", time.Minute, "how long the steady state is measured, from the first good cycle (every user read and delivered once)")
	fs.IntVar(&f.budget, "budget-requests", config.DefaultBudgetRequests, "[Polling] BudgetRequests and the simulated tenant's throttle limit: Graph requests per 30 s per app")
	fs.StringVar(&f.interval, "interval", "", "[Polling] Interval, as written in Presence.ini (e.g. 5s); empty: the key is left out and the product's default applies")
	fs.IntVar(&f.watch, "watch", 1000, "users the independent SIP watcher subscribes to at Kamailio, the first ones (at most --users); the SIP latency is theirs")
	fs.StringVar(&f.targets, "targets", "http,sip", "the targets presencebridge delivers to: http (the simulated CTI), sip (Kamailio, PIDF PUBLISH), or both")
	fs.IntVar(&f.accounts, "accounts", 1, "[Account.*] sections the users are spread over (round robin, the users file's Account column), each signing in with an app registration of its own, so each has its own budget")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured steady state to this file")
	fs.StringVar(&f.memProfile, "memprofile", "", "write a heap profile at the end of the measured steady state to this file")
	fs.StringVar(&f.logPath, "log", "", "write presencebridge's log (info level) to this file")
	fs.BoolVar(&f.markdown, "markdown", false, "also print the table as Markdown rows (for BENCHMARKS.md)")
	if err := fs.Parse(args); err != nil {
		return f, &simulate.UsageError{Err: err, Printed: true}
	}
	watchSet := false
	fs.Visit(func(fl *flag.Flag) { watchSet = watchSet || fl.Name == "watch" })
	if !watchSet {
		f.watch = min(f.watch, f.users)
	}
	for _, t := range strings.Split(f.targets, ",") {
		switch strings.ToLower(strings.TrimSpace(t)) {
		case simulate.TargetHTTP:
			f.http = true
		case simulate.TargetSIP:
			f.sip = true
		default:
			return f, &simulate.UsageError{Err: fmt.Errorf("--targets %q: use http, sip or http,sip", f.targets)}
		}
	}
	f.targets = strings.Join(f.targetNames(), ",")
	switch {
	case fs.NArg() > 0:
		return f, &simulate.UsageError{Err: fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	case f.users < 1:
		return f, &simulate.UsageError{Err: fmt.Errorf("--users %d: use 1 or more", f.users)}
	case !(f.rate > 0) || math.IsInf(f.rate, 0):
		return f, &simulate.UsageError{Err: fmt.Errorf("--rate %v: use Teams changes per second above 0, e.g. 50", f.rate)}
	case f.duration <= 0:
		return f, &simulate.UsageError{Err: fmt.Errorf("--duration %s: use a duration above 0, e.g. 60s", f.duration)}
	case f.budget < 1:
		return f, &simulate.UsageError{Err: fmt.Errorf("--budget-requests %d: use 1 or more (Microsoft: 1500)", f.budget)}
	case f.accounts < 1 || f.accounts > f.users:
		return f, &simulate.UsageError{Err: fmt.Errorf("--accounts %d: use 1 to --users (%d)", f.accounts, f.users)}
	case f.sip && (f.watch < 1 || f.watch > f.users):
		return f, &simulate.UsageError{Err: fmt.Errorf("--watch %d: use 1 to --users (%d); the SIP latency is measured at the watcher", f.watch, f.users)}
	case strings.ContainsAny(f.interval, "\r\n"):
		return f, &simulate.UsageError{Err: fmt.Errorf("--interval %q: one line, e.g. 5s", f.interval)}
	}
	return f, nil
}

// targetNames are the targets measured, in the order the table lists them.
func (f latencyFlags) targetNames() []string {
	var out []string
	if f.http {
		out = append(out, simulate.TargetHTTP)
	}
	if f.sip {
		out = append(out, simulate.TargetSIP)
	}
	return out
}

// latencyBench is one run of `bench latency`.
type latencyBench struct {
	f       latencyFlags
	stderr  io.Writer
	dir     string
	sim     *tenant
	api     *tenantAPI
	cfg     *config.Config
	watched map[string]bool // the UPNs the SIP watcher follows
	logFile *os.File
	bridge  *bridge
}

func (b *latencyBench) close() {
	if b.bridge != nil && !b.bridge.stopWithin(30*time.Second) {
		// Run is stuck in work that does not watch its context (seen: one
		// transaction queueing every user); the process ends anyway.
		fmt.Fprintln(b.stderr, "bench latency: presencebridge did not stop within 30 s; leaving it")
	}
	if b.sim != nil {
		b.sim.stop()
	}
	if b.logFile != nil {
		b.logFile.Close()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// start runs the tenant and writes the Presence.ini presencebridge runs on.
func (b *latencyBench) start() error {
	var err error
	if b.dir, err = os.MkdirTemp("", "presencebridge-bench-latency-"); err != nil {
		return err
	}
	f := b.f
	// --interval 0s and --resolve-rate 0 leave [Polling] out of the
	// Presence.ini simulate writes (this bench writes its own); simulate
	// writes the users file and the CA file, so this process never holds
	// the list of users (its memory is presencebridge's figure).
	simArgs := []string{"--addr", "127.0.0.1:0", "--users", strconv.Itoa(f.users),
		"--rate", strconv.FormatFloat(f.rate*3600/float64(f.users), 'g', -1, 64),
		"--throttle-limit", strconv.Itoa(f.budget), "--auth", "secret", "--interval", "0s", "--resolve-rate", "0",
		"--apps", strconv.Itoa(f.accounts), "--pbx", "127.0.0.1:0", "--write-config", b.dir}
	if f.sip {
		simArgs = append(simArgs, "--kamailio", strconv.Itoa(f.watch), "--kamailio-memory")
	}
	if b.sim, err = startTenant(simArgs); err != nil {
		return err
	}
	if b.api, err = newTenantAPI(b.sim.Ready); err != nil {
		return err
	}
	if b.sim.ArrivalsURL == "" {
		return errors.New("the simulated tenant names no arrivals endpoint (simulate --pbx)")
	}
	if err := b.writeUsers(filepath.Join(b.dir, "users.csv")); err != nil {
		return err
	}
	path := filepath.Join(b.dir, "Presence.ini")
	if err := os.WriteFile(path, []byte(b.presenceINI()), 0o600); err != nil {
		return err
	}
	if b.cfg, err = config.Load(path); err != nil {
		return fmt.Errorf("the Presence.ini bench latency wrote does not load (check --interval and --budget-requests): %w", err)
	}
	if f.logPath != "" {
		if b.logFile, err = os.Create(f.logPath); err != nil {
			return err
		}
	}
	return nil
}

// accountID is the id of the k-th account (from 1).
func (b *latencyBench) accountID(k int) string {
	if b.f.accounts == 1 {
		return "main"
	}
	return fmt.Sprintf("a%d", k)
}

// presenceINI is the configuration presencebridge runs on: what reaches the
// simulated tenant (its URLs, CA and apps), the budget, the targets, and
// nothing else, so the product's defaults apply. The control and metrics
// endpoints stay on, on free ports.
func (b *latencyBench) presenceINI() string {
	r := b.sim.Ready
	var s strings.Builder
	s.WriteString("; Written by \"presencebridge bench latency\" for its simulated tenant; what is\n; not here has the product's default.\n")
	s.WriteString("[General]\nStateFile = presencebridge.db\nUsersFile = users.csv\nControlAddr = 127.0.0.1:0\nMetricsAddr = 127.0.0.1:0\n")
	fmt.Fprintf(&s, "\n[Microsoft]\nLoginURL = %s\nGraphURL = %s\n", r.URL, r.GraphURL)
	fmt.Fprintf(&s, "\n[Proxy]\nURL = direct\nCAFile = %s\n", r.CAFile)
	fmt.Fprintf(&s, "\n[Polling]\nBudgetRequests = %d\n", b.f.budget)
	if b.f.interval != "" {
		fmt.Fprintf(&s, "Interval = %s\n", b.f.interval)
	}
	for k := 1; k <= b.f.accounts; k++ {
		fmt.Fprintf(&s, "\n[Account.%s]\nTenantID = %s\nClientID = %s\nAuth = secret\nClientSecret = %s\n",
			b.accountID(k), r.TenantID, simulate.DaemonApp(k), graphsim.DefaultDaemonSecret)
	}
	if b.f.http {
		fmt.Fprintf(&s, "\n[HTTP]\nURL = %s\n", r.HTTPURL)
	}
	if b.f.sip {
		fmt.Fprintf(&s, "\n[SIP]\nServer = %s\n", r.SIPServer)
	}
	return s.String()
}

// writeUsers notes the watched users (the first --watch of the users file
// simulate wrote) and, with several accounts, adds the Account column, user
// i to account i mod --accounts, a line at a time.
func (b *latencyBench) writeUsers(path string) error {
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	var out *bufio.Writer
	tmp := path + ".tmp"
	if b.f.accounts > 1 {
		of, err := os.Create(tmp)
		if err != nil {
			return err
		}
		defer of.Close()
		out = bufio.NewWriter(of)
	}
	b.watched = map[string]bool{}
	sc := bufio.NewScanner(in)
	for i := -1; sc.Scan(); i++ { // the header is line -1
		line := strings.TrimSuffix(sc.Text(), "\r")
		if i >= 0 && i < b.f.watch && b.f.sip {
			upn, _, _ := strings.Cut(line, ";")
			b.watched[upn] = true
		}
		if out == nil {
			if i >= b.f.watch {
				break
			}
			continue
		}
		col := "Account"
		if i >= 0 {
			col = b.accountID(i%b.f.accounts + 1)
		}
		fmt.Fprintf(out, "%s;%s\r\n", line, col)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if out == nil {
		return nil
	}
	if err := out.Flush(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// bridge is presencebridge running in this process.
type bridge struct {
	a      *app.App
	cancel context.CancelFunc
	done   chan error
	ended  error // Run's result once done has delivered it
}

// startBridge opens the App on the written configuration and runs it.
func (b *latencyBench) startBridge() error {
	logger := slog.New(slog.DiscardHandler)
	if b.logFile != nil {
		logger = slog.New(slog.NewTextHandler(b.logFile, nil))
	}
	a, err := app.Open(app.Options{Config: b.cfg, Logger: logger, Version: "bench"})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	br := &bridge{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { br.done <- a.Run(ctx) }()
	b.bridge = br
	return nil
}

// stop ends Run, waits for it and closes the App (its state file).
func (br *bridge) stop() {
	br.cancel()
	if br.done != nil {
		br.ended = <-br.done
		br.done = nil
	}
	br.a.Close()
}

// stopWithin is stop, but gives up waiting for Run after limit (the App is
// then left open) and reports whether it stopped.
func (br *bridge) stopWithin(limit time.Duration) bool {
	br.cancel()
	if br.done != nil {
		select {
		case br.ended = <-br.done:
			br.done = nil
		case <-time.After(limit):
			return false
		}
	}
	br.a.Close()
	return true
}

func (br *bridge) status() app.StatusReport {
	return br.a.Status(context.Background()).(app.StatusReport)
}

// wait sleeps d, and fails when ctx ends or presencebridge stopped.
func (b *latencyBench) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case err := <-b.bridge.done:
		b.bridge.done = nil
		return fmt.Errorf("presencebridge stopped: %v (--log FILE keeps its log)", err)
	}
}

// arrivals asks the tenant's PBX side what arrived: the first arrivals, and
// with since the arrivals from then on.
func (b *latencyBench) arrivals(since time.Time) (simulate.Arrivals, error) {
	u := b.sim.ArrivalsURL
	if !since.IsZero() {
		u += "?since=" + url.QueryEscape(since.UTC().Format(time.RFC3339Nano))
	}
	var out simulate.Arrivals
	resp, err := b.api.hc.Get(u)
	if err != nil {
		return out, fmt.Errorf("simulated PBX side: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return out, fmt.Errorf("simulated PBX side: GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(msg)))
	}
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// changes lists the tenant's changes made after since.
func (t *tenantAPI) changes(since time.Time) ([]graphsim.Change, error) {
	var r struct {
		Changes []graphsim.Change `json:"changes"`
	}
	err := t.call(http.MethodGet, "/_sim/changes?since="+url.QueryEscape(since.UTC().Format(time.RFC3339Nano)), nil, &r)
	return r.Changes, err
}

// latencyResult is what one run measured.
type latencyResult struct {
	users, accounts, watch int
	rate                   float64
	budget                 int
	targets                []string
	interval               string

	cold, warm   startFigures
	coldAll      map[string]time.Duration // target -> until every observed user's first state arrived
	coldThrottle int                      // 429s at the tenant until the steady state
	// coldUnmatched counts, by target, the arrivals of the cold start that
	// showed no Teams state (the Stale rule's, when resolving outlasts
	// [Delivery] StaleAfter).
	coldUnmatched map[string]int

	measured      time.Duration // the steady state's length
	peakWindow    int           // most requests of one app in any 30 s window at the tenant, in the steady state
	throttled     int           // 429s at the tenant in the steady state
	cpu           time.Duration
	peakRSS       float64 // MiB
	stateFile     float64 // MiB
	drainedIn     time.Duration
	drained       bool
	byTarget      map[string]*targetFigures
	changesMade   int
	changesWatch  int
	requestsTotal int
	// loadFrom and loadTo are the machine's 1-minute load average at the
	// steady state's start and end: a shared machine's other work shows there.
	loadFrom, loadTo string
}

// startFigures are a start's figures at the tenant, from presencebridge's start.
type startFigures struct {
	firstRead, fullCycle time.Duration // zero: not seen
}

// targetFigures are one target's latency samples.
type targetFigures struct {
	samples   []time.Duration // sorted
	changes   int             // Teams changes in the steady state of the users observed
	unmatched int             // arrivals in the steady state that show no recent Teams state
}

func (t *targetFigures) pct(q float64) time.Duration {
	if len(t.samples) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(t.samples)))) - 1
	return t.samples[max(0, min(i, len(t.samples)-1))]
}

// run measures the cold start, the steady state and a warm restart.
func (b *latencyBench) run(ctx context.Context) (*latencyResult, error) {
	f := b.f
	res := &latencyResult{users: f.users, accounts: f.accounts, rate: f.rate, budget: f.budget, targets: f.targetNames(),
		coldAll: map[string]time.Duration{}, coldUnmatched: map[string]int{}, byTarget: map[string]*targetFigures{}}
	if f.sip {
		res.watch = f.watch
	}

	// Cold start: an empty state file, until every user's first state is at
	// the CTI (and every watched user's at the SIP watcher) and presencebridge
	// has nothing pending: the first good cycle.
	t0 := time.Now()
	if err := b.startBridge(); err != nil {
		return nil, err
	}
	want := map[string]int{simulate.TargetHTTP: f.users, simulate.TargetSIP: f.watch}
	// Generous (ResolveRate 10 resolves 200 users a second), but a broken
	// set-up does not hold a test for an hour.
	limit := 5*time.Minute + time.Duration(f.users)*15*time.Millisecond
	deadline := t0.Add(limit)
	lastNote := t0
	for {
		ar, err := b.arrivals(time.Time{})
		if err != nil {
			return nil, err
		}
		arrived := true
		var progress []string
		for _, t := range res.targets {
			fa := ar.First[t]
			arrived = arrived && fa.Users >= want[t]
			progress = append(progress, fmt.Sprintf("%d of %d users at the %s target", fa.Users, want[t], t))
		}
		if arrived {
			st := b.bridge.status()
			if settled(st) {
				for _, t := range res.targets {
					res.coldAll[t] = ar.First[t].Last.Sub(t0)
					res.coldUnmatched[t] = ar.First[t].Unmatched
				}
				break
			}
			progress = append(progress, "presencebridge still has states to deliver")
		}
		if time.Since(lastNote) >= 30*time.Second {
			lastNote = time.Now()
			resolved, total := 0, 0
			for _, a := range b.bridge.status().Accounts {
				resolved, total = resolved+a.Polling.Resolved, total+a.Polling.Users
			}
			progress = append(progress, fmt.Sprintf("presencebridge has resolved %d of %d UPNs", resolved, total))
			fmt.Fprintf(b.stderr, "bench latency: cold start, %.0f s: %s\n", time.Since(t0).Seconds(), strings.Join(progress, ", "))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no first good cycle %s after the start: %s (--log FILE keeps presencebridge's log)", limit.Round(time.Second), strings.Join(progress, ", "))
		}
		if err := b.wait(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(b.stderr, "bench latency: first good cycle %.1f s after the start; measuring the steady state for %s\n", time.Since(t0).Seconds(), f.duration)
	recs, err := b.api.requests()
	if err != nil {
		return nil, err
	}
	res.cold = startAt(recs, t0, f.users)
	st, err := b.api.stats(false)
	if err != nil {
		return nil, err
	}
	res.coldThrottle = st.Throttled

	// The steady state, from the first good cycle: the tenant's figures
	// start afresh; this process only sleeps meanwhile.
	if err := b.api.call(http.MethodPost, "/_sim/stats/reset", nil, nil); err != nil {
		return nil, err
	}
	from := time.Now()
	res.loadFrom = loadAverage()
	ru0 := rusage()
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return nil, err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return nil, err
		}
	}
	err = b.wait(ctx, f.duration)
	to := time.Now()
	res.cpu = rusage() - ru0
	res.measured = to.Sub(from)
	res.loadTo = loadAverage()
	if f.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return nil, err
	}
	if st, err = b.api.stats(false); err != nil {
		return nil, err
	}
	res.throttled = st.Throttled
	res.peakRSS = peakRSSMiB()
	if fi, err := os.Stat(b.cfg.StateFile); err == nil {
		res.stateFile = float64(fi.Size()) / (1 << 20)
	}
	if f.memProfile != "" {
		if err := writeHeapProfile(f.memProfile); err != nil {
			return nil, err
		}
	}
	status := b.bridge.status()
	res.interval = intervals(status)

	// What changed before the end arrives after it: wait for two more cycles
	// of every account (one that began after the end, whole) and nothing
	// pending, then ask the PBX side what arrived since the start.
	cycles := map[string]int{}
	var slowest time.Duration
	for _, a := range status.Accounts {
		cycles[a.ID] = a.Polling.Cycles
		slowest = max(slowest, a.Polling.CycleInterval)
	}
	drainLimit := max(time.Minute, 3*slowest)
	fmt.Fprintf(b.stderr, "bench latency: waiting (at most %s) for what changed in the steady state to arrive\n", drainLimit)
	for {
		st := b.bridge.status()
		done := settled(st)
		for _, a := range st.Accounts {
			done = done && a.Polling.Cycles >= cycles[a.ID]+2
		}
		if done {
			res.drained = true
			break
		}
		if time.Since(to) > drainLimit {
			break
		}
		if err := b.wait(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	res.drainedIn = time.Since(to)
	if recs, err = b.api.requests(); err != nil {
		return nil, err
	}
	res.peakWindow, res.requestsTotal = peakWindow(recs, from, to, 30*time.Second)
	changes, err := b.api.changes(from)
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		if c.At.After(to) {
			continue
		}
		res.changesMade++
		if b.watched[c.UPN] {
			res.changesWatch++
		}
	}
	ar, err := b.arrivals(from)
	if err != nil {
		return nil, err
	}
	for _, t := range res.targets {
		res.byTarget[t] = &targetFigures{changes: res.changesMade}
	}
	if f.sip {
		res.byTarget[simulate.TargetSIP].changes = res.changesWatch
	}
	type key struct {
		target, upn string
		at          time.Time
	}
	counted := map[key]bool{}
	for _, a := range ar.Arrivals {
		tf := res.byTarget[a.Target]
		if tf == nil {
			continue
		}
		if a.Match == simulate.MatchNone {
			tf.unmatched++
		}
		if a.Match != simulate.MatchChange || a.ChangeAt.Before(from) || a.ChangeAt.After(to) {
			continue
		}
		k := key{a.Target, a.UPN, a.ChangeAt}
		if counted[k] {
			continue // a repeat (a NOTIFY sent again): the first arrival counts
		}
		counted[k] = true
		tf.samples = append(tf.samples, a.At.Sub(a.ChangeAt))
	}
	for _, tf := range res.byTarget {
		slices.Sort(tf.samples)
	}

	// A warm restart: the same state file, signed in, every user resolved.
	b.bridge.stop()
	b.bridge = nil
	if err := b.api.call(http.MethodPost, "/_sim/stats/reset", nil, nil); err != nil {
		return nil, err
	}
	fmt.Fprintln(b.stderr, "bench latency: warm restart")
	t1 := time.Now()
	if err := b.startBridge(); err != nil {
		return nil, err
	}
	for {
		st := b.bridge.status()
		done := len(st.Accounts) > 0
		for _, a := range st.Accounts {
			done = done && a.Polling.Cycles >= 1
		}
		if done {
			break
		}
		if time.Since(t1) > 10*time.Minute {
			return nil, errors.New("no poll cycle within 10 minutes of the warm restart")
		}
		if err := b.wait(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if recs, err = b.api.requests(); err != nil {
		return nil, err
	}
	res.warm = startAt(recs, t1, f.users)
	return res, nil
}

// settled reports whether every account has completed a poll cycle and no
// target has a state waiting.
func settled(st app.StatusReport) bool {
	if len(st.Accounts) == 0 {
		return false
	}
	for _, a := range st.Accounts {
		if a.Polling.Cycles < 1 {
			return false
		}
	}
	for _, t := range st.Targets {
		if t.Pending > 0 {
			return false
		}
	}
	return true
}

// intervals is the cycle interval in effect, each account's when they differ.
func intervals(st app.StatusReport) string {
	var out []string
	for _, a := range st.Accounts {
		s := a.Polling.CycleInterval.Round(10 * time.Millisecond).String()
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return "n/a"
	}
	return strings.Join(out, "/")
}

const presencePath = "/communications/getPresencesByUserId"

// startAt reads a start from the tenant's request records: how long after
// start it answered the first presence read, and when the reads answered
// from then on had covered n users (every user read once).
func startAt(recs []graphsim.RequestRecord, start time.Time, n int) startFigures {
	var f startFigures
	ids := 0
	for _, r := range recs {
		if r.At.Before(start) || r.Status != http.StatusOK || !strings.HasSuffix(r.Path, presencePath) {
			continue
		}
		if f.firstRead == 0 {
			f.firstRead = r.At.Sub(start)
		}
		ids += r.IDs
		if ids >= n {
			f.fullCycle = r.At.Sub(start)
			break
		}
	}
	return f
}

// peakWindow is the most Graph requests one app had admitted (neither 401 nor
// 429) in any window of length w within [from, to], and all it had admitted
// there.
func peakWindow(recs []graphsim.RequestRecord, from, to time.Time, w time.Duration) (peak, total int) {
	byApp := map[string][]time.Time{}
	for _, r := range recs {
		if r.App == "" || r.Status == http.StatusTooManyRequests || r.Status == http.StatusUnauthorized || r.At.Before(from) || r.At.After(to) {
			continue
		}
		byApp[r.App] = append(byApp[r.App], r.At)
		total++
	}
	for _, ts := range byApp {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		lo := 0
		for hi := range ts {
			for ts[hi].Sub(ts[lo]) >= w {
				lo++
			}
			peak = max(peak, hi-lo+1)
		}
	}
	return peak, total
}

// loadAverage is the machine's 1-minute load average, "n/a" where /proc
// cannot tell.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(raw)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "n/a"
}

// peakRSSMiB is this process's peak resident set (VmHWM), 0 where /proc
// cannot tell.
func peakRSSMiB() float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.Atoi(f[0])
				return float64(kb) / 1024
			}
		}
	}
	return 0
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// thousands writes n with a comma every three digits.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// secs writes d in seconds, "n/a" when it was not measured.
func secs(d time.Duration) string {
	if d <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// row is one target's line of the table, in the table's column order.
func (r *latencyResult) row(target string) []string {
	tf := r.byTarget[target]
	lat := func(q float64) string {
		if len(tf.samples) == 0 {
			return "n/a"
		}
		return secs(max(tf.pct(q), time.Microsecond))
	}
	samples := thousands(len(tf.samples))
	if target == simulate.TargetSIP {
		samples += " (" + thousands(r.watch) + " watched)"
	}
	return []string{
		thousands(r.users), strconv.Itoa(r.accounts), target, r.interval,
		fmt.Sprintf("%.1f%%", 100*float64(r.peakWindow)/float64(r.budget)), strconv.Itoa(r.throttled),
		lat(0.50), lat(0.95), lat(0.99), lat(1), samples,
		fmt.Sprintf("%.1f%%", 100*r.cpu.Seconds()/r.measured.Seconds()),
		fmt.Sprintf("%.0f MiB", r.peakRSS), fmt.Sprintf("%.1f MiB", r.stateFile),
		secs(r.coldAll[target]), secs(r.warm.firstRead), secs(r.warm.fullCycle),
	}
}

// latencyColumns are the table's columns.
var latencyColumns = []string{"users", "accounts", "target", "interval", "budget used", "429s",
	"p50", "p95", "p99", "max", "samples", "CPU", "peak RSS", "state file",
	"cold start", "warm: first read", "warm: all read"}

// print writes the figures: a few lines of context, then the table, one line
// per target (and as Markdown with --markdown). The wording and the columns
// stay put, so runs compare line by line.
func (r *latencyResult) print(w io.Writer, f latencyFlags) {
	fmt.Fprintf(w, "presencebridge bench latency: %s users, %d account(s), %g Teams changes/s (%.2f per user per hour), budget %s requests/30s, targets %s",
		thousands(r.users), r.accounts, r.rate, r.rate*3600/float64(r.users), thousands(r.budget), strings.Join(r.targets, ","))
	if r.watch > 0 {
		fmt.Fprintf(w, ", SIP watcher on %s users", thousands(r.watch))
	}
	fmt.Fprintln(w)
	interval := "the default"
	if f.interval != "" {
		interval = f.interval
	}
	fmt.Fprintf(w, "  configured [Polling] Interval: %s; in effect: %s\n", interval, r.interval)
	fmt.Fprintf(w, "  cold start (empty state file): first presence read %s, every user read %s, 429s %d\n",
		secs(r.cold.firstRead), secs(r.cold.fullCycle), r.coldThrottle)
	for _, t := range r.targets {
		what := "every user's first state at the CTI"
		if t == simulate.TargetSIP {
			what = "every watched user's first NOTIFY at the SIP watcher"
		}
		fmt.Fprintf(w, "  cold start, %s: %s; until the first good cycle %s arrivals showed no Teams state\n", what, secs(r.coldAll[t]), thousands(r.coldUnmatched[t]))
	}
	fmt.Fprintf(w, "  steady state: %.1f s from the first good cycle; %s Teams changes (%s of watched users)\n",
		r.measured.Seconds(), thousands(r.changesMade), thousands(r.changesWatch))
	fmt.Fprintf(w, "  busiest 30 s of one app at the tenant: %s of %s requests (%.1f%%); %s requests in all; 429s %d\n",
		thousands(r.peakWindow), thousands(r.budget), 100*float64(r.peakWindow)/float64(r.budget), thousands(r.requestsTotal), r.throttled)
	for _, t := range r.targets {
		tf := r.byTarget[t]
		fmt.Fprintf(w, "  %s: %s latency samples of %s Teams changes; %d arrivals showing no recent Teams state\n",
			t, thousands(len(tf.samples)), thousands(tf.changes), tf.unmatched)
	}
	drained := "everything delivered"
	if !r.drained {
		drained = "NOT everything delivered (later arrivals are not counted)"
	}
	fmt.Fprintf(w, "  after the steady state: %s within %.1f s\n", drained, r.drainedIn.Seconds())
	fmt.Fprintf(w, "  presencebridge: CPU %.1f%% of one core (%.2f s over %.1f s), peak RSS %.1f MiB, state file %.1f MiB\n",
		100*r.cpu.Seconds()/r.measured.Seconds(), r.cpu.Seconds(), r.measured.Seconds(), r.peakRSS, r.stateFile)
	fmt.Fprintf(w, "  warm restart (same state file): first presence read %s, every user read %s\n",
		secs(r.warm.firstRead), secs(r.warm.fullCycle))
	fmt.Fprintf(w, "  machine: %d cores, load average (1 min) %s at the steady state's start, %s at its end\n", runtime.NumCPU(), r.loadFrom, r.loadTo)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(latencyColumns, "\t"))
	for _, t := range r.targets {
		fmt.Fprintln(tw, strings.Join(r.row(t), "\t"))
	}
	tw.Flush()
	if f.markdown {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| "+strings.Join(latencyColumns, " | ")+" |")
		fmt.Fprintln(w, "|"+strings.Repeat(" --- |", len(latencyColumns)))
		for _, t := range r.targets {
			fmt.Fprintln(w, "| "+strings.Join(r.row(t), " | ")+" |")
		}
	}
}
