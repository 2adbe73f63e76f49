package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
)

// SSHOptions tune an SSHConnector. Zero values take the defaults.
type SSHOptions struct {
	// MaxHandshakes caps SSH handshakes in progress at once (default 8),
	// below OpenSSH's MaxStartups default of 10:30:100, past which sshd
	// starts dropping new connections.
	MaxHandshakes int
	// MaxSessions is the server's MaxSessions (default 10, OpenSSH's
	// default). Each connection runs at most MaxSessions-1 commands at once;
	// the last session is kept for sftp.
	MaxSessions int
	// SSHConfigFile is the ssh_config to read; default ~/.ssh/config.
	SSHConfigFile string
	// ConnectTimeout bounds dial plus handshake when the host sets none
	// (default 15s).
	ConnectTimeout time.Duration
	// Secrets redacts the command text that appears in errors.
	Secrets *modules.Secrets
	// KeepaliveInterval is how often a connection asks its host whether it
	// is still there (keepalive@openssh.com, as ssh's ServerAliveInterval);
	// default DefaultKeepaliveInterval, negative sends none.
	KeepaliveInterval time.Duration
	// KeepaliveCount is how many intervals in a row may pass without an
	// answer before the connection is closed and its host reported
	// unreachable (ssh's ServerAliveCountMax); default DefaultKeepaliveCount.
	KeepaliveCount int
}

// Keepalive defaults: a host that vanishes mid-step is reported unreachable
// within (count+1) × interval = 60s at most, not left waited on forever.
const (
	DefaultKeepaliveInterval = 15 * time.Second
	DefaultKeepaliveCount    = 3
)

// UnreachableWithin is the longest a host that vanished (network gone,
// powered off) goes unnoticed on an established connection with these
// options; 0 when keepalives are off.
func (o SSHOptions) UnreachableWithin() time.Duration {
	return o.keepalive().bound()
}

func (o SSHOptions) keepalive() keepalive {
	ka := keepalive{interval: o.KeepaliveInterval, count: o.KeepaliveCount}
	switch {
	case ka.interval < 0:
		return keepalive{}
	case ka.interval == 0:
		ka.interval = DefaultKeepaliveInterval
	}
	if ka.count <= 0 {
		ka.count = DefaultKeepaliveCount
	}
	return ka
}

// UnreachableError is returned by SSHConnector.Connect when a host could not
// be reached: dial, handshake, host key or authentication failed.
type UnreachableError struct {
	Host string
	Err  error
}

func (e *UnreachableError) Error() string { return e.Host + ": unreachable: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *UnreachableError) Unwrap() error { return e.Err }

// SSHConnector is the Connector for SSH hosts (and local ones). It keeps one
// connection per host for its whole life, dials concurrent requests for the
// same host once, shares jump host connections, and throttles handshakes.
type SSHConnector struct {
	opts       SSHOptions
	knownHosts knownHostsCache
	handshakes chan struct{}

	cfgOnce sync.Once
	cfg     *sshConfig
	cfgErr  error

	mu     sync.Mutex
	closed bool
	conns  map[string]*connFlight
	jumps  map[string]*jumpFlight

	keysMu sync.Mutex
	keys   map[string]signerResult

	agentMu      sync.Mutex
	agentConn    net.Conn
	agentSigners []ssh.Signer
}

type connFlight struct {
	done chan struct{}
	conn modules.Conn
	err  error
}

type jumpFlight struct {
	done   chan struct{}
	client *ssh.Client
	dead   chan struct{}
	err    error
}

type signerResult struct {
	signer ssh.Signer
	err    error
}

// NewSSHConnector returns a connector with opts, defaults filled in.
func NewSSHConnector(opts SSHOptions) *SSHConnector {
	if opts.MaxHandshakes <= 0 {
		opts.MaxHandshakes = 8
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 10
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 15 * time.Second
	}
	return &SSHConnector{
		opts:       opts,
		handshakes: make(chan struct{}, opts.MaxHandshakes),
		conns:      map[string]*connFlight{},
		jumps:      map[string]*jumpFlight{},
		keys:       map[string]signerResult{},
	}
}

var errConnectorClosed = errors.New("connector closed")

// Connect implements Connector. It returns the host's cached connection, or
// dials it; callers asking for the same host meanwhile wait for that one
// dial. Local hosts get a LocalConn. Failures to reach the host are
// *UnreachableError; a connection that has died is dialled again.
func (c *SSHConnector) Connect(ctx context.Context, h *inventories.Host) (modules.Conn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("%s: %w", h.Name, errConnectorClosed)
		}
		f, ok := c.conns[h.Name]
		if !ok {
			f = &connFlight{done: make(chan struct{})}
			c.conns[h.Name] = f
			c.mu.Unlock()
			c.finish(h.Name, f, ctx, h)
			return f.conn, f.err
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var ue *UnreachableError
		switch {
		case f.err == nil && connAlive(f.conn):
			return f.conn, nil
		case errors.As(f.err, &ue):
			return nil, f.err
		}
		// The other caller was cancelled, or the connection died: dial anew.
		c.mu.Lock()
		if c.conns[h.Name] == f {
			delete(c.conns, h.Name)
		}
		c.mu.Unlock()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// finish dials for flight f and publishes the result.
func (c *SSHConnector) finish(name string, f *connFlight, ctx context.Context, h *inventories.Host) {
	conn, err := c.dial(ctx, h)
	c.mu.Lock()
	if err == nil && c.closed {
		_ = closeConn(conn)
		conn, err = nil, fmt.Errorf("%s: %w", name, errConnectorClosed)
	}
	if err != nil && c.conns[name] == f {
		delete(c.conns, name)
	}
	f.conn, f.err = conn, err
	close(f.done)
	c.mu.Unlock()
}

func connAlive(c modules.Conn) bool {
	if s, ok := c.(*SSHConn); ok {
		return s.alive()
	}
	return true
}

func closeConn(c modules.Conn) error {
	if cl, ok := c.(interface{ Close() error }); ok {
		return cl.Close()
	}
	return nil
}

// Close implements Connector: it closes every connection, then the jump
// host connections. Dials still in progress close their result themselves.
func (c *SSHConnector) Close() error {
	c.mu.Lock()
	c.closed = true
	conns, jumps := c.conns, c.jumps
	c.conns, c.jumps = map[string]*connFlight{}, map[string]*jumpFlight{}
	c.mu.Unlock()
	var errs []error
	for _, f := range conns {
		select {
		case <-f.done:
			if f.err == nil {
				if err := closeConn(f.conn); err != nil {
					errs = append(errs, fmt.Errorf("%s: close: %w", f.conn.Host(), err))
				}
			}
		default:
		}
	}
	for _, f := range jumps {
		select {
		case <-f.done:
			if f.err == nil {
				_ = f.client.Close()
			}
		default:
		}
	}
	c.agentMu.Lock()
	if c.agentConn != nil {
		_ = c.agentConn.Close()
		c.agentConn, c.agentSigners = nil, nil
	}
	c.agentMu.Unlock()
	return errors.Join(errs...)
}

func (c *SSHConnector) sshConfig() (*sshConfig, error) {
	c.cfgOnce.Do(func() { c.cfg, c.cfgErr = loadSSHConfig(c.opts.SSHConfigFile) })
	return c.cfg, c.cfgErr
}

// dial opens a new connection to h.
func (c *SSHConnector) dial(ctx context.Context, h *inventories.Host) (modules.Conn, error) {
	if h.Local {
		return NewLocalConn(h.Name), nil
	}
	cfg, err := c.sshConfig()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	ep, err := cfg.resolve(h, c.opts.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	var via *ssh.Client
	if ep.proxyJump != "" {
		hops, err := parseProxyJump(ep.proxyJump)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		if via, err = c.jumpChain(ctx, cfg, &ep, hops); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, &UnreachableError{Host: h.Name, Err: err}
		}
	}
	client, err := c.handshake(ctx, via, &ep)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &UnreachableError{Host: h.Name, Err: err}
	}
	return newSSHConn(h, client, c.opts.MaxSessions, c.opts.Secrets, c.opts.keepalive()), nil
}

// jumpChain returns the client of the last hop of hops, dialling each hop
// through the previous one. Hop connections are shared by every host that
// names the same chain (with the same key and known_hosts), and checked
// against the same known_hosts as the host.
func (c *SSHConnector) jumpChain(ctx context.Context, cfg *sshConfig, ep *endpoint, hops []jumpHop) (*ssh.Client, error) {
	var via *ssh.Client
	chain := ""
	for _, hop := range hops {
		if chain != "" {
			chain += ","
		}
		chain += hop.String()
		key := chain + "|" + ep.key + "|" + ep.knownHosts
		jh := &inventories.Host{
			Name:            hop.host,
			User:            hop.user,
			Port:            hop.port,
			Key:             ep.key,
			KnownHosts:      ep.knownHosts,
			TrustOnFirstUse: ep.tofu,
			ProxyJump:       "none",
			ConnectTimeout:  ep.timeout,
		}
		prev := via
		client, err := c.jump(ctx, key, func() (*ssh.Client, error) {
			jep, err := cfg.resolve(jh, ep.timeout)
			if err != nil {
				return nil, err
			}
			return c.handshake(ctx, prev, &jep)
		})
		if err != nil {
			return nil, fmt.Errorf("jump host %s: %w", hop, err)
		}
		via = client
	}
	return via, nil
}

// jump returns the shared client for key, dialling it with dial once.
func (c *SSHConnector) jump(ctx context.Context, key string, dial func() (*ssh.Client, error)) (*ssh.Client, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errConnectorClosed
		}
		f, ok := c.jumps[key]
		if !ok {
			f = &jumpFlight{done: make(chan struct{})}
			c.jumps[key] = f
			c.mu.Unlock()
			client, err := dial()
			c.mu.Lock()
			if err == nil && c.closed {
				_ = client.Close()
				client, err = nil, errConnectorClosed
			}
			if err != nil {
				if c.jumps[key] == f {
					delete(c.jumps, key)
				}
			} else {
				f.dead = make(chan struct{})
				go func(cl *ssh.Client, dead chan struct{}) {
					_ = cl.Wait()
					close(dead)
				}(client, f.dead)
			}
			f.client, f.err = client, err
			close(f.done)
			c.mu.Unlock()
			return client, err
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.err == nil {
			select {
			case <-f.dead:
			default:
				return f.client, nil
			}
		} else if ctx.Err() == nil && !errors.Is(f.err, context.Canceled) && !errors.Is(f.err, context.DeadlineExceeded) {
			return nil, f.err
		}
		c.mu.Lock()
		if c.jumps[key] == f {
			delete(c.jumps, key)
		}
		c.mu.Unlock()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// handshake dials ep (through via when set) and logs in, within ep.timeout
// and the handshake cap.
func (c *SSHConnector) handshake(ctx context.Context, via *ssh.Client, ep *endpoint) (*ssh.Client, error) {
	auth, tried, err := c.auth(ep)
	if err != nil {
		return nil, err
	}
	addr := ep.addr()
	kh := c.knownHosts.get(ep.knownHosts)
	cfg := &ssh.ClientConfig{
		User:              ep.user,
		Auth:              auth,
		HostKeyCallback:   kh.callback(ep.name, ep.tofu),
		HostKeyAlgorithms: kh.algorithms(addr),
		ClientVersion:     "SSH-2.0-iklim",
		Timeout:           ep.timeout,
	}

	select {
	case c.handshakes <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.handshakes }()

	dctx, cancel := context.WithTimeout(ctx, ep.timeout)
	defer cancel()
	var conn net.Conn
	if via == nil {
		var d net.Dialer
		conn, err = d.DialContext(dctx, "tcp", addr)
	} else {
		conn, err = via.DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		// The dialer may see its deadline a moment before dctx reports it.
		var ne net.Error
		if ctx.Err() == nil && (dctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()) {
			return nil, fmt.Errorf("dial %s: timed out after %s: no answer; the host is down, not reachable from here, "+
				"or a firewall drops the SSH port: check address and port (and proxy_jump), or raise connect_timeout", addr, ep.timeout)
		}
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("dial %s: %w: nothing listens on that port; check that sshd runs on the host "+
				"and that address and port in the inventory (or ssh_config) are right", addr, err)
		case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
			return nil, fmt.Errorf("dial %s: %w: no route to the host; check the address (and proxy_jump), "+
				"and that the host is up", addr, err)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	stop := context.AfterFunc(dctx, func() { _ = conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if !stop() {
		// Cancelled or timed out during the handshake; conn is closed.
		if err == nil {
			_ = sc.Close()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("ssh %s: handshake timed out after %s: the port accepts connections but no SSH server "+
			"answered in time (sshd stuck or overloaded, past its MaxStartups, or another service on that port); "+
			"check the port and the host's load, or raise connect_timeout", addr, ep.timeout)
	}
	if err != nil {
		_ = conn.Close()
		if strings.Contains(err.Error(), "unable to authenticate") {
			if ids := c.agentIdentities(); len(ids) > 0 {
				tried = strings.Replace(tried, "ssh-agent", "ssh-agent ("+strings.Join(ids, ", ")+")", 1)
			} else {
				tried = strings.Replace(tried, "ssh-agent", "ssh-agent (no keys)", 1)
			}
			return nil, fmt.Errorf("ssh %s: log in as %s with %s: %s refused every key; "+
				"add one of these public keys to ~%s/.ssh/authorized_keys on the host (ssh-copy-id -i KEY.pub %s@HOST), "+
				"or set user and key in the inventory: %w",
				addr, ep.user, tried, ep.name, ep.user, ep.user, err)
		}
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	return ssh.NewClient(sc, chans, reqs), nil
}

// auth returns the auth methods for ep: its inventory key (which must
// load), else its ssh_config identity files (those that load), then the
// ssh-agent's keys. All go into one publickey method: x/crypto tries each
// method name once, so a second publickey method would never be asked.
// tried describes the keys for error messages.
func (c *SSHConnector) auth(ep *endpoint) (methods []ssh.AuthMethod, tried string, err error) {
	var signers []ssh.Signer
	var names []string
	useAgent := os.Getenv("SSH_AUTH_SOCK") != ""
	if ep.key != "" {
		s, err := c.signer(ep.key)
		var pm *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &pm) && useAgent:
			names = append(names, ep.key+" (encrypted: only usable through ssh-agent)")
		case errors.As(err, &pm):
			return nil, "", fmt.Errorf("key %s is encrypted with a passphrase, and iklim does not prompt: "+
				"load it into ssh-agent (ssh-add %s) or use a key without a passphrase", ep.key, ep.key)
		case err != nil:
			return nil, "", fmt.Errorf("key %s: %w", ep.key, err)
		default:
			signers = append(signers, s)
			names = append(names, keyName(ep.key, s.PublicKey()))
		}
	}
	for _, f := range ep.identities {
		if s, err := c.signer(f); err == nil {
			signers = append(signers, s)
			names = append(names, keyName(f, s.PublicKey()))
		}
	}
	if useAgent {
		names = append(names, "ssh-agent")
	}
	if len(names) == 0 {
		return nil, "", errors.New("no key to log in with: set key in the inventory, IdentityFile in ssh_config, or run ssh-agent")
	}
	cb := func() ([]ssh.Signer, error) {
		if !useAgent {
			return signers, nil
		}
		as := c.agentKeys()
		if len(as) == 0 {
			return signers, nil
		}
		all := append(make([]ssh.Signer, 0, len(signers)+len(as)), signers...)
		for _, a := range as {
			dup := false
			for _, s := range signers {
				if string(s.PublicKey().Marshal()) == string(a.PublicKey().Marshal()) {
					dup = true
					break
				}
			}
			if !dup {
				all = append(all, a)
			}
		}
		return all, nil
	}
	return []ssh.AuthMethod{ssh.PublicKeysCallback(cb)}, strings.Join(names, ", "), nil
}

// signer parses the private key file at path once per connector.
func (c *SSHConnector) signer(path string) (ssh.Signer, error) {
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	if r, ok := c.keys[path]; ok {
		return r.signer, r.err
	}
	var r signerResult
	b, err := os.ReadFile(path)
	if err != nil {
		r.err = err
	} else {
		r.signer, r.err = ssh.ParsePrivateKey(b)
	}
	c.keys[path] = r
	return r.signer, r.err
}

// agentKeys returns the ssh-agent's keys, asked once per connector; nil
// when the agent cannot be reached.
// keyName names a key file with its type and fingerprint, which is what
// authorized_keys and ssh-keygen -l show.
func keyName(path string, pub ssh.PublicKey) string {
	return fmt.Sprintf("%s (%s %s)", path, pub.Type(), ssh.FingerprintSHA256(pub))
}

// agentIdentities lists the ssh-agent's keys with their comments, for the
// error of a refused login; none without an agent.
func (c *SSHConnector) agentIdentities() []string {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil
	}
	defer conn.Close()
	keys, err := agent.NewClient(conn).List()
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s %s %s", k.Comment, k.Type(), ssh.FingerprintSHA256(k)))
	}
	return out
}

func (c *SSHConnector) agentKeys() []ssh.Signer {
	c.agentMu.Lock()
	defer c.agentMu.Unlock()
	if c.agentConn != nil {
		return c.agentSigners
	}
	conn, err := net.Dial("unix", os.Getenv("SSH_AUTH_SOCK"))
	if err != nil {
		return nil
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		_ = conn.Close()
		return nil
	}
	c.agentConn, c.agentSigners = conn, signers
	return signers
}
