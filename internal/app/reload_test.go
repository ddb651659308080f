package app

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
)

// A good edit of Presence.ini takes effect without a new sign-in or a flood of old
// states; a bad edit is refused and the running configuration carries on.
func TestReload(t *testing.T) {
	c := newRecordingCTI(t)
	sim, path := deliveryTenant(t, c.srv.URL)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWithReload(ctx, ReloadOptions{Options: Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil)), Version: "test"},
			Check: 50 * time.Millisecond})
	}()
	defer func() { cancel(); <-done }()
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
