package graphsim_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// start runs a simulated tenant for the test and closes it afterwards.
func start(t testing.TB, opts graphsim.Options) *graphsim.Server {
	t.Helper()
	s, err := graphsim.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// startFake runs a tenant on a fake clock with a manual engine.
func startFake(t testing.TB, opts graphsim.Options) (*graphsim.Server, *clock.Fake) {
	t.Helper()
	fc := clock.NewFake(t0)
	opts.Clock = fc
	opts.ManualEngine = true
	return start(t, opts), fc
}

type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r reply) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("reply %d is not JSON: %v\n%s", r.Status, err, r.Body)
	}
}

// graphErrorCode extracts error.code of a Graph error body.
func (r reply) graphErrorCode(t testing.TB) string {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	r.json(t, &e)
	return e.Error.Code
}

func do(t testing.TB, s *graphsim.Server, method, path, token string, body any) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return send(t, s, req)
}

func send(t testing.TB, s *graphsim.Server, req *http.Request) reply {
	t.Helper()
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func postForm(t testing.TB, s *graphsim.Server, path string, form url.Values) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL()+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return send(t, s, req)
}

func appToken(t testing.TB, s *graphsim.Server) string {
	t.Helper()
	tok, err := s.AppToken(graphsim.DefaultDaemonApp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// oauthReply is the token endpoint's reply, success or error.
type oauthReply struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
	ClientInfo   string `json:"client_info"`
	ExpiresIn    int    `json:"expires_in"`
	TokenType    string `json:"token_type"`
	Scope        string `json:"scope"`
	Error        string `json:"error"`
	Description  string `json:"error_description"`
	ErrorCodes   []int  `json:"error_codes"`
}

func tokenPath(s *graphsim.Server) string { return "/" + s.TenantID() + "/oauth2/v2.0/token" }

func token(t testing.TB, s *graphsim.Server, form url.Values) (int, oauthReply) {
	t.Helper()
	r := postForm(t, s, tokenPath(s), form)
	var o oauthReply
	r.json(t, &o)
	return r.Status, o
}

func presenceBody(ids ...string) map[string][]string { return map[string][]string{"ids": ids} }

type presenceReply struct {
	Context string `json:"@odata.context"`
	Value   []struct {
		ID                  string `json:"id"`
		Availability        string `json:"availability"`
		Activity            string `json:"activity"`
		OutOfOfficeSettings *struct {
			IsOutOfOffice bool `json:"isOutOfOffice"`
		} `json:"outOfOfficeSettings"`
	} `json:"value"`
}
