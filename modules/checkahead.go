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

// CheckAhead implements CheckAheader: Check stats the path.
func (m *File) CheckAhead() CheckAhead { return CheckAheadReadOnly }

// CheckAhead implements CheckAheader: Check stats and hashes dest.
func (m *Copy) CheckAhead() CheckAhead { return CheckAheadReadOnly }

// CheckAhead implements CheckAheader: Check renders locally and hashes dest.
func (m *Template) CheckAhead() CheckAhead { return CheckAheadReadOnly }

// CheckAhead implements CheckAheader: Check reads the file.
func (m *Line) CheckAhead() CheckAhead { return CheckAheadReadOnly }

// CheckAhead implements CheckAheader: Check stats the path.
func (m *Stat) CheckAhead() CheckAhead { return CheckAheadReadOnly }

// CheckAhead implements CheckAheader: with changed = false, Check runs the
// command itself, which must run in its turn and once; otherwise Check only
// tests creates/removes.
func (m *Command) CheckAhead() CheckAhead { return execCheckAhead(m.Changed) }

// CheckAhead implements CheckAheader, as Command's.
func (m *Shell) CheckAhead() CheckAhead { return execCheckAhead(m.Changed) }

func execCheckAhead(changed *bool) CheckAhead {
	if changed != nil && !*changed {
		return CheckAheadLead
	}
	return CheckAheadReadOnly
}
