package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxFilterValues: a $filter "in" takes at most 15 values (Graph answers 16
// with 400 Request_UnsupportedQuery "Too many child clauses specified in
// search filter expression containing 'OR' operators: 16. Max allowed: 15.").
const MaxFilterValues = 15

// MaxLookup is the most values one FindByUPN or FindByMail takes: 15 values a
// filter, 20 filters a $batch.
const MaxLookup = MaxBatch * MaxFilterValues

// Entra's limits on what can be a UPN or a mail address at all: a UPN has at
// most 113 characters, 64 before the "@" and 48 after (Entra "Password
// policies and account restrictions"); an address at most 254 (RFC 5321's
// path of 256 less its brackets).
const (
	maxUPNLen  = 113
	maxMailLen = 254
)

// userSelect is the $select of every lookup: what User holds.
const userSelect = "$select=id,userPrincipalName,mail,displayName"

// Lookup is the answer to one lookup $batch.
type Lookup struct {
	// Found is keyed by the value asked, lower case (a UPN of the users file),
	// also when found by mail.
	Found map[string]User
	// Missing lists the values asked and not found by this kind of lookup
	// (lower case, in the order asked), and those that cannot be a UPN or an
	// address at all (not sent).
	Missing []string
	// Retry lists the values whose request Graph throttled (429) or failed
	// transiently (5xx, or no answer for it in the batch): ask again later.
	Retry []string
	// RetryAfter is the longest Retry-After among the throttled requests (0:
	// none given).
	RetryAfter time.Duration
	// Ambiguous lists the values more than one user answered (two users with
	// one mail): none of them is taken, and the value is in Missing too. The
	// caller logs them: a users file line that needs a unique address.
	Ambiguous []string
}

// ItemError is a request of a lookup $batch that Graph answered neither with
// users, nor not found, throttled or a transient failure: a 403 (a permission
// missing), or a 400 to a filter. It fails the whole call; Values are what
// the request asked, so a caller can look them up another way (LookupUPNs
// takes a 400 as not found, one UPN at a time).
type ItemError struct {
	Property string   // userPrincipalName or mail
	Values   []string // lower case
	Err      *StatusError
}

func (e *ItemError) Error() string {
	more := ""
	if len(e.Values) > 1 {
		more = fmt.Sprintf(" (and %d more in its request)", len(e.Values)-1)
	}
	return fmt.Sprintf("lookup of %s %s%s: %v", e.Property, e.Values[0], more, e.Err)
}

func (e *ItemError) Unwrap() error { return e.Err }

// FindByUPN looks up to MaxLookup UPNs in one $batch of
// `/users?$filter=userPrincipalName in (...)&$select=id,userPrincipalName,mail,displayName`,
// MaxFilterValues values a request. A 429 for the $batch itself is a
// *ThrottledError; a request Graph answered otherwise than found, missing,
// throttled or transient an *ItemError.
func (c *Client) FindByUPN(ctx context.Context, upns []string) (Lookup, error) {
	return c.find(ctx, "userPrincipalName", upns)
}

// FindByMail is FindByUPN on the mail property (guests, and users whose UPN is
// not their address). Found is keyed by the address asked.
func (c *Client) FindByMail(ctx context.Context, addrs []string) (Lookup, error) {
	return c.find(ctx, "mail", addrs)
}

// LookupUPNs is the per-UPN lookup, GET /users/{upn} (up to MaxBatch a
// $batch), with the same Lookup answer: 404 and 400 are Missing, 429 and 5xx
// Retry.
func (c *Client) LookupUPNs(ctx context.Context, upns []string) (Lookup, error) {
	if len(upns) > MaxBatch {
		return Lookup{}, fmt.Errorf("lookup: %d UPNs in one batch, Graph allows %d", len(upns), MaxBatch)
	}
	plan := planLookup("", upns, 1)
	return c.runLookup(ctx, plan)
}

func (c *Client) find(ctx context.Context, prop string, values []string) (Lookup, error) {
	if len(values) > MaxLookup {
		return Lookup{}, fmt.Errorf("lookup by %s: %d values in one batch, Graph allows %d (%d a filter, %d filters a $batch)",
			prop, len(values), MaxLookup, MaxFilterValues, MaxBatch)
	}
	return c.runLookup(ctx, planLookup(prop, values, MaxFilterValues))
}

func (c *Client) runLookup(ctx context.Context, plan *lookupPlan) (Lookup, error) {
	if len(plan.items) == 0 {
		return plan.read(&batchReply{})
	}
	var reply batchReply
	if err := c.post(ctx, "/$batch", plan.body(), &reply); err != nil {
		return Lookup{}, err
	}
	return plan.read(&reply)
}

// lookupPlan is one lookup $batch: which values each request asks.
type lookupPlan struct {
	prop   string   // userPrincipalName or mail for $filter requests; "" for GET /users/{upn}
	values []string // lower case, each once, in the order asked
	// item is, per value, the request asking it; -1 for a value that cannot
	// be a UPN or an address (not sent, Missing).
	item  []int
	items [][]int // per request, its values (indexes into values)
}

// planLookup spreads values over requests of at most per values each,
// dropping repeats (ignoring case) and keeping back what cannot be asked.
func planLookup(prop string, values []string, per int) *lookupPlan {
	p := &lookupPlan{prop: prop}
	seen := make(map[string]bool, len(values))
	for _, v := range values {
		v = strings.ToLower(v)
		if seen[v] {
			continue
		}
		seen[v] = true
		i := len(p.values)
		p.values = append(p.values, v)
		if !askable(prop, v) {
			p.item = append(p.item, -1)
			continue
		}
		if n := len(p.items); n == 0 || len(p.items[n-1]) == per {
			p.items = append(p.items, nil)
		}
		n := len(p.items) - 1
		p.items[n] = append(p.items[n], i)
		p.item = append(p.item, n)
	}
	return p
}

// askable reports whether v can be a UPN (prop "" or userPrincipalName) or a
// mail address at all: something before and after an "@", no spaces or
// control characters, within Entra's length. Anything else is Missing
// without asking Graph, which would refuse the request it is in.
func askable(prop, v string) bool {
	limit := maxUPNLen
	if prop == "mail" {
		limit = maxMailLen
	}
	at := strings.LastIndexByte(v, '@')
	if len(v) > limit || at <= 0 || at == len(v)-1 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] == 0x7f {
			return false
		}
	}
	return true
}

// odataString quotes v as an OData string literal: a quote inside is doubled.
func odataString(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// queryEscape escapes a query value with spaces as %20 (url.QueryEscape
// writes "+", which a server may read as a plus sign).
func queryEscape(v string) string {
	return strings.ReplaceAll(url.QueryEscape(v), "+", "%20")
}

// itemURL is the relative URL of request i.
func (p *lookupPlan) itemURL(i int) string {
	vals := p.items[i]
	if p.prop == "" {
		return "/users/" + url.PathEscape(p.values[vals[0]]) + "?" + userSelect
	}
	var f strings.Builder
	f.WriteString(p.prop)
	f.WriteString(" in (")
	for k, v := range vals {
		if k > 0 {
			f.WriteByte(',')
		}
		f.WriteString(odataString(p.values[v]))
	}
	f.WriteByte(')')
	return "/users?$filter=" + queryEscape(f.String()) + "&" + userSelect
}

// batchRequestBody is the JSON body of a $batch of GET requests (graph/json-batching).
type batchRequestBody struct {
	Requests []batchRequestItem `json:"requests"`
}

type batchRequestItem struct {
	ID     string `json:"id"`
	Method string `json:"method"`
	URL    string `json:"url"`
}

func (p *lookupPlan) body() batchRequestBody {
	b := batchRequestBody{Requests: make([]batchRequestItem, len(p.items))}
	for i := range p.items {
		b.Requests[i] = batchRequestItem{ID: strconv.Itoa(i), Method: http.MethodGet, URL: p.itemURL(i)}
	}
	return b
}

// Where a value stands while a reply is read.
const (
	valPending = iota // its request got no answer (yet)
	valFound
	valMissing
	valRetry
	valAmbiguous
)

// read sorts the values by the answers to their requests. A request answered
// twice counts by its first answer; a request not answered is Retry.
func (p *lookupPlan) read(reply *batchReply) (Lookup, error) {
	out := Lookup{Found: map[string]User{}}
	state := make([]uint8, len(p.values))
	users := make([]User, len(p.values))
	answered := make([]bool, len(p.items))
	for _, r := range reply.Responses {
		i, err := strconv.Atoi(r.ID)
		if err != nil || i < 0 || i >= len(p.items) || answered[i] {
			continue
		}
		answered[i] = true
		vals := p.items[i]
		set := func(s uint8) {
			for _, v := range vals {
				state[v] = s
			}
		}
		switch {
		case r.Status == http.StatusOK:
			if err := p.readUsers(vals, r.Body, state, users); err != nil {
				return Lookup{}, err
			}
		case p.prop == "" && (r.Status == http.StatusNotFound || r.Status == http.StatusBadRequest):
			// 400: Graph cannot take this UPN at all (not a valid identifier);
			// for the users file it is as unknown as a 404.
			set(valMissing)
		case r.Status == http.StatusTooManyRequests:
			set(valRetry)
			if te := throttled(headerValue(r.Headers, "Retry-After"), time.Now()); te.RetryAfter > out.RetryAfter {
				out.RetryAfter = te.RetryAfter
			}
		case r.Status >= 500 && r.Status <= 599:
			set(valRetry)
		default:
			prop := p.prop
			if prop == "" {
				prop = "userPrincipalName"
			}
			e := &ItemError{Property: prop, Err: decodeError(r.Status, r.Body)}
			for _, v := range vals {
				e.Values = append(e.Values, p.values[v])
			}
			return Lookup{}, e
		}
	}
	for v, val := range p.values {
		switch {
		case p.item[v] < 0:
			out.Missing = append(out.Missing, val)
		case state[v] == valFound:
			out.Found[val] = users[v]
		case state[v] == valMissing:
			out.Missing = append(out.Missing, val)
		case state[v] == valAmbiguous:
			out.Missing = append(out.Missing, val)
			out.Ambiguous = append(out.Ambiguous, val)
		default: // valRetry, or valPending: no answer for its request
			out.Retry = append(out.Retry, val)
		}
	}
	return out, nil
}

// usersPage is the body of an answer to a $filter request. (Graph pages
// users at 100; 15 values never fill a page unless 100 users share their
// mails, so @odata.nextLink is not followed.)
type usersPage struct {
	Value []User `json:"value"`
}

// readUsers reads a 200's body for the values vals of one request: the user
// (GET /users/{upn}) or the users whose property is one of them ($filter).
func (p *lookupPlan) readUsers(vals []int, body json.RawMessage, state []uint8, users []User) error {
	where := func() string {
		return fmt.Sprintf("lookup of %s", p.values[vals[0]])
	}
	if p.prop == "" {
		var u User
		if err := json.Unmarshal(body, &u); err != nil {
			return fmt.Errorf("%s: %w", where(), err)
		}
		if u.ID == "" {
			// Taken as resolved, "" would go into every presence request of
			// its chunk, and Graph refuses the whole request for it.
			return fmt.Errorf("%s: Graph answered 200 without the user's id", where())
		}
		state[vals[0]], users[vals[0]] = valFound, u
		return nil
	}
	var page usersPage
	if err := json.Unmarshal(body, &page); err != nil {
		return fmt.Errorf("%s (and the others in its request): %w", where(), err)
	}
	for _, v := range vals {
		state[v] = valMissing
	}
	for _, u := range page.Value {
		key := u.UPN
		if p.prop == "mail" {
			key = u.Mail
		}
		key = strings.ToLower(key)
		for _, v := range vals {
			if p.values[v] != key {
				continue
			}
			if u.ID == "" {
				return fmt.Errorf("lookup of %s: Graph answered a user without its id", p.values[v])
			}
			switch state[v] {
			case valMissing:
				state[v], users[v] = valFound, u
			case valFound:
				if users[v].ID != u.ID { // the same user listed twice is one
					state[v] = valAmbiguous
				}
			}
		}
	}
	return nil
}
