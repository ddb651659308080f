// Package control is the running service's loopback endpoint. CLI commands that need
// the state file while the service holds it (`status`, `presence get`, `login`) ask
// the service through it instead. Requests carry a random key that the service writes
// next to its state file, readable by the service account only, so only someone who
// could read the tokens anyway can use it.
package control

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Handler is what the service answers with.
type Handler interface {
	Status(ctx context.Context) any
	Presence(ctx context.Context, upn string) (any, error)
	Login(ctx context.Context, account string, show func(message string)) (any, error)
	SyncAll(ctx context.Context) (any, error)
	// Reload reads Presence.ini and the users file again; an error says why the
	// new configuration was refused.
	Reload(ctx context.Context, r ReloadRequest) (any, error)
}

// ReloadRequest is what a reload is asked with.
type ReloadRequest struct {
	// AllowMassRemoval confirms a users file that lists nobody, or that would
	// take more than half of the users off the PBX (`users apply
	// --allow-mass-removal`).
	AllowMassRemoval bool
}

func (r ReloadRequest) query() url.Values {
	if !r.AllowMassRemoval {
		return nil
	}
	return url.Values{"allowMassRemoval": {"1"}}
}

// ErrNotRunning means no service answers at the configured address.
var ErrNotRunning = errors.New("the presencebridge service is not answering on its control address")

// Server serves Handler on a loopback address.
type Server struct {
	ln      net.Listener
	key     string
	keyFile string
	srv     *http.Server
}

// Listen binds addr (which must be loopback) and writes a fresh key to keyFile (0600).
func Listen(addr, keyFile string, h Handler, logger *slog.Logger) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("control address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("control address %q is not a loopback address", addr)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	key := hex.EncodeToString(buf)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on control address %s (set [General] ControlAddr to a free loopback port, or off): %w", addr, err)
	}
	// The file carries the bound address too, so port 0 works and the CLI needs
	// nothing but the state directory.
	raw, _ := json.Marshal(keyFileContent{Addr: ln.Addr().String(), Key: key})
	if err := writePrivate(keyFile, raw); err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{ln: ln, key: key, keyFile: keyFile}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, h.Status(r.Context()))
	})
	mux.HandleFunc("GET /presence", answer(http.StatusBadGateway, func(r *http.Request) (any, error) {
		return h.Presence(r.Context(), r.URL.Query().Get("upn"))
	}))
	mux.HandleFunc("POST /sync-all", answer(http.StatusInternalServerError, func(r *http.Request) (any, error) {
		return h.SyncAll(r.Context())
	}))
	mux.HandleFunc("POST /reload", answer(http.StatusConflict, func(r *http.Request) (any, error) {
		return h.Reload(r.Context(), ReloadRequest{AllowMassRemoval: r.URL.Query().Get("allowMassRemoval") == "1"})
	}))
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		// A stream of JSON lines: {"message"} while waiting, then {"result"} or {"error"}.
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		flush := func() {
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
		}
		res, err := h.Login(r.Context(), r.URL.Query().Get("account"), func(msg string) {
			_ = enc.Encode(map[string]string{"message": msg})
			flush()
		})
		if err != nil {
			_ = enc.Encode(map[string]string{"error": err.Error()})
		} else {
			_ = enc.Encode(map[string]any{"result": res})
		}
		flush()
	})
	s.srv = &http.Server{
		Handler:           s.authorize(mux),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

type keyFileContent struct {
	Addr string `json:"addr"`
	Key  string `json:"key"`
}

func writePrivate(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write control key %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("restrict control key %s: %w", path, err)
	}
	return nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve answers until ctx is done.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	}()
	err := s.srv.Serve(s.ln)
	os.Remove(s.keyFile)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), []byte(s.key)) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong control key"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// answer replies with what f returns: 200 and its value, or errStatus and
// {"error": ...}.
func answer(errStatus int, f func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r)
		if err != nil {
			writeJSON(w, errStatus, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Client talks to a running service.
type Client struct {
	base string
	key  string
	hc   *http.Client
}

// NewClient reads the address and key from keyFile. A missing key file means no
// service is running with this state file: ErrNotRunning.
func NewClient(keyFile string) (*Client, error) {
	raw, err := os.ReadFile(keyFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotRunning
	}
	if err != nil {
		return nil, fmt.Errorf("read control key %s (run as the service account or an administrator): %w", keyFile, err)
	}
	var kf keyFileContent
	if err := json.Unmarshal(raw, &kf); err != nil || kf.Addr == "" {
		return nil, fmt.Errorf("control key %s is damaged; restart the service", keyFile)
	}
	return &Client{
		base: "http://" + kf.Addr,
		key:  kf.Key,
		// Never through a proxy: this is loopback.
		hc: &http.Client{Transport: &http.Transport{Proxy: nil}},
	}, nil
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values) (*http.Response, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, ErrNotRunning
		}
		return nil, fmt.Errorf("ask the running service: %w", err)
	}
	return resp, nil
}

func decode(resp *http.Response, out any) error {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("service answered %s", resp.Status)
	}
	return json.Unmarshal(body, out)
}

// call sends one request and decodes the reply into out.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, out any) error {
	resp, err := c.do(ctx, method, path, q)
	if err != nil {
		return err
	}
	return decode(resp, out)
}

// Status fetches the service's status into out.
func (c *Client) Status(ctx context.Context, out any) error {
	return c.call(ctx, http.MethodGet, "/status", nil, out)
}

// Presence asks the service for one user's live presence.
func (c *Client) Presence(ctx context.Context, upn string, out any) error {
	return c.call(ctx, http.MethodGet, "/presence", url.Values{"upn": {upn}}, out)
}

// SyncAll asks the service to queue every user's current state for every target.
func (c *Client) SyncAll(ctx context.Context, out any) error {
	return c.call(ctx, http.MethodPost, "/sync-all", nil, out)
}

// Reload asks the service to read its configuration again.
func (c *Client) Reload(ctx context.Context, r ReloadRequest, out any) error {
	return c.call(ctx, http.MethodPost, "/reload", r.query(), out)
}

// Login runs a sign-in inside the service, calling show with each message (the
// device-code text), and decodes the final result into out.
func (c *Client) Login(ctx context.Context, account string, show func(string), out any) error {
	resp, err := c.do(ctx, http.MethodPost, "/login", url.Values{"account": {account}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decode(resp, out)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Message string          `json:"message"`
			Error   string          `json:"error"`
			Result  json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("read login progress from the service: %w", err)
		}
		switch {
		case line.Error != "":
			return errors.New(line.Error)
		case line.Result != nil:
			return json.Unmarshal(line.Result, out)
		case line.Message != "":
			show(line.Message)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read login progress from the service: %w", err)
	}
	return errors.New("the service ended the login without a result")
}
