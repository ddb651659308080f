package app

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// runReloading runs RunWithReload on the Presence.ini at path, looking at the
// files every check, until the test ends. It returns the configuration it
// started with, its log and the context it runs in.
func runReloading(t *testing.T, path string, check time.Duration, tweak ...func(*ReloadOptions)) (*config.Config, *testkit.Buffer, context.Context) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o := ReloadOptions{Options: Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil)), Version: "test"}, Check: check}
	for _, f := range tweak {
		f(&o)
	}
	go func() { done <- RunWithReload(ctx, o) }()
	t.Cleanup(func() { cancel(); <-done })
	return cfg, logs, ctx
}

// A good edit of Presence.ini takes effect without a new sign-in or a flood of old
// states; a bad edit is refused and the running configuration carries on.
func TestReload(t *testing.T) {
	c := newRecordingCTI(t)
	sim, path := deliveryTenant(t, c.srv.URL)
	_, logs, _ := runReloading(t, path, 50*time.Millisecond)
	waitFor(t, "first states at the CTI", func() bool { m, _ := c.last(""); return len(m) == 10 })
	tokens := sim.Stats().Endpoints["POST /{tenant}/oauth2/v2.0/token"]
	c.mu.Lock()
	sent := len(c.docs)
	c.mu.Unlock()

	// A good edit: new wording for two states.
	raw, _ := os.ReadFile(path)
	edited := strings.Replace(string(raw), "[Mapping]\n", "[Mapping]\nBusy/InACall = oncall | open | on-the-phone | Am Telefon\nAway/* = away | open | away | Weg\n", 1)
	os.WriteFile(path, []byte(edited), 0o600)
	waitFor(t, "the reload", func() bool { return strings.Contains(logs.String(), "Configuration reloaded") })
	upn := sim.Users()[4].UPN
	act := setOther(t, sim, upn)
	want := map[string]string{"InACall": "Am Telefon", "Away": "Weg"}[act]
	waitFor(t, "the change with the new wording", func() bool { m, _ := c.last(""); return m[upn].Note == want })
	if n := sim.Stats().Endpoints["POST /{tenant}/oauth2/v2.0/token"]; n != tokens {
		t.Errorf("the reload asked for %d new tokens; the cached one should serve", n-tokens)
	}
	c.mu.Lock()
	after := len(c.docs) - sent
	c.mu.Unlock()
	if after > 2 {
		t.Errorf("the reload re-sent %d states; only the change was due", after)
	}

	// A bad edit: refused, and the running configuration carries on.
	os.WriteFile(path, []byte(strings.Replace(edited, "Interval = 1s", "Interval = 10x", 1)), 0o600)
	waitFor(t, "the refusal", func() bool { return strings.Contains(logs.String(), "Reload refused") })
	if !strings.Contains(logs.String(), `[Polling] Interval = \"10x\"`) {
		t.Errorf("the refusal does not name the line and value:\n%s", logs.String())
	}
	upn2 := sim.Users()[6].UPN
	act2 := setOther(t, sim, upn2)
	want2 := map[string]string{"InACall": "Am Telefon", "Away": "Weg"}[act2]
	waitFor(t, "a change after the refused edit", func() bool { m, _ := c.last(""); return m[upn2].Note == want2 })
}

// `presencebridge service reload` asks through the control endpoint and gets the
// outcome back: the refusal with its reason, or the new configuration taken.
func TestReloadThroughTheControlEndpoint(t *testing.T) {
	c := newRecordingCTI(t)
	_, path := deliveryTenant(t, c.srv.URL)
	raw, _ := os.ReadFile(path)
	good := strings.Replace(string(raw), "ControlAddr = off", "ControlAddr = 127.0.0.1:0", 1)
	os.WriteFile(path, []byte(good), 0o600)
	// Files are looked at once an hour: only the asked reloads happen.
	cfg, logs, ctx := runReloading(t, path, time.Hour)
	waitFor(t, "first states at the CTI", func() bool { m, _ := c.last(""); return len(m) == 10 })
	client, err := control.NewClient(KeyFile(cfg))
	if err != nil {
		t.Fatal(err)
	}

	os.WriteFile(path, []byte(strings.Replace(good, "Interval = 1s", "Interval = 10x", 1)), 0o600)
	err = client.Reload(ctx, control.ReloadRequest{}, nil)
	if err == nil || !strings.Contains(err.Error(), "reload refused") || !strings.Contains(err.Error(), `[Polling] Interval = "10x"`) {
		t.Fatalf("reload of a bad edit: %v; want the refusal naming the key and value", err)
	}
	if strings.Contains(logs.String(), "Configuration reloaded") {
		t.Fatal("a bad edit was applied")
	}

	os.WriteFile(path, []byte(good), 0o600)
	var res map[string]string
	if err := client.Reload(ctx, control.ReloadRequest{}, &res); err != nil || res["result"] == "" {
		t.Fatalf("reload of a good file: %v, %v", res, err)
	}
	waitFor(t, "the reload", func() bool {
		return strings.Contains(logs.String(), `Configuration reloaded; presencebridge restarts its work with it" why="reload asked"`)
	})
	// The new App answers on the control endpoint again (its key file is rewritten).
	waitFor(t, "the control endpoint of the new App", func() bool {
		c2, err := control.NewClient(KeyFile(cfg))
		if err != nil {
			return false
		}
		var st map[string]any
		return c2.Status(ctx, &st) == nil
	})
}
