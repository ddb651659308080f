// Package app wires presencebridge together: configuration, state file, proxy-aware
// HTTP client, one sign-in + Graph client + budget + poller per account, the sink
// that receives changes, and the loopback control endpoint.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/compose"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/watch"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/platform/transport"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/auth"
	"github.com/presencebridge/presencebridge/internal/teams/budget"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
	"github.com/presencebridge/presencebridge/internal/teams/poll"
	"github.com/presencebridge/presencebridge/internal/teams/write"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Options are the App's explicit dependencies.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
	Clock  clock.Clock // default clock.Real{}
	// Sink receives the pollers' changes instead of the delivery targets (bench).
	Sink poll.Sink
	// Targets replace the targets built from [SIP] and [HTTP] (tests).
	Targets []delivery.Target
	Version string
	// HTTPClient replaces the proxy-aware client built from [Proxy] (tests only).
	HTTPClient *http.Client
	// Reload asks for the configuration to be read again (set by RunWithReload;
	// the control endpoint's reload calls it).
	Reload func(ctx context.Context, r control.ReloadRequest) error
	// RefuseMassRemoval makes Open (and a reload) refuse a users file that lists
	// nobody or would take more than half of the users off the PBX, unless it was
	// confirmed (users apply --allow-mass-removal). The service sets it: its Run
	// withdraws the presence of users who left the file. One-shot commands
	// (login, status) work with any users file.
	RefuseMassRemoval bool
	// Reloaded says the App takes over from one that ran with the same state
	// file until now (RunWithReload): the targets' states are not re-asserted at
	// start, nothing was missed.
	Reloaded bool
}

// maxProblemsShown is how many skipped users-file rows are logged and kept for
// status; a broken export can have a problem on every one of 50,000 rows.
const maxProblemsShown = 50

// ErrConfig marks errors a field engineer fixes in Presence.ini or the users file.
var ErrConfig = errors.New("configuration error")

// App is one running presencebridge.
type App struct {
	cfg         *config.Config
	log         *slog.Logger
	clk         clock.Clock
	db          *store.DB
	hc          *http.Client
	sink        poll.Sink
	composer    *compose.Composer
	dispatcher  *delivery.Dispatcher
	watcher     *watch.Watcher // nil unless [PBX] Watch is on
	targets     []delivery.Target
	version     string
	reload      func(ctx context.Context, r control.ReloadRequest) error
	started     atomic.Pointer[time.Time] // set by Run; read by status
	metricsAddr atomic.Value              // string: where /metrics listens
	accounts    []*account
	byID        map[string]*account
	byUPN       map[string]userRef
	// problems are users-file rows and users without an account, reported by status.
	problems []string
}

type userRef struct {
	user    *users.User
	account *account
}

type account struct {
	cfg    config.Account
	auth   *auth.Authenticator
	graph  *graph.Client
	budget *budget.Budget
	poller *poll.Poller
	writer *write.Writer // nil unless the PBX is watched and the account may write
	users  []users.User
	// requests times the poller's presence reads (poll.TimeRequests wraps graph).
	requests poll.Requests

	mu     sync.Mutex
	secret *SecretStatus // last client secret check (Auth = secret)
}

// KeyFile is where the running service writes its control endpoint's address and key.
func KeyFile(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.StateFile), "control.key")
}

// Open builds the App. It opens the state file, so it fails with store.ErrInUse
// while the service runs with the same file.
func Open(o Options) (*App, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	a := &App{cfg: o.Config, log: o.Logger, clk: o.Clock, version: o.Version, hc: o.HTTPClient, reload: o.Reload,
		byID: map[string]*account{}, byUPN: map[string]userRef{}}
	cfg := o.Config
	if cfg.Mapping == nil {
		cfg.Mapping = presence.DefaultMapping()
	}

	list, problems, err := users.Load(cfg.UsersFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	for i, p := range problems {
		if i == maxProblemsShown {
			more := fmt.Sprintf("%s: %d more rows skipped; fix the ones above first", p.File, len(problems)-i)
			a.problems = append(a.problems, more)
			a.log.Warn(more)
			break
		}
		a.problems = append(a.problems, p.String())
		a.log.Warn("Users file row skipped", "problem", p.String())
	}

	if a.hc == nil {
		to := cfg.Proxy.TransportOptions()
		to.Logger = o.Logger
		a.hc, err = transport.NewClient(to)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: [Proxy]: %w", ErrConfig, cfg.Path, err)
		}
	}

	a.db, err = openState(cfg.StateFile, o.Logger)
	if err != nil {
		return nil, err
	}
	if o.RefuseMassRemoval {
		if _, err := checkUsers(a.db, cfg.UsersFile, list); err != nil {
			a.db.Close()
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	targets := o.Targets
	if targets == nil {
		if targets, err = a.buildTargets(cfg); err != nil {
			a.db.Close()
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	a.targets = targets
	a.dispatcher = delivery.NewDispatcher(delivery.Options{Settings: cfg.Delivery.Settings, Outbox: delivery.BoltOutbox(a.db), Targets: targets,
		Clock: o.Clock, Logger: o.Logger, NoReassertAtStart: o.Reloaded})

	for _, ac := range cfg.Accounts {
		ac := ac
		au, err := auth.New(auth.Options{
			AccountID: ac.ID, TenantID: ac.TenantID, ClientID: ac.ClientID,
			Authority: ac.Authority(), GraphURL: ac.GraphURL, Mode: auth.Mode(ac.Auth),
			ClientSecret: string(ac.ClientSecret), CertificateFile: ac.CertificateFile,
			CertificateKeyFile: ac.CertificateKeyFile, Username: ac.Username,
			HTTPClient: a.hc, Store: a.db, Clock: o.Clock, Logger: o.Logger.With("account", ac.ID),
		})
		if err != nil {
			a.db.Close()
			return nil, fmt.Errorf("%w: %s: [Account.%s]: %w", ErrConfig, cfg.Path, ac.ID, err)
		}
		acc := &account{
			cfg:    ac,
			auth:   au,
			graph:  graph.New(ac.GraphURL, a.hc, au),
			budget: budget.New(ac.BudgetRequests, ac.BudgetWindow, ac.BudgetShare, o.Clock),
		}
		a.accounts = append(a.accounts, acc)
		a.byID[ac.ID] = acc
	}
	byAccount, unserved := cfg.GroupUsers(list)
	for _, un := range unserved {
		a.problems = append(a.problems, un.Err.Error())
		a.log.Warn("User not served", "upn", un.User.UPN, "reason", un.Err.Error())
	}
	for id, us := range byAccount {
		a.byID[id].users = us
	}
	// One copy of each user (tens of thousands of rows): the lookup points into the
	// accounts' slices, which no longer grow.
	for _, acc := range a.accounts {
		for i := range acc.users {
			a.byUPN[acc.users[i].UPN] = userRef{user: &acc.users[i], account: acc}
		}
	}
	writers := map[string]compose.Writer{}
	if cfg.PBX.Watching() && cfg.TeamsEnabled {
		for _, acc := range a.accounts {
			if acc.cfg.Auth == config.AuthDeviceCode || len(acc.users) == 0 {
				continue // a device-code account cannot write others' presence (config warns)
			}
			acc.writer, err = write.New(write.Options{Settings: cfg.PBX.Write, Account: acc.cfg.ID, AppID: acc.cfg.ClientID,
				Graph: acc.graph, IDs: poll.Kept(a.db), Budget: acc.budget, Sessions: write.BoltSessions{DB: a.db},
				Clock: o.Clock, Logger: o.Logger.With("component", "teams writes")})
			if err != nil {
				a.db.Close()
				return nil, fmt.Errorf("account %s: %w", acc.cfg.ID, err)
			}
			writers[acc.cfg.ID] = acc.writer
		}
	}
	a.composer, err = compose.New(compose.Options{Mapping: cfg.Mapping, Queue: a.dispatcher, States: poll.Kept(a.db),
		Winning: cfg.WinningTechnology, Writers: writers, Store: a.db, Clock: o.Clock, Logger: o.Logger})
	if err != nil {
		a.db.Close()
		return nil, err
	}
	switch {
	case o.Sink != nil:
		a.sink = o.Sink
	case len(targets) > 0:
		a.sink = a.composer
	default:
		a.sink = poll.LogSink{Logger: o.Logger}
	}
	if cfg.PBX.Watching() && cfg.TeamsEnabled {
		a.watcher, err = watch.New(watch.Options{Settings: cfg.PBX.Watch, SIP: cfg.SIP, Changes: a.pbxChanges,
			Clock: o.Clock, Logger: o.Logger.With("component", "pbx watch")})
		if err != nil {
			a.db.Close()
			return nil, fmt.Errorf("%w: %s: [PBX]: %w", ErrConfig, cfg.Path, err)
		}
		var watched []users.User
		for _, acc := range a.accounts {
			for _, u := range acc.users {
				u.Account = acc.cfg.ID // the users file may leave it to the one account
				watched = append(watched, u)
			}
		}
		a.watcher.SetUsers(watched)
	}
	for _, acc := range a.accounts {
		acc.poller, err = poll.New(poll.Options{
			Account:        acc.cfg.ID,
			Users:          acc.users,
			Graph:          poll.TimeRequests(acc.graph, o.Clock, &acc.requests),
			Store:          a.db,
			Sink:           a.sink,
			Budget:         acc.budget,
			Clock:          o.Clock,
			Logger:         o.Logger.With("account", acc.cfg.ID),
			Settings:       cfg.Polling.Settings,
			EmitAllOnStart: cfg.EmitAllOnStart,
		})
		if err != nil {
			a.db.Close()
			return nil, fmt.Errorf("account %s: %w", acc.cfg.ID, err)
		}
	}
	return a, nil
}

// Close ends the PBX subscriptions and closes the state file.
func (a *App) Close() error {
	if a.watcher != nil {
		a.watcher.Close()
	}
	a.dispatcher.Close()
	return a.db.Close()
}

// pbxChanges takes the PBX watch's changes (watch.Options.Changes).
func (a *App) pbxChanges(ctx context.Context, changes []presence.PBXChange) {
	if err := a.composer.DeliverPBX(ctx, changes); err != nil {
		a.log.Error("Queueing the PBX's states failed", "users", len(changes), "err", err)
	}
}

// DB is the open state file (for commands that read it directly).
func (a *App) DB() *store.DB { return a.db }

// Run polls every account until ctx ends, and answers the control endpoint.
func (a *App) Run(ctx context.Context) error {
	now := a.clk.Now()
	a.started.Store(&now)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(a.accounts)+2)
	start := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}

	if a.cfg.ControlAddr != "" && !strings.EqualFold(a.cfg.ControlAddr, "off") {
		srv, err := control.Listen(a.cfg.ControlAddr, KeyFile(a.cfg), controlHandler{a}, a.log)
		if err != nil {
			return err
		}
		start("control endpoint", srv.Serve)
		a.log.Info("Control endpoint listening", "addr", srv.Addr())
	}

	a.log.Info("Working with the configuration", "version", a.version, "config", a.cfg.Path,
		"users", len(a.byUPN), "accounts", len(a.accounts),
		"winningTechnology", a.cfg.WinningTechnology)
	for _, w := range a.cfg.Warnings {
		a.log.Warn(w)
	}
	if !a.cfg.TeamsEnabled {
		a.log.Warn("Teams presence polling is off: MSTeamsPresence.Enable = 0 in " + a.cfg.Path + "; set it to 1 to poll")
	} else {
		for _, acc := range a.accounts {
			if len(acc.users) == 0 {
				a.log.Warn("Account has no users; nothing to poll", "account", acc.cfg.ID)
				continue
			}
			start("account "+acc.cfg.ID, acc.poller.Run)
			if acc.writer != nil {
				start("teams writes "+acc.cfg.ID, acc.writer.Run)
			}
			if acc.cfg.Auth == config.AuthSecret {
				acc := acc
				start("secret check "+acc.cfg.ID, func(ctx context.Context) error { return a.secretLoop(ctx, acc) })
			}
		}
	}
	if a.watcher != nil {
		start("pbx watch", a.watcher.Run)
		a.log.Info("Watching the PBX's calls", "events", a.cfg.PBX.Watch.Events(), "contact", a.watcher.Contact(),
			"winningTechnology", a.cfg.WinningTechnology)
	}
	start("status writer", a.writeStatusLoop)
	if a.cfg.MetricsAddr != "" {
		addr := a.cfg.MetricsAddr
		start("metrics endpoint", func(ctx context.Context) error { return a.serveMetrics(ctx, addr) })
	}
	if targets := a.dispatcher.Targets(); len(targets) > 0 {
		if err := a.removeDeparted(ctx); err != nil {
			a.log.Error("Withdrawing departed users failed", "err", err)
		}
		start("delivery", a.dispatcher.Run)
		for _, t := range a.targets {
			if r, ok := t.(interface{ Run(context.Context) error }); ok {
				start(t.Name()+" refresh", r.Run) // e.g. SIP publications before they expire
			}
		}
		a.log.Info("Delivering presence", "targets", targets, "pending", a.pendingAll())
		for _, t := range a.targets {
			acc, ok := t.(delivery.Accepter)
			if !ok {
				continue
			}
			skipped, example := 0, ""
			for upn, ref := range a.byUPN {
				if !acc.Accepts(*ref.user) {
					skipped++
					example = upn
				}
			}
			switch {
			case skipped == 0:
			case t.Name() == "asterisk":
				a.log.Warn("Users the [Asterisk] Device template names no device for are not sent to Asterisk; fill in what the template needs in the users file, or change Device",
					"target", t.Name(), "users", skipped, "example", example, "device", a.cfg.Asterisk.Device, "usersFile", a.cfg.UsersFile)
			default:
				a.log.Warn("Users without a SIP URI are not published over SIP; add the SIP URI column in the users file",
					"target", t.Name(), "users", skipped, "example", example, "usersFile", a.cfg.UsersFile)
			}
		}
		if a.cfg.Delivery.StaleAfter > 0 && a.cfg.TeamsEnabled {
			start("stale policy", a.staleLoop)
		}
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		a.log.Error("Stopping after a failure", "err", err)
	}
	cancel()
	wg.Wait()
	a.saveStatus(context.Background())
	return err
}

// Login signs an account in (device code) or proves its credentials (secret or
// certificate). With an empty id and exactly one account, that one is used.
func (a *App) Login(ctx context.Context, id string, show func(string)) (auth.Identity, error) {
	acc, err := a.account(id)
	if err != nil {
		return auth.Identity{}, err
	}
	return acc.auth.Login(ctx, show)
}

func (a *App) account(id string) (*account, error) {
	if id == "" {
		if len(a.accounts) == 1 {
			return a.accounts[0], nil
		}
		return nil, fmt.Errorf("%d accounts are configured in %s; name one with --account (%s)", len(a.accounts), a.cfg.Path, strings.Join(a.accountIDs(), ", "))
	}
	for _, acc := range a.accounts {
		if strings.EqualFold(acc.cfg.ID, id) {
			return acc, nil
		}
	}
	return nil, fmt.Errorf("no account %q in %s; configured: %s", id, a.cfg.Path, strings.Join(a.accountIDs(), ", "))
}

func (a *App) accountIDs() []string {
	ids := make([]string, 0, len(a.accounts))
	for _, acc := range a.accounts {
		ids = append(ids, acc.cfg.ID)
	}
	return ids
}

// PresenceReport is what `presence get` prints.
type PresenceReport struct {
	UPN       string          `json:"upn"`
	Account   string          `json:"account"`
	ObjectID  string          `json:"objectId"`
	SIPURI    string          `json:"sipUri,omitempty"`
	Extension string          `json:"extension,omitempty"`
	Live      *LivePresence   `json:"live"`
	LastKnown *presence.State `json:"lastKnown,omitempty"`
	// Delivered is what each target last accepted for the user, and when.
	Delivered []delivery.Delivered `json:"delivered,omitempty"`
	// Pending names the targets that still have a newer state to send for the user.
	Pending []string `json:"pending,omitempty"`
	// PBX is the PBX's own state of the user and its subscriptions, where the
	// PBX is watched; Session is the presence session presencebridge holds for
	// the user in Teams (a call shown there).
	PBX     *watch.UserStatus `json:"pbx,omitempty"`
	Session *write.UserStatus `json:"teamsSession,omitempty"`
	// Asterisk is the user's device on Asterisk and the state Asterisk has
	// for it now, where [Asterisk] is configured.
	Asterisk *AsteriskDevice `json:"asterisk,omitempty"`
	// LiveError says why Live could not be read (a dead sign-in, Graph down);
	// the rest of the report is what presencebridge kept. Fix is what to do, when known.
	LiveError string `json:"liveError,omitempty"`
	Fix       string `json:"fix,omitempty"`
}

// AsteriskDevice is a user's device as the hints name it and the state Asterisk
// has for it, read when asked; Error says why it could not be read.
type AsteriskDevice struct {
	Device string `json:"device,omitempty"`
	State  string `json:"state,omitempty"`
	Error  string `json:"error,omitempty"`
}

// deviceLookup is a target that can read a user's state back (Asterisk).
type deviceLookup interface {
	Lookup(ctx context.Context, u users.User) (device, state string, err error)
}

// LivePresence is one user's presence read from Graph just now.
type LivePresence struct {
	Availability    presence.Availability `json:"availability"`
	Activity        presence.Activity     `json:"activity"`
	OutOfOffice     bool                  `json:"outOfOffice"`
	RawAvailability string                `json:"rawAvailability,omitempty"`
	RawActivity     string                `json:"rawActivity,omitempty"`
	ReadAt          time.Time             `json:"readAt"`
}

// Presence reads one user's presence from Graph now, next to the last state kept
// and what each target last accepted. When Graph cannot be read (a dead sign-in,
// an outage) the report says why in LiveError, with the rest of it.
func (a *App) Presence(ctx context.Context, upn string) (PresenceReport, error) {
	rep, err := a.presence(ctx, upn)
	if err != nil && rep.UPN != "" {
		rep.LiveError = err.Error()
		var nl *auth.NeedsLoginError
		if errors.As(err, &nl) {
			rep.Fix = nl.Fix()
		}
		return rep, nil
	}
	return rep, err
}

func (a *App) presence(ctx context.Context, upn string) (PresenceReport, error) {
	upn = strings.ToLower(strings.TrimSpace(upn))
	ref, ok := a.byUPN[upn]
	if !ok {
		return PresenceReport{}, fmt.Errorf("%q is not in the users file %s (or has no account); add a row for it", upn, a.cfg.UsersFile)
	}
	rep := PresenceReport{UPN: upn, Account: ref.account.cfg.ID, SIPURI: ref.user.SIPURI, Extension: ref.user.Extension}
	if st, found, err := poll.Kept(a.db).Last(upn); err != nil {
		return rep, err
	} else if found {
		rep.LastKnown = &st
	}
	rep.Delivered = a.dispatcher.Delivered(upn)
	rep.Pending = a.dispatcher.PendingFor(upn)
	if a.watcher != nil {
		if us, ok := a.watcher.User(upn); ok {
			rep.PBX = &us
		}
	}
	if w := ref.account.writer; w != nil {
		if us, ok := w.User(upn); ok {
			rep.Session = &us
		}
	}
	for _, t := range a.targets {
		if l, ok := t.(deviceLookup); ok {
			dev, st, err := l.Lookup(ctx, *ref.user)
			rep.Asterisk = &AsteriskDevice{Device: dev, State: st}
			if err != nil {
				rep.Asterisk.Error = err.Error()
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Polling.RequestTimeout)
	defer cancel()
	found, notFound, err := ref.account.graph.ResolveUsers(ctx, []string{upn})
	if err != nil {
		return rep, fmt.Errorf("resolve %s: %w", upn, err)
	}
	if len(notFound) > 0 {
		return rep, fmt.Errorf("Teams has no user %q (account %s); check the UPN in %s", upn, ref.account.cfg.ID, a.cfg.UsersFile)
	}
	rep.ObjectID = found[upn].ID
	p, err := ref.account.graph.GetPresence(ctx, rep.ObjectID)
	if err != nil {
		return rep, fmt.Errorf("read presence of %s: %w", upn, err)
	}
	av, _ := presence.ParseAvailability(p.Availability)
	act, _ := presence.ParseActivity(p.Activity)
	rep.Live = &LivePresence{Availability: av, Activity: act, OutOfOffice: p.OutOfOffice, ReadAt: a.clk.Now().UTC()}
	if string(av) != p.Availability {
		rep.Live.RawAvailability = p.Availability
	}
	if string(act) != p.Activity {
		rep.Live.RawActivity = p.Activity
	}
	return rep, nil
}

// StatusReport is what `status` shows.
type StatusReport struct {
	Version      string                  `json:"version"`
	Config       string                  `json:"config"`
	Running      bool                    `json:"running"`
	Started      time.Time               `json:"started,omitzero"`
	ReportedAt   time.Time               `json:"reportedAt"`
	TeamsEnabled bool                    `json:"teamsEnabled"`
	Users        int                     `json:"users"`
	UserProblems []string                `json:"userProblems,omitempty"`
	Accounts     []AccountReport         `json:"accounts"`
	Targets      []delivery.TargetStatus `json:"targets,omitempty"`
	// PBXWatch is the PBX watch's subscriptions and calls, where it is on.
	PBXWatch *watch.Status `json:"pbxWatch,omitempty"`
}

// AccountReport is one account's part of the status.
type AccountReport struct {
	ID      string      `json:"id"`
	Auth    string      `json:"auth"`
	Tenant  string      `json:"tenant"`
	Sign    auth.Status `json:"signIn"`
	Polling poll.Status `json:"polling"`
	// PollRequests are the durations of the poller's presence reads, by outcome.
	PollRequests poll.RequestsStatus `json:"pollRequests"`
	// StaleSince is when the account's users began to be shown as stale; zero when live.
	StaleSince time.Time `json:"staleSince,omitzero"`
	// Secret is the client secret's expiry (Auth = secret), once checked.
	Secret *SecretStatus `json:"secret,omitempty"`
	// Writes are the PBX's calls shown in Teams, where the PBX is watched.
	Writes *write.Status `json:"teamsWrites,omitempty"`
}

const statusKey = "report"

// Status is the live report (the control endpoint's answer).
func (a *App) Status(context.Context) any { return a.report() }

func (a *App) report() StatusReport {
	var started time.Time
	if p := a.started.Load(); p != nil {
		started = *p
	}
	r := StatusReport{Version: a.version, Config: a.cfg.Path, Running: true, Started: started,
		ReportedAt: a.clk.Now().UTC(), TeamsEnabled: a.cfg.TeamsEnabled, Users: len(a.byUPN), UserProblems: a.problems}
	for _, acc := range a.accounts {
		ar := AccountReport{ID: acc.cfg.ID, Auth: string(acc.cfg.Auth), Tenant: acc.cfg.TenantID,
			Sign: acc.auth.Status(), Polling: acc.poller.Status(), PollRequests: acc.requests.Status(), StaleSince: a.composer.StaleSince(acc.cfg.ID), Secret: acc.secretStatus()}
		if acc.writer != nil {
			ws := acc.writer.Status(false)
			ar.Writes = &ws
		}
		r.Accounts = append(r.Accounts, ar)
	}
	if a.watcher != nil {
		ws := a.watcher.Status(false)
		r.PBXWatch = &ws
	}
	sort.Slice(r.Accounts, func(i, j int) bool { return r.Accounts[i].ID < r.Accounts[j].ID })
	r.Targets = a.dispatcher.Status()
	return r
}

// StoredStatus is the last report the service saved, for `status` while it is stopped.
func (a *App) StoredStatus() (StatusReport, bool, error) {
	var r StatusReport
	found, err := a.db.Get(store.BucketStatus, statusKey, &r)
	r.Running = false
	return r, found, err
}

func (a *App) saveStatus(context.Context) {
	if err := a.db.Put(store.BucketStatus, statusKey, a.report()); err != nil {
		a.log.Warn("Could not save status", "err", err)
	}
}

func (a *App) writeStatusLoop(ctx context.Context) error {
	for {
		if err := a.clk.Sleep(ctx, 10*time.Second); err != nil {
			return nil
		}
		a.saveStatus(ctx)
	}
}

// controlHandler answers the control endpoint with the App.
type controlHandler struct{ a *App }

func (h controlHandler) Status(ctx context.Context) any { return h.a.Status(ctx) }

func (h controlHandler) Presence(ctx context.Context, upn string) (any, error) {
	return h.a.Presence(ctx, upn)
}

func (h controlHandler) SyncAll(ctx context.Context) (any, error) { return h.a.SyncAll(ctx) }

func (h controlHandler) Reload(ctx context.Context, r control.ReloadRequest) (any, error) {
	if h.a.reload == nil {
		return nil, errors.New("this presencebridge does not reload (it is not the service)")
	}
	if err := h.a.reload(ctx, r); err != nil {
		return nil, err
	}
	return map[string]string{"result": "the configuration was read again and is being applied"}, nil
}

func (h controlHandler) Login(ctx context.Context, account string, show func(string)) (any, error) {
	return h.a.Login(ctx, account, show)
}
