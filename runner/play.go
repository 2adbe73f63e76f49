// Package runner connects to hosts and runs plays over them in parallel: SSH
// and local Conns, the execution engine, events and the recap. It knows no
// HCL: the playbooks package compiles HCL into the Plays defined here, and Go
// programs can build them directly.
package runner

import (
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/zclconf/go-cty/cty"
)

// Playbook is what one run executes.
type Playbook struct {
	// File is the playbook's path, recorded in run metadata.
	File  string
	Plays []Play
	// Lock, when set, is held for the whole run so that runs never overlap.
	Lock *LockSpec
}

// Play runs steps over the hosts a pattern selects.
type Play struct {
	Name  string
	Hosts string // host pattern, e.g. "app:&managers"
	// Serial runs hosts in batches of this size; 0 means all at once.
	Serial int
	Steps  []Step
}

// Step calls one module on every host of its play.
type Step struct {
	Name   string
	Module string // registered module name, for records and output
	// Build makes the module for one host. HCL playbooks evaluate arguments
	// here; Go callers may return a ready struct.
	Build func(sc *StepContext) (modules.Module, error)
	// When decides whether the step runs on a host; nil means always.
	When func(sc *StepContext) (bool, error)
	// Register stores the module's Output under this name for the host.
	Register string
	// RunOnce runs the step on the first host of the batch only; the result
	// is registered for every host of the batch.
	RunOnce bool
	// Delegate runs the step on the control machine, in the name of the host.
	Delegate bool
	Tags     []string
	Timeout  time.Duration
	// IgnoreErrors lets the host go on after this step fails.
	IgnoreErrors bool
	// Barrier makes every host of the batch finish the steps before this one
	// first; for steps that read other hosts' results. RunOnce implies it.
	Barrier bool
	// Source is "file:line" of the step's definition, for errors and records.
	Source string
	// ResultFree tells that Build and When read no registered result (in
	// HCL, neither self nor result): a step checked ahead needs no second
	// build when a step before it registers one. False, the safe default
	// for Go callers, means they may.
	ResultFree bool
}

// StepContext is what a step's Build and When see for one host.
type StepContext struct {
	Host *inventories.Host
	// Results reads registered values: host name → register name → value.
	// It is a snapshot taken when the step starts on this host.
	Results map[string]map[string]cty.Value
	Check   bool
}

// LockSpec names a deploy lock held on one host.
type LockSpec struct {
	Name string
	Host string // inventory host that holds the lock file
	// Wait is how long to wait for another holder; 0 fails at once.
	Wait time.Duration
	// TTL is how long a holder may go without heartbeating before its lock
	// counts as stale.
	TTL time.Duration
	// TakeOverStale takes a stale lock instead of failing.
	TakeOverStale bool
}

// Status is how a step ended on a host.
type Status string

// Step statuses, as Ansible users know them.
const (
	StatusOK          Status = "ok"
	StatusChanged     Status = "changed"
	StatusFailed      Status = "failed"
	StatusSkipped     Status = "skipped"
	StatusUnreachable Status = "unreachable"
)
