package app

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// A users file whose export failed (only its header) or that drops most users is
// refused at a reload, the running list stays and nobody is withdrawn; a smaller
// edit goes through; --allow-mass-removal confirms the file through the control
// endpoint.
func TestMassRemovalRefusedAtReload(t *testing.T) {
	c := newRecordingCTI(t)
	sim, path := deliveryTenant(t, c.srv.URL)
	raw, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(raw), "ControlAddr = off", "ControlAddr = 127.0.0.1:0", 1)), 0o600)
	dir := filepath.Dir(path)
	cfg, logs, ctx := runReloading(t, path, 50*time.Millisecond, func(o *ReloadOptions) { o.RefuseMassRemoval = true })
	waitFor(t, "first states at the CTI", func() bool { m, _ := c.last(""); return len(m) == 10 })
	client, err := control.NewClient(KeyFile(cfg))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the states recorded as delivered", func() bool {
		var st StatusReport
		return client.Status(ctx, &st) == nil && len(st.Targets) == 1 && st.Targets[0].Sent == 10
	})
	refusals := func() int { return logs.Count("Reload refused") }

	header := "UPN,SIP URI,Extension\n"
	os.WriteFile(filepath.Join(dir, "users.csv"), []byte(header), 0o644)
	waitFor(t, "the header-only file refused", func() bool { return refusals() == 1 })
	if !strings.Contains(logs.String(), "lists no users (only a header, comments or blank lines), which would withdraw the presence of all 10 users") {
		t.Errorf("the refusal does not say why:\n%s", logs.String())
	}
	testkit.WriteSimUsers(t, dir, sim.Users()[:2])
	waitFor(t, "the file with 2 of 10 users refused", func() bool { return refusals() == 2 })
	if !strings.Contains(logs.String(), "would withdraw the presence of 8 of the 10 users shown on the PBX") {
		t.Errorf("the refusal does not count the users:\n%s", logs.String())
	}
	// The running list stays: a change of a user the refused files dropped still arrives.
	upn := sim.Users()[7].UPN
	act := setOther(t, sim, upn)
	waitFor(t, "a change after the refusals", func() bool { m, _ := c.last(""); return m[upn].Teams.Activity == act })
	if _, n := c.last("remove"); n != 0 {
		t.Fatalf("%d users were withdrawn by refused files", n)
	}

	// Half of them go: not a mass removal.
	testkit.WriteSimUsers(t, dir, sim.Users()[:5])
	waitFor(t, "5 users withdrawn", func() bool { _, n := c.last("remove"); return n == 5 })

	// All of them go, confirmed through the control endpoint.
	os.WriteFile(filepath.Join(dir, "users.csv"), []byte(header), 0o644)
	waitFor(t, "the header-only file refused again", func() bool { return refusals() == 3 })
	client, err = control.NewClient(KeyFile(cfg)) // the App after the reload has its own key
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]string
	if err := client.Reload(ctx, control.ReloadRequest{AllowMassRemoval: true}, &res); err != nil {
		t.Fatalf("reload allowing mass removal: %v", err)
	}
	waitFor(t, "every user withdrawn", func() bool { _, n := c.last("remove"); return n == 10 })
}

// At start, a users file that would withdraw most users is a configuration error
// (the service exits 3) until it is confirmed with ConfirmUsers (users apply
// --allow-mass-removal while the service is stopped).
func TestMassRemovalRefusedAtStart(t *testing.T) {
	c := newRecordingCTI(t)
	sim, path := deliveryTenant(t, c.srv.URL)
	r := startWith(t, path, nil)
	waitFor(t, "first states at the CTI", func() bool { m, _ := c.last(""); return len(m) == 10 }, r)
	r.stop()

	dir := filepath.Dir(path)
	testkit.WriteSimUsers(t, dir, sim.Users()[:3])
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), RefuseMassRemoval: true})
	var mass *users.MassRemovalError
	if !errors.Is(err, ErrConfig) || !errors.As(err, &mass) || mass.Removed != 7 || mass.Shown != 10 {
		t.Fatalf("Open = %v; want a configuration error counting 7 of 10 users", err)
	}
	// Without RefuseMassRemoval (login, status) the file opens.
	a, err := Open(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("Open for a one-shot command: %v", err)
	}
	a.Close()

	if _, err := ConfirmUsers(cfg, false); !errors.As(err, &mass) {
		t.Fatalf("ConfirmUsers without allow = %v, want the refusal", err)
	}
	rep, err := ConfirmUsers(cfg, true)
	if err != nil || !rep.Confirmed || rep.Users != 3 || rep.Shown != 10 || rep.Removed != 7 {
		t.Fatalf("ConfirmUsers = %+v, %v", rep, err)
	}
	a, err = Open(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), RefuseMassRemoval: true})
	if err != nil {
		t.Fatalf("Open after the confirmation: %v", err)
	}
	a.Close()
	// A different file is checked again.
	testkit.WriteSimUsers(t, dir, sim.Users()[:2])
	if _, err := Open(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), RefuseMassRemoval: true}); !errors.As(err, &mass) {
		t.Fatalf("Open of another file = %v, want the refusal", err)
	}
}
