package asterisk

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/presencebridge/presencebridge/internal/platform/redact"
	"github.com/presencebridge/presencebridge/internal/platform/transport"
)

// ariClient sets Stasis: device states through ARI's deviceStates resource.
type ariClient struct {
	s    Settings
	base string // URL without a trailing slash
	hc   *http.Client
}

func newARI(s Settings) (*ariClient, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		pool, err := transport.CAPool(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("[Asterisk] CAFile: %w", err)
		}
		tc.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // Asterisk is on the local network: never the Internet proxy
	tr.TLSClientConfig = tc
	tr.MaxIdleConnsPerHost = s.Concurrency
	return &ariClient{s: s, base: strings.TrimRight(s.URL, "/"), hc: &http.Client{Transport: tr}}, nil
}

// devicePath is the deviceStates resource of a device; the Stasis: prefix is
// part of it (without it Asterisk answers 409 "Uncontrolled device specified").
func devicePath(name string) string {
	return "/deviceStates/" + url.PathEscape("Stasis:"+name)
}

func (c *ariClient) set(ctx context.Context, name, state string) error {
	_, err := c.do(ctx, http.MethodPut, devicePath(name)+"?deviceState="+url.QueryEscape(state), state)
	return err
}

// remove sets the device UNAVAILABLE, then deletes it: a hint keeps showing a
// deleted device's last state, so the state goes first. A device Asterisk
// does not have is gone already (DELETE answers 204 then too).
func (c *ariClient) remove(ctx context.Context, name string) error {
	if err := c.set(ctx, name, "UNAVAILABLE"); err != nil {
		return err
	}
	_, err := c.do(ctx, http.MethodDelete, devicePath(name), "")
	return err
}

func (c *ariClient) get(ctx context.Context, name string) (string, error) {
	body, err := c.do(ctx, http.MethodGet, devicePath(name), "")
	if err != nil {
		return "", err
	}
	var ds struct{ State string }
	if err := json.Unmarshal(body, &ds); err != nil || ds.State == "" {
		return "", failed("GET "+c.where()+devicePath(name), "not ARI's answer ("+redact.OneLine(body)+")", "")
	}
	return ds.State, nil
}

func (c *ariClient) ping(ctx context.Context) error {
	_, err := c.info(ctx)
	return err
}

// info is GET /asterisk/info: the Asterisk version.
func (c *ariClient) info(ctx context.Context) (string, error) {
	body, err := c.do(ctx, http.MethodGet, "/asterisk/info", "")
	if err != nil {
		return "", err
	}
	var info struct {
		System struct{ Version string }
	}
	if err := json.Unmarshal(body, &info); err != nil || info.System.Version == "" {
		return "", down("GET "+c.where()+"/asterisk/info", "not ARI's answer ("+redact.OneLine(body)+")", "set [Asterisk] URL to ARI's base, e.g. http://pbx.example.com:8088/ari")
	}
	return info.System.Version, nil
}

func (c *ariClient) close() { c.hc.CloseIdleConnections() }

// verifyDevice is the device Check sets and deletes again.
const verifyDevice = "presencebridge-verify"

// check reads ARI's info, then sets and deletes a probe device: the user's
// password, write access (ari.conf read_only = no) and the deviceStates
// resource all hold.
func (c *ariClient) check(ctx context.Context) (string, error) {
	version, err := c.info(ctx)
	if err != nil {
		return "", err
	}
	if err := c.set(ctx, verifyDevice, "NOT_INUSE"); err != nil {
		return "", err
	}
	if _, err := c.do(ctx, http.MethodDelete, devicePath(verifyDevice), ""); err != nil {
		return "", err
	}
	return fmt.Sprintf("Asterisk %s at %s; device state Stasis:%s set and deleted as %s", version, c.where(), verifyDevice, c.s.Username), nil
}

// where is the URL for messages: no credentials, no query.
func (c *ariClient) where() string { return redact.Endpoint(c.base) }

// do sends one request, bounded by Timeout, and returns the body of a 2xx
// answer; any other answer is an error that says the fix. state is the device
// state a PUT sets (for its refusal).
func (c *ariClient) do(ctx context.Context, method, path, state string) ([]byte, error) {
	ctx, cancel := c.s.timeout(ctx)
	defer cancel()
	what := method + " " + c.where() + strings.SplitN(path, "?", 2)[0]
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, refused(what, err.Error(), "")
	}
	req.SetBasicAuth(c.s.Username, c.s.Password.Reveal())
	req.Header.Set("User-Agent", "presencebridge")
	resp, err := c.hc.Do(req)
	if err != nil {
		cause, fix := c.explain(err)
		return nil, down(what, cause, fix)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return body, nil
	}
	return nil, ariRefusal(what, resp.Status, resp.StatusCode, body, c.s, state)
}

// ariRefusal turns a non-2xx answer into an error with its fix. Answers that
// hold for every user (credentials, a wrong URL, Asterisk failing) wrap
// delivery.ErrTargetDown, so the target backs off as a whole; a state or a
// device Asterisk will not take is refused for good.
func ariRefusal(what, status string, code int, body []byte, s Settings, state string) error {
	msg := redact.OneLine(body)
	var ari struct{ Message string }
	if json.Unmarshal(body, &ari) == nil && ari.Message != "" {
		msg = ari.Message
	}
	said := status + " (" + msg + ")"
	switch {
	case code == http.StatusUnauthorized:
		return down(what, fmt.Sprintf("%s: ARI refused user %q", said, s.Username),
			"check [Asterisk] Username and Password against the user in ari.conf (a section with type = user)")
	case code == http.StatusForbidden:
		return down(what, fmt.Sprintf("%s: ARI user %q may only read", said, s.Username), "set read_only = no for that user in ari.conf, then module reload res_ari.so")
	case code == http.StatusNotFound:
		return down(what, said+": no ARI deviceStates resource there",
			"set [Asterisk] URL to ARI's base, e.g. http://pbx.example.com:8088/ari, and load res_ari_device_states and res_stasis_device_state in Asterisk")
	case code == http.StatusConflict:
		return refused(what, said+": Asterisk does not let ARI control this device",
			"device states set over ARI are named Stasis:<name> (presencebridge adds the prefix; [Asterisk] Device is the part after it), and the hints must name the same Stasis: device")
	case code == http.StatusInternalServerError && strings.Contains(strings.ToLower(msg), "unknown device"):
		return refused(what, fmt.Sprintf("%s: Asterisk does not take the device state %q", said, state),
			"use NOT_INUSE, INUSE, BUSY, UNAVAILABLE, RINGING, RINGINUSE or ONHOLD in the [Mapping] rule's device state column")
	case code >= 500:
		return down(what, said, "")
	}
	return refused(what, said, "")
}

// explain turns a transport error into a short cause and its fix.
func (c *ariClient) explain(err error) (cause, fix string) {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var he x509.HostnameError
	var ua x509.UnknownAuthorityError
	var ce *tls.CertificateVerificationError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer within %s ([Asterisk] Timeout)", c.s.Timeout), "check that Asterisk is up and not overloaded, or raise [Asterisk] Timeout"
	case errors.As(err, &he):
		return "Asterisk's TLS certificate is not for this host name (" + err.Error() + ")", "use a name the certificate lists in [Asterisk] URL"
	case errors.As(err, &ua) || errors.As(err, &ce):
		return "Asterisk's TLS certificate is not trusted (" + err.Error() + ")", "put the CA that signed it in [Asterisk] CAFile"
	}
	return err.Error(), "check [Asterisk] URL, and that Asterisk's http.conf has enabled = yes and binds that address and port (and no firewall drops it)"
}
