package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

// The fuzz targets feed Graph's answers (status, Retry-After, body) to readReply
// and the reply readers, the code the client runs on every answer. `make test`
// runs their seeds; `make fuzz` explores from them.

const presencePath = "/communications/getPresencesByUserId"

// A reply as Graph sends it (getPresencesByUserId page, 2025-12), with the newer
// fields presencebridge does not read.
const presenceReplyDoc = `{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.presence)",
"value":[{"id":"fa8bf3dc-eca7-46b7-bad1-db199b62afc3","availability":"Busy","activity":"InAMeeting","statusMessage":null,
"outOfOfficeSettings":{"message":null,"isOutOfOffice":false},"sequenceNumber":"C2D2C58A6D58D4DB","workLocation":null},
{"id":"66825e03-7ef5-42da-9069-724602c31f6b","availability":"Away","activity":"Away",
"statusMessage":{"message":{"content":"Back at 2 <b>pm</b>","contentType":"html"},"expiryDateTime":null},
"outOfOfficeSettings":{"message":"On leave","isOutOfOffice":true}}]}`

// utf16LE encodes s as Notepad's "Unicode" (with BOM): a reply or file some tool
// re-saved.
func utf16LE(s string) []byte {
	b := []byte{0xFF, 0xFE}
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

// hugePresenceReply is a full 650-user reply whose status messages make it ~7 MB.
func hugePresenceReply() []byte {
	var b bytes.Buffer
	b.WriteString(`{"value":[`)
	note := strings.Repeat("Out of office until Monday; for urgent matters call the front desk. ", 160)
	for i := range MaxPresenceIDs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"%08d-0000-4000-8000-000000000000","availability":"Available","activity":"Available","statusMessage":{"message":{"content":%q}}}`, i, note)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func presenceSeeds(f *testing.F) {
	type seed struct {
		status     int
		retryAfter string
		body       []byte
	}
	seeds := []seed{
		{200, "", []byte(presenceReplyDoc)},
		{200, "", []byte(`{"value":[{"id":"a","availability":"busy","activity":"inACall"},{"id":"b","availability":"Focusing","activity":"focusing"}]}`)},
		{200, "", []byte(`{"value":[]}`)},
		{200, "", []byte(`{}`)},
		{200, "", []byte(`{"value":null}`)},
		{200, "", []byte(presenceReplyDoc[:len(presenceReplyDoc)/2])}, // truncated
		{200, "", []byte(`{"value":[{"id":"a","availability":NaN,"activity":"Away"}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","outOfOfficeSettings":{"isOutOfOffice":NaN}}]}`)},
		{200, "", []byte(`{"value":{"id":"a"}}`)},                              // wrong type
		{200, "", []byte(`{"value":[{"id":12,"availability":"Busy"}]}`)},       // wrong type
		{200, "", []byte(`{"value":[{"id":"a","outOfOfficeSettings":true}]}`)}, // wrong type
		{200, "", []byte(`{"value":[{"id":"a","outOfOfficeSettings":{"isOutOfOffice":"false"}}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","availability":"Busy\u0000","activity":"\ud800"}]}`)},
		{200, "", []byte("\xef\xbb\xbf" + `{"value":[]}`)}, // a BOM before the JSON
		{200, "", utf16LE(`{"value":[]}`)},
		{200, "", []byte(`{"value":[]} trailing garbage`)},
		{200, "", []byte("")},
		{200, "", hugePresenceReply()},
		// The fast path's edges: what it must read as encoding/json does, or leave to it.
		{200, "", []byte(`{"value":[{"id":"a","sequenceNumber":"0000000000000001","id":"b","sequenceNumber":null}]}`)},
		{200, "", []byte(`{"value":[{"ID":"a","Availability":"Busy","SEQUENCENUMBER":"1","outofofficesettings":{"isoutofoffice":true}}]}`)},
		{200, "", []byte(`{"value":[{"id":"\u0061","availability":"Bu\"sy","activity":"\/"}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","outOfOfficeSettings":{"isOutOfOffice":true},"outOfOfficeSettings":{}},` +
			`{"id":"b","outOfOfficeSettings":{"isOutOfOffice":true},"outOfOfficeSettings":null},` +
			`{"id":"c","outOfOfficeSettings":{"isOutOfOffice":true,"isOutOfOffice":null,"message":{"a":[1,-0.5e+3,0,"x"]}}}]}`)},
		{200, "", []byte(`{"value":[{"id":"a"}],"value":[{"availability":"Busy"}]}`)},
		{200, "", []byte(`{"value":[null,{"id":"a"}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","workLocation":{"n":01}}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","workLocation":[1.]}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","workLocation":"\x"}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","workLocation":"\u00e"}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","workLocation":[-]}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","workLocation":[1e]}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","workLocation":tru}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","ſequenceNumber":"1","İd":"x"}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","availability":"Beschäftigt","statusMessage":"ÿþ"}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","sequenceNumber":12}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","outOfOfficeSettings":{"isOutOfOffice":1}}]}`)},
		{200, "", []byte(`{"value":[{"id":"a","x":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}]}`)},
		{200, "", []byte(` {"value":[{"id":"a"}]}{"value":[]} trailing`)},
		{200, "", []byte("{\n\t\"value\" :\r\n[ {\"id\" : \"a\" , \"activity\":\"Away\" } ] }")},
		{200, "", []byte(`{"value":[{"id":"a",}]}`)},
		{200, "", []byte(`{"value":[{"id":"a"},]}`)},
		{200, "", []byte(`{"value":[{"id":"a"}`)},
		{204, "", nil},
		{400, "", []byte(`{"error":{"code":"BadRequest","message":"The number of ids exceeds the limit of 650."}}`)},
		{401, "", []byte(`{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired or is not yet valid."}}`)},
		{403, "", []byte(`{"error":{"code":"Forbidden","message":"Insufficient privileges to complete the operation."}}`)},
		{429, "7", []byte(`{"error":{"code":"TooManyRequests","message":"Too many requests"}}`)},
		{429, "Sun, 22 Nov 2026 09:00:30 GMT", nil},
		{429, "", nil},
		{429, "-1", nil},
		{429, "NaN", nil},
		{429, "1e3", nil},
		{429, "99999999999999999999", nil},
		{429, "9999999999", nil},
		{429, "Fri, 31 Dec 9999 23:59:59 GMT", nil},
		{500, "", []byte("<html><body>Internal Server Error</body></html>")},
		{503, "30", []byte(`{"error":{"code":"ServiceNotAvailable","message":"Service unavailable`)},
		{504, "", nil},
		{302, "", nil},
	}
	for _, s := range seeds {
		f.Add(s.status, s.retryAfter, s.body)
	}
}

// answer builds the response readReply reads. status is folded into 100..599.
func answer(status int, retryAfter string, body []byte) (*http.Response, int) {
	if status < 100 || status > 599 {
		status = 100 + int(uint(status)%500)
	}
	h := http.Header{}
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(bytes.NewReader(body))}, status
}

// checkThrottled: a 429 waits a sane time, exactly Retry-After when that is a
// number of seconds within the cap.
func checkThrottled(t *testing.T, te *ThrottledError, retryAfter string) {
	t.Helper()
	if te.RetryAfter < 0 || te.RetryAfter > maxRetryAfter {
		t.Fatalf("Retry-After %q gave a wait of %v; want 0 to %v", retryAfter, te.RetryAfter, maxRetryAfter)
	}
	if te.RetryAfter > 0 && !te.HasRetryAfter {
		t.Fatalf("Retry-After %q: a wait of %v without HasRetryAfter", retryAfter, te.RetryAfter)
	}
	if n, err := strconv.ParseUint(strings.TrimSpace(retryAfter), 10, 63); err == nil && n <= uint64(maxRetryAfter.Seconds()) {
		if !te.HasRetryAfter || te.RetryAfter.Seconds() != float64(n) {
			t.Fatalf("Retry-After %q gave %+v; want %d s", retryAfter, te, n)
		}
	}
}

// checkReplyErr checks an error of readReply for the request named req
// ("POST /path"): a 429 is a *ThrottledError; any other error names the request,
// and for a non-2xx answer carries its status.
func checkReplyErr(t *testing.T, err error, status int, retryAfter, req string) {
	t.Helper()
	var te *ThrottledError
	switch {
	case status == http.StatusTooManyRequests:
		if !errors.As(err, &te) {
			t.Fatalf("429 gave %v; want a *ThrottledError", err)
		}
		checkThrottled(t, te, retryAfter)
	case err == nil:
		if status/100 != 2 {
			t.Fatalf("status %d gave no error", status)
		}
	case !strings.HasPrefix(err.Error(), req+": "):
		t.Fatalf("error %q does not name the request %s", err, req)
	case status/100 == 2:
		if !strings.HasPrefix(err.Error(), req+": decode reply: ") {
			t.Fatalf("error %q for a %d answer is not a decode error", err, status)
		}
	default:
		var se *StatusError
		if !errors.As(err, &se) || se.Status != status {
			t.Fatalf("status %d gave %v; want a *StatusError with that status", status, err)
		}
	}
}

// FuzzPresenceReply: Graph's answer to getPresencesByUserId as the poller gets it.
// What the client reads (its fast path or encoding/json) is what encoding/json
// alone reads from the same bytes; a good reply written back in Graph's form
// reads back the same.
func FuzzPresenceReply(f *testing.F) {
	presenceSeeds(f)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		resp, status := answer(status, retryAfter, body)
		var reply presenceReply
		err := readReply(http.MethodPost, presencePath, resp, &reply)
		checkReplyErr(t, err, status, retryAfter, "POST "+presencePath)
		if err != nil {
			return
		}
		got := reply.presences()
		var slow presenceReply
		if err := json.NewDecoder(io.LimitReader(bytes.NewReader(body), maxReply)).Decode(&slow); err != nil {
			t.Fatalf("read %d presences (fast path: %v), but encoding/json refuses the reply: %v", len(got), reply.isFast, err)
		}
		if want := slow.presences(); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("the fast path read other presences than encoding/json:\n fast %+v\n json %+v", got, want)
		}
		again, err := json.Marshal(wireOf(got))
		if err != nil {
			t.Fatal(err)
		}
		var back presenceReply
		if err := readReply(http.MethodPost, presencePath, &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(again))}, &back); err != nil {
			t.Fatalf("a reply written back does not read: %v\n%s", err, again)
		}
		if b := back.presences(); !reflect.DeepEqual(b, got) && !(len(b) == 0 && len(got) == 0) {
			t.Fatalf("round trip changed the presences:\n got  %+v\n back %+v", got, b)
		}
	})
}

// wireOf writes presences as Graph does.
func wireOf(ps []Presence) presenceReply {
	r := presenceReply{Value: make([]wirePresence, len(ps))}
	for i, p := range ps {
		r.Value[i] = wirePresence{ID: p.ID, Availability: p.Availability, Activity: p.Activity, SequenceNumber: p.SequenceNumber}
		r.Value[i].OutOfOfficeSettings = &struct {
			IsOutOfOffice bool `json:"isOutOfOffice"`
		}{p.OutOfOffice}
	}
	return r
}

// batchUPNs are the 20 UPNs of one $batch; the fuzzer picks the fourth.
func batchUPNs(upn string) []string {
	upns := make([]string, MaxBatch)
	for i := range upns {
		upns[i] = fmt.Sprintf("User%02d@Contoso.example", i)
	}
	upns[3] = upn
	return upns
}

func batchSeeds(f *testing.F) {
	long := strings.Repeat("a", 40_000) + "@contoso.example" // a field trial's pasted cell
	ok := `{"id":"%d","status":200,"headers":{"Content-Type":"application/json;odata.metadata=minimal"},` +
		`"body":{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users(id,userPrincipalName,mail,displayName)/$entity",` +
		`"id":"5e7d0b1c-%04d-4e55-9c1a-3b1a7f0e2c11","userPrincipalName":"user%02d@contoso.example","mail":"user%02d@contoso.example","displayName":"User %d"}}`
	var good []string
	for i := range MaxBatch {
		good = append(good, fmt.Sprintf(ok, i, i, i, i, i))
	}
	full := `{"responses":[` + strings.Join(good, ",") + `]}`
	notFound := `{"id":"3","status":404,"headers":{"Content-Type":"application/json"},"body":{"error":{"code":"Request_ResourceNotFound","message":"Resource 'nobody@contoso.example' does not exist or one of its queried reference-property objects are not present.","innerError":{"date":"2026-11-23T08:00:00","request-id":"0d0a4f3c-9f4f-4f1e-9a8c-2b5c1f7e6d5a"}}}}`
	type seed struct {
		status     int
		retryAfter string
		body       string
		upn        string
	}
	seeds := []seed{
		{200, "", full, "user03@contoso.example"},
		{200, "", `{"responses":[` + good[0] + `,` + notFound + `]}`, "nobody@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":400,"body":{"error":{"code":"Request_BadRequest","message":"The request URI is too long."}}}]}`, long},
		{200, "", `{"responses":[{"id":"3","status":414,"body":""}]}`, long},
		{200, "", `{"responses":[{"id":"3","status":429,"headers":{"Retry-After":"10"},"body":{"error":{"code":"TooManyRequests"}}}]}`, "anna@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":429,"headers":{"retry-after":"99999999999999"}}]}`, "anna@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":200,"body":null}]}`, "anna@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":200,"body":{}}]}`, "anna@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":200}]}`, "anna@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":200,"body":"eyJpZCI6IjEifQ=="}]}`, "anna@contoso.example"}, // base64 body
		{200, "", `{"responses":[{"id":"25","status":200,"body":{"id":"x"}},{"id":"-1","status":404},{"id":"abc","status":404}]}`, "anna@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":NaN}]}`, "anna@contoso.example"},
		{200, "", `{"responses":[{"id":3,"status":"200"}]}`, "anna@contoso.example"}, // wrong types
		{200, "", `{"responses":{"id":"3"}}`, "anna@contoso.example"},
		{200, "", full[:len(full)*2/3], "user03@contoso.example"}, // truncated
		{200, "", `{"responses":[{"id":"3","status":200,"body":{"id":"1"}},{"id":"3","status":404}]}`, "ANNA@Contoso.Example"},
		{200, "", `{"responses":[]}`, "user00@contoso.example"},
		{400, "", `{"error":{"code":"BadRequest","message":"Invalid batch payload format."}}`, "anna@contoso.example"},
		{429, "3", ``, "anna@contoso.example"},
		{503, "", `upstream connect error`, "anna@contoso.example"},
	}
	for _, s := range seeds {
		f.Add(s.status, s.retryAfter, []byte(s.body), s.upn)
	}
}

// FuzzBatchReply: Graph's answer to a $batch of 20 user lookups, as the poller gets
// it. Every user found has an id and is one that was asked for; an error names
// the request or the user it is about; a result written back as a $batch reply
// reads back the same.
func FuzzBatchReply(f *testing.F) {
	batchSeeds(f)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte, upn string) {
		upns := batchUPNs(upn)
		resp, status := answer(status, retryAfter, body)
		var reply batchReply
		err := readReply(http.MethodPost, "/$batch", resp, &reply)
		checkReplyErr(t, err, status, retryAfter, "POST /$batch")
		if err != nil {
			return
		}
		found, notFound, err := reply.users(upns)
		asked := map[string]int{}
		for i, u := range upns {
			asked[strings.ToLower(u)] = i
		}
		if err != nil {
			var te *ThrottledError
			if errors.As(err, &te) {
				checkThrottled(t, te, headerOf(reply, "Retry-After"))
				return
			}
			named := false
			for u := range asked {
				named = named || strings.HasPrefix(err.Error(), "resolve "+u+": ")
			}
			if !named {
				t.Fatalf("error %.200q names none of the users asked for", err)
			}
			return
		}
		for u, usr := range found {
			if _, ok := asked[u]; !ok {
				t.Fatalf("found %q, which was not asked for", u)
			}
			if usr.ID == "" {
				t.Fatalf("found %q without an object id: %+v", u, usr)
			}
		}
		for _, u := range notFound {
			if _, ok := asked[u]; !ok {
				t.Fatalf("%q not found, but it was not asked for", u)
			}
		}
		// Round trip: the result as a well-formed $batch reply reads back the same.
		var back bytes.Buffer
		back.WriteString(`{"responses":[`)
		n := 0
		item := func(i int, status int, body any) {
			if n > 0 {
				back.WriteByte(',')
			}
			n++
			b, _ := json.Marshal(map[string]any{"id": strconv.Itoa(i), "status": status, "body": body})
			back.Write(b)
		}
		gone := map[string]bool{}
		for _, u := range notFound {
			gone[u] = true
		}
		for u, usr := range found {
			if !gone[u] {
				item(asked[u], 200, usr)
			}
		}
		for u := range gone {
			item(asked[u], 404, map[string]any{"error": map[string]string{"code": "Request_ResourceNotFound"}})
		}
		back.WriteString(`]}`)
		var r2 batchReply
		if err := readReply(http.MethodPost, "/$batch", &http.Response{StatusCode: 200, Body: io.NopCloser(&back)}, &r2); err != nil {
			t.Fatal(err)
		}
		found2, notFound2, err := r2.users(upns)
		if err != nil {
			t.Fatal(err)
		}
		for u := range gone {
			delete(found, u)
		}
		if !reflect.DeepEqual(found, found2) || len(notFound2) != len(gone) {
			t.Fatalf("round trip: found %v / %v, not found %v / %v", found, found2, notFound, notFound2)
		}
	})
}

// headerOf is the Retry-After of the first 429 item of a $batch reply, as
// users reads it; "" when that item spells the header more than one way (which
// one users takes is then not defined).
func headerOf(r batchReply, name string) string {
	for _, x := range r.Responses {
		if i, err := strconv.Atoi(x.ID); err == nil && i >= 0 && i < MaxBatch && x.Status == http.StatusTooManyRequests {
			n := 0
			for k := range x.Headers {
				if strings.EqualFold(k, name) {
					n++
				}
			}
			if n != 1 {
				return ""
			}
			return headerValue(x.Headers, name)
		}
	}
	return ""
}

// lookupModes are the lookups FuzzLookupReply reads replies of, by the
// fuzzer's mode byte: filters by UPN or by mail (15 values a request), or one
// GET /users/{upn} a request.
var lookupModes = [...]struct {
	prop string
	per  int
}{{"userPrincipalName", MaxFilterValues}, {"mail", MaxFilterValues}, {"", 1}}

// lookupValues are the values of one lookup: 40 (three filters, or 20 GETs
// and 20 left), the fuzzer's value the fourth.
func lookupValues(v string) []string {
	vs := make([]string, 40)
	for i := range vs {
		vs[i] = fmt.Sprintf("User%02d@Contoso.example", i)
	}
	vs[3] = v
	return vs
}

func lookupSeeds(f *testing.F) {
	user := func(i int, id string) string {
		return fmt.Sprintf(`{"id":%q,"userPrincipalName":"user%02d@contoso.example","mail":"User%02d@Contoso.example","displayName":"User %d"}`, id, i, i, i)
	}
	var page []string
	for i := range MaxFilterValues {
		page = append(page, user(i, fmt.Sprintf("5e7d0b1c-%04d-4e55-9c1a-3b1a7f0e2c11", i)))
	}
	full := `{"id":"0","status":200,"body":{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users(id,userPrincipalName,mail,displayName)","value":[` +
		strings.Join(page, ",") + `]}}`
	type seed struct {
		status     int
		retryAfter string
		body       string
		mode       byte
		value      string
	}
	seeds := []seed{
		{200, "", `{"responses":[` + full + `,{"id":"1","status":200,"body":{"value":[]}},{"id":"2","status":429,"headers":{"Retry-After":"7"},"body":{"error":{"code":"TooManyRequests"}}}]}`, 0, "user03@contoso.example"},
		{200, "", `{"responses":[` + full + `]}`, 1, "USER03@contoso.example"},
		{200, "", `{"responses":[{"id":"0","status":200,"body":{"value":[` + user(3, "a") + `,` + user(3, "b") + `,` + user(3, "a") + `]}}]}`, 1, "user03@contoso.example"},
		{200, "", `{"responses":[{"id":"0","status":200,"body":{"value":[{"id":"x","mail":null,"userPrincipalName":null}]}}]}`, 1, "user03@contoso.example"},
		{200, "", `{"responses":[{"id":"0","status":200,"body":{"value":[{"userPrincipalName":"user03@contoso.example"}]}}]}`, 0, "user03@contoso.example"},
		{200, "", `{"responses":[{"id":"0","status":200,"body":{"value":{}}}]}`, 0, "user03@contoso.example"},
		{200, "", `{"responses":[{"id":"0","status":200,"body":null}]}`, 0, "user03@contoso.example"},
		{200, "", `{"responses":[{"id":"0","status":400,"body":{"error":{"code":"Request_UnsupportedQuery","message":"Too many child clauses specified in search filter expression containing 'OR' operators: 16. Max allowed: 15."}}}]}`, 0, "o'brien@contoso.example"},
		{200, "", `{"responses":[{"id":"0","status":403,"body":{"error":{"code":"Authorization_RequestDenied"}}}]}`, 1, "ann@fabrikam.example"},
		{200, "", `{"responses":[{"id":"0","status":503},{"id":"0","status":200,"body":{"value":[]}},{"id":"9","status":200},{"id":"-1","status":404}]}`, 0, "a@b"},
		{200, "", `{"responses":[{"id":"3","status":404,"body":{"error":{"code":"Request_ResourceNotFound"}}},{"id":"4","status":400},{"id":"5","status":429,"headers":{"retry-after":"99999999999"}},{"id":"6","status":504}]}`, 2, "nobody@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":200,"body":{"id":"1","userPrincipalName":"someone.else@contoso.example"}}]}`, 2, "ann_fabrikam.example#EXT#@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":200,"body":{}}]}`, 2, "user03@contoso.example"},
		{200, "", `{"responses":[{"id":"3","status":0}]}`, 2, "user03@contoso.example"},
		{200, "", `{"responses":[]}`, 0, strings.Repeat("a", 200) + "@contoso.example"},
		{200, "", `{"responses":[]}`, 1, "two words@contoso.example"},
		{429, "3", ``, 0, "a@b"},
		{400, "", `{"error":{"code":"BadRequest","message":"Number of batch requests exceeds the limit of 20 (got 21)."}}`, 1, "a@b"},
		{503, "", `upstream connect error`, 2, "a@b"},
	}
	for _, s := range seeds {
		f.Add(s.status, s.retryAfter, []byte(s.body), s.mode, s.value)
	}
}

// FuzzLookupReply: Graph's answer to a lookup $batch (FindByUPN, FindByMail,
// LookupUPNs) as the poller gets it. Every value asked is found, missing or to
// be retried, once; a user found has an id and was asked for; an error is a
// 429 for the batch, or names what it is about; a result written back as
// Graph's reply reads back the same.
func FuzzLookupReply(f *testing.F) {
	lookupSeeds(f)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte, mode byte, value string) {
		m := lookupModes[int(mode)%len(lookupModes)]
		values := lookupValues(value)
		if m.per == 1 {
			values = values[:MaxBatch]
		}
		plan := planLookup(m.prop, values, m.per)
		resp, status := answer(status, retryAfter, body)
		var reply batchReply
		err := readReply(http.MethodPost, "/$batch", resp, &reply)
		checkReplyErr(t, err, status, retryAfter, "POST /$batch")
		if err != nil {
			return
		}
		got, err := plan.read(&reply)
		if err != nil {
			var ie *ItemError
			switch {
			case errors.As(err, &ie):
				if len(ie.Values) == 0 || !slices.Contains(plan.values, ie.Values[0]) || ie.Err == nil {
					t.Fatalf("ItemError %v about values %q not asked", err, ie.Values)
				}
			case !slices.ContainsFunc(plan.values, func(v string) bool { return strings.HasPrefix(err.Error(), "lookup of "+v) }):
				t.Fatalf("error %.200q names none of the values asked", err)
			}
			return
		}
		checkLookup(t, plan, got)

		// Round trip: the result as a well-formed reply reads back the same.
		back := lookupReplyOf(plan, got)
		var r2 batchReply
		if err := readReply(http.MethodPost, "/$batch", &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(back))}, &r2); err != nil {
			t.Fatalf("%v\n%s", err, back)
		}
		again, err := plan.read(&r2)
		if err != nil {
			t.Fatalf("the reply written back: %v\n%s", err, back)
		}
		if !reflect.DeepEqual(again.Found, got.Found) || !slices.Equal(again.Missing, got.Missing) || !slices.Equal(again.Retry, got.Retry) ||
			!slices.Equal(again.Ambiguous, got.Ambiguous) {
			t.Fatalf("round trip:\n got   %+v\n again %+v\n%s", got, again, back)
		}
	})
}

// checkLookup checks a Lookup against what plan asked: each value in one of
// Found, Missing and Retry; Ambiguous within Missing; users with ids.
func checkLookup(t *testing.T, plan *lookupPlan, got Lookup) {
	t.Helper()
	where := map[string]string{}
	put := func(v, what string) {
		if !slices.Contains(plan.values, v) {
			t.Fatalf("%s %q, which was not asked", what, v)
		}
		if w, dup := where[v]; dup {
			t.Fatalf("%q is %s and %s", v, w, what)
		}
		where[v] = what
	}
	for v, u := range got.Found {
		put(v, "found")
		if u.ID == "" {
			t.Fatalf("found %q without an id: %+v", v, u)
		}
	}
	for _, v := range got.Missing {
		put(v, "missing")
	}
	for _, v := range got.Retry {
		put(v, "to retry")
	}
	if len(where) != len(plan.values) {
		t.Fatalf("%d of %d values accounted for: %+v", len(where), len(plan.values), got)
	}
	for _, v := range got.Ambiguous {
		if where[v] != "missing" {
			t.Fatalf("ambiguous %q is %s, not missing", v, where[v])
		}
	}
	if got.RetryAfter < 0 || got.RetryAfter > maxRetryAfter || got.RetryAfter > 0 && len(got.Retry) == 0 {
		t.Fatalf("RetryAfter %v with %d to retry", got.RetryAfter, len(got.Retry))
	}
}

// lookupReplyOf writes a Lookup as Graph's reply to plan's $batch: found users
// (two for an ambiguous value), none for a missing value (404 for a GET),
// 429 for the requests of values to retry.
func lookupReplyOf(plan *lookupPlan, l Lookup) []byte {
	state := map[string]string{}
	for _, v := range l.Missing {
		state[v] = "missing"
	}
	for _, v := range l.Ambiguous {
		state[v] = "ambiguous"
	}
	for _, v := range l.Retry {
		state[v] = "retry"
	}
	secs := strconv.Itoa(int(l.RetryAfter / time.Second))
	var items []map[string]any
	for i, vals := range plan.items {
		item := map[string]any{"id": strconv.Itoa(i), "status": 200}
		var users []User
		for _, v := range vals {
			val := plan.values[v]
			switch state[val] {
			case "retry":
				item["status"] = 429
				item["headers"] = map[string]string{"Retry-After": secs}
			case "ambiguous":
				users = append(users, User{ID: "one", UPN: val, Mail: val}, User{ID: "two", UPN: val, Mail: val})
			case "missing":
				if plan.prop == "" {
					item["status"] = 404
				}
			default: // found: its property matches val already
				users = append(users, l.Found[val])
			}
		}
		switch {
		case item["status"] != 200:
		case plan.prop == "" && len(users) == 1:
			item["body"] = users[0]
		case plan.prop != "":
			item["body"] = map[string]any{"value": users}
		}
		items = append(items, item)
	}
	b, _ := json.Marshal(map[string]any{"responses": items})
	return b
}
