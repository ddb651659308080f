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
)

// pbxSide is what `simulate --pbx` runs next to the simulated tenant: an HTTP CTI
// receiver and, with --kamailio, a real Kamailio presence server with watchers.
// Each arrival is printed with how long after the Teams change it came.
type pbxSide struct {
	sim *graphsim.Server
	out io.Writer
	mu  sync.Mutex

	httpURL string
	srv     *http.Server
	kam     *kamailio.Server
	watches []*kamailio.Watcher
}

// latency finds when the tenant last changed upn to availability/activity.
func (p *pbxSide) latency(upn, availability, activity string, at time.Time) string {
	var found time.Time
	for _, c := range p.sim.Changes(at.Add(-10 * time.Minute)) {
		if c.UPN == upn && strings.EqualFold(c.Availability, availability) && strings.EqualFold(c.Activity, activity) && !c.At.After(at) {
			found = c.At
		}
	}
	if found.IsZero() {
		return "state at start"
	}
	return fmt.Sprintf("%.2f s after the Teams change", at.Sub(found).Seconds())
}

func (p *pbxSide) print(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, format+"\n", args...)
}

// startHTTP runs the CTI receiver on addr (loopback).
func (p *pbxSide) startHTTP(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("PBX-side receiver: %w", err)
	}
	p.httpURL = "http://" + ln.Addr().String() + "/presence"
	p.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d cti.Document
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			http.Error(w, "want a presencebridge JSON document", http.StatusBadRequest)
			return
		}
		now := time.Now()
		w.WriteHeader(http.StatusNoContent)
		p.print("HTTP  %-28s %-8s %-22q %-8s (Teams %s/%s; %s)", d.UPN, d.State, d.Note, d.Reason,
			d.Teams.Availability, d.Teams.Activity, p.latency(d.UPN, d.Teams.Availability, d.Teams.Activity, now))
	})}
	go p.srv.Serve(ln)
	return nil
}

// startKamailio runs Kamailio in dir and watches the first n users' SIP URIs.
func (p *pbxSide) startKamailio(ctx context.Context, dir string, n int) error {
	var err error
	p.kam, err = kamailio.Start(ctx, kamailio.Options{Dir: filepath.Join(dir, "kamailio")})
	if err != nil {
		return err
	}
	users := p.sim.Users()
	for i := 0; i < n && i < len(users); i++ {
		uri := fmt.Sprintf("sip:%d@pbx.example", 1000+i)
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
				avail, act, _ := p.sim.Presence(upn)
				p.print("SIP   %-28s NOTIFY basic=%-6s activity=%-13s note=%q (Teams %s/%s; %s)", uri, note.Basic,
					strings.Join(note.Activities, ","), note.Note, avail, act, p.latency(upn, avail, act, note.At))
			}
		}()
	}
	return nil
}

func (p *pbxSide) close() {
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
