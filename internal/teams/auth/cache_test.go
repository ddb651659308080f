package auth

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"

	"github.com/presencebridge/presencebridge/internal/store"
)

// memCache stands in for MSAL's in-memory cache.
type memCache struct{ data []byte }

func (m *memCache) Marshal() ([]byte, error) { return m.data, nil }
func (m *memCache) Unmarshal(b []byte) error { m.data = append([]byte(nil), b...); return nil }

func TestTokenCacheReplaceExport(t *testing.T) {
	db, _ := tempStore(t)
	ctx := context.Background()
	north, south := newTokenCache(db, "north"), newTokenCache(db, "south")

	// Nothing stored: an empty cache, not an error, and memory is emptied too.
	m := &memCache{data: []byte(`{"stale":true}`)}
	if err := north.Replace(ctx, m, cache.ReplaceHints{}); err != nil {
		t.Fatalf("Replace with nothing stored: %v", err)
	}
	if string(m.data) != "{}" {
		t.Errorf("Replace with nothing stored left %q in memory, want an empty cache", m.data)
	}

	// The partition hint does not split an account's cache (see tokenCache).
	if err := north.Export(ctx, &memCache{data: []byte(`{"n":1}`)}, cache.ExportHints{PartitionKey: ""}); err != nil {
		t.Fatal(err)
	}
	if err := north.Replace(ctx, m, cache.ReplaceHints{PartitionKey: "uid.utid"}); err != nil || string(m.data) != `{"n":1}` {
		t.Errorf("Replace under another partition hint = %q, %v; want the account's blob", m.data, err)
	}
	if err := south.Replace(ctx, m, cache.ReplaceHints{}); err != nil || string(m.data) != "{}" {
		t.Errorf("another account's Replace = %q, %v; want an empty cache", m.data, err)
	}
	if raw, _ := db.GetRaw(store.BucketTokens, "north|"); string(raw) != `{"n":1}` {
		t.Errorf("stored blob under north| = %q", raw)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := north.Replace(cancelled, m, cache.ReplaceHints{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Replace with a cancelled context: %v, want context.Canceled", err)
	}
	if err := north.Export(cancelled, m, cache.ExportHints{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Export with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestTokenCacheDamagedBlob(t *testing.T) {
	db, path := tempStore(t)
	if err := db.PutRaw(store.BucketTokens, "north|", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	decode := unmarshalFunc(func(b []byte) error { var v map[string]any; return json.Unmarshal(b, &v) })
	err := newTokenCache(db, "north").Replace(context.Background(), decode, cache.ReplaceHints{})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "tokens/north|") || !strings.Contains(err.Error(), "presencebridge login") {
		t.Errorf("damaged blob: err = %v, want the file, the key and the fix", err)
	}
}

type unmarshalFunc func([]byte) error

func (f unmarshalFunc) Unmarshal(b []byte) error { return f(b) }

func TestNewRejectsBadOptions(t *testing.T) {
	db, _ := tempStore(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a pem file"), 0o600)
	base := func() Options {
		return Options{AccountID: "contoso", TenantID: "t", ClientID: "c", Authority: "https://login.microsoftonline.com/t",
			GraphURL: "https://graph.microsoft.com/v1.0", Mode: ModeDeviceCode, Store: db}
	}
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"http authority", func(o *Options) { o.Authority = "http://login.example/t" }, "is not an https URL with a tenant"},
		{"authority without tenant", func(o *Options) { o.Authority = "https://login.microsoftonline.com/" }, "is not an https URL with a tenant"},
		{"graph url", func(o *Options) { o.GraphURL = "graph.microsoft.com" }, `GraphURL "graph.microsoft.com" is not an https URL`},
		{"mode", func(o *Options) { o.Mode = "password" }, `sign-in mode "password": use devicecode, secret or certificate`},
		{"no client id", func(o *Options) { o.ClientID = "" }, "ClientID is empty"},
		{"no secret", func(o *Options) { o.Mode = ModeSecret }, "ClientSecret is empty"},
		{"no certificate file", func(o *Options) { o.Mode = ModeCertificate }, "CertificateFile is empty"},
		{"missing certificate file", func(o *Options) { o.Mode, o.CertificateFile = ModeCertificate, filepath.Join(dir, "nope.pem") }, "CertificateFile: open " + filepath.Join(dir, "nope.pem")},
		{"missing key file", func(o *Options) {
			o.Mode, o.CertificateFile, o.CertificateKeyFile = ModeCertificate, garbage, filepath.Join(dir, "nokey.pem")
		}, "CertificateKeyFile: open " + filepath.Join(dir, "nokey.pem")},
		{"not pem", func(o *Options) { o.Mode, o.CertificateFile = ModeCertificate, garbage }, "read certificate and key from " + garbage + ": no certificates found"},
		{"no store", func(o *Options) { o.Store = nil }, "no state store"},
		{"account id with separator", func(o *Options) { o.AccountID = "a|b" }, `account id "a|b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.edit(&o)
			_, err := New(o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := New(base()); err != nil {
		t.Errorf("New with good options: %v", err)
	}
}
