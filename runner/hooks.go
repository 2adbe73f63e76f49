package runner

import (
	"context"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner/transport"
)

// Connector opens Conns to hosts. One Connector serves one run and keeps one
// connection per host for all of it.
type Connector interface {
	Connect(ctx context.Context, h *inventories.Host) (modules.Conn, error)
	Close() error
}

var _ Connector = (*transport.SSHConnector)(nil)

// ChangeRecord is what the runner records on a host before it applies a
// change, so that an interrupted run can still be rolled back.
type ChangeRecord struct {
	RunID  string          `json:"run_id"`
	Seq    int             `json:"seq"` // order of changes on this host within the run
	Host   string          `json:"host"`
	Play   string          `json:"play"`
	Step   string          `json:"step"`
	Module string          `json:"module"`
	Source string          `json:"source"` // playbook file:line
	Time   time.Time       `json:"time"`
	Change *modules.Change `json:"change"`
	// Delegated changes ran on the control machine in the host's name.
	Delegated bool `json:"delegated,omitempty"`
	// ModuleUndo says the module undoes the change itself (it is a
	// modules.Rollbacker): a rollback needs that module, not only the
	// file snapshots.
	ModuleUndo bool `json:"module_undo,omitempty"`
	// SensitiveArgs says the module takes a sensitive argument
	// (modules.TakesSensitive): the recorder seals the change.
	SensitiveArgs bool `json:"sensitive_args,omitempty"`
	// Phase counts the run's points where every host waited for the others
	// (a play's start, a barrier, a run_once step, a serial batch), from 1.
	// Changes of one phase ran side by side on different hosts; a later
	// phase may depend on an earlier one on any host, so a rollback undoes
	// phase by phase across hosts, newest first. 0 in records of older
	// versions.
	Phase int `json:"phase,omitempty"`
}

// RunInfo describes a run for the records every host keeps.
type RunInfo struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Started   time.Time `json:"started"`
	Playbook  string    `json:"playbook"`
	Inventory string    `json:"inventory"`
	GitCommit string    `json:"git_commit,omitempty"`
	Check     bool      `json:"check"`
}

// Recorder keeps the backup records of a run. The runner calls Before ahead
// of every Apply; a run that dies after Before still leaves a usable record.
type Recorder interface {
	// Before durably records rec on the host behind conn and snapshots every
	// file in rec.Change.Files.
	Before(ctx context.Context, conn modules.Conn, h *inventories.Host, rec *ChangeRecord) error
	// After records how the change ended (applyErr nil means applied).
	After(ctx context.Context, conn modules.Conn, h *inventories.Host, rec *ChangeRecord, applyErr error) error
	// Finish records the host's final result for the run. It is called only
	// for hosts on which at least one change was recorded.
	Finish(ctx context.Context, conn modules.Conn, h *inventories.Host, res HostRecap) error
}

// ScriptFinisher is a Recorder that can also finish a host's record in a
// script the runner runs on the host anyway (the batch of its last checks,
// finish.go) instead of in a command of its own after the plays.
type ScriptFinisher interface {
	Recorder
	// FinishScript is Finish as a command, made before the host's result
	// is known; nil when the host needs Finish itself.
	FinishScript(h *inventories.Host) *ScriptFinish
}

// ScriptFinish is a command that records a host's final result, which it
// reads from the shell variable FinishPayloadVar.
type ScriptFinish struct {
	// Script is the body of a shell function, which the runner runs
	// without a subshell (a fork): it ends with return, never exit.
	Script string
	// Payload is the variable's value (whole lines) for the host's result.
	Payload func(res HostRecap) (string, error)
	// Done reads the command's result: nil when the host is finished.
	Done func(res modules.Result) error
}

// FinishPayloadVar is the shell variable holding a ScriptFinish's payload.
const FinishPayloadVar = "_ikpay"

// Locker holds a playbook's deploy lock for the length of a run.
type Locker interface {
	// Acquire takes the lock (waiting up to spec.Wait) and returns a release
	// function; it keeps the lock heartbeating until released.
	Acquire(ctx context.Context, conn modules.Conn, spec LockSpec, run RunInfo) (release func(context.Context) error, err error)
}

// ScriptRecorder is a Recorder that can also record a change, apply it with
// the module's script (modules.ScriptApplier) and record the outcome, all in
// one round trip.
type ScriptRecorder interface {
	Recorder
	// RecordApply records rec as Before does and only then runs ap; when ap
	// succeeded it also records the outcome, as After does. An error means
	// the change was not applied (nothing was recorded, or the outcome is
	// unknown and, if the change was recorded, is recorded as failed).
	RecordApply(ctx context.Context, conn modules.Conn, h *inventories.Host, rec *ChangeRecord, ap *modules.ScriptApply) (ScriptOutcome, error)
}

// ChainRecorder is a ScriptRecorder that can also record and apply several
// changes, one after the other, in one round trip.
type ChainRecorder interface {
	ScriptRecorder
	// RecordApplyChain does what RecordApply does for each link in turn,
	// and stops at the first link that fails, or whose Guard does not
	// hold when its turn comes. It returns an outcome for every link, in
	// order: those of links not reached are zero (not recorded, not
	// changed), and Err is set only on the first link or one recorded. The
	// last link's Then runs after the last link applied, unless a guard
	// stopped the chain or an apply failed.
	RecordApplyChain(ctx context.Context, conn modules.Conn, h *inventories.Host, links []ChainLink) []ChainOutcome
}

// ChainLink is one change of a RecordApplyChain.
type ChainLink struct {
	Rec   *ChangeRecord
	Apply *modules.ScriptApply
	// Guard, of every link but the first, is an sh test, builtins only,
	// that the paths its change was checked against are still as the check
	// saw them, after the links before it.
	Guard string
}

// ChainOutcome is what RecordApplyChain did with one link: its
// ScriptOutcome, and Err as RecordApply's error.
type ChainOutcome struct {
	ScriptOutcome
	Err error
}

// ScriptOutcome is what RecordApply did.
type ScriptOutcome struct {
	// Recorded is true once the change record was written; with an error,
	// that it may have been (the command was cut off). False with a nil
	// error: nothing was written or changed; use Before, Apply and After
	// instead.
	Recorded bool
	// ApplyErr is the script's failure.
	ApplyErr error
	// AfterDone: the outcome was recorded too.
	AfterDone bool
	// Then is the output of the script's Then, when it ran and ended with
	// status 0 (ThenOK).
	Then   string
	ThenOK bool
}
