// Package backup keeps the records of iklim runs: before a module changes a
// host, the runner writes the change record and a byte-exact snapshot of
// every file the change replaces into <backup_root>/<host>/<run-id>/ on that
// host. From those records the rollback module undoes a run, retention keeps
// the last N runs per host, and List shows runs across hosts.
//
// Every host has its own directory under the root, named after its inventory
// name (see HostDir), because several inventory hosts may reach one
// filesystem: an NFS home, a shared storage box, two names for one machine.
// Its owner marker names the host, the machine (/etc/machine-id, else the
// kernel hostname) and the control machine that write there; a recorder
// that finds another owner refuses to write and names both.
//
// On-host layout (every directory 0700, every file 0600):
//
//	<root>/<host>/owner                             "host=<name> machine=<id> control=<hostname>"
//	<root>/<host>/<run-id>/run.json                 RunRecord: who, when, playbook, inventory,
//	                                                git commit; status "running" until Finish
//	<root>/<host>/<run-id>/owner                    the recorder that claimed the run directory
//	<root>/<host>/<run-id>/host-owner               the host's owner, as the run that first
//	                                                wrote it did (a link of <host>/owner)
//	<root>/<host>/<run-id>/rollback_of              run id this run rolls back (rollback runs only)
//	<root>/<host>/<run-id>/rolled_back              written when a rollback of this run succeeded
//	<root>/<host>/<run-id>/changes/0001.json        runner.ChangeRecord, secrets redacted
//	<root>/<host>/<run-id>/changes/0001.json.enc    full record, AES-256-GCM (only when redacted)
//	<root>/<host>/<run-id>/changes/0001.after.json  AfterRecord: outcome + post-apply file state
//	<root>/<host>/<run-id>/files/0001-<n>.meta.json FileMeta of Change.Files[n-1] before the change
//	<root>/<host>/<run-id>/files/0001-<n>.path      the path, raw (for remote scripts)
//	<root>/<host>/<run-id>/files/0001-<n>.data      old content (regular file) or link target
//	<root>/<host>/<run-id>/files/0001-<n>.tar       old tree of a directory the change replaces or deletes
//	<root>/<host>/<run-id>/files/0001-<n>.data.enc  old content, sealed (sensitive changes); .tar.enc likewise
//
// Snapshots lie flat in files/ so that a change after a run's first needs
// no directory of its own (mkdir or tar is a program to start); runs
// recorded with a directory per change, files/0001/<n>.*, are read too.
//
// Delegated changes are recorded on the control machine under the control
// host's name (<root>/localhost/<run-id>/ for the CLI). Temporary files carry
// the recorder's random token (.0001.json.<token>.tmp), so no two writers
// share one. A change record is renamed into place last: a Before that fails
// (a full disk, say) removes what it wrote, and the change is not applied.
//
// Runs recorded before host directories existed, <root>/<run-id>/, are still
// listed, rolled back and pruned: such a directory belongs to the host its
// run.json names, and rollback takes from it only that host's records.
//
// The control machine keeps a journal of each run it started under
// $IKLIM_STATE_DIR/runs/<run-id>/run.json (see WriteJournal).
package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// RunIDLayout is the time layout of a run id: UTC, no colons, so that it is
// a valid file name everywhere and sorts by time.
const RunIDLayout = "2006-01-02T15-04-05Z"

var runIDRe = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z(-[1-9]\d*)?$`)

// ValidRunID reports whether id has the form of a run id.
func ValidRunID(id string) bool { return runIDRe.MatchString(id) }

// FormatRunID is the run id for t without any collision suffix.
func FormatRunID(t time.Time) string { return t.UTC().Format(RunIDLayout) }

// StateDir is the control machine's state directory: $IKLIM_STATE_DIR, else
// $XDG_STATE_HOME/iklim, else ~/.local/state/iklim.
func StateDir() string {
	if d := os.Getenv("IKLIM_STATE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "iklim")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "iklim-state")
	}
	return filepath.Join(home, ".local", "state", "iklim")
}

// JournalDir is where the control machine keeps the journal of run id.
func JournalDir(id string) string { return filepath.Join(StateDir(), "runs", id) }

// ClaimRunID returns a new run id for a run starting at now and claims it on
// this control machine by creating its journal directory
// ($IKLIM_STATE_DIR/runs/<id>/) with an exclusive mkdir. When a run already
// claimed that second, the id gets a suffix: 2026-11-21T10-15-04Z-2, -3, …
//
// Ids sort by plain string comparison as long as fewer than ten runs start
// in the same second on one control machine; CompareRunIDs sorts any ids
// correctly and is what this package uses.
func ClaimRunID(now time.Time) (string, error) {
	runs := filepath.Join(StateDir(), "runs")
	if err := os.MkdirAll(runs, 0o700); err != nil {
		return "", fmt.Errorf("claim run id: %w", err)
	}
	base := FormatRunID(now)
	for n := 1; n < 10000; n++ {
		id := base
		if n > 1 {
			id = base + "-" + strconv.Itoa(n)
		}
		err := os.Mkdir(filepath.Join(runs, id), 0o700)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("claim run id: %w", err)
		}
	}
	return "", fmt.Errorf("claim run id: more than 9999 runs started at %s", base)
}

// CompareRunIDs orders run ids by start time, then by collision suffix. It
// returns -1, 0 or +1 like strings.Compare.
func CompareRunIDs(a, b string) int {
	ab, an := splitRunID(a)
	bb, bn := splitRunID(b)
	if c := strings.Compare(ab, bb); c != 0 {
		return c
	}
	switch {
	case an < bn:
		return -1
	case an > bn:
		return 1
	}
	return 0
}

func splitRunID(id string) (string, int) {
	if i := strings.LastIndex(id, "Z-"); i >= 0 {
		if n, err := strconv.Atoi(id[i+2:]); err == nil {
			return id[:i+1], n
		}
	}
	return id, 1
}
