// Package asterisk shows presence on Asterisk and FreePBX as device states
// that dialplan hints combine with the phones (Asterisk answers a PIDF
// PUBLISH with 489 Bad Event, so the SIP target lights nothing there).
//
// Each user gets a device named from the [Asterisk] Device template (default
// teams-{extension}), set to the state the [Mapping] gives
// (presence.Mapped.Device: NOT_INUSE, INUSE, BUSY, UNAVAILABLE, ...), in one of
// two ways:
//
//   - ARI (Mode = ari, Asterisk 12 and later): PUT
//     /ari/deviceStates/Stasis:teams-1000?deviceState=INUSE with HTTP basic
//     auth (an ari.conf user); 204 accepts. The Stasis: prefix is part of the
//     path: without it Asterisk answers 409 "Uncontrolled device specified".
//     Hints name Stasis:teams-1000.
//   - AMI (Mode = ami, for systems with ARI off): one long-lived manager
//     session (manager.conf user, Login with Events: off) that sends
//     Action: Setvar, Variable: DEVICE_STATE(Custom:teams-1000), matched to
//     its answer by ActionID, Ping as keepalive, reconnected with backoff when
//     it breaks. Hints name Custom:teams-1000.
//
// A user who leaves the users file is set UNAVAILABLE, and over ARI then
// deleted: Asterisk 22 keeps a hint at the deleted device's last state (a lit
// lamp) unless the state is changed first.
//
// Both ways keep the device states in astdb across an Asterisk restart. A
// probe reads back the state last set for one device (ARI GET, AMI Getvar) and
// reports delivery.ErrTargetForgot when Asterisk no longer has it, so every
// user's state is set again; re-assertion sends the states again (a PUT or
// Setvar of an unchanged state moves no lamp and sends no NOTIFY).
package asterisk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/platform/redact"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Modes: how device states get into Asterisk.
const (
	ModeARI = "ari"
	ModeAMI = "ami"
)

// Settings are the [Asterisk] settings of Presence.ini: config decodes the
// section into them, starting from DefaultSettings, and checks them; New
// takes them as they are.
type Settings struct {
	// Mode is ModeARI or ModeAMI.
	Mode string
	// URL is ARI's base, e.g. http://pbx.example.com:8088/ari (https with a
	// TLS-enabled http.conf). Empty with Mode = ari: no Asterisk target.
	URL string
	// Username is the ari.conf user (ARI) or the manager.conf user (AMI).
	Username string
	// Password is the ari.conf user's password; never logged.
	Password secret.Value
	// CAFile is a PEM file of CAs trusted for an https URL on top of the
	// system's roots.
	CAFile string
	// Address is the manager interface's host:port (manager.conf, 5038).
	// Empty with Mode = ami: no Asterisk target.
	Address string
	// Secret is the manager.conf user's secret; never logged.
	Secret secret.Value
	// Device is the device name template (see ParseDevice).
	Device string
	// Timeout bounds each request (ARI) or action (AMI), and the AMI login.
	Timeout time.Duration
	// Concurrency is the requests (ARI) or actions on the one session (AMI)
	// in flight at once.
	Concurrency int
}

// DefaultDevice is [Asterisk] Device's default.
const DefaultDevice = "teams-" + FieldExtension

// DefaultSettings are [Asterisk]'s defaults (Presence.ini.example lists them).
func DefaultSettings() Settings {
	return Settings{Mode: ModeARI, Device: DefaultDevice, Timeout: 5 * time.Second, Concurrency: 8}
}

// Enabled reports whether the settings name an Asterisk to deliver to.
func (s Settings) Enabled() bool {
	return s.Mode == ModeARI && s.URL != "" || s.Mode == ModeAMI && s.Address != ""
}

// Where names the Asterisk the settings point at, for messages: the ARI URL
// (without credentials or query) or the AMI address.
func (s Settings) Where() string {
	if s.Mode == ModeAMI {
		return "AMI " + s.Address
	}
	return "ARI " + redact.Endpoint(s.URL)
}

// Prefix is the technology the hints name the devices with: "Stasis:" (ARI)
// or "Custom:" (AMI).
func (s Settings) Prefix() string {
	if s.Mode == ModeAMI {
		return "Custom:"
	}
	return "Stasis:"
}

// DefaultKeepAlive is how long the AMI session may be quiet before a Ping.
const DefaultKeepAlive = 20 * time.Second

// Options configure a Target.
type Options struct {
	Settings
	// KeepAlive replaces DefaultKeepAlive (tests).
	KeepAlive time.Duration
	Clock     clock.Clock
	Logger    *slog.Logger
}

// backend is one way of setting device states.
type backend interface {
	// set sets the device (without prefix) to state.
	set(ctx context.Context, name, state string) error
	// remove withdraws a departed user's device.
	remove(ctx context.Context, name string) error
	// get reads the device's state ("UNKNOWN" when Asterisk has none).
	get(ctx context.Context, name string) (string, error)
	// ping checks that Asterisk answers.
	ping(ctx context.Context) error
	close()
}

// Target sets device states on one Asterisk.
type Target struct {
	o      Options
	device Device
	be     backend
	ami    *amiClient // the backend in AMI mode (its session is kept by Run)
	sem    chan struct{}

	mu   sync.Mutex
	last struct{ name, state string } // the state last accepted for one device (Probe)
}

// New builds the target of settings config has checked.
func New(o Options) (*Target, error) {
	if !o.Enabled() || o.Timeout <= 0 || o.Concurrency < 1 {
		return nil, errors.New("asterisk.New: incomplete Settings (start from DefaultSettings, or config's [Asterisk])")
	}
	d, err := ParseDevice(o.Device)
	if err != nil {
		return nil, fmt.Errorf("[Asterisk] Device = %q: %w", o.Device, err)
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	t := &Target{o: o, device: d, sem: make(chan struct{}, o.Concurrency)}
	if o.Mode == ModeAMI {
		t.ami = newAMI(o)
		t.be = t.ami
	} else {
		if t.be, err = newARI(o.Settings); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Name is "asterisk".
func (t *Target) Name() string { return "asterisk" }

// Accepts reports whether the Device template names a device for u (e.g. u
// has an extension for teams-{extension}).
func (t *Target) Accepts(u users.User) bool {
	_, err := t.device.Name(u)
	return err == nil
}

// DeviceOf is u's device as hints name it (e.g. "Stasis:teams-1000"), or why u
// has none.
func (t *Target) DeviceOf(u users.User) (string, error) {
	n, err := t.device.Name(u)
	if err != nil {
		return "", err
	}
	return t.o.Prefix() + n, nil
}

// Send sets each item's device state, Concurrency at a time, and returns when
// all are settled. A departed user's device is set UNAVAILABLE (ARI: and
// deleted). Once a request finds Asterisk down (unreachable, no answer within
// Timeout, credentials refused), the items not started yet fail with the same
// error at once, so a batch during an outage takes one Timeout, not one per
// item.
func (t *Target) Send(ctx context.Context, items []delivery.Item) []error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var down error
	for i, it := range items {
		select {
		case t.sem <- struct{}{}:
		case <-ctx.Done():
			// Stopping: nothing new starts; what is under way finishes.
			for j := i; j < len(items); j++ {
				errs[j] = ctx.Err()
			}
			wg.Wait()
			return errs
		}
		mu.Lock()
		err := down
		mu.Unlock()
		if err != nil {
			<-t.sem
			errs[i] = err
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-t.sem; wg.Done() }()
			err := t.send(ctx, it)
			if errors.Is(err, delivery.ErrTargetDown) {
				mu.Lock()
				down = err
				mu.Unlock()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return errs
}

// send settles one item, bounded by Timeout only: a request under way when ctx
// ends (a stop) still takes its answer, so what Asterisk accepted is recorded
// as accepted.
func (t *Target) send(ctx context.Context, it delivery.Item) error {
	name, err := t.device.Name(it.User)
	if err != nil {
		return delivery.Permanent("[Asterisk] Device %s: %v", t.device, err)
	}
	ctx = context.WithoutCancel(ctx)
	if it.Remove() {
		err := t.be.remove(ctx, name)
		t.mu.Lock()
		if err == nil && t.last.name == name {
			t.last.name, t.last.state = "", "" // gone on purpose: not a device to probe
		}
		t.mu.Unlock()
		return err
	}
	state := it.Mapped.Device()
	if err := t.be.set(ctx, name, state); err != nil {
		return err
	}
	t.mu.Lock()
	t.last.name, t.last.state = name, state
	t.mu.Unlock()
	return nil
}

// Probe checks, while there is nothing to send, that Asterisk answers and
// still has the state last set for one device (delivery.Prober): unreachable
// or refusing the credentials wraps delivery.ErrTargetDown, another state
// than the one set is delivery.ErrTargetForgot.
func (t *Target) Probe(ctx context.Context) error {
	t.mu.Lock()
	last := t.last
	t.mu.Unlock()
	if last.name == "" {
		return t.be.ping(ctx)
	}
	got, err := t.be.get(ctx, last.name)
	if err != nil {
		return err
	}
	if !strings.EqualFold(got, last.state) {
		t.o.Logger.Info("Asterisk no longer has the device state it was given", "device", t.o.Prefix()+last.name, "set", last.state, "has", got)
		return delivery.ErrTargetForgot
	}
	return nil
}

// Lookup reads the state Asterisk has for u's device now (presence get).
func (t *Target) Lookup(ctx context.Context, u users.User) (device, state string, err error) {
	name, err := t.device.Name(u)
	if err != nil {
		return "", "", err
	}
	state, err = t.be.get(ctx, name)
	return t.o.Prefix() + name, state, err
}

// Run keeps the AMI session up while ctx lasts: a Ping after KeepAlive of
// quiet, and a new session, with backoff, when it broke. In ARI mode there is
// nothing to keep and it returns at once.
func (t *Target) Run(ctx context.Context) error {
	if t.ami == nil {
		return nil
	}
	t.ami.keep(ctx)
	return nil
}

// Close ends the AMI session or drops ARI's idle connections.
func (t *Target) Close() error {
	t.be.close()
	return nil
}

// Check is `verify`'s test of the settings against Asterisk: ARI's info and a
// device state set and deleted on a probe device, or the AMI login and the
// manager user's right to Setvar. It returns what Asterisk said, or an
// error that says the fix.
func (t *Target) Check(ctx context.Context) (string, error) {
	if t.ami != nil {
		return t.ami.check(ctx)
	}
	return t.be.(*ariClient).check(ctx)
}

// timeout bounds one request by Timeout, whatever ctx's own deadline.
func (o Settings) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, o.Timeout)
}
