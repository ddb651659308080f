// Package graph is presencebridge's Microsoft Graph client: resolve UPNs to object
// ids with JSON batching (by $filter on the UPN or the mail, 300 a $batch, or one
// GET per UPN; lookup.go), read presence in batches of up to 650 ids (their
// replies on a fast path, presencejson.go), and write presence with an
// application's session (setPresence, clearPresence).
package graph

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Limits from Microsoft's pages: getPresencesByUserId takes at most 650 ids
// (graph/api/cloudcommunications-getpresencesbyuserid); JSON batching at most 20
// requests (graph/json-batching).
const (
	MaxPresenceIDs = 650
	MaxBatch       = 20
)

// TokenSource gives a bearer token for Graph.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// Renewer is a TokenSource that can replace a token Graph refused with 401
// (auth.Authenticator): Renew drops the cached token and gets a new one, with the
// decoded claims challenge if Graph sent one; Refused reports that Graph refused
// the new token too, and returns the error to give the caller.
type Renewer interface {
	Renew(ctx context.Context, claims string) (string, error)
	Refused(tok, reason string) error
}

// Client calls Graph through the given HTTP client (proxy and CA are its business).
type Client struct {
	base   string
	hc     *http.Client
	tokens TokenSource
}

// New returns a client for baseURL, e.g. https://graph.microsoft.com/v1.0.
func New(baseURL string, hc *http.Client, tokens TokenSource) *Client {
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc, tokens: tokens}
}

// User is a resolved Teams user.
type User struct {
	ID          string `json:"id"`
	UPN         string `json:"userPrincipalName"`
	Mail        string `json:"mail"`
	DisplayName string `json:"displayName"`
}

// Presence is one user's presence as Graph reports it (raw strings).
type Presence struct {
	ID           string
	Availability string
	Activity     string
	OutOfOffice  bool
	// SequenceNumber is the presence's version stamp (the presence resource's
	// sequenceNumber, updated 2025-12): it sorts as a string, a lower one is
	// older. "" when Graph sent none.
	SequenceNumber string
}

type wirePresence struct {
	ID                  string `json:"id"`
	Availability        string `json:"availability"`
	Activity            string `json:"activity"`
	OutOfOfficeSettings *struct {
		IsOutOfOffice bool `json:"isOutOfOffice"`
	} `json:"outOfOfficeSettings"`
	SequenceNumber string `json:"sequenceNumber"`
}

func (w wirePresence) presence() Presence {
	p := Presence{ID: w.ID, Availability: w.Availability, Activity: w.Activity, SequenceNumber: w.SequenceNumber}
	if w.OutOfOfficeSettings != nil {
		p.OutOfOffice = w.OutOfOfficeSettings.IsOutOfOffice
	}
	return p
}

// ThrottledError is a 429: wait RetryAfter (when HasRetryAfter) before the next call.
type ThrottledError struct {
	RetryAfter    time.Duration
	HasRetryAfter bool
}

func (e *ThrottledError) Error() string {
	if e.HasRetryAfter {
		return fmt.Sprintf("Graph throttled the request (429); retry after %s", e.RetryAfter)
	}
	return "Graph throttled the request (429) without Retry-After"
}

// StatusError is any other non-2xx answer from Graph.
type StatusError struct {
	Status  int
	Code    string
	Message string
	// Claims is the decoded claims challenge of a 401's WWW-Authenticate
	// (continuous access evaluation), for the token request that answers it.
	Claims string
}

func (e *StatusError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("Graph answered %d %s: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("Graph answered %d %s", e.Status, http.StatusText(e.Status))
}

// IsTransient reports whether retrying later may succeed: 5xx, network errors and
// timeouts. Throttling (ThrottledError) is handled by the budget, not here.
func IsTransient(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status >= 500
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF)
}

// ResolveUsers looks up to 20 UPNs in one $batch; found is keyed by the lower-case
// UPN as asked, notFound lists those Graph does not know (404) or cannot take
// (400).
func (c *Client) ResolveUsers(ctx context.Context, upns []string) (found map[string]User, notFound []string, err error) {
	if len(upns) > MaxBatch {
		return nil, nil, fmt.Errorf("resolve: %d users in one batch, Graph allows %d", len(upns), MaxBatch)
	}
	var body batchRequestBody
	for i, u := range upns {
		body.Requests = append(body.Requests, batchRequestItem{ID: strconv.Itoa(i), Method: http.MethodGet,
			URL: "/users/" + url.PathEscape(u) + "?" + userSelect})
	}
	var reply batchReply
	if err := c.post(ctx, "/$batch", body, &reply); err != nil {
		return nil, nil, err
	}
	return reply.users(upns)
}

// batchReply is the body of a $batch answer (graph/json-batching).
type batchReply struct {
	Responses []struct {
		ID      string            `json:"id"`
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	} `json:"responses"`
}

// users reads the answers to the $batch that asked for upns (request i asked for
// upns[i]): found is keyed by the lower-case UPN, notFound lists the 404s.
func (reply *batchReply) users(upns []string) (found map[string]User, notFound []string, err error) {
	found = make(map[string]User, len(upns))
	for _, r := range reply.Responses {
		i, err := strconv.Atoi(r.ID)
		if err != nil || i < 0 || i >= len(upns) {
			continue
		}
		upn := strings.ToLower(upns[i])
		switch {
		case r.Status == http.StatusOK:
			var u User
			if err := json.Unmarshal(r.Body, &u); err != nil {
				return nil, nil, fmt.Errorf("resolve %s: %w", upn, err)
			}
			if u.ID == "" {
				// Taken as resolved, "" would go into every presence request of
				// its chunk, and Graph refuses the whole request for it.
				return nil, nil, fmt.Errorf("resolve %s: Graph answered 200 without the user's id", upn)
			}
			found[upn] = u
		case r.Status == http.StatusNotFound || r.Status == http.StatusBadRequest:
			// 400: Graph cannot take this UPN at all (not a valid identifier);
			// for the users file it is as unknown as a 404.
			notFound = append(notFound, upn)
		case r.Status == http.StatusTooManyRequests:
			return nil, nil, throttled(headerValue(r.Headers, "Retry-After"), time.Now())
		default:
			return nil, nil, fmt.Errorf("resolve %s: %w", upn, decodeError(r.Status, r.Body))
		}
	}
	return found, notFound, nil
}

// GetPresences reads the presence of up to 650 users by object id.
func (c *Client) GetPresences(ctx context.Context, ids []string) ([]Presence, error) {
	if len(ids) > MaxPresenceIDs {
		return nil, fmt.Errorf("getPresencesByUserId: %d ids in one request, Graph allows %d", len(ids), MaxPresenceIDs)
	}
	var reply presenceReply
	if err := c.post(ctx, "/communications/getPresencesByUserId", map[string][]string{"ids": ids}, &reply); err != nil {
		return nil, err
	}
	return reply.presences(), nil
}

// presenceReply is the body of a getPresencesByUserId answer: Value as
// encoding/json reads it, or fast as decodeFast (presencejson.go) does.
type presenceReply struct {
	Value  []wirePresence `json:"value"`
	fast   []Presence
	isFast bool
}

func (reply *presenceReply) presences() []Presence {
	if reply.isFast {
		if reply.fast == nil {
			return []Presence{}
		}
		return reply.fast
	}
	out := make([]Presence, len(reply.Value))
	for i, w := range reply.Value {
		out[i] = w.presence()
	}
	return out
}

// GetPresence reads one user's presence.
func (c *Client) GetPresence(ctx context.Context, id string) (Presence, error) {
	var w wirePresence
	if err := c.do(ctx, http.MethodGet, "/users/"+url.PathEscape(id)+"/presence", nil, &w); err != nil {
		return Presence{}, err
	}
	return w.presence(), nil
}

func (c *Client) post(ctx context.Context, path string, in, out any) error {
	raw, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, path, raw, out)
}

// do sends one request with a token. When Graph refuses the token (401) and the
// token source can renew it, the request is sent once more with a new token; a
// second refusal is reported to the token source.
func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return err
	}
	err = c.send(ctx, method, path, body, tok, out)
	var se *StatusError
	rn, ok := c.tokens.(Renewer)
	if !ok || !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		return err
	}
	if tok, err = rn.Renew(ctx, se.Claims); err != nil {
		return err
	}
	err = c.send(ctx, method, path, body, tok, out)
	if errors.As(err, &se) && se.Status == http.StatusUnauthorized {
		return rn.Refused(tok, se.Error())
	}
	return err
}

func (c *Client) send(ctx context.Context, method, path string, body []byte, tok string, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	return readReply(method, path, resp, out)
}

// maxReply bounds the Graph reply read into memory (650 presences take about
// 150 KB).
const maxReply = 64 << 20

// readReply turns Graph's answer to method path into out (JSON, at most maxReply
// bytes of it; a nil out discards the body), a *ThrottledError for a 429, or an
// error naming the request that wraps a *StatusError for any other non-2xx answer.
func readReply(method, path string, resp *http.Response, out any) error {
	if resp.StatusCode == http.StatusTooManyRequests {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return throttled(resp.Header.Get("Retry-After"), time.Now())
	}
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		se := decodeError(resp.StatusCode, b)
		if resp.StatusCode == http.StatusUnauthorized {
			se.Claims = claimsChallenge(resp.Header.Values("WWW-Authenticate"))
		}
		return fmt.Errorf("%s %s: %w", method, path, se)
	}
	if out == nil { // a call answered with 200 and no body (setPresence)
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	if err := decodeReply(resp.Body, out); err != nil {
		return fmt.Errorf("%s %s: decode reply: %w", method, path, err)
	}
	return nil
}

// maxRetryAfter caps the wait a Retry-After asks for. Graph asks for seconds; a
// longer wait comes from a broken header (or a proxy's), and honouring it would stop
// polling for good, while a 429 after the capped wait only asks again.
const maxRetryAfter = time.Hour

// throttled parses Retry-After as seconds or an HTTP date (RFC 9110 section 10.2.3),
// capped at maxRetryAfter.
func throttled(h string, now time.Time) *ThrottledError {
	h = strings.TrimSpace(h)
	if h == "" {
		return &ThrottledError{}
	}
	if n, err := strconv.ParseUint(h, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		// Compared before multiplying: 9999999999 s would overflow a Duration
		// into a negative wait, i.e. no wait at all. (Beyond 64 bits n is the
		// largest uint64.)
		d := maxRetryAfter
		if n < uint64(maxRetryAfter/time.Second) {
			d = time.Duration(n) * time.Second
		}
		return &ThrottledError{RetryAfter: d, HasRetryAfter: true}
	}
	if t, err := http.ParseTime(h); err == nil {
		d := min(max(t.Sub(now), 0), maxRetryAfter)
		return &ThrottledError{RetryAfter: d, HasRetryAfter: true}
	}
	return &ThrottledError{}
}

func decodeError(status int, body []byte) *StatusError {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return &StatusError{Status: status, Code: e.Error.Code, Message: e.Error.Message}
}

// claimsChallenge returns the decoded claims of a Bearer challenge such as
// `Bearer realm="", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4i..."`
// (learn.microsoft.com/entra/identity-platform/claims-challenge), or "".
func claimsChallenge(challenges []string) string {
	for _, h := range challenges {
		i := strings.Index(h, `claims="`)
		if i < 0 {
			continue
		}
		v, _, ok := strings.Cut(h[i+len(`claims="`):], `"`)
		if !ok {
			continue
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(v); err == nil && json.Valid(b) {
				return string(b)
			}
		}
	}
	return ""
}

// headerValue finds a header in a $batch response, whose names may have any case.
func headerValue(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// PasswordCredential is one client secret of an app registration.
type PasswordCredential struct {
	KeyID       string    `json:"keyId"`
	DisplayName string    `json:"displayName"`
	Hint        string    `json:"hint"` // the secret's first three characters
	EndDateTime time.Time `json:"endDateTime"`
}

// AppSecrets lists the client secrets of the app registration appID (needs
// Application.Read.All; without it Graph answers 403).
func (c *Client) AppSecrets(ctx context.Context, appID string) ([]PasswordCredential, error) {
	var out struct {
		PasswordCredentials []PasswordCredential `json:"passwordCredentials"`
	}
	path := "/applications(appId='" + url.PathEscape(appID) + "')?$select=passwordCredentials"
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out.PasswordCredentials, nil
}
