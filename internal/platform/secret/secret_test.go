package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTripAndKeyFile(t *testing.T) {
	dir := t.TempDir()
	enc, err := Encrypt("s3cret~value", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !IsEncrypted(enc) || strings.Contains(enc, "s3cret") {
		t.Fatalf("Encrypt = %q", enc)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	got, err := Decrypt(enc, dir)
	if err != nil || got != "s3cret~value" {
		t.Fatalf("Decrypt = %q, %v", got, err)
	}
	enc2, _ := Encrypt("s3cret~value", dir)
	if enc2 == enc {
		t.Error("two encryptions of one secret are identical (nonce reused)")
	}
}

func TestDecryptFailuresSayWhy(t *testing.T) {
	dir := t.TempDir()
	enc, _ := Encrypt("s3cret", dir)
	other := t.TempDir()
	if _, err := Decrypt(enc, other); err == nil || !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), "secret encrypt") {
		t.Errorf("no key file: %v", err)
	}
	Encrypt("x", other) // a different key
	if _, err := Decrypt(enc, other); err == nil || !strings.Contains(err.Error(), "not encrypted with the key") {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := Decrypt(Prefix+"!!!", dir); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged: %v", err)
	}
}
