// Package report gathers what is known of one recorded run — its control
// journal, its step log and every host's backup records — and renders it as
// one self-contained HTML page (iklim report) or as text (iklim backups
// show). Everything it shows was redacted before it was stored, and sealed
// records stay sealed: a report never needs, or uses, the backup key.
package report

import (
	"context"
	"errors"
	"io/fs"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
)

// Run is one recorded run as a report shows it.
type Run struct {
	ID string
	// Journal is the control machine's record of the run; nil when this
	// control machine did not run it.
	Journal *backup.Journal
	// Events are the run's step log; nil when the run kept none.
	Events []runner.Event
	// Records are the hosts' backup records of the run.
	Records []backup.HostRecords
	// Inventory is the inventory the rollback command names: the one the
	// run used unless the caller says otherwise.
	Inventory string
	// Problems are what could not be read (a host, the journal, the log).
	Problems []string
}

// Load reads run id: the journal and step log on this control machine and
// the records on hosts (through connector) and on control. What cannot be
// read is listed in Run.Problems; Load fails only when nothing of the run
// was found.
func Load(ctx context.Context, id string, connector runner.Connector, hosts []*inventories.Host, control *inventories.Host) (*Run, error) {
	if !backup.ValidRunID(id) {
		return nil, errors.New("report: " + id + " is not a run id (want e.g. 2026-11-21T10-15-04Z)")
	}
	r := &Run{ID: id}
	j, err := backup.ReadJournal(id)
	switch {
	case err == nil:
		r.Journal = j
		r.Inventory = j.Inventory
	case !errors.Is(err, fs.ErrNotExist):
		r.Problems = append(r.Problems, "journal: "+err.Error())
	}
	evs, err := backup.ReadStepLog(id)
	r.Events = evs
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.Problems = append(r.Problems, err.Error())
	}
	recs, err := backup.ReadRunRecords(ctx, connector, hosts, control, id)
	r.Records = recs
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			r.Problems = append(r.Problems, "records: "+line)
		}
	}
	if r.Journal == nil && len(r.Events) == 0 && len(r.Records) == 0 {
		if err != nil {
			return nil, errors.New("report: run " + id + ": no records could be read: " + err.Error())
		}
		return nil, errors.New("report: run " + id + " is not recorded on this control machine or on the hosts")
	}
	return r, nil
}

// Step is one step on one host, from the step log.
type Step struct {
	Host, Play, Name, Module string
	Source                   string // playbook file:line
	Status                   runner.Status
	Start                    time.Time
	Duration                 time.Duration
	Summary, Error           string
	Diff                     *modules.Diff // redacted by the engine
}

// Steps are the steps of the run, per host in the order they ended.
func (r *Run) Steps() []Step {
	var out []Step
	for _, ev := range r.Events {
		if ev.Type != runner.EventHostResult {
			continue
		}
		out = append(out, Step{
			Host: ev.Host, Play: ev.Play, Name: ev.Step, Module: ev.Module, Source: ev.Source,
			Status: ev.Status, Start: ev.Time.Add(-ev.Duration), Duration: ev.Duration,
			Summary: ev.Summary, Error: ev.Error, Diff: ev.Diff,
		})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// Hosts are the hosts the run touched: from the journal's recap, the step
// log and the records, sorted.
func (r *Run) Hosts() []string {
	seen := map[string]bool{}
	if r.Journal != nil {
		for _, h := range r.Journal.Hosts {
			seen[h.Host] = true
		}
	}
	for _, s := range r.Steps() {
		seen[s.Host] = true
	}
	for _, hr := range r.Records {
		seen[hr.Host] = true
	}
	out := make([]string, 0, len(seen))
	for h := range seen {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// Span is when the run started and ended, from the journal or the log.
func (r *Run) Span() (start, end time.Time) {
	if r.Journal != nil {
		start = r.Journal.Started
		if r.Journal.Finished != nil {
			end = *r.Journal.Finished
		}
	}
	for _, s := range r.Steps() {
		if start.IsZero() || s.Start.Before(start) {
			start = s.Start
		}
		if e := s.Start.Add(s.Duration); e.After(end) {
			end = e
		}
	}
	for _, hr := range r.Records {
		for _, c := range hr.Changes {
			if start.IsZero() || c.Time.Before(start) {
				start = c.Time
			}
			if c.After != nil && c.After.Time.After(end) {
				end = c.After.Time
			}
		}
	}
	if end.Before(start) {
		end = start
	}
	return start, end
}

// Status is the run's final status: the journal's, else the worst host's.
func (r *Run) Status() string {
	if r.Journal != nil {
		return r.Journal.Status
	}
	rank := map[string]int{backup.StatusOK: 0, backup.StatusFailed: 1, backup.StatusInterrupted: 2, backup.StatusRunning: 3}
	st := backup.StatusOK
	for _, hr := range r.Records {
		if hr.Run != nil && rank[hr.Run.Status] > rank[st] {
			st = hr.Run.Status
		}
	}
	return st
}

// Changes counts the change records over every host.
func (r *Run) Changes() int {
	n := 0
	for _, hr := range r.Records {
		n += len(hr.Changes)
	}
	return n
}

// Failures are the steps that failed or whose host was unreachable.
func (r *Run) Failures() []Step {
	var out []Step
	for _, s := range r.Steps() {
		if s.Status == runner.StatusFailed || s.Status == runner.StatusUnreachable {
			out = append(out, s)
		}
	}
	return out
}

// RollbackCommand is the exact command that undoes the run, or "" when
// there is nothing to undo (a check run, or no change recorded).
func (r *Run) RollbackCommand() string {
	if r.Journal != nil && r.Journal.Check {
		return ""
	}
	if r.Changes() == 0 {
		return ""
	}
	cmd := "iklim rollback --run " + r.ID
	if r.Inventory != "" {
		cmd += " -i " + shellWord(r.Inventory)
	}
	return cmd
}

// Recorded finds the host's change record of a step, if any.
func (r *Run) Recorded(host, play, step string) *backup.Recorded {
	for i := range r.Records {
		for j := range r.Records[i].Changes {
			c := &r.Records[i].Changes[j]
			if c.Host == host && c.Play == play && c.Step == step {
				return c
			}
		}
	}
	return nil
}

var plainWord = regexp.MustCompile(`^[A-Za-z0-9_./:=@%+,-]+$`)

// shellWord quotes s for a POSIX shell when it needs it.
func shellWord(s string) string {
	if plainWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// duration is d for people: 1.23s, 2m03s.
func duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
