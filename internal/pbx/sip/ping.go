package sip

import (
	"context"
	"fmt"

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
	req := p.conn.Request(sip.OPTIONS, u)
	res, err := p.conn.Do(ctx, req)
	if err != nil {
		return 0, err
	}
	for try := 0; try < 2 && p.o.Username != "" && (res.StatusCode == 401 || res.StatusCode == 407); try++ {
		res, err = p.conn.client.DoDigestAuth(ctx, req, res, sipgoDigest(p.o.Username, p.o.Password.Reveal()))
		if err != nil {
			return 0, p.conn.unreachable(req.Method, err)
		}
	}
	return res.StatusCode, nil
}

func sipgoDigest(user, password string) sipgo.DigestAuth {
	return sipgo.DigestAuth{Username: user, Password: password}
}
