package modules

import "context"

// HostInfo is what a module may know of a host from the inventory.
type HostInfo struct {
	Name    string
	Address string
	Labels  map[string]string
	Groups  []string
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
}

type peersKey struct{}

// WithPeers attaches p to ctx; the runner does this for every step.
func WithPeers(ctx context.Context, p Peers) context.Context {
	return context.WithValue(ctx, peersKey{}, p)
}

// PeersFrom returns the Peers of the step, or nil when the module runs alone
// (a Go program calling Check and Apply directly).
func PeersFrom(ctx context.Context) Peers {
	p, _ := ctx.Value(peersKey{}).(Peers)
	return p
}
