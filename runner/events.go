package runner

import (
	"time"

	"github.com/iklimco/iklim/modules"
)

// EventType says what an Event reports.
type EventType string

// Event types, in the order a run emits them.
const (
	EventRunStart  EventType = "run_start"
	EventPlayStart EventType = "play_start"
	EventStepStart EventType = "step_start"
	// EventStepStatus is what a running step waits for, as its module
	// reports it (modules.ReportStatus): Summary is the status, Duration
	// how long the wait has lasted, Extra["max_wait"] its bound if any. A
	// host's statuses are coalesced: one when the text changes, at most
	// about one a second.
	EventStepStatus EventType = "step_status"
	EventHostResult EventType = "host_result"
	// EventWarning is trouble that did not fail a step (a lock release or a
	// final backup record that could not be written); Host names the host
	// when there is one, Error says what happened.
	EventWarning EventType = "warning"
	EventRecap   EventType = "recap"
)

// Event is one thing that happened in a run. Every string in it has been
// through the run's Secrets before it is emitted.
type Event struct {
	Type     EventType         `json:"type"`
	Time     time.Time         `json:"time"`
	RunID    string            `json:"run_id,omitempty"`
	Play     string            `json:"play,omitempty"`
	Step     string            `json:"step,omitempty"`
	Module   string            `json:"module,omitempty"`
	Source   string            `json:"source,omitempty"`
	Host     string            `json:"host,omitempty"`
	Status   Status            `json:"status,omitempty"`
	Summary  string            `json:"summary,omitempty"`
	Error    string            `json:"error,omitempty"`
	Diff     *modules.Diff     `json:"diff,omitempty"`
	Output   map[string]any    `json:"output,omitempty"`
	Duration time.Duration     `json:"duration_ns,omitempty"`
	Recap    *Recap            `json:"recap,omitempty"`
	Hosts    []string          `json:"hosts,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
}

// HostRecap counts how steps ended on one host.
type HostRecap struct {
	Host        string `json:"host"`
	OK          int    `json:"ok"`
	Changed     int    `json:"changed"`
	Failed      int    `json:"failed"`
	Skipped     int    `json:"skipped"`
	Unreachable int    `json:"unreachable"`
	Ignored     int    `json:"ignored"` // failures of steps with ignore_errors
	// Error is the first failure on the host, if any.
	Error string `json:"error,omitempty"`
}

// Recap sums up a run.
type Recap struct {
	RunID    string        `json:"run_id"`
	Hosts    []HostRecap   `json:"hosts"`
	Duration time.Duration `json:"duration_ns"`
	Check    bool          `json:"check"`
}

// Failed reports whether any host failed or was unreachable.
func (r *Recap) Failed() bool {
	for _, h := range r.Hosts {
		if h.Failed > 0 || h.Unreachable > 0 {
			return true
		}
	}
	return false
}

// Changed is the number of changed steps over all hosts.
func (r *Recap) Changed() int {
	n := 0
	for _, h := range r.Hosts {
		n += h.Changed
	}
	return n
}
