package asterisk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
	astsim "github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
	"github.com/presencebridge/presencebridge/internal/users"
)

// startAsterisk runs the real Asterisk 22 for one test: users 1000, 1001 and
// 1002, each with the hint PJSIP/{ext}&Stasis:teams-{ext}&Custom:teams-{ext}.
func startAsterisk(t *testing.T, o astsim.Options) *astsim.Server {
	t.Helper()
	if o.Users == nil {
		o.Users = map[string]string{"1000": "pw-1000-x", "1001": "pw-1001-x", "1002": "pw-1002-x"}
	}
	return pbxtest.Asterisk(t, o)
}

// ariSettings and amiSettings point a target at srv.
func ariSettings(srv *astsim.Server) Settings {
	s := DefaultSettings()
	s.URL, s.Username, s.Password = srv.ARIURL, srv.ARIUser, secret.Value(srv.ARIPassword)
	return s
}

func amiSettings(srv *astsim.Server) Settings {
	s := DefaultSettings()
	s.Mode, s.Address, s.Username, s.Secret = ModeAMI, srv.AMIAddr, srv.AMIUser, secret.Value(srv.AMIPassword)
	return s
}

// newTarget builds a target whose log goes to a buffer, checked at the end
// for the passwords.
func newTarget(t *testing.T, s Settings) *Target {
	t.Helper()
	var logs testkit.Buffer
	t.Cleanup(func() {
		for _, pw := range []string{s.Password.Reveal(), s.Secret.Reveal()} {
			if pw != "" && strings.Contains(logs.String(), pw) {
				t.Errorf("the log shows a password:\n%s", logs.String())
			}
		}
	})
	tg, err := New(Options{Settings: s, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

// user is the Teams user of extension ext on srv.
func user(srv *astsim.Server, ext string) users.User {
	return users.User{UPN: "u" + ext + "@contoso.test", SIPURI: srv.URI(ext), Extension: ext}
}

// item is u's Teams state a/act as the default mapping shows it.
func item(u users.User, a presence.Availability, act presence.Activity) delivery.Item {
	st := presence.State{UPN: u.UPN, Availability: a, Activity: act}
	return delivery.Item{User: u, State: st, Mapped: presence.DefaultMapping().Map(st), Reason: delivery.ReasonChange, Queued: time.Now()}
}

func removal(u users.User) delivery.Item {
	it := item(u, presence.Busy, presence.ActInACall)
	it.Reason = delivery.ReasonRemove
	return it
}

// send sends one item and fails the test if the target refuses it.
func send(t *testing.T, tg *Target, it delivery.Item) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if errs := tg.Send(ctx, []delivery.Item{it}); errs[0] != nil {
		t.Fatalf("send %s %s/%s: %v", it.User.UPN, it.State.Availability, it.State.Activity, errs[0])
	}
}

// watcher is an independent SUBSCRIBE Event: dialog to ext's hint, as a BLF key.
func watcher(t *testing.T, srv *astsim.Server, ext string) *kamailio.Watcher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := kamailio.WatchEvent(ctx, srv.SIPAddr, srv.URI(ext), "dialog")
	if err != nil {
		t.Fatalf("%v\n%s", err, srv.LogTail(20))
	}
	t.Cleanup(w.Close)
	return w
}

func lit(n kamailio.Notify) bool  { return n.Confirmed() }
func idle(n kamailio.Notify) bool { return slices.Equal(n.DialogStates, []string{"terminated"}) }

// waitLamp waits for a NOTIFY match accepts.
func waitLamp(t *testing.T, srv *astsim.Server, w *kamailio.Watcher, what string, match func(kamailio.Notify) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seen [][]string
	if _, err := w.WaitFor(ctx, func(n kamailio.Notify) bool { seen = append(seen, n.DialogStates); return match(n) }); err != nil {
		t.Fatalf("the BLF watcher saw no NOTIFY %s: %v; dialog states seen: %v\n%s", what, err, seen, srv.LogTail(20))
	}
}

// Over ARI and over AMI, a Teams call lights the user's hint for an
// independent BLF watcher and the end of it turns it off; DND lights it too
// (BUSY); a departed user's lamp goes off; presence get's lookup reads what
// Asterisk has.
func TestIntegrationTurnsHintsBusyAndIdle(t *testing.T) {
	t.Parallel()
	srv := startAsterisk(t, astsim.Options{})
	for _, c := range []struct {
		mode, ext string
		settings  Settings
		prefix    string
	}{
		{"ARI", "1000", ariSettings(srv), "Stasis:"},
		{"AMI", "1001", amiSettings(srv), "Custom:"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			tg := newTarget(t, c.settings)
			u := user(srv, c.ext)
			w := watcher(t, srv, c.ext)
			waitLamp(t, srv, w, "idle before anything is set", idle)

			send(t, tg, item(u, presence.Busy, presence.ActInACall))
			waitLamp(t, srv, w, "busy while Teams says in a call", lit)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if dev, st, err := tg.Lookup(ctx, u); err != nil || dev != c.prefix+"teams-"+c.ext || st != "INUSE" {
				t.Errorf("Lookup = %q %q %v; want %steams-%s INUSE", dev, st, err, c.prefix, c.ext)
			}
			if err := tg.Probe(ctx); err != nil {
				t.Errorf("Probe with the state in place: %v", err)
			}
			send(t, tg, item(u, presence.Available, presence.ActAvailable))
			waitLamp(t, srv, w, "idle once the Teams call ended", idle)
			send(t, tg, item(u, presence.DoNotDisturb, presence.ActPresenting))
			waitLamp(t, srv, w, "busy while presenting (DND)", lit)
			if _, st, _ := tg.Lookup(ctx, u); st != "BUSY" {
				t.Errorf("device state while presenting = %q, want BUSY", st)
			}

			send(t, tg, removal(u))
			waitLamp(t, srv, w, "idle after the user left the users file", idle)
			if err := tg.Probe(ctx); err != nil {
				t.Errorf("Probe after the last user set was withdrawn: %v", err)
			}
			want := "UNAVAILABLE" // AMI cannot delete a Custom: device
			if c.mode == "ARI" {
				want = "UNKNOWN" // deleted
			}
			if _, st, err := tg.Lookup(ctx, u); err != nil || st != want {
				t.Errorf("device state of a departed user = %q %v, want %s", st, err, want)
			}
		})
	}
}

// verify's check passes against a correctly configured Asterisk and leaves no
// probe device behind.
func TestIntegrationCheck(t *testing.T) {
	t.Parallel()
	srv := startAsterisk(t, astsim.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	said, err := newTarget(t, ariSettings(srv)).Check(ctx)
	if err != nil || !strings.Contains(said, "Asterisk "+astsim.Version) || !strings.Contains(said, "Stasis:presencebridge-verify") {
		t.Errorf("ARI Check = %q, %v", said, err)
	}
	out, err := srv.CLI(ctx, "devstate list")
	if err != nil || strings.Contains(out, "presencebridge-verify") {
		t.Errorf("the probe device is still there: %v\n%s", err, out)
	}
	said, err = newTarget(t, amiSettings(srv)).Check(ctx)
	if err != nil || !strings.Contains(said, "Asterisk Call Manager/") || !strings.Contains(said, "may run Setvar") {
		t.Errorf("AMI Check = %q, %v", said, err)
	}
}

// Wrong credentials are refused with the fix, without the password, and mark
// the whole target down.
func TestIntegrationWrongCredentials(t *testing.T) {
	t.Parallel()
	srv := startAsterisk(t, astsim.Options{})
	ari := ariSettings(srv)
	ari.Password = "wrong-ari-pass"
	ami := amiSettings(srv)
	ami.Secret = "wrong-ami-secret"
	for _, c := range []struct {
		name     string
		s        Settings
		want     []string
		password string
	}{
		{"ARI", ari, []string{"401", "Username and Password", "ari.conf"}, "wrong-ari-pass"},
		{"AMI", ami, []string{"refused the login", "Authentication failed", "Username and Secret", "manager.conf"}, "wrong-ami-secret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tg := newTarget(t, c.s)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			u := user(srv, "1000")
			errs := tg.Send(ctx, []delivery.Item{item(u, presence.Busy, presence.ActInACall), item(user(srv, "1001"), presence.Busy, presence.ActInACall)})
			_, checkErr := tg.Check(ctx)
			for _, err := range append(errs, checkErr, tg.Probe(ctx)) {
				if !errors.Is(err, delivery.ErrTargetDown) {
					t.Errorf("error %v does not mark the target down", err)
					continue
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if strings.Contains(err.Error(), c.password) {
					t.Errorf("error shows the password: %v", err)
				}
				if ae := (*Error)(nil); !errors.As(err, &ae) || ae.Fix == "" {
					t.Errorf("error %v has no fix of its own (verify shows it apart)", err)
				}
			}
		})
	}
}

// running is a target with its dispatcher (a quick retry and probe) and the
// AMI keepalive running, as the service runs them.
type running struct {
	tg *Target
	d  *delivery.Dispatcher
}

func runTarget(t *testing.T, s Settings) running {
	t.Helper()
	tg := newTarget(t, s)
	ds := delivery.DefaultSettings()
	ds.RetryMin, ds.RetryMax, ds.ProbeInterval = 100*time.Millisecond, 400*time.Millisecond, 200*time.Millisecond
	d := delivery.NewDispatcher(delivery.Options{Settings: ds, Outbox: delivery.MemOutbox(), Targets: []delivery.Target{tg}, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { d.Run(ctx); done <- struct{}{} }()
	go func() { tg.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return running{tg, d}
}

// until waits for cond, failing the test with what after 15 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Asterisk stops while users' states change: the targets go down, the states
// wait, and once Asterisk is back (restarted, on the same ports) they arrive,
// over ARI and over AMI (a new manager session).
func TestIntegrationRestartWithPendingStates(t *testing.T) {
	t.Parallel()
	srv := startAsterisk(t, astsim.Options{})
	ari, ami := runTarget(t, ariSettings(srv)), runTarget(t, amiSettings(srv))
	u0, u1 := user(srv, "1000"), user(srv, "1001")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ari.d.Enqueue(ctx, []delivery.Item{item(u0, presence.Available, presence.ActAvailable)}); err != nil {
		t.Fatal(err)
	}
	if err := ami.d.Enqueue(ctx, []delivery.Item{item(u1, presence.Available, presence.ActAvailable)}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []running{ari, ami} {
		until(t, "the first states accepted", func() bool { return r.d.Status()[0].Sent == 1 })
	}

	srv.Stop()
	if err := ari.d.Enqueue(ctx, []delivery.Item{item(u0, presence.Busy, presence.ActInACall)}); err != nil {
		t.Fatal(err)
	}
	if err := ami.d.Enqueue(ctx, []delivery.Item{item(u1, presence.DoNotDisturb, presence.ActDoNotDisturb)}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []running{ari, ami} {
		until(t, "the target down while Asterisk is stopped", func() bool { st := r.d.Status()[0]; return st.Down && st.Pending == 1 })
	}
	back, err := srv.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Stop() })
	for _, r := range []running{ari, ami} {
		until(t, "the pending state accepted after the restart", func() bool {
			st := r.d.Status()[0]
			return !st.Down && st.Pending == 0 && st.Sent >= 2
		})
	}
	for _, ext := range []string{"1000", "1001"} {
		waitLamp(t, back, watcher(t, back, ext), "busy for "+ext+" after the restart", lit)
	}
	if _, st, err := ami.tg.Lookup(ctx, u1); err != nil || st != "BUSY" {
		t.Errorf("AMI device after the restart: %q %v, want BUSY", st, err)
	}
}

// An Asterisk that comes back without its astdb (reinstalled, restored) has
// lost the device states: the probe says so, and the dispatcher sets them
// again.
func TestIntegrationProbeNoticesForgottenStates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startAsterisk(t, astsim.Options{Dir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ari, ami := newTarget(t, ariSettings(srv)), newTarget(t, amiSettings(srv))
	send(t, ari, item(user(srv, "1000"), presence.Busy, presence.ActInACall))
	send(t, ami, item(user(srv, "1001"), presence.Busy, presence.ActInACall))
	srv.Stop()
	if err := os.Remove(filepath.Join(dir, "db", "astdb.sqlite3")); err != nil {
		t.Fatal(err)
	}
	back, err := srv.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Stop() })
	for name, tg := range map[string]*Target{"ARI": ari, "AMI": ami} {
		if err := tg.Probe(ctx); !errors.Is(err, delivery.ErrTargetForgot) {
			t.Errorf("%s Probe after astdb was lost = %v, want ErrTargetForgot", name, err)
		}
	}
	send(t, ari, item(user(srv, "1000"), presence.Busy, presence.ActInACall))
	if err := ari.Probe(ctx); err != nil {
		t.Errorf("ARI Probe once the state is set again: %v", err)
	}
}

// The README's busy-on-busy example (testdata/busy-on-busy.conf, quoted there
// as it is) on the real Asterisk: a call for 1000 rings 1000's desk phone
// while Teams says 1000 is available, and goes to 1002 while Teams says 1000
// is in a call or presenting.
func TestIntegrationBusyOnBusyDialplan(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile("testdata/busy-on-busy.conf")
	if err != nil {
		t.Fatal(err)
	}
	// The test phones live in the harness's context: 81000 stands for a call
	// from outside for 1000, arriving in the example's context.
	srv := startAsterisk(t, astsim.Options{Dialplan: "exten => 81000,1,Goto(from-pstn,1000,1)\n" + string(example)})
	ph := pbxtest.Phones(t, srv.SIPAddr, srv.Domain, srv.Users, "1000", "1001", "1002")
	tg := newTarget(t, ariSettings(srv))
	u := user(srv, "1000")
	for _, step := range []struct {
		a       presence.Availability
		act     presence.Activity
		ringing string // the phone that gets the call
	}{
		{presence.Available, presence.ActAvailable, "1000"},
		{presence.Busy, presence.ActInACall, "1002"},
		{presence.Available, presence.ActAvailable, "1000"},
		{presence.DoNotDisturb, presence.ActPresenting, "1002"},
		{presence.Busy, presence.ActInAMeeting, "1002"},
		{presence.Away, presence.ActAway, "1000"},
	} {
		send(t, tg, item(u, step.a, step.act))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		call, err := ph["1001"].Call(ctx, srv.URI("81000"))
		if err != nil {
			cancel()
			t.Fatalf("Teams %s/%s: call for 1000: %v\n%s", step.a, step.act, err, srv.LogTail(20))
		}
		select {
		case in := <-ph[step.ringing].Incoming():
			if !strings.Contains(in.Remote(), "1001") {
				t.Errorf("Teams %s/%s: %s got a call from %s, want from 1001", step.a, step.act, step.ringing, in.Remote())
			}
		case <-ctx.Done():
			t.Fatalf("Teams %s/%s: the call did not reach %s\n%s", step.a, step.act, step.ringing, srv.LogTail(20))
		}
		for _, other := range []string{"1000", "1002"} {
			if other != step.ringing && ph[other].Calls() != 0 {
				t.Errorf("Teams %s/%s: %s got the call too", step.a, step.act, other)
			}
		}
		if err := call.Hangup(ctx); err != nil {
			t.Fatal(err)
		}
		until(t, "the call ended on "+step.ringing, func() bool { return ph[step.ringing].Calls() == 0 })
		cancel()
	}
}

// BenchmarkSend measures device states set on the real Asterisk, in batches
// of 500 (the dispatcher's default BatchSize) with the default Concurrency:
// ns/op is one user's state, Asterisk's time included.
func BenchmarkSend(b *testing.B) {
	srv := pbxtest.Asterisk(b, astsim.Options{})
	ctx := context.Background()
	for _, mode := range []struct {
		name string
		s    Settings
	}{{"ARI", ariSettings(srv)}, {"AMI", amiSettings(srv)}} {
		b.Run(mode.name, func(b *testing.B) {
			tg, err := New(Options{Settings: mode.s, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer tg.Close()
			batches := [2][]delivery.Item{}
			for i := range 500 {
				u := users.User{UPN: fmt.Sprintf("u%d@contoso.test", i), Extension: fmt.Sprint(100000 + i)}
				batches[0] = append(batches[0], item(u, presence.Busy, presence.ActInACall))
				batches[1] = append(batches[1], item(u, presence.Available, presence.ActAvailable))
			}
			n := 0
			for b.Loop() {
				for _, err := range tg.Send(ctx, batches[n%2]) {
					if err != nil {
						b.Fatal(err)
					}
				}
				n++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*500), "ns/state")
			b.ReportMetric(float64(n*500)/b.Elapsed().Seconds(), "states/s")
		})
	}
}

// The two-hint layout the README shows against loops with [PBX] Watch: the
// BLF key's hint combines the phone and the Teams device, the hint the watch
// subscribes to names the phone alone, so a Teams call set on Asterisk lights
// the key but is never taken for a call on the PBX; a real call shows on both.
func TestIntegrationWatchHintLeavesTeamsOut(t *testing.T) {
	t.Parallel()
	srv := startAsterisk(t, astsim.Options{Dialplan: "exten => watch-1000,hint,PJSIP/1000"})
	ph := pbxtest.Phones(t, srv.SIPAddr, srv.Domain, srv.Users, "1000", "1001")
	tg := newTarget(t, ariSettings(srv))
	blf, pbx := watcher(t, srv, "1000"), watcher(t, srv, "watch-1000")
	waitLamp(t, srv, blf, "idle at first", idle)
	waitLamp(t, srv, pbx, "idle at first", idle)

	send(t, tg, item(user(srv, "1000"), presence.Busy, presence.ActInACall))
	waitLamp(t, srv, blf, "busy on the BLF key while Teams says in a call", lit)
	// Give a NOTIFY that should not come the time to come.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		n, err := pbx.Next(ctx)
		cancel()
		if err != nil {
			break
		}
		if lit(n) {
			t.Fatalf("the watch's hint shows the Teams call as a call on the PBX: %v", n.DialogStates)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call, err := ph["1001"].Call(ctx, srv.URI("1000"))
	if err != nil {
		t.Fatalf("%v\n%s", err, srv.LogTail(20))
	}
	waitLamp(t, srv, pbx, "busy on the watch's hint during a real call", lit)
	if err := call.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	waitLamp(t, srv, pbx, "idle on the watch's hint after the call", idle)
}
