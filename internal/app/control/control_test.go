package control

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

type fakeHandler struct{}

func (fakeHandler) Status(context.Context) any { return map[string]int{"users": 3} }
func (fakeHandler) Presence(_ context.Context, upn string) (any, error) {
	if upn == "nobody@x" {
		return nil, errors.New(`user "nobody@x" is not in the users file`)
	}
	return map[string]string{"upn": upn, "availability": "Busy"}, nil
}
func (fakeHandler) SyncAll(context.Context) (any, error) { return map[string]int{"queued": 3}, nil }
func (fakeHandler) Reload(_ context.Context, r ReloadRequest) (any, error) {
	if r.AllowMassRemoval {
		return map[string]string{"result": "users file accepted"}, nil
	}
	return nil, errors.New("reload refused: Presence.ini:3")
}
func (fakeHandler) Login(_ context.Context, account string, show func(string)) (any, error) {
	show("To sign in, use a web browser to open the page https://example/devicelogin and enter the code ABC")
	if account == "bad" {
		return nil, errors.New("sign-in refused")
	}
	return map[string]string{"account": account}, nil
}

func start(t *testing.T) (*Client, string) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "control.key")
	s, err := Listen("127.0.0.1:0", keyFile, fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(keyFile); !errors.Is(err, os.ErrNotExist) {
			t.Error("control key file left behind after stop")
		}
	})
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	c, err := NewClient(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c, s.Addr()
}

func TestStatusPresenceLogin(t *testing.T) {
	c, _ := start(t)
	ctx := context.Background()
	var st map[string]int
	if err := c.Status(ctx, &st); err != nil || st["users"] != 3 {
		t.Fatalf("Status = %v, %v", st, err)
	}
	var p map[string]string
	if err := c.Presence(ctx, "a@x", &p); err != nil || p["availability"] != "Busy" || p["upn"] != "a@x" {
		t.Fatalf("Presence = %v, %v", p, err)
	}
	if err := c.Presence(ctx, "nobody@x", &p); err == nil || err.Error() != `user "nobody@x" is not in the users file` {
		t.Fatalf("Presence(nobody) error = %v", err)
	}
	var sync map[string]int
	if err := c.SyncAll(ctx, &sync); err != nil || sync["queued"] != 3 {
		t.Fatalf("SyncAll = %v, %v", sync, err)
	}
	if err := c.Reload(ctx, ReloadRequest{}, nil); err == nil || err.Error() != "reload refused: Presence.ini:3" {
		t.Fatalf("Reload error = %v; want the service's reason", err)
	}
	var rel map[string]string
	if err := c.Reload(ctx, ReloadRequest{AllowMassRemoval: true}, &rel); err != nil || rel["result"] != "users file accepted" {
		t.Fatalf("Reload allowing mass removal = %v, %v; want the flag to reach the handler", rel, err)
	}
	var msgs []string
	var res map[string]string
	if err := c.Login(ctx, "contoso", func(m string) { msgs = append(msgs, m) }, &res); err != nil || res["account"] != "contoso" {
		t.Fatalf("Login = %v, %v", res, err)
	}
	if len(msgs) != 1 {
		t.Fatalf("login messages = %q", msgs)
	}
	if err := c.Login(ctx, "bad", func(string) {}, &res); err == nil || err.Error() != "sign-in refused" {
		t.Fatalf("Login(bad) error = %v", err)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	_, addr := start(t)
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/status", nil)
	req.Header.Set("Authorization", "Bearer guessed")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status with a wrong key = %d, want 401", resp.StatusCode)
	}
}

func TestNotRunning(t *testing.T) {
	if _, err := NewClient(filepath.Join(t.TempDir(), "none.key")); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("NewClient without key file = %v, want ErrNotRunning", err)
	}
}

func TestNonLoopbackRefused(t *testing.T) {
	_, err := Listen("0.0.0.0:0", filepath.Join(t.TempDir(), "k"), fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatal("Listen on 0.0.0.0 succeeded, want refusal")
	}
}
