package modules

import "context"

// HostInfo is what a module may know of a host from the inventory.
type HostInfo struct {
	Name    string
	Address string
	Labels  map[string]string
	Groups  []string
	// BackupRoot is where the host keeps its backup records.
	BackupRoot string
}

// Peers lets a cluster module reach the other hosts of its play: a swarm
// join reads its token from a manager, a node label is set through one.
type Peers interface {
	// Self describes the host the module runs for.
	Self() HostInfo
	// Lookup describes any inventory host.
	Lookup(name string) (HostInfo, bool)
	// Hosts names the hosts of the current play, in inventory order.
	Hosts() []string
	// Conn reaches an inventory host over the run's shared connections.
	Conn(ctx context.Context, name string) (Conn, error)
	// Control describes the control machine (delegated steps run there).
	Control() HostInfo
	// Serialize takes the run's lock named key and returns its release:
	// work that must happen one host at a time (swarm joins) holds it.
	Serialize(key string) (release func())
}

// RunPeers, embedded in a module, implements PeersUser.
type RunPeers struct{ peers Peers }

// UsePeers implements PeersUser.
func (r *RunPeers) UsePeers(p Peers) { r.peers = p }

// Peers is the step's Peers, or nil when the module runs alone.
func (r *RunPeers) Peers() Peers { return r.peers }

// PeersUser is a module that reaches other hosts of its play. The runner
// calls UsePeers once the module is built, before Check; a Go program that
// calls Check itself passes its own Peers, or none.
type PeersUser interface {
	UsePeers(Peers)
}
