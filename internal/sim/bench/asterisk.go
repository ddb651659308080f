package bench

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/asterisk"
)

// asteriskRun is one `bench delivery` run of the Asterisk target.
type asteriskRun struct {
	name   string
	target func() (delivery.Target, func(), error)
}

// asteriskRuns are the Asterisk target over ARI and over AMI, each against a
// fake Asterisk on loopback that answers as Asterisk 22 does (ARI: 204 to
// PUT /ari/deviceStates/Stasis:<name>; AMI: the greeting, Login, then
// "Response: Success" to each Setvar, one session). The fakes answer at
// once, so the times are presencebridge's side: outbox, dispatcher and
// target (a real Asterisk adds its own time per request: BenchmarkSend in
// internal/pbx/asterisk measures that); the fakes run in this process, so the
// CPU figure includes them. The burst's users have SIP URIs only, so the
// devices are named teams-{user}.
func asteriskRuns(quiet *slog.Logger) []asteriskRun {
	return []asteriskRun{
		{"Asterisk (fake) ARI PUT deviceStates on loopback", func() (delivery.Target, func(), error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, nil, err
			}
			srv := &http.Server{Handler: http.HandlerFunc(fakeARI)}
			go srv.Serve(ln)
			s := asterisk.DefaultSettings()
			s.URL, s.Username, s.Password, s.Device = "http://"+ln.Addr().String()+"/ari", "bench", "bench-secret", "teams-{user}"
			t, err := asterisk.New(asterisk.Options{Settings: s, Logger: quiet})
			if err != nil {
				srv.Close()
				return nil, nil, err
			}
			return t, func() { srv.Close() }, nil
		}},
		{"Asterisk (fake) AMI Setvar DEVICE_STATE on one manager session on loopback", func() (delivery.Target, func(), error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, nil, err
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go fakeAMI(c)
				}
			}()
			s := asterisk.DefaultSettings()
			s.Mode, s.Address, s.Username, s.Secret, s.Device = asterisk.ModeAMI, ln.Addr().String(), "bench", "bench-secret", "teams-{user}"
			t, err := asterisk.New(asterisk.Options{Settings: s, Logger: quiet})
			if err != nil {
				ln.Close()
				return nil, nil, err
			}
			return t, func() { ln.Close() }, nil
		}},
	}
}

// fakeARI answers the deviceStates resource as Asterisk 22 does.
func fakeARI(w http.ResponseWriter, r *http.Request) {
	if user, pass, _ := r.BasicAuth(); user != "bench" || pass != "bench-secret" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/ari/deviceStates/Stasis:") {
		w.WriteHeader(http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// fakeAMI serves one manager session: the greeting, then an answer to each
// action in turn, matched by its ActionID.
func fakeAMI(c net.Conn) {
	defer c.Close()
	w := bufio.NewWriter(c)
	w.WriteString("Asterisk Call Manager/11.0.0\r\n")
	w.Flush()
	r := bufio.NewReader(c)
	fields := map[string]string{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		if line != "" {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[strings.ToLower(k)] = strings.TrimSpace(v)
			}
			continue
		}
		if len(fields) == 0 {
			continue
		}
		answer := "Response: Success\r\nActionID: " + fields["actionid"] + "\r\nMessage: Variable Set\r\n\r\n"
		if fields["action"] == "Login" && fields["secret"] != "bench-secret" {
			answer = "Response: Error\r\nActionID: " + fields["actionid"] + "\r\nMessage: Authentication failed\r\n\r\n"
		}
		w.WriteString(answer)
		if r.Buffered() == 0 { // answers to pipelined actions go out together
			if w.Flush() != nil {
				return
			}
		}
		clear(fields)
	}
}
