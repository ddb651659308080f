package sip

import (
	"context"
	"fmt"
	"strings"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Ping sends OPTIONS to [SIP] Server (through the outbound proxy, if set) and
// returns the final status. Any final answer proves the network path; a 401/407
// is answered with the credentials so that a wrong password shows as such.
func (p *Publisher) Ping(ctx context.Context) (int, error) {
	var u sip.Uri
	if err := sip.ParseUri("sip:"+p.o.Server, &u); err != nil {
		return 0, fmt.Errorf("[SIP] Server %q: %w", p.o.Server, err)
	}
	build := func() *sip.Request {
		req := sip.NewRequest(sip.OPTIONS, u)
		req.SetTransport(strings.ToUpper(p.o.Transport))
		req.SetDestination(p.dest)
		if p.route != "" {
			req.AppendHeader(sip.NewHeader("Route", p.route))
		}
		return req
	}
	req := build()
	res, err := p.do(ctx, req)
	if err != nil {
		return 0, err
	}
	for try := 0; try < 2 && p.o.Username != "" && (res.StatusCode == 401 || res.StatusCode == 407); try++ {
		res, err = p.client.DoDigestAuth(ctx, req, res, sipgoDigest(p.o.Username, p.o.Password.Reveal()))
		if err != nil {
			return 0, p.unreachable(err)
		}
	}
	return res.StatusCode, nil
}

func sipgoDigest(user, password string) sipgo.DigestAuth {
	return sipgo.DigestAuth{Username: user, Password: password}
}
