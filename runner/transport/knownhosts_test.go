package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/iklimco/iklim/internal/sshtest"
)

func knownHostsName(ip string, port int) string {
	return knownhosts.Normalize(ip + ":" + strconv.Itoa(port))
}

func TestKnownHostsUnknownRefused(t *testing.T) {
	s := sshtest.Start(t)
	h := s.Host("newbox", "127.0.1.20")
	h.KnownHosts = filepath.Join(t.TempDir(), "known_hosts") // does not exist
	_, err := testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "newbox", ue.Host)
	require.ErrorIs(t, err, ErrHostKeyUnknown)
	for _, want := range []string{"newbox", "127.0.1.20:" + strconv.Itoa(s.Port), ssh.FingerprintSHA256(s.HostKey),
		h.KnownHosts, "ssh-keyscan -p " + strconv.Itoa(s.Port) + " 127.0.1.20", "trust_on_first_use"} {
		require.Contains(t, err.Error(), want)
	}
	_, statErr := os.Stat(h.KnownHosts)
	require.True(t, errors.Is(statErr, os.ErrNotExist), "refusing must not create the file")

	// Same with a file that knows other hosts only.
	h.KnownHosts = s.KnownHostsPath
	h.Address = "127.0.1.21"
	_, err = testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.ErrorIs(t, err, ErrHostKeyUnknown)
}

func TestKnownHostsHashedBySSHKeygen(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	s := sshtest.Start(t)
	hosts := s.Hosts(2)
	out, err := exec.Command("ssh-keygen", "-H", "-f", s.KnownHostsPath).CombinedOutput()
	require.NoError(t, err, string(out))
	b, err := os.ReadFile(s.KnownHostsPath)
	require.NoError(t, err)
	require.NotContains(t, string(b), "127.0.")
	require.Contains(t, string(b), "|1|")
	c := testConnector(t, SSHOptions{})
	for _, h := range hosts {
		conn, err := c.Connect(context.Background(), h)
		require.NoError(t, err)
		require.Equal(t, "ok\n", mustRun(t, conn, "echo ok"))
	}
}

func TestKnownHostsHashedOption(t *testing.T) {
	s := sshtest.Start(t, sshtest.HashedKnownHosts())
	conn, err := testConnector(t, SSHOptions{}).Connect(context.Background(), s.Hosts(1)[0])
	require.NoError(t, err)
	require.Equal(t, "ok\n", mustRun(t, conn, "echo ok"))
}

func TestKnownHostsChangedRefusedEvenWithTOFU(t *testing.T) {
	s := sshtest.Start(t)
	other, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	otherKey, err := ssh.NewPublicKey(other)
	require.NoError(t, err)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownHostsName("127.0.1.30", s.Port)}, otherKey) + "\n"
	require.NoError(t, os.WriteFile(kh, []byte(line), 0o600))

	h := s.Host("moved", "127.0.1.30")
	h.KnownHosts, h.TrustOnFirstUse = kh, true
	_, err = testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	require.ErrorIs(t, err, ErrHostKeyChanged)
	require.Contains(t, err.Error(), "HOST KEY CHANGED")
	require.Contains(t, err.Error(), ssh.FingerprintSHA256(s.HostKey))
	require.Contains(t, err.Error(), ssh.FingerprintSHA256(otherKey))
	require.Contains(t, err.Error(), kh+":1")
	b, err := os.ReadFile(kh)
	require.NoError(t, err)
	require.Equal(t, line, string(b), "known_hosts must not change")
}

func TestKnownHostsTOFUAppends(t *testing.T) {
	s := sshtest.Start(t)
	kh := filepath.Join(t.TempDir(), "sub", "known_hosts") // neither exists yet
	c := testConnector(t, SSHOptions{})
	hosts := s.Hosts(5)
	for _, h := range hosts {
		h.KnownHosts, h.TrustOnFirstUse = kh, true
	}
	// Concurrently: appends must not interleave or duplicate.
	errs := make(chan error, len(hosts))
	for _, h := range hosts {
		go func() {
			conn, err := c.Connect(context.Background(), h)
			if err == nil {
				_, err = conn.Run(context.Background(), "true")
			}
			errs <- err
		}()
	}
	for range hosts {
		require.NoError(t, <-errs)
	}
	st, err := os.Stat(kh)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(kh)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, len(hosts))
	for _, h := range hosts {
		require.Contains(t, string(b), knownhosts.Line([]string{knownHostsName(h.Address, s.Port)}, s.HostKey)+"\n")
	}

	// Now known: a connector without TOFU accepts them.
	for _, h := range hosts {
		h.TrustOnFirstUse = false
	}
	conn, err := testConnector(t, SSHOptions{}).Connect(context.Background(), hosts[0])
	require.NoError(t, err)
	mustRun(t, conn, "true")

	// A file without a trailing newline still gets a well-formed line.
	kh2 := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(kh2, []byte("# no newline"), 0o600))
	h := s.Host("tofu2", "127.0.1.40")
	h.KnownHosts, h.TrustOnFirstUse = kh2, true
	_, err = testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.NoError(t, err)
	b, err = os.ReadFile(kh2)
	require.NoError(t, err)
	require.Equal(t, "# no newline\n"+knownhosts.Line([]string{knownHostsName("127.0.1.40", s.Port)}, s.HostKey)+"\n", string(b))
}

// TestKnownHostsAlgorithms: the server has an ECDSA and an ed25519 host key
// and known_hosts only the ed25519 one. Without asking for ed25519 the
// client would be offered ECDSA and see a "changed" key.
func TestKnownHostsAlgorithms(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	ecdsaPath := filepath.Join(t.TempDir(), "ssh_host_ecdsa_key")
	require.NoError(t, os.WriteFile(ecdsaPath, pem.EncodeToMemory(block), 0o600))

	s := sshtest.Start(t, sshtest.ExtraConfig("HostKey "+ecdsaPath))
	h := s.Hosts(1)[0]
	addr := fmt.Sprintf("%s:%d", h.Address, s.Port)
	require.Equal(t, []string{ssh.KeyAlgoED25519}, new(knownHostsCache).get(s.KnownHostsPath).algorithms(addr))
	require.Nil(t, new(knownHostsCache).get(s.KnownHostsPath).algorithms("127.9.9.9:22"))

	conn, err := testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.NoError(t, err)
	mustRun(t, conn, "true")
}

func TestKnownHostsRSAAlgorithms(t *testing.T) {
	kh := filepath.Join(t.TempDir(), "known_hosts")
	rsaLine := "[10.1.1.1]:2222 ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDhGZmzkQJm2wNqVvAb8OcufxCWjrxkFgnNTYVvEy5rE4cqTxumQRQo4VfXXRDvU9Fea9Fd7VgYXeYWWfDdaDlE1+dRmp2GFUSh+sQXXUH3f9U9ejfArP6WhaxeOfDrxbvF23MUL8B3N4Lc4TlqzqqbGmG4TBd4jW1dGbo3hJfyhw==\n"
	require.NoError(t, os.WriteFile(kh, []byte(rsaLine), 0o600))
	require.Equal(t, []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA},
		new(knownHostsCache).get(kh).algorithms("10.1.1.1:2222"))
}
