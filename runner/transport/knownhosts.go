package transport

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iklimco/iklim/modules/remote"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ErrHostKeyUnknown is matched (errors.Is) by the error for a host whose key
// is not in known_hosts.
var ErrHostKeyUnknown = errors.New("unknown host key")

// ErrHostKeyChanged is matched (errors.Is) by the error for a host whose key
// differs from the one in known_hosts. iklim always refuses such a host.
var ErrHostKeyChanged = errors.New("HOST KEY CHANGED")

// knownHostsFile is one known_hosts file, parsed once and parsed again only
// when it changes on disk. A connector keeps one per path, so its appends
// from trust-on-first-use are serialised.
type knownHostsFile struct {
	path string

	mu      sync.Mutex
	cb      ssh.HostKeyCallback
	modTime time.Time
	size    int64
	exists  bool
}

// knownHostsCache holds a connector's known_hosts files by path.
type knownHostsCache struct {
	mu    sync.Mutex
	files map[string]*knownHostsFile
}

// get returns the knownHostsFile for path.
func (c *knownHostsCache) get(path string) *knownHostsFile {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.files[path]
	if k == nil {
		if c.files == nil {
			c.files = map[string]*knownHostsFile{}
		}
		k = &knownHostsFile{path: path}
		c.files[path] = k
	}
	return k
}

// current returns the callback for the file as it is now; k.mu must be held.
func (k *knownHostsFile) current() (ssh.HostKeyCallback, error) {
	st, err := os.Stat(k.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if k.cb == nil || k.exists {
			k.cb = func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }
			k.exists = false
		}
		return k.cb, nil
	case err != nil:
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	if k.cb != nil && k.exists && st.ModTime().Equal(k.modTime) && st.Size() == k.size {
		return k.cb, nil
	}
	cb, err := knownhosts.New(k.path)
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	k.cb, k.exists, k.modTime, k.size = cb, true, st.ModTime(), st.Size()
	return cb, nil
}

// check runs the known_hosts check for address ("host:port").
func (k *knownHostsFile) check(address string, remote net.Addr, key ssh.PublicKey) error {
	k.mu.Lock()
	cb, err := k.current()
	k.mu.Unlock()
	if err != nil {
		return err
	}
	return cb(address, remote, key)
}

// algorithms returns the host key algorithms for the key types known_hosts
// holds for address, so that the server offers a key we can check rather
// than its own first preference. Nil (library defaults) when none is known.
func (k *knownHostsFile) algorithms(address string) []string {
	err := k.check(address, probeAddr(address), probeKey{})
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			algos = append(algos, a)
		}
	}
	for _, w := range ke.Want {
		switch t := w.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512)
			add(ssh.KeyAlgoRSASHA256)
			add(ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}

// callback is the HostKeyCallback for host name (used in messages). With
// tofu an unknown key is appended to the file; a changed key is refused
// whatever tofu says.
func (k *knownHostsFile) callback(name string, tofu bool) ssh.HostKeyCallback {
	return func(address string, remote net.Addr, key ssh.PublicKey) error {
		err := k.check(address, remote, key)
		if err == nil {
			return nil
		}
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(err, &re):
			return fmt.Errorf("host key %s %s for %s (%s) is marked @revoked in %s",
				key.Type(), ssh.FingerprintSHA256(key), name, address, k.path)
		case !errors.As(err, &ke):
			return err
		case len(ke.Want) > 0:
			return k.changedError(name, address, key, ke.Want)
		case tofu:
			return k.trust(name, address, remote, key)
		default:
			return k.unknownError(name, address, key)
		}
	}
}

// trust appends key for address, unless someone else recorded a key for it
// meanwhile, in which case that key decides.
func (k *knownHostsFile) trust(name, address string, remote net.Addr, key ssh.PublicKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	cb, err := k.current()
	if err != nil {
		return err
	}
	err = cb(address, remote, key)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return err // nil: recorded by a concurrent dial
	}
	if len(ke.Want) > 0 {
		return k.changedError(name, address, key, ke.Want)
	}
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return fmt.Errorf("known_hosts: record key for %s: %w", name, err)
	}
	f, err := os.OpenFile(k.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("known_hosts: record key for %s: %w", name, err)
	}
	defer f.Close()
	line := knownhosts.Line([]string{knownhosts.Normalize(address)}, key) + "\n"
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
			line = "\n" + line
		}
	}
	if _, err := io.WriteString(f, line); err != nil {
		return fmt.Errorf("known_hosts: record key for %s: %w", name, err)
	}
	k.cb = nil // parse again, with the new line, next time
	return nil
}

func (k *knownHostsFile) unknownError(name, address string, key ssh.PublicKey) error {
	host, port, _ := net.SplitHostPort(address)
	scan := "ssh-keyscan "
	if port != "" && port != "22" {
		scan += "-p " + port + " "
	}
	scan += host + " >> " + k.path
	return fmt.Errorf("%w for %s (%s): the server offered %s %s, which is not in %s; "+
		"check the fingerprint and add it (`%s`), or set trust_on_first_use for this host",
		ErrHostKeyUnknown, name, address, key.Type(), ssh.FingerprintSHA256(key), k.path, scan)
}

func (k *knownHostsFile) changedError(name, address string, key ssh.PublicKey, want []knownhosts.KnownKey) error {
	known := make([]string, 0, len(want))
	for _, w := range want {
		known = append(known, fmt.Sprintf("%s %s (%s:%d)", w.Key.Type(), ssh.FingerprintSHA256(w.Key), w.Filename, w.Line))
	}
	return fmt.Errorf("%w for %s (%s): the server offered %s %s but known_hosts has %s; "+
		"someone may be intercepting the connection. If the host was really reinstalled, "+
		"remove the old entry with `ssh-keygen -R %s -f %s` and connect again",
		ErrHostKeyChanged, name, address, key.Type(), ssh.FingerprintSHA256(key),
		strings.Join(known, ", "), remote.Quote(knownhosts.Normalize(address)), k.path)
}

// probeKey matches no known_hosts entry; checking it lists the known keys.
type probeKey struct{}

func (probeKey) Type() string                        { return "iklim-probe" }
func (probeKey) Marshal() []byte                     { return []byte("\x00\x00\x00\x0biklim-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

func probeAddr(address string) net.Addr {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return &net.TCPAddr{IP: net.IPv4zero}
	}
	p, _ := strconv.Atoi(port)
	ip := net.ParseIP(host)
	if ip == nil {
		ip = net.IPv4zero
	}
	return &net.TCPAddr{IP: ip, Port: p}
}
