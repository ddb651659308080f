package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/sim/simulate/simconfig"
)

// crashSeedEnv replays the random kill times and presence changes of a failed run
// of TestIntegrationCrashSafety (the seed is in its log). The operating system's
// scheduling still varies, so a replay repeats the plan, not every interleaving.
const crashSeedEnv = "PRESENCEBRIDGE_CRASH_SEED"

// crashPairs are the Teams states the test moves users between (Graph's canonical
// spelling, so the CTI documents carry them unchanged).
var crashPairs = [][2]string{
	{"Available", "Available"}, {"Busy", "InACall"}, {"Busy", "InAMeeting"}, {"Busy", "Busy"},
	{"DoNotDisturb", "Presenting"}, {"Away", "Away"}, {"BeRightBack", "BeRightBack"},
	{"Offline", "OffWork"}, {"AvailableIdle", "Available"}, {"Busy", "InAConferenceCall"},
}

// ctiRecorder is the phone system's CTI: it accepts every POST and keeps each
// document in arrival order.
type ctiRecorder struct {
	srv *http.Server
	url string

	mu        sync.Mutex
	docs      []cti.Document
	truncated int // bodies that were not a whole document (the sender died mid-request)
}

func startCTIRecorder(t *testing.T) *ctiRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &ctiRecorder{url: "http://" + ln.Addr().String() + "/presence"}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var d cti.Document
		if err == nil {
			err = json.Unmarshal(body, &d)
		}
		if err != nil {
			r.mu.Lock()
			r.truncated++
			r.mu.Unlock()
			http.Error(w, "want a presencebridge JSON document", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.docs = append(r.docs, d)
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go r.srv.Serve(ln)
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *ctiRecorder) snapshot() []cti.Document {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cti.Document(nil), r.docs...)
}

// crashConfig writes a Presence.ini, users.csv and the tenant's CA for sim into a
// temp folder, as `simulate --write-config` does, with a device-code account, a 1 s
// poll, the CTI as the only target, no metrics endpoint and short delivery retries.
func crashConfig(t *testing.T, sim *graphsim.Server, ctiURL string) string {
	t.Helper()
	o := simulate.CommandConfig(t.TempDir())
	o.Interval, o.ResolveRate = time.Second, 50
	o.MetricsAddr, o.HTTPURL = "off", ctiURL
	o.Extra = "[Delivery]\nRetryMin = 100ms\nRetryMax = 1s\n"
	path, err := simconfig.Write(sim, o)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// checkStateFile opens the state file as the next start would (bbolt, read-only
// here) and walks every page of it.
func checkStateFile(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// held is what the state file holds for a user: the presence the poller kept
// last, the state queued for the CTI and the one the CTI last accepted
// ("Availability/Activity", "" for none).
type held struct {
	kept, queued, accepted string
	acceptedSeq            uint64
	err                    error
}

func (h held) String() string {
	if h.err != nil {
		return "state file: " + h.err.Error()
	}
	none := func(v string) string {
		if v == "" {
			return "none"
		}
		return v
	}
	return fmt.Sprintf("state file: kept presence %s, queued %s, accepted %s seq %d", none(h.kept), none(h.queued), none(h.accepted), h.acceptedSeq)
}

// stateFileOf reads what the state file at path holds for upn (after the last
// run has stopped).
func stateFileOf(path, upn string) held {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return held{err: err}
	}
	defer db.Close()
	var h held
	h.err = db.View(func(tx *bolt.Tx) error {
		get := func(bucket, key string, v any) (bool, error) {
			b := tx.Bucket([]byte(bucket))
			if b == nil {
				return false, fmt.Errorf("no bucket %q", bucket)
			}
			raw := b.Get([]byte(key))
			if raw == nil {
				return false, nil
			}
			return true, json.Unmarshal(raw, v)
		}
		var kept struct{ Availability, Activity string }
		if ok, err := get("presence", upn, &kept); err != nil {
			return err
		} else if ok {
			h.kept = kept.Availability + "/" + kept.Activity
		}
		var item struct {
			State struct{ Availability, Activity string }
			Seq   uint64
		}
		if ok, err := get("outbox", "http\x00"+upn, &item); err != nil {
			return err
		} else if ok {
			h.queued = item.State.Availability + "/" + item.State.Activity
		}
		item.Seq = 0
		if ok, err := get("delivered", "http\x00"+upn, &item); err != nil {
			return err
		} else if ok {
			h.accepted, h.acceptedSeq = item.State.Availability+"/"+item.State.Activity, item.Seq
		}
		return nil
	})
	return h
}

// TestIntegrationCrashSafety runs the built binary against the simulated tenant
// and a CTI that records every POST. After one device-code sign-in, users' presence
// keeps changing while `presencebridge run` is killed with SIGKILL at random
// moments and started again; then the changes stop and a last run settles. It
// checks what a customer would notice after power cuts: no second sign-in, a state
// file that opens after every kill, every user's final Teams state at the CTI, no
// state delivered more than twice (once, plus at most one resend of a POST the
// kill cut off before its answer was recorded), and never an older state after a
// newer one.
func TestIntegrationCrashSafety(t *testing.T) {
	const (
		users      = 40
		kills      = 12
		minRun     = 300 * time.Millisecond
		maxRun     = 2500 * time.Millisecond
		changeStep = 40 * time.Millisecond
	)
	seed := time.Now().UnixNano()
	if v := os.Getenv(crashSeedEnv); v != "" {
		var err error
		if seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: want an integer seed", crashSeedEnv, v)
		}
	}
	t.Logf("seed %d (replay the kill times and changes with %s=%d)", seed, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(seed)>>1|1))
	start := time.Now()

	// Access tokens of 2 minutes: MSAL refreshes any that expires within 5, so
	// every Graph call of every run redeems the refresh token and stores the
	// rotated one in the state file, where the kills can hit.
	sim, err := graphsim.New(graphsim.Options{Users: users, DeviceCodeApproveAfter: 200 * time.Millisecond, Seed: seed,
		AccessTokenLifetime: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	rec := startCTIRecorder(t)
	config := crashConfig(t, sim, rec.url)
	stateFile := filepath.Join(filepath.Dir(config), "presencebridge.db")
	const signIns = "POST /{tenant}/oauth2/v2.0/devicecode"

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	login := exec.CommandContext(ctx, binPath, "--config", config, "login")
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("presencebridge login: %v\n%s", err, out)
	}
	if n := sim.Stats().Endpoints[signIns]; n != 1 {
		t.Fatalf("the device-code sign-in reached the tenant %d times; want 1", n)
	}
	const tokenCalls = "POST /{tenant}/oauth2/v2.0/token"
	tokensAtLogin := sim.Stats().Endpoints[tokenCalls]

	// The kill times are drawn first: the changer then uses rng on its own.
	runFor := make([]time.Duration, kills)
	for i := range runFor {
		runFor[i] = minRun + time.Duration(rng.Int64N(int64(maxRun-minRun)))
	}

	// Presence keeps changing, one user every changeStep, until stopChanges.
	// The plan (who, what) comes from the seed.
	type change struct {
		upn  string
		pair [2]string
	}
	plan := make(chan change)
	stopChanges := make(chan struct{})
	changerDone := make(chan struct{})
	all := sim.Users()
	go func() {
		defer close(plan)
		for {
			c := change{all[rng.IntN(len(all))].UPN, crashPairs[rng.IntN(len(crashPairs))]}
			select {
			case plan <- c:
			case <-stopChanges:
				return
			}
		}
	}()
	var changes int
	go func() {
		defer close(changerDone)
		tick := time.NewTicker(changeStep)
		defer tick.Stop()
		for range tick.C {
			c, ok := <-plan
			if !ok {
				return
			}
			if _, err := sim.SetPresence(c.upn, c.pair[0], c.pair[1]); err != nil {
				t.Errorf("SetPresence: %v", err)
				return
			}
			changes++
		}
	}()

	run := func(i int) (*exec.Cmd, string, chan error) {
		log := filepath.Join(t.TempDir(), fmt.Sprintf("run%02d.log", i))
		f, err := os.Create(log)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command(binPath, "--config", config, "run")
		cmd.Stderr = f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			if t.Failed() {
				b, _ := os.ReadFile(log)
				t.Logf("log of run %d:\n%s", i, b)
			}
		})
		return cmd, log, exited
	}

	for i, d := range runFor {
		cmd, log, exited := run(i)
		select {
		case err := <-exited:
			b, _ := os.ReadFile(log)
			t.Fatalf("run %d ended by itself after less than %s: %v\n%s", i, d, err, b)
		case <-time.After(d):
		}
		if err := cmd.Process.Kill(); err != nil { // SIGKILL: no handler runs
			t.Fatal(err)
		}
		<-exited
		if err := checkStateFile(stateFile); err != nil {
			t.Fatalf("after kill %d (at %s): the state file does not open cleanly: %v", i+1, d, err)
		}
	}
	close(stopChanges)
	<-changerDone

	want := map[string][2]string{}
	for _, u := range all {
		a, act, _ := sim.Presence(u.UPN)
		want[u.UPN] = [2]string{a, act}
	}
	// The last run: it settles when every user's last document is the final state.
	cmd, log, exited := run(kills)
	settled := func() bool {
		last := map[string]cti.Document{}
		for _, d := range rec.snapshot() {
			last[d.UPN] = d
		}
		for upn, w := range want {
			d, ok := last[upn]
			if !ok || !strings.EqualFold(d.Teams.Availability, w[0]) || !strings.EqualFold(d.Teams.Activity, w[1]) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(15 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(log)
			t.Fatalf("the last run ended by itself: %v\n%s", err, b)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// A little longer, so a late or repeated POST would be seen too.
	time.Sleep(1500 * time.Millisecond)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the last run did not stop cleanly: %v", err)
		}
	case <-time.After(stopDeadline + 5*time.Second):
		t.Fatal("the last run did not stop")
	}
	if err := checkStateFile(stateFile); err != nil {
		t.Errorf("after the last run: %v", err)
	}

	// What the CTI saw.
	docs := rec.snapshot()
	last := map[string]cti.Document{}
	type key struct {
		upn string
		seq uint64
	}
	seen := map[key][]cti.Document{}
	lastSeq := map[string]uint64{}
	var backwards []string
	for _, d := range docs {
		k := key{d.UPN, d.Seq}
		seen[k] = append(seen[k], d)
		if s, ok := lastSeq[d.UPN]; ok && d.Seq < s {
			backwards = append(backwards, fmt.Sprintf("%s seq %d after seq %d", d.UPN, d.Seq, s))
		}
		lastSeq[d.UPN] = max(lastSeq[d.UPN], d.Seq)
		last[d.UPN] = d
	}
	// A document sent again with reason "sync" and the seq it had is a deliberate
	// re-assertion of the last accepted state (a dispatcher may tell a restarted
	// PBX again), not a resend after a kill: it does not count as a duplicate.
	duplicates, reasserted := 0, 0
	for k, ds := range seen {
		repeats := 0
		for _, d := range ds[1:] {
			if d.Teams != ds[0].Teams || d.State != ds[0].State {
				t.Errorf("%s seq %d arrived as two different states: %+v and %+v", k.upn, k.seq, ds[0], d)
			}
			if d.Reason == delivery.ReasonSync && ds[0].Reason != delivery.ReasonSync {
				reasserted++
				continue
			}
			repeats++
		}
		duplicates += repeats
		if repeats > 1 {
			t.Errorf("%s seq %d arrived %d times; a state may arrive at most twice (once more after a kill)", k.upn, k.seq, repeats+1)
		}
	}
	if len(backwards) > 0 {
		t.Errorf("an older state arrived after a newer one %d times, e.g. %s", len(backwards), backwards[0])
	}
	if n := sim.Stats().Endpoints[signIns]; n != 1 {
		t.Errorf("device-code sign-ins: %d; a restart must never ask for a sign-in again", n)
	}
	var lost []string
	for _, u := range all {
		w := want[u.UPN]
		final := w[0] + "/" + w[1]
		d, ok := last[u.UPN]
		if ok && strings.EqualFold(d.Teams.Availability, w[0]) && strings.EqualFold(d.Teams.Activity, w[1]) {
			continue
		}
		h := stateFileOf(stateFile, u.UPN)
		if !ok {
			lost = append(lost, fmt.Sprintf("%s: nothing arrived, final %s; %s", u.UPN, final, h))
		} else {
			lost = append(lost, fmt.Sprintf("%s: last arrived %s/%s seq %d, final %s; %s", u.UPN, d.Teams.Availability, d.Teams.Activity, d.Seq, final, h))
		}
	}
	rec.mu.Lock()
	truncated := rec.truncated
	rec.mu.Unlock()
	st := sim.Stats()
	t.Logf("%d kills (runs of %s to %s), %d presence changes, %d documents received, %d distinct states delivered, %d duplicates, %d re-assertions, %d requests cut off, %d final states lost, %d sign-ins, %d refresh-token redemptions after it, %s in all",
		kills, minRun, maxRun, changes, len(docs), len(seen), duplicates, reasserted, truncated, len(lost), st.Endpoints[signIns], st.Endpoints[tokenCalls]-tokensAtLogin,
		time.Since(start).Round(100*time.Millisecond))
	if len(lost) == 0 {
		return
	}
	msg := fmt.Sprintf("%d users' final Teams state did not reach the CTI (seed %d):\n%s", len(lost), seed, strings.Join(lost, "\n"))
	t.Error(msg)
}
