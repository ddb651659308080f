package simulate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/sim/simulate/simconfig"
	"github.com/presencebridge/presencebridge/internal/sim/sipua"
)

// pbxSide is what `simulate --pbx` runs next to the simulated tenant: an HTTP CTI
// receiver and, with --kamailio, a real Kamailio presence server with watchers;
// with --kamailio-pbx Kamailio is a small PBX as well, with phones of the
// simulated users calling each other through it (calls.go). Each arrival is
// printed with how long after its cause (a Teams change, a call's answer or
// hang-up) it came.
type pbxSide struct {
	sim *graphsim.Server
	log *arrivalLog // what arrived, matched with the tenant's changes
	out io.Writer
	mu  sync.Mutex // print, callTimes, stopping

	httpURL string
	srv     *http.Server
	kam     *kamailio.Server
	watches []*kamailio.Watcher

	// Calls (--kamailio-pbx; set up by startCalls before anything serves).
	callsOn   bool
	users     []graphsim.User
	userIndex map[string]int // lower-case UPN and name before the @ -> index
	callTimes map[string]*callTimes
	lastSet   map[string]setMark // by UPN: the last setPresence Teams showed; under mu
	phoneMu   sync.Mutex
	phones    map[string]*sipua.Phone // by UPN
	closing   chan struct{}           // closed by stopCalls: scripted calls and hang-ups end
	stopping  bool                    // under mu: stopCalls has begun
	bg        sync.WaitGroup          // scripted calls, hang-ups, followWrites
}

// latency says how long before at the latest cause of what arrived at the PBX
// side for upn was: the tenant's last change of upn to availability/activity
// (and when it was), or the answer or hang-up of a call of upn on the PBX,
// whichever came later.
func (p *pbxSide) latency(upn, availability, activity string, at time.Time) string {
	found := p.lastChange(upn, availability, activity, at)
	if p.callsOn {
		if when, what, _ := p.lastCall(upn, at); when.After(found) && at.Sub(when) < 10*time.Minute {
			return fmt.Sprintf("%.2f s after %s", at.Sub(when).Seconds(), what)
		}
	}
	if found.IsZero() {
		return "state at start"
	}
	// The change's own time (local, to the millisecond) lets `make demo` leave
	// out the changes made before presencebridge's first good poll cycle.
	return fmt.Sprintf("%.2f s after the Teams change at %s", at.Sub(found).Seconds(), found.Local().Format("15:04:05.000"))
}

// lastChange is when the tenant last changed upn to availability/activity, at
// or before at and within 10 minutes (zero: not found).
func (p *pbxSide) lastChange(upn, availability, activity string, at time.Time) time.Time {
	return p.log.lastChange(upn, availability, activity, at)
}

// writtenBy names the application whose setPresence made Teams show upn as
// availability/activity at at, or is empty when the user's own change did (or
// the TEAMS lines are off).
func (p *pbxSide) writtenBy(upn, availability, activity string, at time.Time) string {
	if !p.callsOn {
		return ""
	}
	p.mu.Lock()
	set, ok := p.lastSet[upn]
	p.mu.Unlock()
	if !ok || !set.at.Equal(p.lastChange(upn, availability, activity, at)) {
		return ""
	}
	return set.app
}

func (p *pbxSide) print(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, format+"\n", args...)
}

// startHTTP runs the CTI receiver on addr (loopback), and beside it the
// endpoint that places calls (CallPath).
func (p *pbxSide) startHTTP(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("PBX-side receiver: %w", err)
	}
	base := "http://" + ln.Addr().String()
	p.httpURL = base + "/presence"
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+CallPath, p.handleCall)
	mux.HandleFunc("GET "+ArrivalsPath, p.log.serve)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var d cti.Document
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			http.Error(w, "want a presencebridge JSON document", http.StatusBadRequest)
			return
		}
		now := time.Now()
		p.log.record(TargetHTTP, d.UPN, now, pairMatch(d.Teams.Availability, d.Teams.Activity))
		w.WriteHeader(http.StatusNoContent)
		teams := fmt.Sprintf("Teams %s/%s", d.Teams.Availability, d.Teams.Activity)
		if app := p.writtenBy(d.UPN, d.Teams.Availability, d.Teams.Activity, now); app != "" {
			teams += " as set by " + app
		}
		if d.Source == "pbx" && d.PBX != nil {
			// RichPresence.WinningTechnology gave the PBX's own state the say.
			teams = fmt.Sprintf("the PBX's %s wins over Teams %s/%s", d.PBX.Line, d.Teams.Availability, d.Teams.Activity)
		}
		p.print("HTTP  %-28s %-8s %-22q %-8s (%s; %s)", d.UPN, d.State, d.Note, d.Reason,
			teams, p.latency(d.UPN, d.Teams.Availability, d.Teams.Activity, now))
	})
	p.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: mux}
	go p.srv.Serve(ln)
	return nil
}

// startKamailio runs Kamailio in dir (as a small PBX too with pbx, with the
// publications in memory with memory) and watches the first n users' SIP URIs.
func (p *pbxSide) startKamailio(ctx context.Context, dir string, n int, pbx, memory bool) error {
	var err error
	p.kam, err = kamailio.Start(ctx, kamailio.Options{Dir: filepath.Join(dir, "kamailio"), Domain: simconfig.PBXDomain, PBX: pbx, MemoryPresentities: memory})
	if err != nil {
		return err
	}
	users := p.sim.Users()
	for i := 0; i < n && i < len(users); i++ {
		uri := simconfig.SIPURI(i)
		w, err := kamailio.Watch(ctx, p.kam.UDP, uri)
		if err != nil {
			return err
		}
		p.watches = append(p.watches, w)
		upn := users[i].UPN
		go func() {
			for {
				note, err := w.Next(context.Background())
				if err != nil {
					return
				}
				if note.Basic == "" {
					continue // the empty NOTIFY that opens a subscription
				}
				// The Teams state the NOTIFY shows is the one the tenant
				// changed to last that gives this PIDF; failing that, the
				// state Teams shows now.
				_, pair := p.log.record(TargetSIP, upn, note.At, p.log.sipMatch(note.Basic, note.Activities, note.Note))
				avail, act := pair[0], pair[1]
				if avail == "" {
					avail, act, _ = p.sim.Presence(upn)
				}
				onPBX := ""
				if p.callsOn {
					if _, _, inCall := p.lastCall(upn, note.At); inCall {
						onPBX = ", in a call on the PBX"
					}
				}
				p.print("SIP   %-28s NOTIFY basic=%-6s activity=%-13s note=%q (Teams %s/%s%s; %s)", uri, note.Basic,
					strings.Join(note.Activities, ","), note.Note, avail, act, onPBX, p.latency(upn, avail, act, note.At))
			}
		}()
	}
	return nil
}

// close hangs up the calls in progress and stops the phones, the watchers,
// Kamailio and the receiver, in that order.
func (p *pbxSide) close() {
	if p.callsOn {
		p.stopCalls()
	}
	for _, w := range p.watches {
		w.Close()
	}
	if p.kam != nil {
		p.kam.Stop()
	}
	if p.srv != nil {
		p.srv.Close()
	}
}
