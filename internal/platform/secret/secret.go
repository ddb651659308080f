// Package secret encrypts the secrets a field engineer puts in Presence.ini
// (client secret, SIP password, HTTP header values), so that a copy of the file
// does not give them away. `presencebridge secret encrypt` prints "enc:v1:..."
// to paste as the value; the service decrypts it when it loads the file.
//
// On Windows the value is protected with DPAPI in machine scope: only this
// machine can decrypt it. Elsewhere it is AES-256-GCM with a random key kept in
// a key file beside Presence.ini, readable by its owner only (root or the
// service account); the file is created by the first encrypt.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/presencebridge/presencebridge/internal/platform/fileperm"
)

// Prefix marks an encrypted value.
const Prefix = "enc:v1:"

// KeyFileName is the key file's name, beside Presence.ini (not used on Windows).
const KeyFileName = "secret.key"

// IsEncrypted reports whether v is an encrypted value.
func IsEncrypted(v string) bool { return strings.HasPrefix(v, Prefix) }

// Encrypt protects plain for the INI in dir.
func Encrypt(plain, dir string) (string, error) {
	if plain == "" {
		return "", errors.New("nothing to encrypt")
	}
	sealed, err := protect([]byte(plain), filepath.Join(dir, KeyFileName))
	if err != nil {
		return "", err
	}
	return Prefix + base64.RawURLEncoding.EncodeToString(sealed), nil
}

// Decrypt turns a value written by Encrypt back into the secret. Errors never
// contain the secret.
func Decrypt(value, dir string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(value, Prefix))
	if err != nil {
		return "", errors.New("the encrypted value is damaged (copy it again from `presencebridge secret encrypt`)")
	}
	plain, err := unprotect(raw, filepath.Join(dir, KeyFileName))
	if err != nil {
		return "", err
	}
	return string(plain), nil
}

// aesSeal and aesOpen are the key-file scheme (all systems but Windows).
func aesSeal(plain []byte, keyFile string) ([]byte, error) {
	key, err := loadKey(keyFile, true)
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, plain, nil), nil
}

func aesOpen(sealed []byte, keyFile string) ([]byte, error) {
	key, err := loadKey(keyFile, false)
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, errors.New("the encrypted value is damaged (copy it again from `presencebridge secret encrypt`)")
	}
	plain, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], nil)
	if err != nil {
		return nil, fmt.Errorf("the value was not encrypted with the key in %s (encrypted on another machine, or the key file was replaced); run `presencebridge secret encrypt` here and paste the new value", keyFile)
	}
	return plain, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// loadKey reads the 32-byte key, creating it (0600) when create is set.
func loadKey(path string, create bool) ([]byte, error) {
	key, err := os.ReadFile(path)
	switch {
	case err == nil && len(key) == 32:
		return key, nil
	case err == nil:
		return nil, fmt.Errorf("key file %s is not a presencebridge key (%d bytes, want 32)", path, len(key))
	case errors.Is(err, os.ErrNotExist) && create:
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create key file %s: %w (run as the service account or root, in the folder of Presence.ini)", path, err)
		}
		defer f.Close()
		if _, err := f.Write(key); err != nil {
			return nil, err
		}
		// The service reads it as a member of the folder's group (/etc/presencebridge
		// is root:presencebridge); made by root, it would otherwise be root's alone.
		if err := fileperm.Adopt(path, true); err != nil {
			return nil, fmt.Errorf("give key file %s to the folder's group: %w", path, err)
		}
		return key, nil
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("key file %s is missing: the value was encrypted elsewhere; run `presencebridge secret encrypt` on this machine and paste the new value", path)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("key file %s cannot be read by this account: run as the service account (or root)", path)
	default:
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
}
