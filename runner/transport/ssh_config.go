package transport

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"

	"github.com/iklimco/iklim/inventories"
)

// sshConfig is a parsed ssh_config file. A nil cfg means there is none.
type sshConfig struct {
	path string
	cfg  *ssh_config.Config
}

// loadSSHConfig reads path, or ~/.ssh/config when path is empty. A missing
// default file is no error; a missing file that was asked for by name is.
func loadSSHConfig(path string) (*sshConfig, error) {
	explicit := path != ""
	if !explicit {
		home, err := os.UserHomeDir()
		if err != nil {
			return &sshConfig{}, nil
		}
		path = filepath.Join(home, ".ssh", "config")
	}
	f, err := os.Open(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return &sshConfig{path: path}, nil
		}
		return nil, fmt.Errorf("ssh config: %w", err)
	}
	defer f.Close()
	cfg, err := ssh_config.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %w", path, err)
	}
	return &sshConfig{path: path, cfg: cfg}, nil
}

// get returns the first value of key for alias, or "".
func (c *sshConfig) get(alias, key string) string {
	if c == nil || c.cfg == nil {
		return ""
	}
	v, err := c.cfg.Get(alias, key)
	if err != nil {
		return ""
	}
	return v
}

func (c *sshConfig) getAll(alias, key string) []string {
	if c == nil || c.cfg == nil {
		return nil
	}
	v, err := c.cfg.GetAll(alias, key)
	if err != nil {
		return nil
	}
	return v
}

// endpoint is everything needed to dial one host, after the inventory,
// ssh_config and defaults have been folded together in that order.
type endpoint struct {
	name       string // inventory name, for messages
	host       string // name or address to dial
	port       int
	user       string
	key        string   // inventory key file: must load
	identities []string // ssh_config (or default) identity files: used when they load
	proxyJump  string
	knownHosts string
	tofu       bool
	timeout    time.Duration
}

func (e *endpoint) addr() string { return net.JoinHostPort(e.host, strconv.Itoa(e.port)) }

// resolve folds h, the ssh_config entry for h.Name and the defaults into an
// endpoint. An inventory Address equal to the name counts as unset, so that
// ssh_config's HostName still applies to hosts listed only by name; a zero
// Port counts as unset.
func (c *sshConfig) resolve(h *inventories.Host, defTimeout time.Duration) (endpoint, error) {
	alias := h.Name
	e := endpoint{
		name:       h.Name,
		host:       h.Address,
		port:       h.Port,
		user:       h.User,
		key:        inventories.ExpandHome(h.Key),
		proxyJump:  h.ProxyJump,
		knownHosts: inventories.ExpandHome(h.KnownHosts),
		tofu:       h.TrustOnFirstUse,
		timeout:    h.ConnectTimeout,
	}
	if e.host == "" || e.host == h.Name {
		if v := c.get(alias, "HostName"); v != "" {
			e.host = expandTokens(v, tokens{alias: alias, host: alias})
		}
	}
	if e.host == "" {
		e.host = alias
	}
	if e.port == 0 {
		if v := c.get(alias, "Port"); v != "" {
			p, err := strconv.Atoi(v)
			if err != nil || p <= 0 || p > 65535 {
				return e, fmt.Errorf("%s: ssh config %s: bad Port %q", h.Name, c.path, v)
			}
			e.port = p
		}
	}
	if e.port == 0 {
		e.port = 22
	}
	if e.user == "" {
		e.user = c.get(alias, "User")
	}
	if e.user == "" {
		e.user = localUser()
	}
	tk := tokens{alias: alias, host: e.host, port: e.port, remoteUser: e.user}
	if e.key == "" {
		for _, f := range c.getAll(alias, "IdentityFile") {
			e.identities = append(e.identities, inventories.ExpandHome(expandTokens(f, tk)))
		}
		if len(e.identities) == 0 {
			if home, err := os.UserHomeDir(); err == nil {
				for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
					e.identities = append(e.identities, filepath.Join(home, ".ssh", n))
				}
			}
		}
	}
	if e.proxyJump == "" {
		e.proxyJump = c.get(alias, "ProxyJump")
	}
	if strings.EqualFold(e.proxyJump, "none") {
		e.proxyJump = ""
	}
	if e.knownHosts == "" {
		if v := c.get(alias, "UserKnownHostsFile"); v != "" {
			// Only the first file; OpenSSH allows several.
			e.knownHosts = inventories.ExpandHome(expandTokens(strings.Fields(v)[0], tk))
		}
	}
	if e.knownHosts == "" {
		e.knownHosts = inventories.ExpandHome("~/.ssh/known_hosts")
	}
	if e.timeout <= 0 {
		e.timeout = defTimeout
	}
	return e, nil
}

// jumpHop is one host of a ProxyJump chain.
type jumpHop struct {
	user string
	host string
	port int // 0: from ssh_config or 22
}

func (j jumpHop) String() string {
	s := net.JoinHostPort(j.host, strconv.Itoa(j.port))
	if j.port == 0 {
		s = j.host
	}
	if j.user != "" {
		s = j.user + "@" + s
	}
	return s
}

// parseProxyJump splits "user@host:port,host2,[::1]:2222" into hops.
func parseProxyJump(s string) ([]jumpHop, error) {
	var hops []jumpHop
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		part = strings.TrimPrefix(part, "ssh://")
		if part == "" {
			return nil, fmt.Errorf("bad ProxyJump %q: empty hop", s)
		}
		var hop jumpHop
		if i := strings.LastIndexByte(part, '@'); i >= 0 {
			hop.user, part = part[:i], part[i+1:]
		}
		host, port := part, ""
		if strings.HasPrefix(part, "[") {
			end := strings.IndexByte(part, ']')
			if end < 0 {
				return nil, fmt.Errorf("bad ProxyJump %q: unclosed [", s)
			}
			host, port = part[1:end], strings.TrimPrefix(part[end+1:], ":")
		} else if i := strings.LastIndexByte(part, ':'); i >= 0 {
			host, port = part[:i], part[i+1:]
		}
		if host == "" {
			return nil, fmt.Errorf("bad ProxyJump %q: empty host", s)
		}
		hop.host = host
		if port != "" {
			p, err := strconv.Atoi(port)
			if err != nil || p <= 0 || p > 65535 {
				return nil, fmt.Errorf("bad ProxyJump %q: bad port %q", s, port)
			}
			hop.port = p
		}
		hops = append(hops, hop)
	}
	return hops, nil
}

// tokens are the values of ssh_config's % tokens.
type tokens struct {
	alias      string // %n
	host       string // %h
	port       int    // %p
	remoteUser string // %r
}

// expandTokens expands %% %h %n %p %r %u %d in s; others are left alone.
func expandTokens(s string, t tokens) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i == len(s)-1 {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case '%':
			b.WriteByte('%')
		case 'h':
			b.WriteString(t.host)
		case 'n':
			b.WriteString(t.alias)
		case 'p':
			b.WriteString(strconv.Itoa(t.port))
		case 'r':
			b.WriteString(t.remoteUser)
		case 'u':
			b.WriteString(localUser())
		case 'd':
			home, _ := os.UserHomeDir()
			b.WriteString(home)
		default:
			b.WriteByte('%')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func localUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}
