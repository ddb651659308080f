package graph

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// fullPresenceReply is a 650-user getPresencesByUserId reply as Graph sends it
// (the fields presencebridge does not read included).
func fullPresenceReply() []byte {
	var b bytes.Buffer
	b.WriteString(`{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.presence)","value":[`)
	for i := range MaxPresenceIDs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"%08d-eca7-46b7-bad1-db199b62afc3","availability":"Busy","activity":"InAMeeting","statusMessage":null,`+
			`"outOfOfficeSettings":{"message":null,"isOutOfOffice":false},"sequenceNumber":"C2D2C58A6D58D4DB","workLocation":null}`, i)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// BenchmarkPresenceReply650 measures reading one full getPresencesByUserId
// reply (650 users) into Presences: the client's share of every poll request
// (200,000 users polled every 2 s are about 150 such replies a second).
func BenchmarkPresenceReply650(b *testing.B) {
	body := fullPresenceReply()
	rd := bytes.NewReader(body)
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rd.Reset(body)
		resp.Body = io.NopCloser(rd)
		var reply presenceReply
		if err := readReply(http.MethodPost, presencePath, resp, &reply); err != nil {
			b.Fatal(err)
		}
		if ps := reply.presences(); len(ps) != MaxPresenceIDs {
			b.Fatalf("%d presences", len(ps))
		}
	}
}
