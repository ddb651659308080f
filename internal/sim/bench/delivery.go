package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/presencebridge/presencebridge/internal/compose"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/poll"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Delivery runs `presencebridge bench delivery` with args (what follows
// "delivery"): it measures how long a burst of changes takes to be accepted by
// each kind of target: Kamailio over SIP (a real process, not counted in our CPU;
// skipped when Kamailio is not installed), with Event: presence and with Event:
// dialog ([SIP] Event), and an HTTP CTI on loopback. The burst
// goes through the same path as in the service: poll.Sink (the composer) ->
// outbox in bbolt -> dispatcher -> target. Bad arguments return a
// *simulate.UsageError, already printed.
func Delivery(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench delivery", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("changes", 15000, "changes in the burst (one per user)")
	if err := fs.Parse(args); err != nil {
		return &simulate.UsageError{Err: err, Printed: true}
	}
	dir, err := os.MkdirTemp("", "presencebridge-bench-delivery-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	fmt.Fprintf(stdout, "presencebridge bench delivery: a burst of %d changes (one per user) through outbox and dispatcher\n", *n)

	type run struct {
		name   string
		target func() (delivery.Target, func(), error)
	}
	var runs []run
	if _, err := kamailio.Find(); err == nil {
		// Kamailio keeps its publications in a db_text table by default, which
		// it reads whole for every modification and for every new dialog-info
		// publication holding a dialog (kamailio.Options.MemoryPresentities):
		// Event: dialog is measured with the publications in memory, and so,
		// to compare, is Event: presence once more.
		for i, c := range []struct {
			event        string
			auth, memory bool
		}{{sip.EventPresence, false, false}, {sip.EventPresence, true, false}, {sip.EventPresence, false, true}, {sip.EventDialog, false, true}} {
			name := "SIP PUBLISH over UDP into Kamailio"
			if c.event == sip.EventDialog {
				name = "SIP PUBLISH Event: dialog ([SIP] Event = dialog) over UDP into Kamailio"
			}
			if c.auth {
				name += ", digest auth"
			}
			if c.memory {
				name += ", publications in memory"
			}
			runs = append(runs, run{name, func() (delivery.Target, func(), error) {
				o := kamailio.Options{Dir: filepath.Join(dir, fmt.Sprintf("kamailio-%d", i)), MemoryPresentities: c.memory}
				if c.auth {
					o.Users = map[string]string{"pb": "bench-secret"}
				}
				k, err := kamailio.Start(ctx, o)
				if err != nil {
					return nil, nil, err
				}
				so := sip.Options{Settings: sip.DefaultSettings(), Logger: quiet}
				so.Server, so.Event = k.UDP, c.event
				if c.auth {
					so.Username, so.Password = "pb", "bench-secret"
				}
				p, err := sip.New(so)
				if err != nil {
					k.Stop()
					return nil, nil, err
				}
				return p, func() { k.Stop() }, nil
			}})
		}
	} else {
		fmt.Fprintf(stdout, "  (SIP skipped: %v)\n", err)
	}
	for _, batch := range []bool{false, true} {
		name := "HTTP POST per change to a CTI on loopback"
		if batch {
			name = "HTTP POST batches ([HTTP] Batch = 1) to a CTI on loopback"
		}
		runs = append(runs, run{name, func() (delivery.Target, func(), error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, nil, err
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusNoContent)
			})}
			go srv.Serve(ln)
			s := cti.DefaultSettings()
			s.URL, s.Batch = "http://"+ln.Addr().String()+"/presence", batch
			t, err := cti.New(cti.Options{Settings: s, Logger: quiet})
			if err != nil {
				srv.Close()
				return nil, nil, err
			}
			return t, func() { srv.Close() }, nil
		}})
	}
	for _, r := range asteriskRuns(quiet) {
		runs = append(runs, run{r.name, r.target})
	}

	// measure puts two bursts through run i's target and prints what they took;
	// its defers take the run down in the reverse order it was built.
	measure := func(i int, r run) error {
		target, stop, err := r.target()
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		defer stop()
		db, err := store.Open(filepath.Join(dir, fmt.Sprintf("state-%d.db", i)))
		if err != nil {
			return err
		}
		defer db.Close()
		d := delivery.NewDispatcher(delivery.Options{Settings: delivery.DefaultSettings(), Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{target}, Logger: quiet})
		c, err := compose.New(compose.Options{Mapping: presence.DefaultMapping(), Queue: d, States: poll.Kept(db), Store: db,
			Clock: clock.Real{}, Logger: quiet})
		if err != nil {
			return err
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- d.Run(rctx) }()
		defer func() {
			cancel()
			<-done
			d.Close()
		}()
		fmt.Fprintf(stdout, "\n%s\n", r.name)
		for round, act := range []presence.Activity{presence.ActInACall, presence.ActAvailable} {
			label := "new publications"
			if round == 1 {
				label = "changes to them"
			}
			if target.Name() == "http" {
				label = []string{"first burst", "second burst"}[round]
			}
			cpu0 := rusage()
			took, err := burst(ctx, d, c, target.Name(), *n, act)
			cpu := rusage() - cpu0
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			fmt.Fprintf(stdout, "  %-16s %6d accepted in %6.2f s  (%6.0f changes/s; presencebridge CPU %.0f%% of one core)\n",
				label+":", *n, took.Seconds(), float64(*n)/took.Seconds(), 100*cpu.Seconds()/took.Seconds())
		}
		st := d.Status()[0]
		fmt.Fprintf(stdout, "  failed attempts: %d, dropped: %d\n", st.Failed, st.Dropped)
		return nil
	}
	for i, r := range runs {
		if err := measure(i, r); err != nil {
			return err
		}
	}
	return nil
}

// burst queues n changes the way the pollers do (chunks of 650), waits until
// the target has accepted every one, and returns how long that took.
func burst(ctx context.Context, d *delivery.Dispatcher, c *compose.Composer, target string, n int, act presence.Activity) (time.Duration, error) {
	avail := presence.Busy
	if act == presence.ActAvailable {
		avail = presence.Available
	}
	start := time.Now()
	now := start.UTC()
	for lo := 0; lo < n; lo += 650 {
		var changes []presence.Change
		for i := lo; i < min(lo+650, n); i++ {
			u := users.User{UPN: fmt.Sprintf("user%05d@contoso.example", i), SIPURI: fmt.Sprintf("sip:%d@pbx.example", 100000+i)}
			changes = append(changes, presence.Change{User: u, Current: presence.State{UPN: u.UPN, Availability: avail, Activity: act, Seen: now, Changed: now}})
		}
		if err := c.Deliver(ctx, changes); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for d.Pending(target) > 0 {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d changes still pending after 5 minutes", d.Pending(target))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start), nil
}
