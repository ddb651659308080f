// Package verify runs the checks a field engineer would otherwise debug by hand:
// the INI and users file, the budget, the network path to sign-in and Graph,
// each account's token and its permissions, a sample of users, and the PBX
// targets (SIP OPTIONS, a request to the CTI, Asterisk's ARI or AMI); with
// [PBX] Watch on, each account's permission to write presence
// and a SUBSCRIBE for one user. Each check gives PASS, WARN or FAIL, and every
// FAIL its remedy.
package verify

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/asterisk"
	"github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/pbx/watch"
	"github.com/presencebridge/presencebridge/internal/platform/transport"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/auth"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
	"github.com/presencebridge/presencebridge/internal/teams/poll"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Status of one check.
type Status string

// Statuses.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Result is one check's outcome.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Options configure a run.
type Options struct {
	ConfigPath string
	// Offline runs only the checks that need no network.
	Offline bool
	// Sample is how many users per account are resolved and read (default 5).
	Sample int
	Logger *slog.Logger
}

// Failed reports whether any result is a FAIL.
func Failed(rs []Result) bool {
	return slices.ContainsFunc(rs, func(r Result) bool { return r.Status == Fail })
}

type run struct {
	o   Options
	out []Result
}

func (r *run) add(check string, st Status, detail, fix string) {
	r.out = append(r.out, Result{Check: check, Status: st, Detail: detail, Fix: fix})
}

// Run runs every check and returns the results in order.
func Run(ctx context.Context, o Options) []Result {
	if o.Sample <= 0 {
		o.Sample = 5
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &run{o: o}
	cfg, err := config.Load(o.ConfigPath)
	if err != nil {
		r.add("configuration", Fail, err.Error(), "correct the lines named above; Presence.ini.example documents every key with its default")
		return r.out
	}
	r.add("configuration", Pass, cfg.Path+" loads and validates", "")
	for _, w := range cfg.Warnings {
		r.add("configuration", Warn, w, "")
	}

	list, problems, err := users.Load(cfg.UsersFile)
	if err != nil {
		r.add("users file", Fail, err.Error(), "set [General] UsersFile to the CSV export (a header row, then UPN and SIP URI or extension per user)")
		return r.out
	}
	byAccount, unserved := cfg.GroupUsers(list)
	for _, un := range unserved {
		problems = append(problems, users.Problem{File: cfg.UsersFile, Line: un.User.Line, UPN: un.User.UPN, Message: un.Err.Error()})
	}
	if len(list) == 0 {
		r.add("users file", Fail, users.CompareShown(nil, list).Check(cfg.UsersFile).Error(), massRemovalFix)
	} else if len(problems) > 0 {
		var lines []string
		for i, p := range problems {
			if i == 10 {
				lines = append(lines, fmt.Sprintf("... and %d more", len(problems)-10))
				break
			}
			lines = append(lines, p.String())
		}
		r.add("users file", Warn, fmt.Sprintf("%d users load; %d rows skipped:\n%s", len(list), len(problems), strings.Join(lines, "\n")),
			"correct or remove the rows named; the other users are served meanwhile")
	} else {
		r.add("users file", Pass, fmt.Sprintf("%s: %d users", cfg.UsersFile, len(list)), "")
	}
	r.budget(cfg, byAccount)
	if cfg.SIP.Server != "" {
		missing := 0
		for _, u := range list {
			if u.SIPURI == "" {
				missing++
			}
		}
		if missing > 0 {
			r.add("SIP URIs", Warn, fmt.Sprintf("%d of %d users have no SIP URI and are not published over SIP", missing, len(list)),
				"add a SIP URI column to the users file (e.g. sip:1001@pbx.example.com)")
		}
	}
	if cfg.Asterisk.Enabled() {
		r.asteriskDevices(cfg, list)
	}
	if o.Offline {
		return r.out
	}

	to := cfg.Proxy.TransportOptions()
	to.Timeout, to.Logger = cfg.Polling.RequestTimeout, o.Logger
	hc, err := transport.NewClient(to)
	if err != nil {
		r.add("proxy and CA", Fail, err.Error(), "correct [Proxy] URL, Username, Password and CAFile")
		return r.out
	}
	defer hc.CloseIdleConnections() // the proxy tunnels end with the checks
	db, err := store.Open(cfg.StateFile)
	if errors.Is(err, store.ErrInUse) {
		r.add("state file", Warn, "the running service holds "+cfg.StateFile+"; token and sample checks are skipped",
			"see `presencebridge status` for the service's sign-in state, or stop the service and run verify again")
	} else if err != nil {
		r.add("state file", Fail, err.Error(), "make the state file's folder writable by the service account")
	} else {
		defer db.Close()
		if len(list) > 0 {
			if err := app.CheckUsersFile(db, cfg.UsersFile, list); err != nil {
				r.add("users on the PBX", Fail, err.Error(), massRemovalFix)
			}
		}
	}
	for _, ac := range cfg.Accounts {
		r.account(ctx, cfg, ac, hc, db, byAccount[ac.ID])
		if writesTeams(cfg) && ac.Auth == config.AuthDeviceCode {
			r.add("account "+ac.ID+": write permission", Warn, fmt.Sprintf("[PBX] Watch = %s, but this account signs in with the device code: it can read other users' presence "+
				"but not write it (the delegated Presence.ReadWrite covers only the signed-in user), so calls on the PBX do not show in Teams for its %d users",
				cfg.PBX.Watch.Watch, len(byAccount[ac.ID])),
				"use an app registration with a client secret or certificate ([Account."+ac.ID+"] Auth = secret or certificate) and the Microsoft Graph application permission Presence.ReadWrite.All with admin consent")
		}
	}
	r.targets(ctx, cfg, list, db)
	if cfg.Asterisk.Enabled() {
		r.asteriskTarget(ctx, cfg, list)
	}
	if watches(cfg) {
		r.pbxWatch(ctx, cfg, list, unserved)
	}
	return r.out
}

// watches reports whether the service watches the PBX ([PBX] Watch on, and
// Teams read at all), as app.Open decides.
func watches(cfg *config.Config) bool { return cfg.PBX.Watching() && cfg.TeamsEnabled }

// writesTeams reports whether the service writes the PBX's states to Teams: it
// watches, and [PBX] maps some state to a Teams pair.
func writesTeams(cfg *config.Config) bool {
	w := cfg.PBX.Write
	return watches(cfg) && (w.InCall != nil || w.Ringing != nil || w.DND != nil || w.Away != nil)
}

// massRemovalFix is the fix for a users file the service refuses as a mass removal.
const massRemovalFix = "if an HR or PBX export failed, restore the users file; if the change is meant: presencebridge users apply --allow-mass-removal"

// budget checks that each account's users fit its throttle budget at Interval.
func (r *run) budget(cfg *config.Config, byAccount map[string][]users.User) {
	for _, ac := range cfg.Accounts {
		n := len(byAccount[ac.ID])
		if n == 0 {
			r.add("budget "+ac.ID, Warn, "no users are served by this account", "check [Account."+ac.ID+"] Domains and the users file's Account column")
			continue
		}
		reqs := (n + graph.MaxPresenceIDs - 1) / graph.MaxPresenceIDs
		perSec := ac.BudgetShare * float64(ac.BudgetRequests) / ac.BudgetWindow.Seconds()
		fastest := time.Duration(math.Ceil(float64(reqs)/perSec*1000)) * time.Millisecond
		if cfg.Polling.Interval == 0 {
			r.add("budget "+ac.ID, Pass, fmt.Sprintf("%d users in %d requests per cycle; the budget allows a cycle every %s, so Interval auto cycles every %s (MinInterval %s)",
				n, reqs, fastest, max(fastest, cfg.Polling.MinInterval), cfg.Polling.MinInterval), "")
			continue
		}
		if fastest > cfg.Polling.Interval {
			r.add("budget "+ac.ID, Warn, fmt.Sprintf("%d users need %d requests per cycle; %.0f%% of %d requests/%s allows a cycle every %s, slower than [Polling] Interval %s",
				n, reqs, ac.BudgetShare*100, ac.BudgetRequests, ac.BudgetWindow, fastest, cfg.Polling.Interval),
				fmt.Sprintf("accept a %s cycle, raise BudgetShare (at most 90), or split the users over more app registrations", fastest))
			continue
		}
		r.add("budget "+ac.ID, Pass, fmt.Sprintf("%d users in %d requests per cycle; the budget allows a cycle every %s (Interval %s)",
			n, reqs, fastest, cfg.Polling.Interval), "")
	}
}

// reach GETs url and reports the hop that failed, if any. Any HTTP answer proves
// the path (Graph answers 401 without a token).
func reach(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return nil
}

func explain(err error) string {
	if e := transport.Explain(err); e != "" {
		return e
	}
	return err.Error()
}

func (r *run) account(ctx context.Context, cfg *config.Config, ac config.Account, hc *http.Client, db *store.DB, us []users.User) {
	name := "account " + ac.ID
	if err := reach(ctx, hc, ac.Authority()+"/v2.0/.well-known/openid-configuration"); err != nil {
		r.add(name+": sign-in host", Fail, ac.LoginURL+": "+err.Error(), explain(err))
		return
	}
	r.add(name+": sign-in host", Pass, ac.LoginURL+" reachable ("+transport.Describe(cfg.Proxy.TransportOptions())+")", "")
	if err := reach(ctx, hc, ac.GraphURL+"/organization"); err != nil {
		r.add(name+": Graph host", Fail, ac.GraphURL+": "+err.Error(), explain(err))
		return
	}
	r.add(name+": Graph host", Pass, ac.GraphURL+" reachable", "")
	if db == nil {
		return
	}
	au, err := auth.New(auth.Options{AccountID: ac.ID, TenantID: ac.TenantID, ClientID: ac.ClientID, Authority: ac.Authority(),
		GraphURL: ac.GraphURL, Mode: auth.Mode(ac.Auth), ClientSecret: ac.ClientSecret.Reveal(), CertificateFile: ac.CertificateFile,
		CertificateKeyFile: ac.CertificateKeyFile, Username: ac.Username, HTTPClient: hc, Store: db, Logger: r.o.Logger})
	if err != nil {
		r.add(name+": token", Fail, err.Error(), "correct [Account."+ac.ID+"]")
		return
	}
	tok, err := au.Token(ctx)
	var nl *auth.NeedsLoginError
	var ce *auth.CredentialsError
	switch {
	case errors.As(err, &nl):
		r.add(name+": token", Fail, nl.Reason, nl.Fix())
		return
	case errors.As(err, &ce):
		r.add(name+": token", Fail, ce.Reason, ce.Fix)
		return
	case err != nil:
		r.add(name+": token", Fail, err.Error(), explain(err))
		return
	}
	st := au.Status()
	who := "app " + ac.ClientID
	if st.Username != "" {
		who = st.Username
	}
	r.add(name+": token", Pass, fmt.Sprintf("token for %s, expires %s", who, st.ExpiresOn.Local().Format(time.DateTime)), "")
	r.permissions(name, ac, tok)
	if writesTeams(cfg) && ac.Auth != config.AuthDeviceCode {
		r.writePermission(name, cfg, ac, tok)
	}
	if ac.Auth == config.AuthSecret {
		sec := app.CheckSecret(ctx, graph.New(ac.GraphURL, hc, au), ac, cfg.SecretWarnDays, time.Now())
		fix := fmt.Sprintf("create a new secret in App registrations > %s > Certificates & secrets and put its Value in [Account.%s] ClientSecret", ac.ClientID, ac.ID)
		switch {
		case sec.Error != "":
			r.add(name+": client secret", Warn, "expiry unknown: "+sec.Error, "")
		case sec.DaysLeft < 0:
			r.add(name+": client secret", Fail, "expired "+sec.Expires.Format(time.DateOnly), fix)
		case sec.Warning:
			r.add(name+": client secret", Warn, fmt.Sprintf("expires %s, in %d days", sec.Expires.Format(time.DateOnly), sec.DaysLeft), fix)
		default:
			r.add(name+": client secret", Pass, fmt.Sprintf("expires %s, in %d days", sec.Expires.Format(time.DateOnly), sec.DaysLeft), "")
		}
	}

	if len(us) == 0 {
		return
	}
	sample := us[:min(len(us), r.o.Sample)]
	upns := make([]string, len(sample))
	for i, u := range sample {
		upns[i] = u.UPN
	}
	gc := graph.New(ac.GraphURL, hc, au)
	found, notFound, err := gc.ResolveUsers(ctx, upns)
	if err != nil {
		r.add(name+": users", Fail, err.Error(), explain(err))
		return
	}
	if len(notFound) > 0 {
		r.add(name+": users", Fail, fmt.Sprintf("Teams has no user %s (of a sample of %d)", strings.Join(notFound, ", "), len(upns)),
			"check the UPN column of "+cfg.UsersFile+" (the user's sign-in name, usually the e-mail address) and that the user is in tenant "+ac.TenantID)
		return
	}
	ids := make([]string, 0, len(found))
	for _, u := range found {
		ids = append(ids, u.ID)
	}
	ps, err := gc.GetPresences(ctx, ids)
	if err != nil {
		r.add(name+": presence", Fail, err.Error(), explain(err))
		return
	}
	r.add(name+": presence", Pass, fmt.Sprintf("a sample of %d users resolved and %d presences read", len(upns), len(ps)), "")
}

// permissions reads the token's claims: delegated scp or application roles.
func (r *run) permissions(name string, ac config.Account, tok string) {
	have, kind := tokenPermissions(tok)
	var missing []string
	for _, p := range []string{"Presence.Read.All", "User.ReadBasic.All"} {
		if !holds(have, p) && !(p == "User.ReadBasic.All" && holds(have, "User.Read.All")) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		r.add(name+": permissions", Fail, fmt.Sprintf("the token lacks %s (it has: %s)", strings.Join(missing, ", "), strings.Join(have, " ")),
			fmt.Sprintf("in the Entra admin center, App registrations > %s > API permissions: add Microsoft Graph %s permission %s and grant admin consent",
				ac.ClientID, kind, strings.Join(missing, ", ")))
		return
	}
	r.add(name+": permissions", Pass, kind+" "+strings.Join(have, " "), "")
}

// writePermission checks an app-token account's token for the application
// permission setPresence and clearPresence need to show the PBX's calls in
// Teams (Microsoft Graph, "presence: setPresence": Presence.ReadWrite.All).
func (r *run) writePermission(name string, cfg *config.Config, ac config.Account, tok string) {
	const role = "Presence.ReadWrite.All"
	have, kind := tokenPermissions(tok)
	if kind == "Application" && holds(have, role) {
		r.add(name+": write permission", Pass, fmt.Sprintf("Application %s: calls on the PBX can show in Teams ([PBX] Watch = %s)", role, cfg.PBX.Watch.Watch), "")
		return
	}
	r.add(name+": write permission", Fail, fmt.Sprintf("[PBX] Watch = %s shows calls on the PBX in Teams, which needs the application permission %s; the token lacks it (it has: %s)",
		cfg.PBX.Watch.Watch, role, strings.Join(have, " ")),
		fmt.Sprintf("in the Entra admin center, App registrations > %s > API permissions: add Microsoft Graph Application permission %s and grant admin consent "+
			"(a token issued before keeps its roles for up to an hour); without it calls on the PBX do not show in Teams", ac.ClientID, role))
}

// tokenPermissions reads an access token's permissions: the delegated scp, else
// the application roles.
func tokenPermissions(tok string) (have []string, kind string) {
	claims := struct {
		Scp   string   `json:"scp"`
		Roles []string `json:"roles"`
	}{}
	parts := strings.Split(tok, ".")
	if len(parts) == 3 {
		if raw, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			_ = json.Unmarshal(raw, &claims)
		}
	}
	if claims.Scp != "" {
		return strings.Fields(claims.Scp), "Delegated"
	}
	return claims.Roles, "Application"
}

func holds(have []string, p string) bool {
	return slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, p) })
}

// targets checks the PBX side: SIP OPTIONS and an HTTP request to the CTI.
func (r *run) targets(ctx context.Context, cfg *config.Config, list []users.User, db *store.DB) {
	if cfg.SIP.Server != "" {
		p, err := sip.New(sip.Options{Settings: cfg.SIP, Logger: r.o.Logger})
		if err != nil {
			r.add("SIP target", Fail, err.Error(), "correct [SIP]")
		} else {
			code, err := p.Ping(ctx)
			p.Close()
			via := cfg.SIP.Server
			if cfg.SIP.OutboundProxy != "" {
				via += " via " + cfg.SIP.OutboundProxy
			}
			switch {
			case err != nil:
				r.add("SIP target", Fail, err.Error(), "check that the PBX listens on [SIP] Server with [SIP] Transport, and that no firewall drops SIP from this host")
			case code == 401 || code == 407 || code == 403:
				r.add("SIP target", Fail, fmt.Sprintf("%s over %s refused the credentials (%d)", via, cfg.SIP.Transport, code), "check [SIP] Username and Password")
			default:
				r.add("SIP target", Pass, fmt.Sprintf("%s over %s answered OPTIONS (%d)", via, cfg.SIP.Transport, code), "")
				r.testPublish(ctx, cfg, list, db)
			}
		}
	}
	if cfg.HTTP.URL != "" {
		r.httpTarget(ctx, cfg)
	}
}

// testPublish PUBLISHes the first user with a SIP URI for [SIP] Event, as the
// service would (the user's last Teams state kept in the state file, else what
// an unread user shows), for a minute, and withdraws it at once: a PBX that
// takes no such publication answers here (Asterisk: 489), with the way out.
func (r *run) testPublish(ctx context.Context, cfg *config.Config, list []users.User, db *store.DB) {
	var u users.User
	for _, x := range list {
		if x.SIPURI != "" {
			u = x
			break
		}
	}
	if u.UPN == "" {
		return
	}
	st := presence.State{UPN: u.UPN, Availability: presence.PresenceUnknown, Activity: presence.ActPresenceUnknown}
	if db != nil {
		if kept, found, err := poll.Kept(db).Last(u.UPN); err == nil && found {
			st = kept
		}
	}
	s := cfg.SIP
	s.Expires = time.Minute
	p, err := sip.New(sip.Options{Settings: s, Logger: r.o.Logger})
	if err != nil {
		return // reported by the OPTIONS check's New
	}
	defer p.Close()
	check := "SIP target: PUBLISH (Event: " + cfg.SIP.Event + ")"
	it := delivery.Item{User: u, State: st, Mapped: cfg.Mapping.Map(st), Reason: delivery.ReasonSync}
	if err := p.Send(ctx, []delivery.Item{it})[0]; err != nil {
		fix := "see the error; the service would retry this state"
		var perm *delivery.PermanentError
		if errors.As(err, &perm) {
			fix = "the PBX refuses this user's publications for good; the error says what to change"
		}
		r.add(check, Fail, err.Error(), fix)
		return
	}
	rm := it
	rm.Reason = delivery.ReasonRemove
	_ = p.Send(ctx, []delivery.Item{rm})[0] // withdrawn: the running service's own publication stays
	r.add(check, Pass, fmt.Sprintf("%s accepted a publication of %s (%s: %s) and its withdrawal", cfg.SIP.Server, u.SIPURI, u.UPN, it.Mapped.State), "")
}

// pbxWatch SUBSCRIBEs for the first watched user of the users file, for each
// event of [PBX] Watch, as the service does (watch.Probe: a fetch, which leaves
// no subscription behind), and reports what the PBX answered and says.
func (r *run) pbxWatch(ctx context.Context, cfg *config.Config, list []users.User, unserved []config.Unserved) {
	skip := map[string]bool{}
	for _, un := range unserved {
		skip[un.User.UPN] = true
	}
	var u users.User
	for _, x := range list {
		if x.SIPURI != "" && !skip[x.UPN] {
			u = x
			break
		}
	}
	if u.UPN == "" {
		r.add("PBX watch", Warn, fmt.Sprintf("[PBX] Watch = %s, but no user of %s has a SIP URI: nobody is watched", cfg.PBX.Watch.Watch, cfg.UsersFile),
			"add a SIP URI column to the users file (e.g. sip:1001@pbx.example.com)")
		return
	}
	s := cfg.PBX.Watch
	rs, err := watch.Probe(ctx, s, cfg.SIP, u)
	note := ""
	if host, _, herr := net.SplitHostPort(s.Listen); addrInUse(err) && herr == nil {
		// The running service holds [PBX] Listen: the probe listens beside it.
		s.Listen = net.JoinHostPort(host, "0")
		rs, err = watch.Probe(ctx, s, cfg.SIP, u)
		note = fmt.Sprintf(" (NOTIFYs to a free port: [PBX] Listen %s is in use, by the running service?)", cfg.PBX.Watch.Listen)
	}
	if err != nil {
		r.add("PBX watch", Fail, err.Error(), "correct the value named: [PBX] Listen (an address of this host the PBX can reach, and a free port), "+
			"[SIP] Transport (udp or tcp), or the SIP URI of "+u.UPN+" in "+cfg.UsersFile)
		return
	}
	dest := "[SIP] Server (" + cfg.SIP.Server + ")"
	if cfg.SIP.OutboundProxy != "" {
		dest = "[SIP] OutboundProxy (" + cfg.SIP.OutboundProxy + "), and that it forwards to [SIP] Server (" + cfg.SIP.Server + "),"
	}
	for _, p := range rs {
		note := note
		switch {
		case p.Err != nil:
			r.add("PBX watch", Fail, p.Request+" "+strings.TrimPrefix(p.Err.Error(), "SUBSCRIBE "),
				fmt.Sprintf("check that the PBX listens on %s with [SIP] Transport (%s) and takes SUBSCRIBE, and that no firewall drops SIP between this host and it", dest, cfg.SIP.Transport))
		case p.Accepted() && !p.Notified:
			r.add("PBX watch", Warn, fmt.Sprintf("%s accepted (%d), but no NOTIFY came within %s to %s%s", p.Request, p.Code, watch.ProbeNotifyWait, p.Contact, note),
				"let the PBX reach this host at the SUBSCRIBE's Contact: set [PBX] Listen to this host's address toward the PBX and a fixed port, and open that port (SIP over "+cfg.SIP.Transport+") in the firewall")
		case p.Accepted() && p.BodyErr != nil:
			r.add("PBX watch", Warn, fmt.Sprintf("%s accepted, but its NOTIFY could not be read: %v%s", p.Request, p.BodyErr, note),
				"the service ignores such NOTIFYs, so this event says nothing; set [PBX] Watch to the other event (dialog or presence) if the PBX serves it")
		case p.Accepted():
			if p.Short {
				note += " (it takes no fetch, SUBSCRIBE with Expires: 0: a one-minute subscription was made and ended)"
			}
			r.add("PBX watch", Pass, fmt.Sprintf("%s accepted; the PBX says: %s%s", p.Request, says(p.State), note), "")
		default:
			detail := p.Refusal // the watch's own words, as the service logs them
			if detail == "" {
				detail = fmt.Sprintf("%s: %d %s", p.Request, p.Code, p.Reason)
			}
			r.add("PBX watch", Fail, detail, watchFix(cfg, u, p))
		}
	}
}

// watchFix is the remedy for a PBX that refused the watch's SUBSCRIBE.
func watchFix(cfg *config.Config, u users.User, p watch.ProbeResult) string {
	switch p.Code {
	case 401, 407:
		if cfg.SIP.Username == "" {
			return "set [SIP] Username and Password to the PBX account presencebridge subscribes as"
		}
		return fmt.Sprintf("check [SIP] Username (%q) and Password: the PBX account presencebridge subscribes as", cfg.SIP.Username)
	case 403:
		return "let the PBX take subscriptions from [SIP] Username (or [SIP] From) to its users' state (Asterisk: allow_subscribe = yes on that endpoint)"
	case 404:
		ext := strings.TrimPrefix(strings.TrimPrefix(u.SIPURI, "sips:"), "sip:")
		ext, _, _ = strings.Cut(ext, "@")
		return fmt.Sprintf("check the SIP URI of %s in %s; on Asterisk the extension needs a hint (extensions.conf: exten => %s,hint,PJSIP/%s)", u.UPN, cfg.UsersFile, ext, ext)
	case 489:
		return fmt.Sprintf("set [PBX] Watch to an event the PBX serves (Watch = %s names Event: %s; most PBXs serve dialog)", cfg.PBX.Watch.Watch, p.Event)
	case 405, 501:
		return "point [SIP] Server at the PBX's SIP address: this server does not take SUBSCRIBE"
	}
	return "see the PBX's log for why it refuses SUBSCRIBE from this host"
}

// says describes what the PBX reports of a user.
func says(st presence.PBXState) string {
	var parts []string
	switch st.Line {
	case presence.LineIdle:
		parts = append(parts, "idle")
	case presence.LineRinging:
		parts = append(parts, "ringing")
	case presence.LineInCall:
		if st.Calls > 1 {
			parts = append(parts, fmt.Sprintf("in a call (%d calls)", st.Calls))
		} else {
			parts = append(parts, "in a call")
		}
	}
	if st.DND {
		parts = append(parts, "do not disturb")
	}
	if st.Away {
		parts = append(parts, "away")
	}
	if len(parts) == 0 {
		return "nothing of this user yet (no state published)"
	}
	return strings.Join(parts, ", ")
}

func (r *run) httpTarget(ctx context.Context, cfg *config.Config) {
	tc, err := ctiClient(cfg)
	if err != nil {
		r.add("HTTP target", Fail, err.Error(), "correct [HTTP] CAFile, ClientCertFile and ClientKeyFile")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.HTTP.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodOptions, cfg.HTTP.URL, nil)
	if err != nil {
		r.add("HTTP target", Fail, err.Error(), "correct [HTTP] URL")
		return
	}
	for k, v := range cfg.HTTP.Headers {
		req.Header.Set(k, v.Reveal())
	}
	resp, err := tc.Do(req)
	if err != nil {
		r.add("HTTP target", Fail, err.Error(), "check that the CTI listens at [HTTP] URL and that its certificate is trusted ([HTTP] CAFile)")
		return
	}
	resp.Body.Close()
	if resp.StatusCode == 401 || resp.StatusCode == 403 {
		r.add("HTTP target", Fail, "the CTI answered "+resp.Status, "check the [HTTP] Header.* credentials")
		return
	}
	r.add("HTTP target", Pass, "the CTI answered "+resp.Status, "")
}

func ctiClient(cfg *config.Config) (*http.Client, error) {
	t, err := cti.New(cti.Options{Settings: cfg.HTTP})
	if err != nil {
		return nil, err
	}
	return t.Client(), nil
}

// asteriskDevices warns about users the [Asterisk] Device template names no
// device for (they are not sent to Asterisk).
func (r *run) asteriskDevices(cfg *config.Config, list []users.User) {
	d, err := asterisk.ParseDevice(cfg.Asterisk.Device)
	if err != nil {
		return // config refused it already
	}
	var missing []string
	for _, u := range list {
		if _, err := d.Name(u); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) == 0 {
		return
	}
	n, more := len(missing), ""
	if n > 3 {
		more = fmt.Sprintf("; and %d more", n-3)
		missing = missing[:3]
	}
	r.add("Asterisk devices", Warn, fmt.Sprintf("%d of %d users get no device from [Asterisk] Device = %s and are not sent to Asterisk: %s%s",
		n, len(list), cfg.Asterisk.Device, strings.Join(missing, "; "), more),
		"fill in what the template needs in "+cfg.UsersFile+" (e.g. the Extension column for {extension}), or change [Asterisk] Device (e.g. teams-{user}, the user part of the SIP URI)")
}

// asteriskTarget checks [Asterisk] against the PBX: ARI's info and a device
// state set and deleted on a probe device, or the AMI login and the manager
// user's right to Setvar; then reads the first user's device, and shows the
// hint that combines it with the phone.
func (r *run) asteriskTarget(ctx context.Context, cfg *config.Config, list []users.User) {
	const name = "Asterisk target"
	t, err := asterisk.New(asterisk.Options{Settings: cfg.Asterisk, Logger: r.o.Logger})
	if err != nil {
		r.add(name, Fail, err.Error(), "correct [Asterisk]")
		return
	}
	defer t.Close()
	said, err := t.Check(ctx)
	if err != nil {
		detail, fix := err.Error(), ""
		var ae *asterisk.Error
		if errors.As(err, &ae) {
			detail, fix = ae.Op+": "+ae.Cause, ae.Fix
		}
		if fix == "" {
			fix = "check that Asterisk runs and answers at " + cfg.Asterisk.Where() + ", and see its log"
		}
		r.add(name, Fail, detail, fix)
		return
	}
	for _, u := range list {
		dev, err := t.DeviceOf(u)
		if err != nil {
			continue
		}
		_, state, err := t.Lookup(ctx, u)
		if err != nil {
			state = "unreadable: " + err.Error()
		}
		said += fmt.Sprintf("; %s is %s, now %s", u.UPN, dev, state)
		if u.Extension != "" {
			said += fmt.Sprintf(" (its hint: exten => %s,hint,PJSIP/%s&%s)", u.Extension, u.Extension, dev)
		}
		break
	}
	r.add(name, Pass, said, "")
}
