package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/modules"
)

// Each SSH failure a user meets first says what went wrong and what to do;
// each is provoked against a real sshd.

func TestErrorUnknownHostKey(t *testing.T) {
	s := sshtest.Start(t)
	h := s.Hosts(1)[0]
	h.KnownHosts = filepath.Join(t.TempDir(), "known_hosts") // empty
	require.NoError(t, os.WriteFile(h.KnownHosts, nil, 0o600))
	_, err := testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.ErrorIs(t, err, ErrHostKeyUnknown)
	require.ErrorContains(t, err, ssh.FingerprintSHA256(s.HostKey))
	require.ErrorContains(t, err, "ssh-keyscan -p "+strconv.Itoa(s.Port)+" "+h.Address+" >> "+h.KnownHosts)
	require.ErrorContains(t, err, "trust_on_first_use")
}

func TestErrorChangedHostKey(t *testing.T) {
	s := sshtest.Start(t)
	h := s.Hosts(1)[0]
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	old, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	h.KnownHosts = filepath.Join(t.TempDir(), "known_hosts")
	addr := knownhosts.Normalize(net.JoinHostPort(h.Address, strconv.Itoa(s.Port)))
	require.NoError(t, os.WriteFile(h.KnownHosts, []byte(knownhosts.Line([]string{addr}, old)+"\n"), 0o600))
	_, err = testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.ErrorIs(t, err, ErrHostKeyChanged)
	require.ErrorContains(t, err, "someone may be intercepting the connection")
	require.ErrorContains(t, err, ssh.FingerprintSHA256(old)+" ("+h.KnownHosts+":1)")
	require.ErrorContains(t, err, "ssh-keygen -R")
}

// TestErrorAuthRefused names the key file and the agent's identities that
// the server refused, with their fingerprints, and says where to add one.
func TestErrorAuthRefused(t *testing.T) {
	if _, err := exec.LookPath("ssh-agent"); err != nil {
		t.Fatal("ssh-agent is installed with openssh-client")
	}
	s := sshtest.Start(t)
	dir := t.TempDir()
	keygen := func(name, comment string) string {
		p := filepath.Join(dir, name)
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", p).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return p
	}
	fileKey := keygen("stranger", "file-key")
	agentKey := keygen("agent-stranger", "agent-key-comment")
	sock := filepath.Join(dir, "agent.sock")
	agentCmd := exec.Command("ssh-agent", "-D", "-a", sock)
	require.NoError(t, agentCmd.Start())
	t.Cleanup(func() {
		_ = agentCmd.Process.Kill()
		_ = agentCmd.Wait()
	})
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 30*time.Second, 10*time.Millisecond)
	add := exec.Command("ssh-add", agentKey)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	out, err := add.CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Setenv("SSH_AUTH_SOCK", sock)

	h := s.Hosts(1)[0]
	h.Key = fileKey
	_, err = testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	msg := err.Error()
	require.Contains(t, msg, "log in as "+s.User+" with ")
	require.Contains(t, msg, h.Name+" refused every key")
	require.Contains(t, msg, fileKey+" (ssh-ed25519 "+fingerprint(t, fileKey)+")")
	require.Contains(t, msg, "ssh-agent (agent-key-comment ssh-ed25519 "+fingerprint(t, agentKey)+")")
	require.Contains(t, msg, "authorized_keys")
	require.Contains(t, msg, "ssh-copy-id")
}

func fingerprint(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile(key + ".pub")
	require.NoError(t, err)
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	require.NoError(t, err)
	return ssh.FingerprintSHA256(pub)
}

func TestErrorConnectionRefused(t *testing.T) {
	s := sshtest.Start(t)
	h := s.Hosts(1)[0]
	ln, err := net.Listen("tcp", h.Address+":0")
	require.NoError(t, err)
	h.Port = ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close()) // the port of a real sshd, but nobody listens
	_, err = testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.ErrorContains(t, err, "nothing listens on that port; check that sshd runs on the host")
}

// TestErrorTimeout: an sshd that is stopped (SIGSTOP) still has its
// connections accepted by the kernel but never answers.
func TestErrorTimeout(t *testing.T) {
	s := sshtest.Start(t)
	pid := s.PID()
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	h := s.Hosts(1)[0]
	h.ConnectTimeout = time.Second
	start := time.Now()
	_, err := testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.Less(t, time.Since(start), 30*time.Second, "the 1 s connect timeout was not kept")
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	require.ErrorContains(t, err, "handshake timed out after 1s")
	require.ErrorContains(t, err, "no SSH server answered in time")
	require.ErrorContains(t, err, "raise connect_timeout")
}

// nosudoUser may log in but has no sudo rules, so sudo asks for a password.
const nosudoUser = "iklimnosudo"

func ensureNosudoUser(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("id", nosudoUser).CombinedOutput(); err == nil {
		return
	} else if !bytes.Contains(out, []byte("no such user")) {
		t.Fatalf("id %s: %v: %s", nosudoUser, err, out)
	}
	out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", nosudoUser).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 9 { // created meanwhile by another test process
		err = nil
	}
	require.NoError(t, err, "useradd: %s", out)
	out, err = exec.Command("usermod", "-p", "*", nosudoUser).CombinedOutput()
	require.NoError(t, err, "usermod: %s", out)
}

func TestErrorSudoPasswordRequired(t *testing.T) {
	sshtest.RequireSudo(t)
	ensureNosudoUser(t)
	s := sshtest.Start(t, sshtest.ExtraConfig("AllowUsers "+nosudoUser))
	h := s.Hosts(1)[0]
	h.User = nosudoUser
	h.Become = true
	h.BecomeUser = "root"
	conn, err := testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.NoError(t, err)
	res, err := conn.Run(context.Background(), "id -u")
	require.ErrorIs(t, err, ErrSudoPassword)
	require.ErrorContains(t, err, nosudoUser+" may not run commands as root through sudo without a password")
	require.ErrorContains(t, err, "`"+nosudoUser+" ALL=(ALL:ALL) NOPASSWD: ALL` in /etc/sudoers.d/iklim")
	require.ErrorContains(t, err, "become = false")
	require.Equal(t, 1, res.ExitCode)
	// Without become the same login works: the message is about sudo only.
	res, err = conn.Run(context.Background(), "id -un", func(o *modules.RunOptions) { o.NoBecome = true })
	require.NoError(t, err)
	require.Equal(t, nosudoUser+"\n", res.Stdout)
}

// TestErrorDialTimeout: a listener whose accept queue is full drops new
// SYNs, so the dial itself gets no answer, as behind a dropping firewall.
func TestErrorDialTimeout(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, syscall.Listen(fd, 0))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	port := sa.(*syscall.SockaddrInet4).Port
	// Fill the accept queue; nothing ever accepts.
	for i := 0; i < 4; i++ {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 300*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	s := sshtest.Start(t)
	h := s.Host("dropped", "127.0.0.1")
	h.Port = port
	h.ConnectTimeout = time.Second
	_, err = testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	require.ErrorContains(t, err, "dial 127.0.0.1:"+strconv.Itoa(port)+": timed out after 1s: no answer")
	require.ErrorContains(t, err, "raise connect_timeout")
}
