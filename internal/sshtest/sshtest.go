// Package sshtest starts a real OpenSSH server for tests. One sshd listens
// on 0.0.0.0, so every loopback address (127.0.1.1, 127.0.1.2, …) reaches
// it and can stand for a host of its own. Logins are as the dedicated user
// iklimtest, whose shell is /bin/sh.
//
// Start needs root and /usr/sbin/sshd. Without them tests are skipped, or
// fail when IKLIM_REQUIRE_SSHD=1. With CI=true or IKLIM_INSTALL=1 missing
// packages (openssh-server, sudo) are installed with apt-get.
package sshtest

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/iklimco/iklim/inventories"
)

// User is the login user of every test server.
const User = "iklimtest"

// SSHDPath is the sshd binary Start runs.
const SSHDPath = "/usr/sbin/sshd"

// Server is a running sshd.
type Server struct {
	// Port is the TCP port sshd listens on, on every address.
	Port int
	// User is the login user (User).
	User string
	// Dir holds the server's files; it is removed when the test ends.
	Dir string
	// KeyPath is an unencrypted ed25519 client key that may log in.
	KeyPath string
	// KnownHostsPath is a known_hosts file with the host key for
	// 127.0.0.1:Port and every address handed out by Hosts or Host.
	KnownHostsPath string
	// ConfigPath is the sshd_config the server runs with.
	ConfigPath string
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey
	// ClientSigner is the signer for KeyPath.
	ClientSigner ssh.Signer

	hashed  bool
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string

	mu    sync.Mutex
	known map[string]bool
}

type config struct {
	maxSessions int
	hashed      bool
	verbose     bool
	extra       []string
}

// Option changes how Start configures the server.
type Option func(*config)

// MaxSessions sets sshd's MaxSessions (default 20).
func MaxSessions(n int) Option { return func(c *config) { c.maxSessions = n } }

// HashedKnownHosts writes KnownHostsPath with hashed host names (|1|…), as
// `ssh-keygen -H` or HashKnownHosts yes would.
func HashedKnownHosts() Option { return func(c *config) { c.hashed = true } }

// CountSessions logs at VERBOSE, where sshd notes every session it starts
// (see Sessions).
func CountSessions() Option { return func(c *config) { c.verbose = true } }

// ExtraConfig appends lines to sshd_config.
func ExtraConfig(lines ...string) Option {
	return func(c *config) { c.extra = append(c.extra, lines...) }
}

// skipOrFail skips t with msg, or fails it when IKLIM_REQUIRE_SSHD=1.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("IKLIM_REQUIRE_SSHD") == "1" {
		t.Fatalf("sshtest: "+format+" (IKLIM_REQUIRE_SSHD=1)", args...)
	}
	t.Skipf("sshtest: "+format, args...)
}

// installAllowed reports whether tests may apt-get install what they lack.
func installAllowed() bool {
	return os.Getenv("CI") == "true" || os.Getenv("IKLIM_INSTALL") == "1"
}

var aptMu sync.Mutex

// aptInstall installs pkg with apt-get, running apt-get update once if the
// first attempt fails.
func aptInstall(pkg string) error {
	aptMu.Lock()
	defer aptMu.Unlock()
	install := func() ([]byte, error) {
		c := exec.Command("apt-get", "install", "-y", "--no-install-recommends", pkg)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return c.CombinedOutput()
	}
	if _, err := install(); err == nil {
		return nil
	}
	if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %w: %s", err, out)
	}
	if out, err := install(); err != nil {
		return fmt.Errorf("apt-get install %s: %w: %s", pkg, err, out)
	}
	return nil
}

// requireRootAndSSHD skips (or fails) t unless sshd can be run.
func requireRootAndSSHD(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root to run sshd and log in as %s", User)
	}
	if _, err := os.Stat(SSHDPath); err != nil {
		if !installAllowed() {
			skipOrFail(t, "%s not found; apt-get install openssh-server, or set IKLIM_INSTALL=1 (or CI=true) to let the tests install it", SSHDPath)
		}
		if err := aptInstall("openssh-server"); err != nil {
			skipOrFail(t, "could not install openssh-server: %v", err)
		}
	}
}

var userMu sync.Mutex

// EnsureUser creates the iklimtest user (shell /bin/sh, unlocked, no
// password) if it is missing. Other test binaries may race to do the same,
// so failures are retried after looking again.
func EnsureUser(t testing.TB) {
	t.Helper()
	userMu.Lock()
	defer userMu.Unlock()
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		shell, pw, exists := accountState(User)
		if exists && shell == "/bin/sh" && !strings.HasPrefix(pw, "!") {
			return
		}
		var out []byte
		var err error
		switch {
		case !exists:
			out, err = exec.Command("useradd", "-m", "-s", "/bin/sh", User).CombinedOutput()
			if err == nil {
				out, err = exec.Command("usermod", "-p", "*", User).CombinedOutput()
			}
		default:
			out, err = exec.Command("usermod", "-s", "/bin/sh", "-p", "*", User).CombinedOutput()
		}
		if err != nil {
			lastErr = fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Fatalf("sshtest: cannot set up user %s: %v", User, lastErr)
}

// accountState reads the user's shell from /etc/passwd and password field
// from /etc/shadow.
func accountState(name string) (shell, password string, exists bool) {
	field := func(file string, idx int) (string, bool) {
		f, err := os.Open(file)
		if err != nil {
			return "", false
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			parts := strings.Split(s.Text(), ":")
			if len(parts) > idx && parts[0] == name {
				return parts[idx], true
			}
		}
		return "", false
	}
	shell, exists = field("/etc/passwd", 6)
	password, _ = field("/etc/shadow", 1)
	return shell, password, exists
}

// RequireSudo makes sure sudo is installed and that User may run anything
// through it without a password (/etc/sudoers.d/iklimtest), or skips t.
func RequireSudo(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root to configure sudo")
	}
	if _, err := exec.LookPath("sudo"); err != nil {
		if !installAllowed() {
			t.Skip("sshtest: sudo not installed; apt-get install sudo, or set IKLIM_INSTALL=1 (or CI=true)")
		}
		if err := aptInstall("sudo"); err != nil {
			t.Skipf("sshtest: could not install sudo: %v", err)
		}
	}
	EnsureUser(t)
	const file = "/etc/sudoers.d/" + User
	want := User + " ALL=(ALL:ALL) NOPASSWD: ALL\n"
	if b, err := os.ReadFile(file); err == nil && string(b) == want {
		return
	}
	tmp := file + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, []byte(want), 0o440); err != nil {
		t.Fatalf("sshtest: write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		os.Remove(tmp)
		t.Fatalf("sshtest: install %s: %v", file, err)
	}
}

// Start starts sshd for the length of t.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	requireRootAndSSHD(t)
	EnsureUser(t)
	cfg := config{maxSessions: 20}
	for _, o := range opts {
		o(&cfg)
	}

	// Not t.TempDir: its parents are 0700, and sshd reads authorized_keys
	// as the login user.
	dir, err := os.MkdirTemp("", "iklim-sshd-")
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	// sshd refuses to start without its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshtest: %v", err)
	}

	s := &Server{
		User:           User,
		Dir:            dir,
		KeyPath:        filepath.Join(dir, "id_ed25519"),
		KnownHostsPath: filepath.Join(dir, "known_hosts"),
		ConfigPath:     filepath.Join(dir, "sshd_config"),
		hashed:         cfg.hashed,
		known:          map[string]bool{},
	}
	hostKeyPath := filepath.Join(dir, "ssh_host_ed25519_key")
	hostPub, err := writeKey(hostKeyPath, "iklim test host")
	if err != nil {
		t.Fatalf("sshtest: host key: %v", err)
	}
	s.HostKey = hostPub
	clientPub, err := writeKey(s.KeyPath, "iklim test client")
	if err != nil {
		t.Fatalf("sshtest: client key: %v", err)
	}
	b, _ := os.ReadFile(s.KeyPath)
	if s.ClientSigner, err = ssh.ParsePrivateKey(b); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, ssh.MarshalAuthorizedKey(clientPub), 0o644); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	if err := os.WriteFile(s.KnownHostsPath, nil, 0o600); err != nil {
		t.Fatalf("sshtest: %v", err)
	}

	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("sshtest: %v", err)
		}
		conf := sshdConfig(port, dir, hostKeyPath, authKeys, cfg)
		if err := os.WriteFile(s.ConfigPath, []byte(conf), 0o600); err != nil {
			t.Fatalf("sshtest: %v", err)
		}
		if lastErr = s.run(port); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("sshtest: start sshd: %v", lastErr)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log())
		}
	})
	s.AddKnownHost("127.0.0.1")
	return s
}

func sshdConfig(port int, dir, hostKey, authKeys string, cfg config) string {
	lines := []string{
		"Port " + strconv.Itoa(port),
		"ListenAddress 0.0.0.0",
		"AddressFamily inet",
		"HostKey " + hostKey,
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + authKeys,
		"UsePAM no",
		"StrictModes no",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin no",
		"AllowUsers " + User,
		"MaxStartups 200:30:400",
		"MaxSessions " + strconv.Itoa(cfg.maxSessions),
		"MaxAuthTries 20",
		"AllowTcpForwarding yes",
		"UseDNS no",
		"PrintMotd no",
		"PrintLastLog no",
		"Subsystem sftp internal-sftp",
	}
	// The first LogLevel in the file wins.
	if cfg.verbose {
		lines = append(lines, "LogLevel VERBOSE")
	} else {
		lines = append(lines, "LogLevel INFO")
	}
	if sshdAtLeast(9, 8) {
		// Newer sshd penalises sources that fail or drop logins, which
		// tests of refused host keys do on purpose, from 127.0.0.1.
		lines = append(lines, "PerSourcePenalties no")
	}
	lines = append(lines, cfg.extra...)
	return strings.Join(lines, "\n") + "\n"
}

var (
	sshdVersionOnce         sync.Once
	sshdMajor, sshdMinorVer int
)

func sshdAtLeast(major, minor int) bool {
	sshdVersionOnce.Do(func() {
		out, _ := exec.Command(SSHDPath, "-V").CombinedOutput()
		m := regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`).FindSubmatch(out)
		if m != nil {
			sshdMajor, _ = strconv.Atoi(string(m[1]))
			sshdMinorVer, _ = strconv.Atoi(string(m[2]))
		}
	})
	return sshdMajor > major || sshdMajor == major && sshdMinorVer >= minor
}

// run starts sshd on port and waits until it accepts connections.
func (s *Server) run(port int) error {
	// A file, not a pipe: sshd's processes write straight into it, so a
	// line logged before a login completes is readable once it has.
	s.logPath = filepath.Join(s.Dir, "sshd.log")
	logFile, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", s.ConfigPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("sshd exited: %s", s.Log())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			s.Port, s.cmd, s.exited = port, cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("sshd did not listen on %s within 10s: %s", addr, s.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop ends sshd by its pid: SIGTERM, then SIGKILL after two seconds.
func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(2 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Log returns what sshd has logged so far (LogLevel INFO: one "Accepted
// publickey" line per login, for instance).
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// SettledSessions is how many sessions (commands, shells, subsystems) sshd
// has started, once every one of them has closed: sshd logs a session's
// start from another process than the client's command, so a count taken
// as soon as the client is done may miss the last. The server must have
// been started with CountSessions.
func (s *Server) SettledSessions(t testing.TB) int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		l := s.Log()
		n := strings.Count(l, "Starting session: ")
		if n == strings.Count(l, "Close session: ") {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshtest: %d sessions started, not all closed after 10 s", n)
		}
	}
}

// PID is the pid of the listening sshd (started with -D, so it does not
// fork away). Read this, not its PidFile: sshd writes that after it starts
// listening, so a test that reads it at once may find it empty.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Procs returns the pids of every process below the listening sshd: the
// per-connection sshd processes and the commands they run (read from /proc).
func (s *Server) Procs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at ')'.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	for q := children[s.PID()]; len(q) > 0; q = q[1:] {
		out = append(out, q[0])
		q = append(q, children[q[0]]...)
	}
	return out, nil
}

// Addr is "127.0.0.1:Port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// HostAddr is the loopback address of the i-th test host (from 0):
// 127.0.1.1 … 127.0.1.254, then 127.0.2.1 and on.
func HostAddr(i int) string {
	return fmt.Sprintf("127.0.%d.%d", 1+i/254, 1+i%254)
}

// KnownHostsLine is the known_hosts line for the server at ip, hashed when
// the server was started with HashedKnownHosts.
func (s *Server) KnownHostsLine(ip string) string {
	name := knownhosts.Normalize(net.JoinHostPort(ip, strconv.Itoa(s.Port)))
	if s.hashed {
		name = knownhosts.HashHostname(name)
	}
	return knownhosts.Line([]string{name}, s.HostKey)
}

// AddKnownHost records the server's key for ip in KnownHostsPath.
func (s *Server) AddKnownHost(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known[ip] {
		return
	}
	f, err := os.OpenFile(s.KnownHostsPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		panic(fmt.Sprintf("sshtest: %v", err))
	}
	defer f.Close()
	if _, err := f.WriteString(s.KnownHostsLine(ip) + "\n"); err != nil {
		panic(fmt.Sprintf("sshtest: %v", err))
	}
	s.known[ip] = true
}

// Host returns an inventory host named name that reaches the server at ip,
// with its key in KnownHostsPath.
func (s *Server) Host(name, ip string) *inventories.Host {
	s.AddKnownHost(ip)
	return &inventories.Host{
		Name:       name,
		Address:    ip,
		Port:       s.Port,
		User:       s.User,
		Key:        s.KeyPath,
		KnownHosts: s.KnownHostsPath,
		BackupRoot: inventories.DefaultBackupRoot,
		Labels:     map[string]string{},
	}
}

// Hosts returns n hosts h001, h002, … at HostAddr(0), HostAddr(1), …
func (s *Server) Hosts(n int) []*inventories.Host {
	hosts := make([]*inventories.Host, n)
	for i := range hosts {
		hosts[i] = s.Host(fmt.Sprintf("h%03d", i+1), HostAddr(i))
	}
	return hosts
}

// writeKey writes a new ed25519 private key to path (0600) in OpenSSH
// format and returns its public half.
func writeKey(path, comment string) (ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewPublicKey(pub)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
