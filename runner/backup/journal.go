package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
)

// Journal is the control machine's record of a run it started:
// $IKLIM_STATE_DIR/runs/<run-id>/run.json. It holds what every host's
// run.json holds plus the result of every host, including hosts that
// changed nothing (seed 001's deployment_metadata, for the whole run).
type Journal struct {
	runner.RunInfo
	Control  string             `json:"control,omitempty"`
	PID      int                `json:"pid,omitempty"`
	Status   string             `json:"status"`
	Finished *time.Time         `json:"finished,omitempty"`
	Error    string             `json:"error,omitempty"`
	Changed  int                `json:"changed"`
	Hosts    []runner.HostRecap `json:"hosts,omitempty"`
}

// JournalOption adds to what WriteJournal records.
type JournalOption func(*journalOpts)

type journalOpts struct {
	err     error
	secrets *modules.Secrets
}

// WithRunError records the error runner.Run returned: context.Canceled
// makes the run "interrupted", anything else "failed".
func WithRunError(err error) JournalOption { return func(o *journalOpts) { o.err = err } }

// WithSecrets redacts the journal with s (Recorder.WriteJournal passes the
// Secrets the recorder saw).
func WithSecrets(s *modules.Secrets) JournalOption { return func(o *journalOpts) { o.secrets = s } }

// WriteJournal writes the final journal of the recorder's run, redacted
// with the Secrets the recorder saw, then prunes the journals of old runs
// (RecorderOptions.KeepJournals).
func (r *Recorder) WriteJournal(recap *runner.Recap, runErr error) error {
	r.mu.Lock()
	sec := r.secrets
	r.mu.Unlock()
	if err := WriteJournal(r.opts.Info, recap, WithSecrets(sec), WithRunError(runErr)); err != nil {
		return err
	}
	if r.opts.KeepJournals < 0 {
		return nil
	}
	_, err := PruneJournals(r.opts.KeepJournals, r.opts.Info.ID)
	return err
}

// PruneJournals removes the control machine's journals of all but the
// newest keep runs, so that $IKLIM_STATE_DIR/runs does not grow with every
// run. It never removes the journal of current, of a run whose process
// still runs here, or of a run claimed in the last hour that has no journal
// yet (it is starting). The hosts' backups are not touched: rollback and
// `iklim runs` read those. It returns the ids it removed.
func PruneJournals(keep int, current string) ([]string, error) {
	runs := filepath.Join(StateDir(), "runs")
	entries, err := os.ReadDir(runs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prune journals: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && ValidRunID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	slices.SortFunc(ids, func(a, b string) int { return CompareRunIDs(b, a) }) // newest first
	var pruned []string
	var errs []error
	for _, id := range ids[min(max(keep, 0), len(ids)):] {
		if id == current || journalInUse(id) {
			continue
		}
		if err := os.RemoveAll(JournalDir(id)); err != nil {
			errs = append(errs, err)
			continue
		}
		pruned = append(pruned, id)
	}
	if err := errors.Join(errs...); err != nil {
		return pruned, fmt.Errorf("prune journals: %w", err)
	}
	return pruned, nil
}

// journalInUse reports whether run id may still be going: its journal says
// running and its process lives here, or it has no journal and was claimed
// within the last hour.
func journalInUse(id string) bool {
	j, err := ReadJournal(id)
	if err == nil {
		alive, _ := liveHere(j.Control, j.PID)
		return j.Status == StatusRunning && alive
	}
	fi, serr := os.Stat(JournalDir(id))
	return serr == nil && time.Since(fi.ModTime()) < time.Hour
}

// WriteJournal writes the final journal of a run on the control machine,
// after runner.Run returned: who, when, playbook, inventory, git commit,
// every host's result and the final status (ok, failed or interrupted).
func WriteJournal(info runner.RunInfo, recap *runner.Recap, opts ...JournalOption) error {
	var o journalOpts
	for _, f := range opts {
		f(&o)
	}
	j := newJournal(info)
	now := time.Now().UTC()
	j.Finished = &now
	j.Status = StatusOK
	if recap != nil {
		j.Changed = recap.Changed()
		for _, h := range recap.Hosts {
			h.Error = o.secrets.Redact(h.Error)
			j.Hosts = append(j.Hosts, h)
		}
		if recap.Failed() {
			j.Status = StatusFailed
		}
	}
	if o.err != nil {
		j.Error = o.secrets.Redact(o.err.Error())
		j.Status = StatusFailed
		if isCanceled(o.err) {
			j.Status = StatusInterrupted
		}
	}
	return writeJournal(j)
}

func isCanceled(err error) bool { return errors.Is(err, context.Canceled) }

// ReadJournal reads the journal of run id from this control machine.
func ReadJournal(id string) (*Journal, error) {
	b, err := os.ReadFile(filepath.Join(JournalDir(id), "run.json"))
	if err != nil {
		return nil, err
	}
	var j Journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("journal %s: %w", id, err)
	}
	return &j, nil
}

func newJournal(info runner.RunInfo) *Journal {
	host, _ := os.Hostname()
	return &Journal{RunInfo: info, Control: host, PID: os.Getpid(), Status: StatusRunning}
}

// startJournal records that the run started, with this process's pid, so
// that List can tell an interrupted run from a running one.
func startJournal(info runner.RunInfo) error {
	if info.ID == "" {
		return errors.New("no run id")
	}
	return writeJournal(newJournal(info))
}

func writeJournal(j *Journal) error {
	dir := JournalDir(j.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	b, err := marshal(j)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".run.json.*.tmp") // 0600, a name of its own
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, "run.json"))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// liveHere reports whether the process that wrote control/pid still runs on
// this machine. It returns (false, false) when that cannot be known.
func liveHere(control string, pid int) (alive, known bool) {
	host, _ := os.Hostname()
	if control == "" || control != host || pid <= 0 {
		return false, false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM), true
}
