package cti

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
	"github.com/presencebridge/presencebridge/internal/users"
)

// BenchmarkDispatcherHTTPBurst sends a burst of 15,000 changes (every user of a
// large tenant changing at once) through the dispatcher and the HTTP target into
// a TLS test CTI, and reports how long the burst takes until every change is
// accepted and recorded, and the rate. Changes are handed over in chunks of
// graph.MaxPresenceIDs, as the poller does.
func BenchmarkDispatcherHTTPBurst(b *testing.B) {
	for _, mode := range []struct {
		name  string
		batch bool
	}{{"per-change", false}, {"batch", true}} {
		b.Run(mode.name, func(b *testing.B) { benchBurst(b, mode.batch, 15000) })
	}
}

func benchBurst(b *testing.B, batch bool, n int) {
	var got atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if batch {
			var bt Batch
			if err := json.NewDecoder(r.Body).Decode(&bt); err != nil {
				http.Error(w, "bad json", 400)
				return
			}
			got.Add(int64(len(bt.Changes)))
		} else {
			var d Document
			if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
				http.Error(w, "bad json", 400)
				return
			}
			got.Add(1)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(b.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		b.Fatal(err)
	}
	tg, err := New(Options{Settings: filled(Settings{URL: srv.URL + "/presence", CAFile: caFile, Batch: batch, Headers: map[string]secret.Value{"Authorization": "Bearer bench"}}), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	db, err := store.Open(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	d := delivery.NewDispatcher(delivery.Options{Settings: dispatchSettings(), Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{tg}, Clock: clock.Real{}, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; d.Close() }()

	us := make([]users.User, n)
	for i := range us {
		us[i] = users.User{UPN: fmt.Sprintf("user%05d@contoso.example", i), SIPURI: fmt.Sprintf("sip:%d@pbx.example", 10000+i),
			Extension: fmt.Sprint(10000 + i), Name: fmt.Sprintf("User %d", i)}
	}
	flip := []struct {
		a   presence.Availability
		act presence.Activity
	}{{presence.Busy, presence.ActInACall}, {presence.Available, presence.ActAvailable}}

	mapping := presence.DefaultMapping()
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		s := flip[i%2]
		now := time.Now().UTC()
		changes := make([]delivery.Item, n)
		for j, u := range us {
			st := presence.State{UPN: u.UPN, Availability: s.a, Activity: s.act, Seen: now, Changed: now}
			changes[j] = delivery.Item{User: u, State: st, Mapped: mapping.Map(st), Reason: delivery.ReasonChange, Queued: now}
		}
		want := got.Load() + int64(n)
		startSent := d.Status()[0].Sent
		t0 := time.Now()
		for len(changes) > 0 {
			k := min(len(changes), graph.MaxPresenceIDs)
			if err := d.Enqueue(ctx, changes[:k]); err != nil {
				b.Fatal(err)
			}
			changes = changes[k:]
		}
		deadline := t0.Add(2 * time.Minute)
		for d.Status()[0].Sent-startSent < n {
			if time.Now().After(deadline) {
				b.Fatalf("burst not accepted after 2 minutes: %d of %d", d.Status()[0].Sent-startSent, n)
			}
			time.Sleep(2 * time.Millisecond)
		}
		total += time.Since(t0)
		if got.Load() < want {
			b.Fatalf("CTI received %d documents, want at least %d", got.Load(), want)
		}
	}
	b.StopTimer()
	per := total / time.Duration(b.N)
	b.ReportMetric(per.Seconds(), "s/burst")
	b.ReportMetric(float64(n)/per.Seconds(), "changes/s")
}
