package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// PresenceWritePermission is the application permission that lets an app set and
// clear other users' presence (graph/api/presence-setpresence, "Permissions"); a
// delegated token (device code, Presence.ReadWrite) writes only the signed-in
// user's own presence.
const PresenceWritePermission = "Presence.ReadWrite.All"

// SetPresence is one setPresence request: the application's session of a user's
// presence, shown in Teams (by Teams' precedence among the user's sessions) until
// it is cleared or Expiration passes.
type SetPresence struct {
	// SessionID must be the application (client) id of the caller.
	SessionID string
	// Availability and Activity must be one of the pairs Graph accepts:
	// Available/Available, Busy/InACall, Busy/InAConferenceCall, Away/Away,
	// DoNotDisturb/Presenting (Graph answers 400 to others).
	Availability presence.Availability
	Activity     presence.Activity
	// Expiration is the session's expirationDuration, PT5M..PT4H; zero leaves it
	// to Graph's default, 5 minutes.
	Expiration time.Duration
}

// ErrNoSession is what ClearPresence reports for Graph's 404: the session does
// not exist (never set, cleared already, or expired), so for a clear it means
// "already gone". The error wraps the *StatusError too.
var ErrNoSession = errors.New("no such presence session")

type wireSetPresence struct {
	SessionID          string `json:"sessionId"`
	Availability       string `json:"availability"`
	Activity           string `json:"activity"`
	ExpirationDuration string `json:"expirationDuration,omitempty"`
}

// SetPresence sets (or renews) the session p.SessionID of user userID (object
// id): POST /users/{id}/presence/setPresence. A 429 is a *ThrottledError; a 403
// a *StatusError that names the missing permission and its fix.
func (c *Client) SetPresence(ctx context.Context, userID string, p SetPresence) error {
	if p.Expiration < 0 {
		return fmt.Errorf("setPresence for %s: expiration %s is negative; give PT5M..PT4H, or 0 for Graph's default", userID, p.Expiration)
	}
	body := wireSetPresence{SessionID: p.SessionID, Availability: string(p.Availability), Activity: string(p.Activity),
		ExpirationDuration: isoDuration(p.Expiration)}
	return c.write(ctx, "/users/"+url.PathEscape(userID)+"/presence/setPresence", body)
}

// ClearPresence ends the session sessionID of user userID: POST
// /users/{id}/presence/clearPresence; Teams then shows the user's other sessions.
// Graph's 404 (no such session) is reported as ErrNoSession (errors.Is); Graph
// answers 404 for a user it does not know as well, who has no session either.
func (c *Client) ClearPresence(ctx context.Context, userID, sessionID string) error {
	err := c.write(ctx, "/users/"+url.PathEscape(userID)+"/presence/clearPresence", map[string]string{"sessionId": sessionID})
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return fmt.Errorf("%w: %w", ErrNoSession, err)
	}
	return err
}

// write POSTs a presence write (no reply body) and adds the fix to a 403: the
// only cause presencebridge can meet is a token without the write permission.
func (c *Client) write(ctx context.Context, path string, body any) error {
	err := c.post(ctx, path, body, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden {
		return err
	}
	fixed := *se
	fixed.Message = strings.TrimSpace(fixed.Message + " (writing another user's presence needs the application permission " +
		PresenceWritePermission + ": in the Entra admin center > App registrations > the app > API permissions, add " +
		"Microsoft Graph > Application permissions > " + PresenceWritePermission + " and grant admin consent; " +
		"a device-code (delegated) account cannot write other users' presence: use a client secret or certificate)")
	return fmt.Errorf("%s %s: %w", http.MethodPost, path, &fixed)
}

// isoDuration writes d as an ISO 8601 duration, the form of Graph's Edm.Duration:
// 5m is "PT5M", 90m "PT1H30M", 4h "PT4H", 10m0.5s "PT10M0.5S"; zero is "" (the
// field is left out).
func isoDuration(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("PT")
	if h := d / time.Hour; h > 0 {
		b.WriteString(strconv.FormatInt(int64(h), 10) + "H")
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		b.WriteString(strconv.FormatInt(int64(m), 10) + "M")
		d -= m * time.Minute
	}
	if d > 0 {
		b.WriteString(strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "S")
	}
	return b.String()
}
