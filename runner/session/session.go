// Package session owns runs: it ties the engine (runner.Run) to what every
// real run needs around it — a claimed run id, the backup recorder on every
// host, the control journal, the deploy lock, and one event sink that gets
// warnings too. The CLI is one user of a Session; examples/embed is another.
//
//	s, err := session.New(session.Options{Inventory: inv, Modules: stock.Registry(), Events: printer.Event})
//	defer s.Close()
//	recap, err := s.Play(ctx, pb, session.PlayOptions{})
//	recap, err = s.Rollback(ctx, recap.RunID, session.PlayOptions{})
package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/lock"
	"github.com/iklimco/iklim/runner/transport"
)

// Options configure a Session.
type Options struct {
	// Inventory is required; InventoryPath is recorded in each run's records.
	Inventory     *inventories.Inventory
	InventoryPath string
	// Modules is required: the registry the runs' rollbacks undo changes
	// with and the recorder reads sensitive arguments from (stock.Registry()
	// has every stock module). Compile playbooks with the same registry.
	Modules *modules.Registry
	// Secrets collects every sensitive value of the session's runs; nil
	// makes a new set. Compile playbooks with the same Secrets.
	Secrets *modules.Secrets
	// Connector reaches hosts; nil means SSH with SSH's settings (Secrets
	// is filled in).
	Connector runner.Connector
	SSH       transport.SSHOptions
	// Events receives every event of every run, warnings included; nil
	// drops them.
	Events func(runner.Event)
	// Keep is how many runs each host keeps (0: backup.DefaultKeep).
	Keep int
	// KeepJournals is how many runs' journals the control machine keeps
	// (0: backup.DefaultKeepJournals; negative: all).
	KeepJournals int
	// Control is the control machine, for delegated steps and their
	// records; nil means backup.ControlHost().
	Control *inventories.Host
	// ControlName identifies this control machine in the hosts' owner
	// markers; empty means its hostname. Set it where the hostname changes
	// from run to run (CI runners), so their records are not refused.
	ControlName string
}

// PlayOptions are the knobs of one run.
type PlayOptions struct {
	Check, Diff, Verbose bool
	Forks                int
	Limit                string
	Tags, SkipTags       []string
	NoCheckAhead         bool
	StepTimeout          time.Duration
	// Playbook names the playbook file in the records when pb.File is empty.
	Playbook string
}

// Session holds what the runs of one program share: the inventory, the
// secrets, one connection per host, and the event sink.
type Session struct {
	opts         Options
	connector    runner.Connector
	ownConnector bool
}

// New checks opts and opens nothing yet: connections are made by the
// first run that needs them.
func New(opts Options) (*Session, error) {
	if opts.Inventory == nil {
		return nil, errors.New("session: no inventory")
	}
	if opts.Modules == nil {
		return nil, errors.New("session: no module registry (Options.Modules; stock.Registry() has iklim's modules)")
	}
	if opts.Secrets == nil {
		opts.Secrets = modules.NewSecrets()
	}
	if opts.Control == nil {
		opts.Control = backup.ControlHost()
	}
	if opts.Events == nil {
		opts.Events = func(runner.Event) {}
	}
	s := &Session{opts: opts, connector: opts.Connector}
	if s.connector == nil {
		ssh := opts.SSH
		ssh.Secrets = opts.Secrets
		s.connector = transport.NewSSHConnector(ssh)
		s.ownConnector = true
	}
	return s, nil
}

// Close ends the connections the session opened.
func (s *Session) Close() error {
	if s.ownConnector {
		return s.connector.Close()
	}
	return nil
}

// Secrets is the session's set of sensitive values.
func (s *Session) Secrets() *modules.Secrets { return s.opts.Secrets }

// Connector is the session's way to reach hosts.
func (s *Session) Connector() runner.Connector { return s.connector }

// Modules is the session's module registry.
func (s *Session) Modules() *modules.Registry { return s.opts.Modules }

// Control is the control machine host.
func (s *Session) Control() *inventories.Host { return s.opts.Control }

// Play runs pb as one recorded run: a claimed run id, backup records on
// every host it changes (not in check mode), the playbook's lock, and the
// control journal. Trouble that does not fail a step is reported as
// runner.EventWarning on the session's sink.
func (s *Session) Play(ctx context.Context, pb *runner.Playbook, po PlayOptions) (*runner.Recap, error) {
	file := pb.File
	if file == "" {
		file = po.Playbook
	}
	info, err := s.runInfo(file, po.Check)
	if err != nil {
		return nil, err
	}
	warn := func(err error) {
		s.opts.Events(runner.Event{Type: runner.EventWarning, Time: time.Now().UTC(), RunID: info.ID, Error: s.opts.Secrets.Redact(err.Error())})
	}
	opts := runner.Options{
		Inventory: s.opts.Inventory,
		Connector: s.connector,
		Locker:    lock.New(lock.WithLogf(func(f string, a ...any) { warn(fmt.Errorf(f, a...)) })),
		Run:       info,
		Control:   s.opts.Control,
		Check:     po.Check,
		Diff:      po.Diff,
		Forks:     po.Forks,
		Limit:     po.Limit,
		Tags:      po.Tags,
		SkipTags:  po.SkipTags,
		Verbose:   po.Verbose,
		Secrets:   s.opts.Secrets,
		Modules:   s.opts.Modules,
		Events:    s.opts.Events,

		NoCheckAhead: po.NoCheckAhead,
		StepTimeout:  po.StepTimeout,
	}
	var rec *backup.Recorder
	if !po.Check {
		rec = backup.NewRecorder(backup.RecorderOptions{Info: info, Keep: s.opts.Keep, KeepJournals: s.opts.KeepJournals,
			Secrets: s.opts.Secrets, Control: s.opts.ControlName})
		opts.Recorder = rec
		// The step log keeps each step's time and (redacted) diff beside
		// the journal, for iklim report; the sink sees diffs only when asked.
		if log, err := backup.OpenStepLog(info.ID); err != nil {
			warn(err)
		} else {
			defer func() {
				if err := log.Close(); err != nil {
					warn(err)
				}
			}()
			sink, showDiff := s.opts.Events, po.Diff
			opts.Diff = true
			opts.Events = func(ev runner.Event) {
				log.Event(ev)
				if !showDiff {
					ev.Diff = nil
				}
				sink(ev)
			}
		}
	}
	recap, err := runner.Run(ctx, pb, opts)
	if recap != nil && rec != nil {
		if jerr := rec.WriteJournal(recap, err); jerr != nil {
			warn(fmt.Errorf("control journal: %w", jerr))
		}
	}
	return recap, err
}

// Rollback undoes run id on the hosts that recorded it, newest change
// first and phase by phase across hosts; it is itself a recorded run.
// force rolls back over drift.
func (s *Session) Rollback(ctx context.Context, id string, force bool, po PlayOptions) (*runner.Recap, error) {
	if !backup.ValidRunID(id) {
		return nil, fmt.Errorf("%q is not a run id (want e.g. 2026-11-21T10-15-04Z)", id)
	}
	// Read the run's phases first, so the rollback undoes them across hosts
	// newest first, as the run made them.
	phases, err := backup.RollbackPhases(ctx, id, runner.Options{
		Inventory: s.opts.Inventory,
		Connector: s.connector,
		Control:   s.opts.Control,
		Forks:     po.Forks,
		Limit:     po.Limit,
		Secrets:   s.opts.Secrets,
		Modules:   s.opts.Modules,
	})
	if err != nil {
		return nil, fmt.Errorf("read the phases of run %s: %w", id, err)
	}
	return s.Play(ctx, backup.RollbackPlaybook(id, force, phases...), po)
}

// Backups lists the runs recorded on hosts (and on the control machine).
// A host that cannot be read is named in the error; the others are listed.
func (s *Session) Backups(ctx context.Context, hosts []*inventories.Host) ([]backup.RunSummary, error) {
	return backup.ListHosts(ctx, s.connector, hosts, s.opts.Control)
}

func (s *Session) runInfo(playbook string, check bool) (runner.RunInfo, error) {
	now := time.Now().UTC()
	id, err := backup.ClaimRunID(now)
	if err != nil {
		return runner.RunInfo{}, err
	}
	info := runner.RunInfo{ID: id, User: operator(), Started: now, Check: check}
	if playbook != "" {
		info.Playbook, _ = filepath.Abs(playbook)
		info.GitCommit = gitCommit(filepath.Dir(info.Playbook))
	}
	if s.opts.InventoryPath != "" {
		info.Inventory, _ = filepath.Abs(s.opts.InventoryPath)
	}
	return info, nil
}

func operator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

func gitCommit(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
