package auth

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"

	"github.com/presencebridge/presencebridge/internal/store"
)

// tokenCache is MSAL's cache.ExportReplace backed by the state file: one blob per
// account in store.BucketTokens under the key "<AccountID>|".
//
// MSAL passes a PartitionKey hint, but a public client's hints disagree between
// writing and reading: a device-code sign-in exports under "" while a silent
// refresh replaces from and exports under the home account id ("uid.utid"), and
// every Export writes the whole in-memory cache anyway. Keyed per partition, the
// refresh blob written before a revocation would be read back after a new
// sign-in and overwrite its fresh refresh token with the dead one. So the hint is
// ignored: each account has exactly one blob (the partition part of the key is
// always empty) and accounts stay apart because each Authenticator has its own
// MSAL client with its own in-memory cache.
type tokenCache struct {
	db  *store.DB
	key string
}

func newTokenCache(db *store.DB, accountID string) *tokenCache {
	return &tokenCache{db: db, key: cacheKey(accountID)}
}

// cacheKey is the BucketTokens key of an account's MSAL cache.
func cacheKey(accountID string) string { return accountID + "|" }

// emptyCache is what Replace loads when nothing is stored: MSAL's Unmarshal then
// starts from a new, empty contract, so a deleted blob also empties memory.
var emptyCache = []byte("{}")

// Replace loads the account's blob into MSAL's in-memory cache; a missing blob is
// an empty cache, not an error.
func (c *tokenCache) Replace(ctx context.Context, u cache.Unmarshaler, _ cache.ReplaceHints) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	raw, err := c.db.GetRaw(store.BucketTokens, c.key)
	if err != nil {
		return fmt.Errorf("load token cache: %w", err)
	}
	if len(raw) == 0 {
		raw = emptyCache
	}
	if err := u.Unmarshal(raw); err != nil {
		// The blob is MSAL's own JSON; a decode failure means a damaged state file.
		// The JSON error names no token content (encoding/json reports offsets and types).
		return fmt.Errorf("decode token cache %s/%s in %s: %w (run `presencebridge login` to store a new one)",
			store.BucketTokens, c.key, c.db.Path(), err)
	}
	return nil
}

// Export stores MSAL's whole in-memory cache as the account's blob.
func (c *tokenCache) Export(ctx context.Context, m cache.Marshaler, _ cache.ExportHints) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	raw, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("encode token cache: %w", err)
	}
	if err := c.db.PutRaw(store.BucketTokens, c.key, raw); err != nil {
		return fmt.Errorf("save token cache: %w", err)
	}
	return nil
}

// dropAccessTokens removes the cached access tokens from the account's blob (MSAL
// reads the blob again before every token request), keeping the refresh token and
// the account: the next request gets a new access token. Graph refused the
// cached one before it expired (a revoked session, continuous access evaluation).
func (c *tokenCache) dropAccessTokens() error {
	raw, err := c.db.GetRaw(store.BucketTokens, c.key)
	if err != nil || len(raw) == 0 {
		return err
	}
	var blob map[string]json.RawMessage
	if err := json.Unmarshal(raw, &blob); err != nil {
		return fmt.Errorf("decode token cache %s/%s in %s: %w", store.BucketTokens, c.key, c.db.Path(), err)
	}
	if _, ok := blob["AccessToken"]; !ok {
		return nil
	}
	delete(blob, "AccessToken") // MSAL's storage.Contract: AccessTokens `json:"AccessToken"`
	if raw, err = json.Marshal(blob); err != nil {
		return err
	}
	return c.db.PutRaw(store.BucketTokens, c.key, raw)
}
