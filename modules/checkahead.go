package modules

// CheckAhead says whether the runner may run a module's Check in one round
// trip with the checks of the steps next to it (see CheckAheader).
type CheckAhead int

const (
	// CheckAheadNever: Check runs on its own, once every step before it
	// has finished. Modules that do not implement CheckAheader get this.
	CheckAheadNever CheckAhead = iota
	// CheckAheadLead: Check runs a command that must run in its turn and
	// once (a read-only command of the user's). It may lead a batch: it runs
	// once the steps before it have finished, and the checks of read-only
	// steps after it may share its round trip.
	CheckAheadLead
	// CheckAheadReadOnly: Check only reads the host, with Conn.Run, and
	// keeps what it learns in the module value. The runner may run it
	// before the steps ahead of it have finished, batched with their checks,
	// and throw the result away when one of them changes the host.
	CheckAheadReadOnly
)

// CheckAheader is a module that tells the runner how its Check may be
// batched with other steps' checks (consecutive steps of a host whose checks
// go in one round trip: one session instead of one per step).
type CheckAheader interface {
	CheckAhead() CheckAhead
}
