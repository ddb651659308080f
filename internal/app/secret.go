package app

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
)

// SecretStatus is what presencebridge knows of an account's client secret.
type SecretStatus struct {
	Expires  time.Time `json:"expires,omitzero"`
	DaysLeft int       `json:"daysLeft"`
	Warning  bool      `json:"warning"` // within [General] SecretWarnDays, or expired
	Checked  time.Time `json:"checked,omitzero"`
	Error    string    `json:"error,omitempty"`
}

// ourSecret picks the credential the configured secret belongs to: the one whose
// hint (first three characters) matches, else the one that ends first.
func ourSecret(creds []graph.PasswordCredential, secret string) (graph.PasswordCredential, bool) {
	if len(creds) == 0 {
		return graph.PasswordCredential{}, false
	}
	for _, c := range creds {
		if c.Hint != "" && len(secret) >= len(c.Hint) && secret[:len(c.Hint)] == c.Hint {
			return c, true
		}
	}
	sorted := append([]graph.PasswordCredential(nil), creds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].EndDateTime.Before(sorted[j].EndDateTime) })
	return sorted[0], true
}

// CheckSecret reads the expiry of the account's client secret from its app
// registration (needs Application.Read.All).
func CheckSecret(ctx context.Context, gc *graph.Client, ac config.Account, warnDays int, now time.Time) SecretStatus {
	st := SecretStatus{Checked: now.UTC()}
	creds, err := gc.AppSecrets(ctx, ac.ClientID)
	var se *graph.StatusError
	switch {
	case errors.As(err, &se) && (se.Status == 403 || se.Status == 404):
		st.Error = fmt.Sprintf("cannot read app registration %s (%d %s); to see the secret's expiry, add the Microsoft Graph application permission Application.Read.All and grant admin consent",
			ac.ClientID, se.Status, se.Code)
		return st
	case err != nil:
		st.Error = "reading the app registration failed: " + err.Error()
		return st
	}
	c, ok := ourSecret(creds, ac.ClientSecret.Reveal())
	if !ok {
		st.Error = "the app registration has no client secret"
		return st
	}
	st.Expires = c.EndDateTime.UTC()
	st.DaysLeft = int(math.Floor(c.EndDateTime.Sub(now).Hours() / 24)) // negative once expired
	st.Warning = c.EndDateTime.Sub(now) < time.Duration(warnDays)*24*time.Hour
	return st
}

// secretLoop checks the client secret of a secret-based account at start and daily.
func (a *App) secretLoop(ctx context.Context, acc *account) error {
	for {
		st := CheckSecret(ctx, acc.graph, acc.cfg, a.cfg.SecretWarnDays, a.clk.Now())
		if ctx.Err() != nil {
			return nil
		}
		acc.mu.Lock()
		acc.secret = &st
		acc.mu.Unlock()
		fix := fmt.Sprintf("create a new secret in App registrations > %s > Certificates & secrets and put its Value in [Account.%s] ClientSecret of %s",
			acc.cfg.ClientID, acc.cfg.ID, a.cfg.Path)
		switch {
		case st.Error != "":
			a.log.Warn("Client secret expiry unknown", "account", acc.cfg.ID, "reason", st.Error)
		case st.DaysLeft < 0:
			a.log.Error("Client secret has expired; sign-in fails until it is replaced", "account", acc.cfg.ID, "expired", st.Expires, "fix", fix)
		case st.Warning:
			a.log.Warn(fmt.Sprintf("Client secret expires in %d days", st.DaysLeft), "account", acc.cfg.ID, "expires", st.Expires, "fix", fix)
		default:
			a.log.Info("Client secret checked", "account", acc.cfg.ID, "expires", st.Expires, "daysLeft", st.DaysLeft)
		}
		if err := a.clk.Sleep(ctx, 24*time.Hour); err != nil {
			return nil
		}
	}
}

func (acc *account) secretStatus() *SecretStatus {
	acc.mu.Lock()
	defer acc.mu.Unlock()
	if acc.secret == nil {
		return nil
	}
	c := *acc.secret
	return &c
}
