// Package inventories reads HCL inventories — hosts, groups, vars — and
// selects hosts with Ansible-style patterns. The stock inventories live beside
// this file as data: prod.hcl and lab.hcl.
package inventories

import (
	"fmt"
	"time"

	"github.com/zclconf/go-cty/cty"
)

// DefaultBackupRoot is where runs are recorded on a host unless the inventory
// says otherwise.
const DefaultBackupRoot = "/var/backups/iklim"

// Host is one machine and how to reach it, after defaults and group settings
// are folded in.
type Host struct {
	Name    string
	Address string // defaults to Name
	Port    int    // 0: ~/.ssh/config's Port, else 22
	User    string
	// Key is a private key file; empty means ssh-agent and ~/.ssh/config.
	Key string
	// KnownHosts is the known_hosts file used to verify the host key;
	// empty means ~/.ssh/known_hosts.
	KnownHosts string
	// TrustOnFirstUse records an unknown host key instead of refusing it.
	TrustOnFirstUse bool
	// ProxyJump is "user@host:port[,…]" as in ssh_config.
	ProxyJump string
	// Become runs commands through sudo as BecomeUser (default root).
	Become     bool
	BecomeUser string
	BackupRoot string
	// ConnectTimeout bounds dial plus handshake.
	ConnectTimeout time.Duration
	// Local makes the host the control machine itself: no SSH.
	Local bool

	Labels map[string]string
	// Vars are the host's variables: defaults, then groups (parents before
	// children, then by name), then the host's own.
	Vars   map[string]cty.Value
	Groups []string // every group the host is in, directly or through children
}

// Group is a named set of hosts and child groups.
type Group struct {
	Name     string
	Hosts    []string
	Children []string
	Vars     map[string]cty.Value
}

// Inventory is a parsed inventory.
type Inventory struct {
	// Hosts in file order.
	Hosts  []*Host
	Groups map[string]*Group
	// File is where the inventory was read from, for run metadata.
	File string

	// byName indexes Hosts for Parse's and Add's inventories, so that a
	// lookup per host does not make large inventories quadratic. Hosts
	// appended by hand are still found, by a scan.
	byName map[string]*Host
	// addGroups are the groups Add created; they list only added hosts.
	addGroups map[string]bool
	// origins records, per host, where the file set each setting.
	origins map[string][]*source
}

// Origins says where each setting the file gave host came from: "user",
// "vars.NAME" or "labels.NAME" -> `group "app" at inv.hcl:3`. Settings the
// file left alone, and hosts added in Go, have none.
func (inv *Inventory) Origins(host string) map[string]string {
	srcs, ok := inv.origins[host]
	if !ok {
		return nil
	}
	m := map[string]string{}
	for _, s := range srcs { // in precedence order: a later one wins
		from := s.from()
		for _, o := range s.set {
			m[o.key+o.sub] = fmt.Sprintf("%s at %s:%d", from, s.file, o.line)
		}
	}
	return m
}

// Host finds a host by name.
func (inv *Inventory) Host(name string) (*Host, bool) {
	if h, ok := inv.byName[name]; ok && h.Name == name {
		return h, true
	}
	if inv.byName != nil && len(inv.byName) == len(inv.Hosts) {
		return nil, false // the index covers every host
	}
	for _, h := range inv.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return nil, false
}
