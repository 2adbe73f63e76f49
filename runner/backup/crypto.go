package backup

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeyFile is the control machine's backup key: 32 random bytes, hex, 0600,
// generated on first use. Sensitive snapshots and records are sealed with it
// (AES-256-GCM), so only a control machine holding the key can roll them back.
func KeyFile(stateDir string) string { return filepath.Join(stateDir, "backup.key") }

var sealAAD = []byte("iklim-backup-v1")

// loadKey reads the key, creating it when create is set and it is missing.
func loadKey(stateDir string, create bool) ([]byte, error) {
	p := KeyFile(stateDir)
	if b, err := os.ReadFile(p); err == nil {
		return parseKey(p, b)
	} else if !errors.Is(err, fs.ErrNotExist) || !create {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another run created it first: use theirs.
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("backup key: %w", err)
		}
		return parseKey(p, b)
	}
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("backup key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	return key, nil
}

func parseKey(p string, b []byte) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("backup key %s: not 64 hex digits", p)
	}
	return key, nil
}

// seal encrypts plain: nonce || ciphertext+tag.
func seal(key, plain []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, plain, sealAAD), nil
}

// unseal reverses seal.
func unseal(key, data []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(data) < gcm.NonceSize() {
		return nil, errors.New("sealed data too short")
	}
	plain, err := gcm.Open(nil, data[:gcm.NonceSize()], data[gcm.NonceSize():], sealAAD)
	if err != nil {
		return nil, errors.New("sealed data does not open with this control machine's backup key")
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
