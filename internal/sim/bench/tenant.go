package bench

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
)

// tenantAPI is the control API (/_sim/) of the simulated tenant that
// startTenant runs in a child process.
type tenantAPI struct {
	url string
	hc  *http.Client
}

func newTenantAPI(r simulate.Ready) (*tenantAPI, error) {
	pem, err := os.ReadFile(r.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tenantAPI{url: r.URL, hc: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}, nil
}

// call sends method path (with body as JSON unless nil) and decodes a 2xx
// answer into out (unless nil).
func (t *tenantAPI) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, t.url+path, rd)
	if err != nil {
		return err
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return fmt.Errorf("simulated tenant: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("simulated tenant: %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// stats is what the tenant saw, without the request records; with writes, the
// setPresence and clearPresence calls it answered.
func (t *tenantAPI) stats(writes bool) (graphsim.Stats, error) {
	var st graphsim.Stats
	err := t.call(http.MethodGet, fmt.Sprintf("/_sim/stats?requests=false&writes=%v", writes), nil, &st)
	return st, err
}

// requests are the request records the tenant kept (the most recent 200,000).
func (t *tenantAPI) requests() ([]graphsim.RequestRecord, error) {
	var st graphsim.Stats
	err := t.call(http.MethodGet, "/_sim/stats?writes=false", nil, &st)
	return st.Requests, err
}

// shows is what Graph shows for upn ("Busy/InACall") and the presence
// sessions applications hold for it.
func (t *tenantAPI) shows(upn string) (string, []graphsim.Session, error) {
	var r struct {
		Availability string             `json:"availability"`
		Activity     string             `json:"activity"`
		Sessions     []graphsim.Session `json:"sessions"`
	}
	err := t.call(http.MethodGet, "/_sim/sessions?upn="+url.QueryEscape(upn), nil, &r)
	return r.Availability + "/" + r.Activity, r.Sessions, err
}

// setPresence sets upn's own state in Teams (its Teams client's).
func (t *tenantAPI) setPresence(upn, availability, activity string) error {
	return t.call(http.MethodPost, "/_sim/presence", map[string]string{"upn": upn, "availability": availability, "activity": activity}, nil)
}
