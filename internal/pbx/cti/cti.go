// Package cti delivers presence to a CTI or PBX over HTTP: a JSON document per
// change (or one document with every pending change) POSTed to a configured URL.
//
// The document of one change:
//
//	{
//	  "upn": "alice@contoso.com",           // Teams user (users file)
//	  "sipUri": "sip:1001@pbx.example.com", // PBX identity (users file; may be empty)
//	  "extension": "1001",                  // PBX identity (users file; may be empty)
//	  "name": "Alice Example",              // users file (may be empty)
//	  "state": "oncall",                    // mapped PBX state ([Mapping])
//	  "basic": "open",                      // mapped PIDF basic status
//	  "activity": "on-the-phone",           // mapped RPID activity ("" for none)
//	  "note": "In a call",                  // mapped note
//	  "teams": {"availability": "Busy", "activity": "InACall", "outOfOffice": false},
//	  "reason": "change",                   // change | sync | stale | remove
//	  "changedAt": "2026-11-23T08:00:00Z",  // when presencebridge saw the change
//	  "seq": 42                             // increases with every state queued for this target
//	}
//
// With [HTTP] Batch = 1 the body is {"changes": [ ...documents... ]}; otherwise
// each document is POSTed on its own, up to Concurrency at once. Every request has
// Content-Type: application/json, User-Agent: presencebridge and the configured
// headers. Any 2xx accepts; 408, 429, 5xx, timeouts and network errors are retried
// with backoff (5xx, timeouts and network errors back off the whole target); 401
// and 403 are retried too, as they mean wrong credentials rather than a bad
// document; any other 4xx refuses the document for good (logged once per state,
// with the status and the start of the response body). In batch mode the answer
// applies to every document of the batch.
package cti

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/redact"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/platform/transport"
)

// Settings are the [HTTP] section: where and how the documents go.
type Settings struct {
	// URL receives the POSTs. Empty: no HTTP target.
	URL string
	// Headers go with every request (Header.<Name> = value); their values are
	// secrets, never logged.
	Headers map[string]secret.Value
	// Batch sends one POST with every pending change instead of one per change.
	Batch bool
	// CAFile is a PEM file of CAs trusted on top of the system's roots.
	CAFile string
	// ClientCertFile and ClientKeyFile are a PEM client certificate and key.
	ClientCertFile, ClientKeyFile string
	// Timeout bounds each request.
	Timeout time.Duration
	// Concurrency is the POSTs in flight at once when not batching.
	Concurrency int
}

// DefaultSettings are [HTTP]'s defaults (Presence.ini.example lists them).
func DefaultSettings() Settings {
	return Settings{Timeout: 10 * time.Second, Concurrency: 16}
}

// Options configure a Target.
type Options struct {
	Settings
	// HTTPClient replaces the client built from the TLS settings (tests).
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Target POSTs presence to a CTI.
type Target struct {
	o  Options
	hc *http.Client
}

// Document is the JSON of one change.
type Document struct {
	UPN       string `json:"upn"`
	SIPURI    string `json:"sipUri"`
	Extension string `json:"extension"`
	Name      string `json:"name"`
	State     string `json:"state"`
	Basic     string `json:"basic"`
	Activity  string `json:"activity"`
	Note      string `json:"note"`
	Teams     Teams  `json:"teams"`
	// PBX is the PBX's own state of the user (omitted where it is not watched),
	// Source whose state State shows: "teams" or "pbx"
	// (RichPresence.WinningTechnology decides).
	PBX       *PBX      `json:"pbx,omitempty"`
	Source    string    `json:"source"`
	Reason    string    `json:"reason"`
	ChangedAt time.Time `json:"changedAt"`
	Seq       uint64    `json:"seq"`
}

// Teams is the Teams presence a Document was mapped from.
type Teams struct {
	Availability string `json:"availability"`
	Activity     string `json:"activity"`
	OutOfOffice  bool   `json:"outOfOffice"`
}

// PBX is the PBX's state a Document was composed with.
type PBX struct {
	Line  string `json:"line"` // idle, ringing or incall
	DND   bool   `json:"dnd"`
	Away  bool   `json:"away"`
	Calls int    `json:"calls"`
}

// Batch is the body in batch mode.
type Batch struct {
	Changes []Document `json:"changes"`
}

// New builds the HTTP client of settings config has checked (config's [HTTP], or
// DefaultSettings with a URL).
func New(o Options) (*Target, error) {
	if o.URL == "" || o.Concurrency < 1 || o.Timeout <= 0 {
		return nil, errors.New("cti.New: incomplete Settings (start from DefaultSettings, or config's [HTTP])")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	t := &Target{o: o, hc: o.HTTPClient}
	if t.hc == nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			pool, err := transport.CAPool(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("[HTTP] CAFile: %w", err)
			}
			tc.RootCAs = pool
		}
		if o.ClientCertFile != "" || o.ClientKeyFile != "" {
			cert, err := tls.LoadX509KeyPair(o.ClientCertFile, o.ClientKeyFile)
			if err != nil {
				return nil, fmt.Errorf("[HTTP] ClientCertFile/ClientKeyFile: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil // the CTI is on the local network: never the Internet proxy
		tr.TLSClientConfig = tc
		tr.MaxIdleConnsPerHost = o.Concurrency
		t.hc = &http.Client{Transport: tr}
	}
	return t, nil
}

// Client is the HTTP client the target posts with (verify probes the CTI with it).
func (t *Target) Client() *http.Client { return t.hc }

// Name is "http".
func (t *Target) Name() string { return "http" }

// Close drops idle connections.
func (t *Target) Close() error {
	t.hc.CloseIdleConnections()
	return nil
}

// DocumentOf renders an item.
func DocumentOf(it delivery.Item) Document {
	d := Document{UPN: it.User.UPN, SIPURI: it.User.SIPURI, Extension: it.User.Extension, Name: it.User.Name,
		State: it.Mapped.State, Basic: it.Mapped.Basic, Activity: it.Mapped.Activity, Note: it.Mapped.Note,
		Teams:  Teams{Availability: string(it.State.Availability), Activity: string(it.State.Activity), OutOfOffice: it.State.OutOfOffice},
		Source: it.Source, Reason: it.Reason, ChangedAt: it.Queued.UTC(), Seq: it.Seq}
	if d.Source == "" {
		d.Source = delivery.SourceTeams
	}
	if it.PBX.Known() {
		d.PBX = &PBX{Line: string(it.PBX.Line), DND: it.PBX.DND, Away: it.PBX.Away, Calls: it.PBX.Calls}
	}
	return d
}

// Send POSTs the items, one request each or one for all (Batch).
func (t *Target) Send(ctx context.Context, items []delivery.Item) []error {
	errs := make([]error, len(items))
	if t.o.Batch {
		b := Batch{Changes: make([]Document, len(items))}
		for i, it := range items {
			b.Changes[i] = DocumentOf(it)
		}
		err := t.post(ctx, b)
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	sem := make(chan struct{}, t.o.Concurrency)
	var wg sync.WaitGroup
	for i, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			// Stopping: nothing new starts; what is under way finishes.
			for j := i; j < len(items); j++ {
				errs[j] = ctx.Err()
			}
			wg.Wait()
			return errs
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = t.post(ctx, DocumentOf(it))
		}()
	}
	wg.Wait()
	return errs
}

// post sends one request, bounded by [HTTP] Timeout only: a request under way
// when ctx ends (a stop) still takes its answer, so that what the CTI accepted is
// recorded as accepted and not sent again after the restart.
func (t *Target) post(ctx context.Context, body any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return delivery.Permanent("encode document: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.o.URL, bytes.NewReader(raw))
	if err != nil {
		return delivery.Permanent("build request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "presencebridge")
	for k, v := range t.o.Headers {
		req.Header.Set(k, v.Reveal())
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %s: %w", redact.Endpoint(t.o.URL), t.explain(err), delivery.ErrTargetDown)
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return nil
	case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests:
		return fmt.Errorf("POST %s: %s", redact.Endpoint(t.o.URL), resp.Status)
	case s >= 500:
		return fmt.Errorf("POST %s: %s: %w", redact.Endpoint(t.o.URL), resp.Status, delivery.ErrTargetDown)
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return fmt.Errorf("POST %s: %s; check the [HTTP] Header.* credentials", redact.Endpoint(t.o.URL), resp.Status)
	default:
		return delivery.Permanent("POST %s: %s: %s", redact.Endpoint(t.o.URL), resp.Status, redact.OneLine(excerpt))
	}
}

// explain turns a transport error into a short cause without the URL's query.
func (t *Target) explain(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var he x509.HostnameError
	var ua x509.UnknownAuthorityError
	var ce *tls.CertificateVerificationError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer within %s ([HTTP] Timeout)", t.o.Timeout)
	case errors.As(err, &he):
		return "the CTI's TLS certificate is not for this host name (" + err.Error() + "); use a name the certificate lists in [HTTP] URL"
	case (errors.As(err, &ua) || errors.As(err, &ce)) && t.o.CAFile != "":
		return "the CTI's TLS certificate is not trusted (" + err.Error() + "); it is not signed by the CA in [HTTP] CAFile " + t.o.CAFile + " nor by a system CA: put the CA that signed it in that file"
	case errors.As(err, &ua) || errors.As(err, &ce):
		return "the CTI's TLS certificate is not trusted (" + err.Error() + "); put the CA that signed it in [HTTP] CAFile"
	}
	return err.Error()
}
