package transport

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
)

func TestConnectorLocal(t *testing.T) {
	c := testConnector(t, SSHOptions{})
	conn, err := c.Connect(context.Background(), &inventories.Host{Name: "control", Local: true})
	require.NoError(t, err)
	require.IsType(t, &LocalConn{}, conn)
	require.Equal(t, "control", conn.Host())
	again, err := c.Connect(context.Background(), &inventories.Host{Name: "control", Local: true})
	require.NoError(t, err)
	require.Same(t, conn, again)
}

func TestConnectorSharesOneDialPerHost(t *testing.T) {
	s := sshtest.Start(t)
	h := s.Hosts(1)[0]
	c := testConnector(t, SSHOptions{})
	const n = 20
	conns := make([]modules.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], errs[i] = c.Connect(context.Background(), h)
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		require.NoError(t, errs[i])
		require.Same(t, conns[0], conns[i])
	}
	require.Equal(t, 1, strings.Count(s.Log(), "Accepted publickey"), "one login for all callers")

	// A connection that died is replaced on the next Connect.
	require.NoError(t, conns[0].(*SSHConn).Close())
	require.Eventually(t, func() bool { return !conns[0].(*SSHConn).alive() }, 30*time.Second, 10*time.Millisecond)
	_, err := conns[0].Run(context.Background(), "true")
	var lost *UnreachableError
	require.ErrorAs(t, err, &lost, "a command on a dead connection reports the host unreachable")
	require.Equal(t, "h001", lost.Host)
	fresh, err := c.Connect(context.Background(), h)
	require.NoError(t, err)
	require.NotSame(t, conns[0], fresh)
	mustRun(t, fresh, "true")

	// After Close every connection is closed and Connect refuses.
	require.NoError(t, c.Close())
	_, err = fresh.Run(context.Background(), "true")
	require.Error(t, err)
	_, err = c.Connect(context.Background(), h)
	require.ErrorContains(t, err, "connector closed")
}

func TestConnectorUnreachable(t *testing.T) {
	s := sshtest.Start(t)

	// Nothing listens on the port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedPort := l.Addr().(*net.TCPAddr).Port
	l.Close()

	// Something accepts but never speaks SSH.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer silent.Close()
	var accepted []net.Conn
	var amu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			amu.Lock()
			accepted = append(accepted, c)
			amu.Unlock()
		}
	}()
	t.Cleanup(func() {
		amu.Lock()
		defer amu.Unlock()
		for _, c := range accepted {
			c.Close()
		}
	})

	// A key the server does not accept.
	_, wrong, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(wrong, "")
	require.NoError(t, err)
	wrongKey := filepath.Join(t.TempDir(), "wrong")
	require.NoError(t, os.WriteFile(wrongKey, pem.EncodeToMemory(block), 0o600))

	tests := []struct {
		name   string
		modify func(h *inventories.Host)
		want   string
	}{
		{"connection refused", func(h *inventories.Host) { h.Port = closedPort }, "connection refused"},
		{"handshake timeout", func(h *inventories.Host) {
			h.Address, h.Port, h.ConnectTimeout = "127.0.0.1", silent.Addr().(*net.TCPAddr).Port, 300*time.Millisecond
		}, "timed out after 300ms"},
		{"wrong key", func(h *inventories.Host) { h.Key = wrongKey }, "log in as iklimtest with " + wrongKey},
		{"wrong user", func(h *inventories.Host) { h.User = "nobody" }, "unable to authenticate"},
		{"missing key file", func(h *inventories.Host) { h.Key = "/nonexistent/key" }, "/nonexistent/key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := s.Hosts(1)[0]
			tt.modify(h)
			start := time.Now()
			_, err := testConnector(t, SSHOptions{}).Connect(context.Background(), h)
			var ue *UnreachableError
			require.ErrorAs(t, err, &ue)
			require.Equal(t, "h001", ue.Host)
			require.Contains(t, err.Error(), tt.want)
			require.Less(t, time.Since(start), 30*time.Second, "a refused login was retried")
		})
	}

	// A cancelled context is not "unreachable".
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = testConnector(t, SSHOptions{}).Connect(ctx, s.Hosts(1)[0])
	require.ErrorIs(t, err, context.Canceled)
	var ue *UnreachableError
	require.False(t, errors.As(err, &ue))
}

func TestConnectorEncryptedKey(t *testing.T) {
	s := sshtest.Start(t)
	t.Setenv("SSH_AUTH_SOCK", "")
	p := filepath.Join(t.TempDir(), "enc")
	// ssh-keygen with one KDF round is much faster than x/crypto's default.
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-a", "1", "-N", "secret", "-f", p).CombinedOutput(); err != nil {
		t.Logf("ssh-keygen: %v: %s; using x/crypto", err, out)
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(block), 0o600))
	}
	h := s.Hosts(1)[0]
	h.Key = p
	_, err := testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.ErrorContains(t, err, "key "+p+" is encrypted with a passphrase")
	require.ErrorContains(t, err, "ssh-agent")
}

// TestConnectorAgent logs in with a key that only ssh-agent holds.
func TestConnectorAgent(t *testing.T) {
	if _, err := exec.LookPath("ssh-agent"); err != nil {
		t.Skip("ssh-agent not installed")
	}
	s := sshtest.Start(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agentCmd := exec.Command("ssh-agent", "-D", "-a", sock)
	require.NoError(t, agentCmd.Start())
	t.Cleanup(func() {
		_ = agentCmd.Process.Kill()
		_ = agentCmd.Wait()
	})
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 30*time.Second, 10*time.Millisecond)
	add := exec.Command("ssh-add", s.KeyPath)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	out, err := add.CombinedOutput()
	require.NoError(t, err, string(out))
	t.Setenv("SSH_AUTH_SOCK", sock)

	h := s.Hosts(1)[0]
	h.Key = ""
	conn, err := testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.NoError(t, err)
	require.Equal(t, "iklimtest\n", mustRun(t, conn, "id -un"))
}

func TestConnectorProxyJump(t *testing.T) {
	s := sshtest.Start(t)
	port := strconv.Itoa(s.Port)
	s.AddKnownHost("127.0.0.1")
	s.AddKnownHost("127.0.1.6")
	target := s.Host("behind", "127.0.1.5")
	target.ProxyJump = s.User + "@127.0.0.1:" + port

	c := testConnector(t, SSHOptions{})
	conn, err := c.Connect(context.Background(), target)
	require.NoError(t, err)
	require.Equal(t, "127.0.1.5 "+port+"\n", mustRun(t, conn, `echo "$SSH_CONNECTION" | cut -d' ' -f3,4`))
	require.Len(t, c.jumps, 1)

	// A second host behind the same jump host shares its connection.
	second := s.Host("behind2", "127.0.1.8")
	second.ProxyJump = target.ProxyJump
	conn2, err := c.Connect(context.Background(), second)
	require.NoError(t, err)
	mustRun(t, conn2, "true")
	require.Len(t, c.jumps, 1)
	require.Equal(t, 3, strings.Count(s.Log(), "Accepted publickey"), "jump + 2 targets")

	// Two hops: 127.0.0.1, then 127.0.1.6, then the target.
	chained := s.Host("behind3", "127.0.1.5")
	chained.ProxyJump = s.User + "@127.0.0.1:" + port + "," + s.User + "@127.0.1.6:" + port
	conn3, err := testConnector(t, SSHOptions{}).Connect(context.Background(), chained)
	require.NoError(t, err)
	mustRun(t, conn3, "true")

	// ProxyJump from ssh_config; the hop's user and port too.
	cfg := filepath.Join(t.TempDir(), "config")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("Host behind\n  ProxyJump jumpbox\nHost jumpbox\n  HostName 127.0.0.1\n  User %s\n  Port %d\n", s.User, s.Port)), 0o600))
	target.ProxyJump = ""
	conn4, err := testConnector(t, SSHOptions{SSHConfigFile: cfg}).Connect(context.Background(), target)
	require.NoError(t, err)
	mustRun(t, conn4, "true")

	// The jump host's key is checked against the same known_hosts.
	unknownJump := s.Host("behind5", "127.0.1.5")
	unknownJump.ProxyJump = s.User + "@127.0.1.99:" + port
	_, err = testConnector(t, SSHOptions{}).Connect(context.Background(), unknownJump)
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	require.ErrorIs(t, err, ErrHostKeyUnknown)
	require.Contains(t, err.Error(), "jump host "+s.User+"@127.0.1.99:"+port)
}
