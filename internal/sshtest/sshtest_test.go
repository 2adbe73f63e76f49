package sshtest

import (
	"net"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// dialRaw logs in to addr with plain x/crypto/ssh, checking the host key
// against the server's known_hosts.
func dialRaw(t *testing.T, s *Server, ip string) (*ssh.Client, error) {
	t.Helper()
	cb, err := knownhosts.New(s.KnownHostsPath)
	require.NoError(t, err)
	return ssh.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(s.Port)), &ssh.ClientConfig{
		User:              s.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(s.ClientSigner)},
		HostKeyCallback:   cb,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
	})
}

func run(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	sess, err := c.NewSession()
	require.NoError(t, err)
	defer sess.Close()
	out, err := sess.CombinedOutput(cmd)
	require.NoError(t, err, string(out))
	return string(out)
}

func TestStartLogsInAsTestUserWithSh(t *testing.T) {
	s := Start(t)
	require.NotZero(t, s.Port)
	require.Equal(t, User, s.User)

	c, err := dialRaw(t, s, "127.0.0.1")
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, User+"\n", run(t, c, "id -un"))
	// The login shell is /bin/sh: commands run under it, not bash.
	require.Equal(t, "/bin/sh\n", run(t, c, `echo "$SHELL"`))
}

func TestHostsHaveDistinctAddressesAndKnownKeys(t *testing.T) {
	s := Start(t)
	hosts := s.Hosts(3)
	require.Len(t, hosts, 3)
	for i, h := range hosts {
		require.Equal(t, []string{"h001", "h002", "h003"}[i], h.Name)
		require.Equal(t, HostAddr(i), h.Address)
		require.Equal(t, s.Port, h.Port)
		require.Equal(t, s.KeyPath, h.Key)
		require.Equal(t, s.KnownHostsPath, h.KnownHosts)
		c, err := dialRaw(t, s, h.Address)
		require.NoError(t, err, h.Name)
		require.Equal(t, h.Address+"\n", run(t, c, `echo "${SSH_CONNECTION}" | cut -d' ' -f3`))
		c.Close()
	}
	// An address that was never handed out is not in known_hosts.
	_, err := dialRaw(t, s, "127.0.9.9")
	require.Error(t, err)
	require.Contains(t, err.Error(), "knownhosts: key is unknown")
}

func TestHostAddrWraps(t *testing.T) {
	for i, want := range map[int]string{0: "127.0.1.1", 253: "127.0.1.254", 254: "127.0.2.1", 600: "127.0.3.93"} {
		require.Equal(t, want, HostAddr(i), i)
	}
}

func TestHashedKnownHosts(t *testing.T) {
	s := Start(t, HashedKnownHosts())
	h := s.Hosts(1)[0]
	b, err := os.ReadFile(s.KnownHostsPath)
	require.NoError(t, err)
	require.NotContains(t, string(b), "127.0.")
	require.Contains(t, string(b), "|1|")
	c, err := dialRaw(t, s, h.Address)
	require.NoError(t, err)
	c.Close()
}

func TestMaxSessions(t *testing.T) {
	s := Start(t, MaxSessions(2))
	c, err := dialRaw(t, s, "127.0.0.1")
	require.NoError(t, err)
	defer c.Close()
	var open []*ssh.Session
	for i := 0; i < 2; i++ {
		sess, err := c.NewSession()
		require.NoError(t, err)
		open = append(open, sess)
	}
	_, err = c.NewSession()
	require.Error(t, err)
	require.Contains(t, err.Error(), "open failed")
	for _, sess := range open {
		sess.Close()
	}
}
