package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
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
