package bench

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/sim/procgroup"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/sim/sipua"
	"github.com/presencebridge/presencebridge/internal/users"
)

// callsFlags are the knobs of `bench calls`.
type callsFlags struct {
	users, watched, calls, phones, burst int
	rate, resolveRate                    float64
	logPath                              string
	writeLatency                         time.Duration
	keep                                 bool
}

// Calls runs `presencebridge bench calls` with args (what follows "calls"): calls
// between SIP phones registered with a real Kamailio acting as the PBX, watched
// by presencebridge (Event: dialog) and shown in the simulated tenant's Teams
// (setPresence, clearPresence), while presencebridge polls every user of the
// tenant with one account. It prints the time from the PBX's NOTIFY to the
// tenant accepting the write, for calls one at a time and for a burst of calls
// starting within one second, and what each process used. presencebridge is
// `presencebridge run` in a child process (os.Executable, which must be
// presencebridge) with a Presence.ini that keeps the product's defaults; the
// tenant is `simulate` in another, Kamailio a third; this process holds the
// phones and the independent watchers. Bad arguments return a
// *simulate.UsageError (printed already when the flag package found them).
func Calls(args []string, stdout, stderr io.Writer) error {
	var f callsFlags
	fs := flag.NewFlagSet("bench calls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&f.users, "users", 50000, "simulated users, all polled with one account (client secret)")
	fs.IntVar(&f.watched, "watched", 1000, "the first this many users have a SIP URI on the Kamailio PBX and are watched (the others have none)")
	fs.IntVar(&f.calls, "calls", 50, "calls made one at a time")
	fs.IntVar(&f.phones, "phones", 40, "registered phones the calls one at a time go between, in pairs (the first users')")
	fs.IntVar(&f.burst, "burst", 100, "calls starting within one second, between twice as many phones")
	fs.Float64Var(&f.rate, "rate", 6, "presence changes per user per hour in the simulated tenant")
	fs.Float64Var(&f.resolveRate, "resolve-rate", 40, "[Polling] ResolveRate, $batch requests per second while the UPNs are resolved at start: the product's default, 10, only makes the start longer; the simulated tenant's directory throttle takes 8,000 resource units per 10 s from a tenant this size, a lookup 1, so above 40 the start sees 429s")
	fs.StringVar(&f.logPath, "log", "", "write presencebridge's log, at debug level, to this file")
	fs.BoolVar(&f.keep, "keep", false, "keep the work folder (Kamailio's configuration and log, Presence.ini, the users file, presencebridge's log) and print its path")
	fs.DurationVar(&f.writeLatency, "write-latency", 0, "the tenant holds each setPresence and clearPresence this long before it takes and answers it, as Graph's own round trip would (0: none, loopback only)")
	if err := fs.Parse(args); err != nil {
		return &simulate.UsageError{Err: err, Printed: true}
	}
	switch {
	case fs.NArg() > 0:
		return &simulate.UsageError{Err: fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	case f.users < 2 || f.watched < 2 || f.watched > f.users:
		return &simulate.UsageError{Err: fmt.Errorf("--watched %d must be from 2 to --users (%d)", f.watched, f.users)}
	case f.phones < 2 || f.phones%2 != 0 || f.phones > f.watched:
		return &simulate.UsageError{Err: fmt.Errorf("--phones %d must be even, from 2 to --watched (%d)", f.phones, f.watched)}
	case f.writeLatency < 0:
		return &simulate.UsageError{Err: fmt.Errorf("--write-latency %s is negative", f.writeLatency)}
	case f.calls < 1 || f.burst < 1 || 2*f.burst > f.watched:
		return &simulate.UsageError{Err: fmt.Errorf("--calls %d and --burst %d must be at least 1, and twice --burst at most --watched (%d)", f.calls, f.burst, f.watched)}
	}
	if _, err := kamailio.Find(); err != nil {
		return fmt.Errorf("the PBX of this bench is Kamailio: %w", err)
	}
	// The product's soft memory limit (cmd/presencebridge) is for
	// presencebridge, which runs as a child process; this process holds
	// only the phones and watchers, whose garbage collection must not slow
	// them down near it.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	// A closed stdout (piped into head) stops the run too, so the work
	// folder is removed and the children are stopped, as on Ctrl-C.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
	defer stop()
	b := &callsBench{f: f, out: stdout}
	defer b.close()
	if err := b.start(ctx); err != nil {
		return err
	}
	return b.run(ctx)
}

// callsBench is one run of `bench calls`.
type callsBench struct {
	f   callsFlags
	out io.Writer

	dir            string
	pbx            *kamailio.Server
	kamCfg         string // its configuration file's path, in its processes' command line
	sim            *tenant
	api            *tenantAPI
	cfg            *config.Config
	bridge         *exec.Cmd // presencebridge run
	bridged        chan struct{}
	logPath        string
	control        *control.Client
	upns           []string // by user index: user i has extension 1000+i
	phones         []*sipua.Phone
	watchers       []*kamailio.Watcher
	notes          notifyLog
	started        time.Time
	ready          time.Duration // until the first poll cycle, every subscription and the first publications
	subsAt         time.Duration // until every watched user was subscribed
	startThrottled int           // 429s the tenant answered until ready
	startDrops     string        // what the kernel dropped on Kamailio's UDP port until ready
	polls          pollSampler
}

func (b *callsBench) close() {
	var wg sync.WaitGroup
	for _, p := range b.phones {
		wg.Add(1)
		go func() { defer wg.Done(); p.Close() }()
	}
	for _, w := range b.watchers {
		wg.Add(1)
		go func() { defer wg.Done(); w.Close() }()
	}
	wg.Wait()
	if b.bridge != nil {
		// run stops within 18 s (README); a stuck one is killed after 30.
		b.bridge.Process.Signal(os.Interrupt)
		select {
		case <-b.bridged:
		case <-time.After(30 * time.Second):
			b.bridge.Process.Kill()
			<-b.bridged
		}
	}
	if b.pbx != nil {
		b.pbx.Stop()
	}
	if b.sim != nil {
		b.sim.stop()
	}
	switch {
	case b.dir == "":
	case b.f.keep:
		fmt.Fprintf(b.out, "work folder kept: %s\n", b.dir)
	default:
		os.RemoveAll(b.dir)
	}
}

// phoneUsers is how many users get a registered phone (and an independent
// watcher): the pool of the calls one at a time and the burst's pairs.
func (b *callsBench) phoneUsers() int { return max(b.f.phones, 2*b.f.burst) }

// start brings up Kamailio, the tenant and presencebridge, and waits until
// presencebridge polls every user and watches every watched one, then registers
// the phones and subscribes the independent watchers.
func (b *callsBench) start(ctx context.Context) error {
	var err error
	if b.dir, err = os.MkdirTemp("", "presencebridge-bench-calls-"); err != nil {
		return err
	}
	kdir := filepath.Join(b.dir, "kamailio")
	b.kamCfg = filepath.Join(kdir, "kamailio.cfg")
	if b.pbx, err = kamailio.Start(ctx, kamailio.Options{Dir: kdir, PBX: true}); err != nil {
		return err
	}
	cdir := filepath.Join(b.dir, "config")
	if err := os.Mkdir(cdir, 0o700); err != nil {
		return err
	}
	if b.sim, err = startTenant([]string{"--addr", "127.0.0.1:0", "--users", strconv.Itoa(b.f.users),
		"--rate", fmt.Sprint(b.f.rate), "--auth", "secret", "--interval", "0s", // the product's default: auto
		"--resolve-rate", fmt.Sprint(b.f.resolveRate), "--write-config", cdir}); err != nil {
		return err
	}
	if b.api, err = newTenantAPI(b.sim.Ready); err != nil {
		return err
	}
	if err := b.writeUsers(filepath.Join(cdir, "users.csv")); err != nil {
		return err
	}
	// The phones' users start Available in Teams, so a call's Busy/InACall
	// shows over it (a user's own DoNotDisturb would outrank it, as in Teams).
	for i := range b.phoneUsers() {
		if err := b.api.setPresence(b.upns[i], "Available", "Available"); err != nil {
			return err
		}
	}
	path := filepath.Join(cdir, "Presence.ini")
	// The tenant wrote the legacy keys as the vendors' guides show them;
	// WinningTechnology goes back to the product's default. The metrics
	// endpoint stays on, on a free port.
	settings := []config.Setting{
		{Key: "RichPresence.WinningTechnology", Value: string(config.DefaultWinningTechnology)},
		{Key: "General.MetricsAddr", Value: "127.0.0.1:0"},
		{Key: "SIP.Server", Value: b.pbx.UDP},
		{Key: "PBX.Watch", Value: "dialog"},
	}
	b.logPath = filepath.Join(b.dir, "presencebridge.log")
	if b.f.logPath != "" {
		b.logPath = b.f.logPath
		settings = append(settings, config.Setting{Key: "General.LogLevel", Value: "debug"})
	}
	if err := config.Set(path, settings); err != nil {
		return err
	}
	if b.cfg, err = config.Load(path); err != nil {
		return err
	}
	if err := b.startBridge(ctx, path); err != nil {
		return err
	}
	if err := b.waitReady(ctx); err != nil {
		return err
	}
	// Counted from here: the tenant's records of the start (resolving every
	// UPN) are dropped, so its figures are the calls' and its records small.
	st, err := b.api.stats(false)
	if err != nil {
		return err
	}
	b.startThrottled = st.Throttled
	drops, ok := udpDrops(b.kamPort())
	b.startDrops = dropped(drops, ok)
	if err := b.api.call(http.MethodPost, "/_sim/stats/reset", nil, nil); err != nil {
		return err
	}
	if b.f.writeLatency > 0 {
		for _, op := range []string{graphsim.OpSetPresence, graphsim.OpClearPresence} {
			// A fault with no status only delays; a negative count never runs out.
			f := map[string]any{"path": "/presence/" + op, "count": -1, "delay": b.f.writeLatency.String()}
			if err := b.api.call(http.MethodPost, "/_sim/fault", f, nil); err != nil {
				return err
			}
		}
	}
	return b.phonesUp(ctx)
}

// startBridge runs `presencebridge --config path run` as a child process of
// this executable (presencebridge itself, or a test binary that answers as it
// does), logging to logPath, and connects to its control endpoint.
func (b *callsBench) startBridge(ctx context.Context, path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	lf, err := os.Create(b.logPath)
	if err != nil {
		return err
	}
	defer lf.Close() // the child has its own copy
	b.bridge = exec.Command(self, "--config", path, "run")
	b.bridge.Stdout, b.bridge.Stderr = lf, lf
	b.bridge.SysProcAttr = procgroup.Attr(syscall.SIGTERM) // it ends with this process, as the tenant does
	b.started = time.Now()
	if err := b.bridge.Start(); err != nil {
		b.bridge = nil
		return err
	}
	b.bridged = make(chan struct{})
	go func() { b.bridge.Wait(); close(b.bridged) }()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := control.NewClient(app.KeyFile(b.cfg))
		if err == nil {
			var rep app.StatusReport
			if err = c.Status(ctx, &rep); err == nil {
				b.control = c
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("presencebridge run did not answer on its control endpoint within a minute: %w\n%s", err, b.logTail())
		}
		select {
		case <-b.bridged:
			return fmt.Errorf("presencebridge run ended: %v\n%s", b.bridge.ProcessState, b.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logTail is the end of presencebridge's log, for errors.
func (b *callsBench) logTail() string {
	raw, _ := os.ReadFile(b.logPath)
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	return "presencebridge's log (" + b.logPath + "), last lines:\n" + strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// writeUsers rewrites the users file the tenant wrote (every user, in its
// order, each with a SIP URI): the first --watched users keep a SIP URI, on the
// Kamailio's domain, sip:1000@... and up; the others have an extension only,
// so presencebridge polls them (they would go to an [HTTP] CTI) but neither
// watches nor publishes them on the PBX.
func (b *callsBench) writeUsers(path string) error {
	list, problems, err := users.Load(path)
	if err != nil {
		return err
	}
	if len(problems) > 0 || len(list) != b.f.users {
		return fmt.Errorf("the simulated tenant's %s lists %d users (%d problems), want %d", path, len(list), len(problems), b.f.users)
	}
	var csv strings.Builder
	csv.WriteString("UPN;SIP URI;Extension;Name\r\n")
	for i, u := range list {
		b.upns = append(b.upns, u.UPN)
		uri := ""
		if i < b.f.watched {
			uri = b.uri(i)
		}
		fmt.Fprintf(&csv, "%s;%s;%d;%s\r\n", u.UPN, uri, 1000+i, u.Name)
	}
	return os.WriteFile(path, []byte(csv.String()), 0o644)
}

// uri is user i's SIP address of record on the PBX.
func (b *callsBench) uri(i int) string { return fmt.Sprintf("sip:%d@%s", 1000+i, b.pbx.Domain) }

// status is presencebridge's status, from its control endpoint (what
// `presencebridge status --json` prints).
func (b *callsBench) status() (app.StatusReport, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rep app.StatusReport
	if err := b.control.Status(ctx, &rep); err != nil {
		return rep, fmt.Errorf("presencebridge status: %w\n%s", err, b.logTail())
	}
	if len(rep.Accounts) != 1 || rep.PBXWatch == nil || len(rep.Targets) != 1 {
		return rep, fmt.Errorf("presencebridge status: %d accounts, %d targets, PBX watch %v; want 1 account, [SIP] and [PBX] Watch", len(rep.Accounts), len(rep.Targets), rep.PBXWatch != nil)
	}
	return rep, nil
}

// waitReady waits until presencebridge has polled every user once, holds a
// subscription for every watched user, and has published the first states of
// the watched users to the PBX: the steady state the calls are measured in.
func (b *callsBench) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Minute)
	for {
		st, err := b.status()
		if err != nil {
			return err
		}
		w := st.PBXWatch
		if w.Subscribed == b.f.watched && b.subsAt == 0 {
			b.subsAt = time.Since(b.started)
		}
		if st.Accounts[0].Polling.Cycles >= 1 && b.subsAt > 0 && st.Targets[0].Pending == 0 {
			b.ready = time.Since(b.started)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("presencebridge not ready after 15 minutes: %d poll cycles, PBX watch %+v, targets %+v", st.Accounts[0].Polling.Cycles, w, st.Targets)
		}
		select {
		case <-b.bridged:
			return fmt.Errorf("presencebridge run ended: %v\n%s", b.bridge.ProcessState, b.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// phonesUp registers a phone for each of the first phoneUsers users and
// subscribes an independent watcher (package kamailio's, not presencebridge's)
// to each one's dialog state: the PBX side's clock.
func (b *callsBench) phonesUp(ctx context.Context) error {
	b.notes.by = map[int][]kamailio.Notify{}
	n := b.phoneUsers()
	b.phones = make([]*sipua.Phone, n)
	b.watchers = make([]*kamailio.Watcher, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := sipua.New(ctx, sipua.Options{Server: b.pbx.UDP, User: strconv.Itoa(1000 + i), Domain: b.pbx.Domain})
			if err != nil {
				errs[i] = err
				return
			}
			b.phones[i] = p
			if err := p.Register(ctx); err != nil {
				errs[i] = err
				return
			}
			w, err := kamailio.WatchEvent(ctx, b.pbx.UDP, b.uri(i), "dialog")
			if err != nil {
				errs[i] = err
				return
			}
			b.watchers[i] = w
			go b.notes.follow(i, w)
		}()
	}
	wg.Wait()
	b.phones = slices.DeleteFunc(b.phones, func(p *sipua.Phone) bool { return p == nil })
	b.watchers = slices.DeleteFunc(b.watchers, func(w *kamailio.Watcher) bool { return w == nil })
	return errors.Join(errs...)
}

// notifyLog keeps every NOTIFY the independent watchers received, by user.
type notifyLog struct {
	mu sync.Mutex
	by map[int][]kamailio.Notify
}

func (l *notifyLog) follow(i int, w *kamailio.Watcher) {
	for {
		n, err := w.Next(context.Background())
		if err != nil {
			return
		}
		l.mu.Lock()
		l.by[i] = append(l.by[i], n)
		l.mu.Unlock()
	}
}

// first is when user i's first NOTIFY after t that match accepts arrived,
// waiting for it until deadline.
func (l *notifyLog) first(i int, after, deadline time.Time, match func(kamailio.Notify) bool) (time.Time, bool) {
	for {
		l.mu.Lock()
		for _, n := range l.by[i] {
			if n.At.After(after) && match(n) {
				l.mu.Unlock()
				return n.At, true
			}
		}
		l.mu.Unlock()
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// confirmed matches a NOTIFY showing a call in progress; ended one showing
// neither a call nor a ringing line (terminated, or no dialog at all).
func confirmed(n kamailio.Notify) bool { return n.Confirmed() }
func ended(n kamailio.Notify) bool {
	return !n.Confirmed() && !slices.Contains(n.DialogStates, "early")
}

// waitWrites waits until the tenant has accepted op for every user in upns
// since after, or limit has passed, and returns when it accepted each (the
// tenant's clock: the same machine's wall clock), the users it did not accept
// it for, and the tenant's statistics at that moment. It asks the tenant every
// 20 ms for a call's two users, every 250 ms for more: the times are the
// tenant's, and the whole list of writes every 20 ms would cost the tenant and
// this process CPU that Kamailio needs in a burst.
func (b *callsBench) waitWrites(ctx context.Context, op string, after time.Time, upns []string, limit time.Duration) (map[string]time.Time, []string, graphsim.Stats, error) {
	every := 20 * time.Millisecond
	if len(upns) > 2 {
		every = 250 * time.Millisecond
	}
	deadline := time.Now().Add(limit)
	for {
		st, err := b.api.stats(true)
		if err != nil {
			return nil, nil, st, err
		}
		got := map[string]time.Time{}
		for _, w := range st.Writes {
			if w.Op == op && w.Accepted() && w.At.After(after) {
				if _, ok := got[w.UPN]; !ok {
					got[w.UPN] = w.At
				}
			}
		}
		var missing []string
		for _, u := range upns {
			if _, ok := got[u]; !ok {
				missing = append(missing, u)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return got, missing, st, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, st, ctx.Err()
		case <-time.After(every):
		}
	}
}

// notAccepted describes users whose op the tenant did not accept within
// limit: presencebridge's writes and, user by user, what the independent
// watcher and presencebridge saw.
func (b *callsBench) notAccepted(ctx context.Context, op string, missing []string, of int, limit time.Duration) string {
	rep, _ := b.status()
	var ws any
	if len(rep.Accounts) > 0 {
		ws = rep.Accounts[0].Writes
	}
	return fmt.Sprintf("%s not accepted for %d of %d users within %s; presencebridge's writes: %+v%s",
		op, len(missing), of, limit, ws, b.explain(ctx, missing))
}

// explain says, for the first users of upns, what the independent watcher
// last saw of each one's dialogs and what presencebridge knows of them (its
// control endpoint's presence report: the PBX state and the subscription).
func (b *callsBench) explain(ctx context.Context, upns []string) string {
	var out strings.Builder
	for _, upn := range upns[:min(len(upns), 8)] {
		i := slices.Index(b.upns, upn)
		fmt.Fprintf(&out, "\n  %s (%s): ", upn, b.uri(i))
		b.notes.mu.Lock()
		if ns := b.notes.by[i]; len(ns) > 0 {
			n := ns[len(ns)-1]
			fmt.Fprintf(&out, "the independent watcher's last of %d NOTIFYs at %s: %v; ", len(ns), n.At.Format("15:04:05.000"), n.DialogStates)
		} else {
			out.WriteString("no NOTIFY at the independent watcher; ")
		}
		b.notes.mu.Unlock()
		var rep app.PresenceReport
		if err := b.control.Presence(ctx, upn, &rep); err != nil {
			fmt.Fprintf(&out, "presencebridge: %v", err)
		} else if rep.PBX != nil {
			fmt.Fprintf(&out, "presencebridge's PBX state %+v, subscriptions %v %s", rep.PBX.State, rep.PBX.Subscriptions, rep.PBX.Error)
		}
	}
	return out.String()
}

// pollSampler follows the poller's cycles while the calls run.
type pollSampler struct {
	mu       sync.Mutex
	maxCycle time.Duration
	cycles   int
	stop     chan struct{}
	done     chan struct{}
}

func (b *callsBench) samplePolls() error {
	p := &b.polls
	st, err := b.status()
	if err != nil {
		return err
	}
	first := st.Accounts[0].Polling.Cycles
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		last := first
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(time.Second):
			}
			st, err := b.status()
			if err != nil {
				continue
			}
			p.mu.Lock()
			if c := st.Accounts[0].Polling.Cycles; c != last {
				last = c
				p.cycles = c - first
				p.maxCycle = max(p.maxCycle, st.Accounts[0].Polling.LastCycleDuration)
			}
			p.mu.Unlock()
		}
	}()
	return nil
}

// run makes the calls and prints the figures.
func (b *callsBench) run(ctx context.Context) error {
	f, w := b.f, b.out
	ac := b.cfg.Accounts[0]
	st, err := b.status()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "presencebridge bench calls: %d users polled (1 account, client secret, budget %d requests/%s, share %.0f%%, interval %s),\n",
		f.users, ac.BudgetRequests, ac.BudgetWindow, ac.BudgetShare*100, intervalText(b.cfg.Polling.Interval, st.Accounts[0].Polling.CycleInterval))
	fmt.Fprintf(w, "  %d of them watched on Kamailio as the PBX ([PBX] Watch = dialog; its one UDP worker); the other %d have no SIP URI\n",
		f.watched, f.users-f.watched)
	fmt.Fprintf(w, "  ready after %s: UPNs resolved and the first poll cycle (%d requests), %d users subscribed (all by %s), %d first PUBLISHes\n",
		b.ready.Round(time.Millisecond), st.Accounts[0].Polling.RequestsPerCycle, st.PBXWatch.Subscribed, b.subsAt.Round(time.Millisecond), st.Targets[0].Sent)
	fmt.Fprintf(w, "  start: 429s: %d at the tenant%s\n", b.startThrottled, b.startDrops)
	fmt.Fprintf(w, "  the PBX's moment: an independent Event: dialog watcher (package kamailio's, in the bench's process) receives the NOTIFY;\n")
	fmt.Fprintf(w, "  the accepted moment: the simulated tenant's WriteRecord.At (its own process; the same machine's wall clock)\n")
	if f.writeLatency > 0 {
		fmt.Fprintf(w, "  the tenant holds each setPresence and clearPresence %s before it takes and answers it (--write-latency)\n", f.writeLatency)
	}

	kpids := processesWith(b.kamCfg)
	bridge, sim := []int{b.bridge.Process.Pid}, []int{b.sim.pid}
	drops0, dropsOK := udpDrops(b.kamPort())
	ru0, wall0 := rusage(), time.Now()
	k0, pb0, sim0 := cpuTimes(kpids), cpuTimes(bridge), cpuTimes(sim)
	if err := b.samplePolls(); err != nil {
		return err
	}
	defer func() { close(b.polls.stop); <-b.polls.done }()

	if err := b.oneByOne(ctx); err != nil {
		return err
	}
	if err := b.burstCalls(ctx, kpids); err != nil {
		return err
	}

	wall, cpu := time.Since(wall0), rusage()-ru0
	k1, pb1, sim1 := cpuTimes(kpids), cpuTimes(bridge), cpuTimes(sim)
	st1, err := b.api.stats(false)
	if err != nil {
		return err
	}
	recs, err := b.api.requests()
	if err != nil {
		return err
	}
	rep, err := b.status()
	if err != nil {
		return err
	}
	ws := rep.Accounts[0].Writes
	fmt.Fprintf(w, "whole run (%s, from the first call):\n", wall.Round(time.Millisecond))
	fmt.Fprintf(w, "  429s: %d at the tenant; presencebridge counted %d on polls, %d on writes (since its start)\n",
		st1.Throttled, rep.Accounts[0].Polling.Throttled, ws.Counts.Throttled)
	fmt.Fprintf(w, "  presencebridge's writes: %d setPresence, %d clearPresence, %d failed\n", ws.Counts.Set, ws.Counts.Cleared, ws.Counts.Failed)
	b.polls.mu.Lock()
	fmt.Fprintf(w, "  polling meanwhile: %d cycles of %d requests, the longest %s (interval %s)\n",
		b.polls.cycles, rep.Accounts[0].Polling.RequestsPerCycle, b.polls.maxCycle.Round(time.Millisecond), rep.Accounts[0].Polling.CycleInterval)
	fmt.Fprintf(w, "  most Graph requests in one %s at the tenant: %d (presencebridge's share: %.0f of %d)\n", ac.BudgetWindow,
		maxInWindow(recs, ac.ClientID, wall0, ac.BudgetWindow), ac.BudgetShare*float64(ac.BudgetRequests), ac.BudgetRequests)
	b.polls.mu.Unlock()
	fmt.Fprintf(w, "  PBX watch: %d users subscribed, %d failed, %d NOTIFYs, %d ignored, %d re-established\n",
		rep.PBXWatch.Subscribed, rep.PBXWatch.Failed, rep.PBXWatch.Counts.Notifies, rep.PBXWatch.Counts.Ignored, rep.PBXWatch.Counts.Reestablished)
	drops1, ok := udpDrops(b.kamPort())
	fmt.Fprintf(w, "  Kamailio: CPU %s%s\n", cpuShare(k0, k1, wall), dropped(drops1-drops0, ok && dropsOK))
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / wall.Seconds() }
	pid := strconv.Itoa(bridge[0])
	fmt.Fprintf(w, "presencebridge (presencebridge run, its own process):\n")
	fmt.Fprintf(w, "  CPU:      %s (%.1f%% of one core)\n", (pb1[bridge[0]] - pb0[bridge[0]]).Round(10*time.Millisecond), pct(pb1[bridge[0]]-pb0[bridge[0]]))
	fmt.Fprintf(w, "  peak RSS: %s\n", peakRSSOf(pid))
	fmt.Fprintf(w, "the others on this machine: simulated tenant CPU %.1f%% of one core, peak RSS %s;\n", pct(sim1[sim[0]]-sim0[sim[0]]), peakRSSOf(strconv.Itoa(sim[0])))
	fmt.Fprintf(w, "  the bench's %d phones and %d watchers CPU %.1f%% of one core, peak RSS %s\n", len(b.phones), len(b.watchers), pct(cpu), peakRSS())
	return nil
}

// maxInWindow is the most requests of app within any window among recs,
// counting from since.
func maxInWindow(recs []graphsim.RequestRecord, app string, since time.Time, window time.Duration) int {
	var at []time.Time
	for _, r := range recs {
		if r.App == app && !r.At.Before(since) {
			at = append(at, r.At)
		}
	}
	slices.SortFunc(at, time.Time.Compare)
	most, lo := 0, 0
	for hi := range at {
		for at[hi].Sub(at[lo]) >= window {
			lo++
		}
		most = max(most, hi-lo+1)
	}
	return most
}

// kamPort is Kamailio's UDP port.
func (b *callsBench) kamPort() int {
	_, port, _ := net.SplitHostPort(b.pbx.UDP)
	n, _ := strconv.Atoi(port)
	return n
}

// How long each call one at a time lasts once Teams shows it, and the pause
// before the next one: longer than a write's slot in the budget (1/30 s at the
// default share), so a call's writes never wait for the previous ones.
const (
	callHold = 500 * time.Millisecond
	callGap  = 200 * time.Millisecond
)

// oneByOne makes --calls calls one after the other between pairs of the first
// --phones phones, and prints the time from each NOTIFY to the tenant
// accepting the write it calls for.
func (b *callsBench) oneByOne(ctx context.Context) error {
	pairs := b.f.phones / 2
	var callee, caller, cleared, setup []time.Duration
	for k := range b.f.calls {
		from, to := 2*(k%pairs), 2*(k%pairs)+1
		if (k/pairs)%2 == 1 {
			from, to = to, from // the other one calls next time round
		}
		t0 := time.Now()
		call, err := b.phones[from].Call(ctx, b.uri(to))
		if err != nil {
			return fmt.Errorf("call %d: %w", k+1, err)
		}
		pair := []string{b.upns[from], b.upns[to]}
		set, missing, _, err := b.waitWrites(ctx, graphsim.OpSetPresence, t0, pair, 30*time.Second)
		if err != nil {
			return fmt.Errorf("call %d: %w", k+1, err)
		}
		if len(missing) > 0 {
			return fmt.Errorf("call %d: %s", k+1, b.notAccepted(ctx, graphsim.OpSetPresence, missing, 2, 30*time.Second))
		}
		deadline := time.Now().Add(5 * time.Second)
		nFrom, ok1 := b.notes.first(from, t0, deadline, confirmed)
		nTo, ok2 := b.notes.first(to, t0, deadline, confirmed)
		if !ok1 || !ok2 {
			return fmt.Errorf("call %d: the independent watchers saw no confirmed dialog (caller %v, callee %v)", k+1, ok1, ok2)
		}
		caller = append(caller, set[pair[0]].Sub(nFrom))
		callee = append(callee, set[pair[1]].Sub(nTo))
		setup = append(setup, nTo.Sub(t0))

		// The call lasts a moment, so its end does not queue behind its
		// start's writes in the throttle budget.
		time.Sleep(callHold)
		t1 := time.Now()
		if err := call.Hangup(ctx); err != nil {
			return fmt.Errorf("call %d: %w", k+1, err)
		}
		clr, missing, _, err := b.waitWrites(ctx, graphsim.OpClearPresence, t1, pair, 30*time.Second)
		if err != nil {
			return fmt.Errorf("call %d, hang-up: %w", k+1, err)
		}
		if len(missing) > 0 {
			return fmt.Errorf("call %d, hang-up: %s", k+1, b.notAccepted(ctx, graphsim.OpClearPresence, missing, 2, 30*time.Second))
		}
		deadline = time.Now().Add(5 * time.Second)
		for j, i := range []int{from, to} {
			n, ok := b.notes.first(i, t1, deadline, ended)
			if !ok {
				return fmt.Errorf("call %d: the independent watcher of %s saw no end of the dialog", k+1, pair[j])
			}
			cleared = append(cleared, clr[pair[j]].Sub(n))
		}
		// A pause, so the next call starts at another point of the poll cycle.
		time.Sleep(callGap)
	}
	w := b.out
	fmt.Fprintf(w, "one by one: %d calls, one at a time, between %d registered phones\n", b.f.calls, b.f.phones)
	fmt.Fprintf(w, "  confirmed NOTIFY -> setPresence accepted, callee:  %s\n", percentiles(callee))
	fmt.Fprintf(w, "  confirmed NOTIFY -> setPresence accepted, caller:  %s\n", percentiles(caller))
	fmt.Fprintf(w, "  confirmed NOTIFY -> setPresence accepted, both:    %s\n", percentiles(append(slices.Clone(callee), caller...)))
	fmt.Fprintf(w, "  ended NOTIFY -> clearPresence accepted, both:      %s\n", percentiles(cleared))
	fmt.Fprintf(w, "  (the PBX's part: INVITE sent -> callee's confirmed NOTIFY: %s)\n", percentiles(setup))
	rep, err := b.status()
	if err != nil {
		return err
	}
	l := rep.Accounts[0].Writes.Latency
	fmt.Fprintf(w, "  (presencebridge's own figure in status, PBX state seen -> setPresence accepted: p50 %.1f ms  p95 %.1f ms  p99 %.1f ms, %d samples)\n",
		l.P50Ms, l.P95Ms, l.P99Ms, l.Samples)
	return nil
}

// burstLimit is how long the burst waits for the tenant to show every call,
// and then every hang-up.
const burstLimit = time.Minute

// burstCalls starts --burst calls within one second between pairs of
// phones, waits until the tenant shows every one of their users in a call,
// then hangs them all up at once and waits until every one is back. A call
// the PBX refuses, or a user never shown in a call, is reported and left out
// of the figures that follow.
func (b *callsBench) burstCalls(ctx context.Context, kpids []int) error {
	n, w := b.f.burst, b.out
	fmt.Fprintf(w, "burst: %d calls starting within 1 s between %d phones (%d users)\n", n, 2*n, 2*n)
	st0, err := b.api.stats(false)
	if err != nil {
		return err
	}
	k0, q, d0 := cpuTimes(kpids), watchQueue(b.kamPort()), b.ourDrops()
	calls := make([]*sipua.Call, n)
	answered := make([]time.Time, n)
	errs := make([]error, n)
	t0 := time.Now().Add(10 * time.Millisecond)
	var wg sync.WaitGroup
	for j := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(t0.Add(time.Duration(j) * time.Second / time.Duration(n))))
			calls[j], errs[j] = b.phones[2*j].Call(ctx, b.uri(2*j+1))
			answered[j] = time.Now()
		}()
	}
	wg.Wait()
	kUp, tUp := cpuTimes(kpids), time.Since(t0)
	var up []*sipua.Call
	var users []int // the users of the calls set up
	var lastAnswer time.Time
	failed, firstErr := 0, error(nil)
	for j, c := range calls {
		if errs[j] != nil {
			failed++
			firstErr = cmp.Or(firstErr, errs[j])
			continue
		}
		up = append(up, c)
		users = append(users, 2*j, 2*j+1)
		if answered[j].After(lastAnswer) {
			lastAnswer = answered[j]
		}
	}
	if len(up) == 0 {
		q.end()
		return fmt.Errorf("burst: every call failed, e.g. %w", firstErr)
	}
	if failed > 0 {
		fmt.Fprintf(w, "  %d calls FAILED (e.g. %v) and are left out\n", failed, firstErr)
	}
	upns := b.upnsOf(users)
	set, missing, st1, err := b.waitWrites(ctx, graphsim.OpSetPresence, t0, upns, burstLimit)
	if err != nil {
		q.end()
		return fmt.Errorf("burst: %w", err)
	}
	queueSet, d1 := q.end(), b.ourDrops()
	if len(missing) > 0 {
		fmt.Fprintf(w, "  %d users NOT SHOWN in a call: %s\n", len(missing), b.notAccepted(ctx, graphsim.OpSetPresence, missing, len(upns), burstLimit))
		users = slices.DeleteFunc(users, func(i int) bool { return slices.Contains(missing, b.upns[i]) })
		upns = b.upnsOf(users)
	}
	lastNotify, ok := b.lastNotify(users, t0, confirmed)
	var showing int
	others := map[string]int{}
	for _, u := range upns {
		shows, _, err := b.api.shows(u)
		if err != nil {
			return err
		}
		if shows == "Busy/InACall" {
			showing++
		} else {
			others[shows]++
		}
	}
	fmt.Fprintf(w, "  all answered (200 OK at the callers):         %6.2f s after the first INVITE\n", lastAnswer.Sub(t0).Seconds())
	fmt.Fprintf(w, "  all confirmed NOTIFYs at the watchers:        %s\n", secondsAfter(lastNotify, ok, t0))
	if len(set) > 1 {
		times := timesOf(set)
		first, last := slices.MinFunc(times, time.Time.Compare), slices.MaxFunc(times, time.Time.Compare)
		fmt.Fprintf(w, "  all %d setPresence accepted by the tenant:   %6.2f s; %.1f accepted/s from the first to the last\n",
			len(set), last.Sub(t0).Seconds(), float64(len(set)-1)/last.Sub(first).Seconds())
	}
	fmt.Fprintf(w, "  showing Busy/InACall in the tenant then:      %d of %d%s\n", showing, len(upns), outranked(others))
	fmt.Fprintf(w, "  Graph requests until then: %s; 429s: %d\n", b.requestsIn(t0, timesOf(set), st1), st1.Throttled-st0.Throttled)
	fmt.Fprintf(w, "  Kamailio while the calls were set up (%.2f s): CPU %s%s\n", tUp.Seconds(), cpuShare(k0, kUp, tUp), queueSet)
	fmt.Fprintf(w, "  %s\n", d1.since(d0))

	q = watchQueue(b.kamPort())
	kDown0, t1 := cpuTimes(kpids), time.Now()
	for _, c := range up {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Hangup(ctx)
		}()
	}
	wg.Wait()
	kDown, byes := cpuTimes(kpids), time.Since(t1)
	clr, missing, st2, err := b.waitWrites(ctx, graphsim.OpClearPresence, t1, upns, burstLimit)
	if err != nil {
		q.end()
		return fmt.Errorf("burst hang-up: %w", err)
	}
	tClear := time.Since(t1)
	queueClear, d2 := q.end(), b.ourDrops()
	fmt.Fprintf(w, "hang-up of all %d calls at once (BYEs answered after %.2f s)\n", len(up), byes.Seconds())
	if len(missing) > 0 {
		fmt.Fprintf(w, "  %d users NOT BACK: %s\n", len(missing), b.notAccepted(ctx, graphsim.OpClearPresence, missing, len(upns), burstLimit))
	}
	lastEnded, ok := b.lastNotify(users, t1, ended)
	back := 0
	for _, u := range upns {
		_, sessions, err := b.api.shows(u)
		if err != nil {
			return err
		}
		if len(sessions) == 0 {
			back++
		}
	}
	fmt.Fprintf(w, "  all ended NOTIFYs at the watchers:            %s after the first BYE\n", secondsAfter(lastEnded, ok, t1))
	fmt.Fprintf(w, "  all %d clearPresence accepted by the tenant: %6.2f s; %d of %d back to their own state (no session)\n",
		len(clr), tClear.Seconds(), back, len(upns))
	fmt.Fprintf(w, "  Graph requests until then: %s; 429s: %d\n", b.requestsIn(t1, timesOf(clr), st2), st2.Throttled-st1.Throttled)
	fmt.Fprintf(w, "  Kamailio while the BYEs were answered: CPU %s%s\n", cpuShare(kDown0, kDown, byes), queueClear)
	fmt.Fprintf(w, "  %s\n", d2.since(d1))
	return nil
}

// drops are the datagrams the kernel dropped on presencebridge's UDP sockets
// and on this process's (the phones' and watchers').
type drops struct {
	bridge, bench int
	ok            bool
}

func (b *callsBench) ourDrops() drops {
	bridge, ok1 := udpDropsOf(strconv.Itoa(b.bridge.Process.Pid))
	bench, ok2 := udpDropsOf("self")
	return drops{bridge, bench, ok1 && ok2}
}

func (d drops) since(before drops) string {
	if !d.ok || !before.ok {
		return "datagrams dropped elsewhere: n/a"
	}
	return fmt.Sprintf("datagrams dropped by the kernel on presencebridge's UDP sockets: %d, on the bench's phones and watchers: %d",
		d.bridge-before.bridge, d.bench-before.bench)
}

// upnsOf is the UPNs of users (indices).
func (b *callsBench) upnsOf(users []int) []string {
	out := make([]string, len(users))
	for k, i := range users {
		out[k] = b.upns[i]
	}
	return out
}

// secondsAfter is "1.23 s" from t0 to t, or what is missing when !ok.
func secondsAfter(t time.Time, ok bool, t0 time.Time) string {
	if !ok {
		return "NOT ALL within 10 s"
	}
	return fmt.Sprintf("%6.2f s", t.Sub(t0).Seconds())
}

// dropped says how many datagrams to Kamailio the kernel dropped.
func dropped(n int, ok bool) string {
	if !ok {
		return ""
	}
	return fmt.Sprintf("; %d datagrams to Kamailio dropped by the kernel (its UDP receive buffer full)", n)
}

// lastNotify is when the last of users got its first NOTIFY after t that
// match accepts (waiting up to 10 s for them).
func (b *callsBench) lastNotify(users []int, after time.Time, match func(kamailio.Notify) bool) (time.Time, bool) {
	deadline := time.Now().Add(10 * time.Second)
	var last time.Time
	for _, i := range users {
		at, ok := b.notes.first(i, after, deadline, match)
		if !ok {
			return time.Time{}, false
		}
		if at.After(last) {
			last = at
		}
	}
	return last, true
}

func timesOf(m map[string]time.Time) []time.Time {
	out := make([]time.Time, 0, len(m))
	for _, t := range m {
		out = append(out, t)
	}
	return out
}

// outranked says what the users not shown in a call showed instead.
func outranked(others map[string]int) string {
	if len(others) == 0 {
		return ""
	}
	var parts []string
	for s, n := range others {
		parts = append(parts, fmt.Sprintf("%d %s", n, s))
	}
	slices.Sort(parts)
	return " (the others' own state outranks a session, as in Teams: " + strings.Join(parts, ", ") + ")"
}

// requestsIn counts the Graph requests the tenant answered from from to the
// last of accepted, by kind: the polls from its request records, the writes
// (accepted or not) from st's write records, which carry the moment each was
// taken (a request record, the moment it was answered).
func (b *callsBench) requestsIn(from time.Time, accepted []time.Time, st graphsim.Stats) string {
	if len(accepted) == 0 {
		return "n/a"
	}
	to := slices.MaxFunc(accepted, time.Time.Compare)
	recs, err := b.api.requests()
	if err != nil {
		return err.Error()
	}
	polls := 0
	for _, r := range recs {
		if strings.HasSuffix(r.Path, "/getPresencesByUserId") && !r.At.Before(from) && !r.At.After(to) {
			polls++
		}
	}
	writes := map[string]int{}
	for _, w := range st.Writes {
		if !w.At.Before(from) && !w.At.After(to) {
			writes[w.Op]++
		}
	}
	return fmt.Sprintf("%d getPresencesByUserId, %d setPresence, %d clearPresence", polls, writes[graphsim.OpSetPresence], writes[graphsim.OpClearPresence])
}

// percentiles is "p50 x ms  p95 y ms  p99 z ms  (max m ms, n samples)".
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		return float64(s[min(len(s)-1, int(q*float64(len(s))))].Microseconds()) / 1000
	}
	return fmt.Sprintf("p50 %6.1f ms  p95 %6.1f ms  p99 %6.1f ms  (max %.1f ms, %d samples)", at(0.5), at(0.95), at(0.99),
		float64(s[len(s)-1].Microseconds())/1000, len(s))
}

// intervalText is [Polling] Interval as configured, with the cycle auto chose.
func intervalText(configured, effective time.Duration) string {
	if configured == 0 {
		return fmt.Sprintf("auto: %s", effective)
	}
	return configured.String()
}
