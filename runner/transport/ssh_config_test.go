package transport

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
)

func writeSSHConfig(t *testing.T, text string) *sshConfig {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	c, err := loadSSHConfig(p)
	require.NoError(t, err)
	return c
}

func TestResolvePrecedence(t *testing.T) {
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	cfg := writeSSHConfig(t, `
Host web1
  HostName 10.0.0.5
  Port 2200
  User deploy
  IdentityFile ~/.ssh/web_%h_%p_%r
  IdentityFile /keys/%n-%%
  ProxyJump bastion:2022
  UserKnownHostsFile /etc/iklim/known_hosts

Host *
  User fallback
`)
	tests := []struct {
		name  string
		host  inventories.Host
		check func(t *testing.T, e endpoint)
	}{
		{"ssh_config fills what the inventory leaves out", inventories.Host{Name: "web1"}, func(t *testing.T, e endpoint) {
			require.Equal(t, "10.0.0.5", e.host)
			require.Equal(t, 2200, e.port)
			require.Equal(t, "deploy", e.user)
			require.Equal(t, []string{home + "/.ssh/web_10.0.0.5_2200_deploy", "/keys/web1-%"}, e.identities)
			require.Equal(t, "bastion:2022", e.proxyJump)
			require.Equal(t, "/etc/iklim/known_hosts", e.knownHosts)
			require.Equal(t, 15*time.Second, e.timeout)
		}},
		{"address equal to the name counts as unset", inventories.Host{Name: "web1", Address: "web1"}, func(t *testing.T, e endpoint) {
			require.Equal(t, "10.0.0.5", e.host)
		}},
		{"inventory wins", inventories.Host{Name: "web1", Address: "192.0.2.1", Port: 22, User: "ops", Key: "~/k",
			ProxyJump: "none", KnownHosts: "/kh", ConnectTimeout: time.Second}, func(t *testing.T, e endpoint) {
			require.Equal(t, "192.0.2.1", e.host)
			require.Equal(t, 22, e.port)
			require.Equal(t, "ops", e.user)
			require.Equal(t, home+"/k", e.key)
			require.Empty(t, e.identities, "an inventory key replaces ssh_config identities")
			require.Empty(t, e.proxyJump)
			require.Equal(t, "/kh", e.knownHosts)
			require.Equal(t, time.Second, e.timeout)
			require.Equal(t, "192.0.2.1:22", e.addr())
		}},
		{"defaults", inventories.Host{Name: "other"}, func(t *testing.T, e endpoint) {
			require.Equal(t, "other", e.host)
			require.Equal(t, 22, e.port)
			require.Equal(t, "fallback", e.user)
			require.Equal(t, home+"/.ssh/known_hosts", e.knownHosts)
			require.Equal(t, []string{home + "/.ssh/id_ed25519", home + "/.ssh/id_ecdsa", home + "/.ssh/id_rsa"}, e.identities)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := cfg.resolve(&tt.host, 15*time.Second)
			require.NoError(t, err)
			tt.check(t, e)
		})
	}

	var none *sshConfig = &sshConfig{}
	e, err := none.resolve(&inventories.Host{Name: "x"}, time.Second)
	require.NoError(t, err)
	require.Equal(t, localUser(), e.user)

	bad := writeSSHConfig(t, "Host x\n  Port abc\n")
	_, err = bad.resolve(&inventories.Host{Name: "x"}, time.Second)
	require.ErrorContains(t, err, `bad Port "abc"`)

	_, err = loadSSHConfig(filepath.Join(t.TempDir(), "missing"))
	require.Error(t, err, "a named ssh_config must exist")
}

func TestParseProxyJump(t *testing.T) {
	tests := []struct {
		in   string
		want []jumpHop
	}{
		{"bastion", []jumpHop{{host: "bastion"}}},
		{"user@host:2222", []jumpHop{{user: "user", host: "host", port: 2222}}},
		{"a@h1:22, h2 ,u@[::1]:2200", []jumpHop{{user: "a", host: "h1", port: 22}, {host: "h2"}, {user: "u", host: "::1", port: 2200}}},
		{"ssh://u@h:1", []jumpHop{{user: "u", host: "h", port: 1}}},
	}
	for _, tt := range tests {
		got, err := parseProxyJump(tt.in)
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
	for _, bad := range []string{"", "a,,b", "h:0", "h:x", "u@", "[::1"} {
		_, err := parseProxyJump(bad)
		require.Error(t, err, bad)
	}
}

// TestSSHConfigConnect reaches the test server through an alias whose
// HostName, Port, User and IdentityFile come only from ssh_config.
func TestSSHConfigConnect(t *testing.T) {
	s := sshtest.Start(t)
	s.AddKnownHost("127.0.1.7")
	dir := t.TempDir()
	key, err := os.ReadFile(s.KeyPath)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key-127.0.1.7"), key, 0o600))
	cfgPath := filepath.Join(dir, "config")
	require.NoError(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
Host myalias
  HostName 127.0.1.7
  Port %d
  User %s
  IdentityFile %s/key-%%h
`, s.Port, s.User, dir)), 0o600))

	c := testConnector(t, SSHOptions{SSHConfigFile: cfgPath})
	conn, err := c.Connect(context.Background(), &inventories.Host{Name: "myalias", KnownHosts: s.KnownHostsPath})
	require.NoError(t, err)
	require.Equal(t, "myalias", conn.Host())
	out := mustRun(t, conn, `id -un; echo "$SSH_CONNECTION" | cut -d' ' -f3,4`)
	require.Equal(t, fmt.Sprintf("%s\n127.0.1.7 %d\n", s.User, s.Port), out)
}
