package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
)

// RollbackModule is the rollback module's name in a registry.
const RollbackModule = "rollback"

// Modules lists the backup family's modules for a registry: rollback.
// stock.Registry() includes them.
func Modules() []modules.Info { return []modules.Info{rollbackInfo()} }

func rollbackInfo() modules.Info {
	return modules.Info{
		Name: RollbackModule,
		Doc:  "Undo a recorded run on each host: restore its files byte-exact and undo module changes, newest first",
		Example: `step "undo" {
  module = "rollback"
  run    = var.run   # the run id, as iklim backups list shows it
}`,
		Outputs: []modules.Output{
			{Name: "run", Type: "string", Doc: "the run undone"},
			{Name: "restored_files", Type: "number", Doc: "files put back (or deleted, when the run created them)"},
			{Name: "undone_changes", Type: "number", Doc: "changes undone by their module's Rollback"},
			{Name: "not_undone", Type: "list(string)", Doc: "changes nothing could undo (only when there are some)"},
			{Name: "kept_dirs", Type: "list(string)", Doc: "directories the run created that were kept because they hold other files now (only when there are some)"},
		},
		Diff:  "every file it would restore or delete and every change it would undo",
		Files: true,
		New:   func() modules.Module { return &Rollback{} },
	}
}

// Drifter is a module that can tell whether the state one of its changes
// produced has changed since. Rollback refuses to undo a drifted change
// unless forced. Files in Change.Files need no Drifter: their state after
// the change is recorded and compared by the rollback module itself.
type Drifter interface {
	// Drift describes how the host differs from what ch left, or "".
	Drift(ctx context.Context, c modules.Conn, ch *modules.Change) (string, error)
}

// Rollback undoes one recorded run on a host. Run through the engine like
// any module, the rollback is itself recorded as a new run: its Change lists
// every file the target run touched on the host, so those are snapshotted
// again and a rollback can be rolled back.
//
// Check reads the target run's records on the host and the run's delegated
// records on the control machine, and refuses when the host drifted since
// the run (a file's content, mode or owner differs from what the run left)
// unless Force is set. Apply restores, newest change first: files from their
// snapshots (content, mode, owner; files the run created are deleted), then
// the module's own Rollback from the record. A host without records for the
// run is already as wanted.
type Rollback struct {
	modules.RunPeers   // the backup roots; handed on to the modules it undoes
	modules.RunSecrets // handed on to the modules it undoes

	Run   string `hcl:"run" doc:"id of the run to undo, as iklim backups list shows it"`
	Force bool   `hcl:"force,optional" doc:"roll back even when the host changed since that run"`
	// Phase narrows the undo to the changes of one phase of the run
	// (runner.ChangeRecord.Phase), so a rollback can go phase by phase
	// across hosts (RollbackPlaybook). 0 undoes every phase.
	Phase int `hcl:"phase,optional" doc:"undo only the changes the run made in this phase (its plays and barrier-separated parts, numbered from 1 in run order); 0, the default, undoes all on each host by itself"`

	reg    *modules.Registry // the modules that undo changes: the run's (UseRegistry)
	plan   *rbPlan
	phases []int // the phases of the run's changes on this host, as Check found them
	output map[string]any
}

// rollbackBefore is the before-state of a rollback change.
type rollbackBefore struct {
	Run string `json:"run"`
	// Undone lists module changes undone through their Rollback; rolling
	// back the rollback restores files but cannot redo these.
	Undone    []string `json:"undone,omitempty"`
	NotUndone []string `json:"not_undone,omitempty"`
	// Sensitive: the target run sealed secrets, so this change's snapshots
	// must be sealed too.
	Sensitive bool `json:"sensitive,omitempty"`
}

// Validate implements modules.Validator.
func (m *Rollback) Validate() error {
	if !ValidRunID(m.Run) {
		return fmt.Errorf("rollback: run %q is not a run id like 2026-11-21T10-15-04Z", m.Run)
	}
	return nil
}

// Output implements modules.Outputter.
func (m *Rollback) Output() map[string]any {
	if m.output != nil {
		return m.output
	}
	return map[string]any{"run": m.Run, "restored_files": 0, "undone_changes": 0}
}

// ControlHost is the control machine as the CLI sees it: "localhost" with
// $IKLIM_CONTROL_BACKUP_ROOT or the default backup root.
func ControlHost() *inventories.Host {
	root := os.Getenv("IKLIM_CONTROL_BACKUP_ROOT")
	if root == "" {
		root = inventories.DefaultBackupRoot
	}
	return &inventories.Host{Name: "localhost", Address: "localhost", Local: true, BackupRoot: root}
}

// UseRegistry implements modules.RegistryUser: the runner hands the run's
// registry, whose modules undo the recorded changes.
func (m *Rollback) UseRegistry(r *modules.Registry) { m.reg = r }

// module builds the module name of the registry for an undo, handing it
// what the runner hands a step's module: this step's Peers and Secrets.
func (m *Rollback) module(name string) (modules.Module, bool) {
	info, ok := m.reg.Lookup(name)
	if !ok {
		return nil, false
	}
	mod := info.New()
	if pu, ok := mod.(modules.PeersUser); ok {
		pu.UsePeers(m.Peers())
	}
	if su, ok := mod.(modules.SecretsUser); ok {
		su.UseSecrets(m.Secrets())
	}
	return mod, true
}

// roots is where the run's records are: the host's name and backup root,
// and the control machine, as the step's Peers tell (the inventory's), or
// the defaults when the module runs alone.
func (m *Rollback) roots(c modules.Conn) (self, root string, ctl *inventories.Host) {
	self, root, ctl = c.Host(), inventories.DefaultBackupRoot, ControlHost()
	p := m.Peers()
	if p == nil {
		return self, root, ctl
	}
	si, ci := p.Self(), p.Control()
	self = si.Name
	if si.BackupRoot != "" {
		root = si.BackupRoot
	}
	if ci.Name != "" {
		ctl = &inventories.Host{Name: ci.Name, Address: ci.Address, Local: true, BackupRoot: ci.BackupRoot}
	}
	return self, root, ctl
}

// rbSite is a run directory on one machine: the host's own, or the control
// machine's for the host's delegated changes.
type rbSite struct {
	conn    modules.Conn
	root    string
	dir     string
	control bool
	run     *RunRecord
	entries []*rbEntry
	cur     map[string]FileMeta // "0001/1" → current state of that snapshot's path
}

type rbEntry struct {
	site   *rbSite
	seq    int
	rec    runner.ChangeRecord // the full record when it could be unsealed
	sealed []byte              // changes/<seq>.json.enc
	after  *AfterRecord
	metas  map[int]*FileMeta
	snaps  map[int]string // where metas[n] was read, without its extension
	enc    map[int][]byte
}

func ref(seq, n int) string { return seqName(seq) + "/" + strconv.Itoa(n) }

// rbPlan is what Check found and Apply does.
type rbPlan struct {
	sites     []*rbSite
	entries   []*rbEntry // oldest first
	before    rollbackBefore
	hostFiles []string
	key       []byte
}

// Check implements modules.Module.
func (m *Rollback) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	self, root, ctl := m.roots(c)
	plan := &rbPlan{before: rollbackBefore{Run: m.Run}}

	hs, err := readRun(ctx, c, root, self, m.Run)
	if err != nil {
		return nil, fmt.Errorf("rollback %s: read records on %s: %w", m.Run, self, err)
	}
	if hs != nil {
		// A run directory of the old layout may hold other hosts' records.
		hs.filter(func(r *runner.ChangeRecord) bool { return !r.Delegated && r.Host == self })
		plan.sites = append(plan.sites, hs)
	}
	lc := transport.NewLocalConn(ctl.Name)
	cs, err := readRun(ctx, lc, hostRoot(ctl), ctl.Name, m.Run)
	if err != nil {
		return nil, fmt.Errorf("rollback %s: read delegated records on the control machine: %w", m.Run, err)
	}
	if cs != nil {
		cs.control = true
		cs.filter(func(r *runner.ChangeRecord) bool { return r.Delegated && r.Host == self })
		if len(cs.entries) > 0 {
			plan.sites = append(plan.sites, cs)
		}
	}
	m.phases = nil
	for _, s := range plan.sites {
		for _, e := range s.entries {
			if !slices.Contains(m.phases, e.rec.Phase) {
				m.phases = append(m.phases, e.rec.Phase)
			}
		}
	}
	slices.Sort(m.phases)
	// Changes of later phases were undone by the steps before this one:
	// they are neither drift nor to do.
	plan.keep(func(r *runner.ChangeRecord) bool { return m.Phase == 0 || r.Phase <= m.Phase })
	if len(plan.entries) == 0 {
		return nil, nil
	}

	for _, s := range plan.sites {
		if s.run != nil && s.run.Status == StatusRunning && !m.Force {
			if alive, known := liveHere(s.run.Control, s.run.PID); known && alive {
				return nil, fmt.Errorf("rollback %s: the run is still going (pid %d on %s); wait for it to end", m.Run, s.run.PID, s.run.Control)
			}
		}
	}
	if err := plan.unseal(); err != nil {
		return nil, fmt.Errorf("rollback %s on %s: %w", m.Run, self, err)
	}
	// In a run directory of the old layout that several hosts shared, a
	// snapshot may be another host's: never restore one that is not of the
	// path its change names.
	for _, e := range plan.entries {
		for n, meta := range e.metas {
			if n < 1 || n > len(e.rec.Change.Files) || meta.Path != e.rec.Change.Files[n-1] {
				delete(e.metas, n)
			}
		}
	}

	drift, err := plan.drift(ctx, m.module)
	if err != nil {
		return nil, fmt.Errorf("rollback %s on %s: %w", m.Run, self, err)
	}
	if len(drift) > 0 && !m.Force {
		return nil, fmt.Errorf("rollback %s: %s changed since that run (force = true rolls back anyway):\n  %s",
			m.Run, self, strings.Join(drift, "\n  "))
	}
	plan.keep(func(r *runner.ChangeRecord) bool { return m.Phase == 0 || r.Phase == m.Phase })
	if len(plan.entries) == 0 {
		return nil, nil
	}

	var lines []string
	seen := map[string]bool{}
	nfiles := 0
	for i := len(plan.entries) - 1; i >= 0; i-- {
		e := plan.entries[i]
		for n := len(e.rec.Change.Files); n >= 1; n-- {
			meta := e.metas[n]
			if meta == nil {
				lines = append(lines, fmt.Sprintf("cannot restore %s: no snapshot (change %d)", e.rec.Change.Files[n-1], e.seq))
				continue
			}
			nfiles++
			lines = append(lines, restoreLine(e, meta))
			if !e.site.control && !seen[meta.Path] {
				seen[meta.Path] = true
				plan.hostFiles = append(plan.hostFiles, meta.Path)
			}
		}
		what := fmt.Sprintf("%s step %q (%s): %s", e.rec.Host, e.rec.Step, e.rec.Module, e.rec.Change.Summary)
		if _, known := m.reg.Lookup(e.rec.Module); !known && e.rec.ModuleUndo {
			// Skipping it would report a rollback that left the change in place.
			return nil, fmt.Errorf("cannot roll back %s: module %q is not registered in the run's registry (runner.Options.Modules; add its family, e.g. stock.Registry())", what, e.rec.Module)
		}
		switch undo := e.undoable(m.reg); undo {
		case undoModule:
			lines = append(lines, "undo "+what)
			plan.before.Undone = append(plan.before.Undone, what)
		case undoNone:
			lines = append(lines, "cannot undo "+what)
			plan.before.NotUndone = append(plan.before.NotUndone, what)
		case undoRollback:
			var b rollbackBefore
			_ = json.Unmarshal(e.rec.Change.Before, &b)
			for _, u := range b.Undone {
				lines = append(lines, "cannot redo "+u)
				plan.before.NotUndone = append(plan.before.NotUndone, "redo "+u)
			}
		}
		if len(e.sealed) > 0 || len(e.enc) > 0 {
			plan.before.Sensitive = true
		}
	}
	m.plan = plan
	ch := &modules.Change{
		Summary: fmt.Sprintf("roll back run %s: restore %d files, undo %d changes", m.Run, nfiles, len(plan.before.Undone)),
		Files:   plan.hostFiles,
		Diff:    &modules.Diff{Label: "rollback " + m.Run, After: strings.Join(lines, "\n") + "\n"},
	}
	if len(drift) > 0 {
		ch.Summary += fmt.Sprintf(" (forced over %d drifted)", len(drift))
	}
	if err := ch.SetBefore(plan.before); err != nil {
		return nil, err
	}
	return ch, nil
}

func restoreLine(e *rbEntry, meta *FileMeta) string {
	where := ""
	if e.site.control {
		where = " on the control machine"
	}
	switch {
	case !meta.Exists:
		return fmt.Sprintf("delete %s%s (created by the run)", meta.Path, where)
	case meta.Type == "other":
		return fmt.Sprintf("cannot restore %s%s: not a file, directory or symlink", meta.Path, where)
	default:
		return fmt.Sprintf("restore %s%s (%s)", meta.Path, where, meta.describe())
	}
}

type undoKind int

const (
	undoFiles    undoKind = iota // files only: nothing else to do
	undoModule                   // the module's Rollback undoes the rest
	undoNone                     // nothing can undo it
	undoRollback                 // a rollback: files only, module undos cannot be redone
)

func (e *rbEntry) undoable(reg *modules.Registry) undoKind {
	if e.rec.Module == RollbackModule {
		return undoRollback
	}
	if info, ok := reg.Lookup(e.rec.Module); ok {
		if _, ok := info.New().(modules.Rollbacker); ok {
			return undoModule
		}
	}
	if len(e.rec.Change.Files) > 0 {
		return undoFiles
	}
	return undoNone
}

// keep narrows the plan, and each of its sites, to the records keep
// accepts, and orders the plan's entries oldest first.
func (p *rbPlan) keep(keep func(*runner.ChangeRecord) bool) {
	p.entries = p.entries[:0]
	for _, s := range p.sites {
		s.filter(keep)
		p.entries = append(p.entries, s.entries...)
	}
	sort.SliceStable(p.entries, func(i, j int) bool {
		a, b := p.entries[i], p.entries[j]
		if !a.rec.Time.Equal(b.rec.Time) {
			return a.rec.Time.Before(b.rec.Time)
		}
		if a.site != b.site {
			return !a.site.control
		}
		return a.seq < b.seq
	})
}

func (s *rbSite) filter(keep func(*runner.ChangeRecord) bool) {
	out := s.entries[:0]
	for _, e := range s.entries {
		if keep(&e.rec) {
			out = append(out, e)
		}
	}
	s.entries = out
}

// readRun reads the records host keeps of run id under root in one
// command: run.json, every change record, after record, snapshot meta and
// sealed data, and the current state of every snapshotted path. The run is
// looked for in the host directory, then in the old layout
// (<root>/<run-id>). It returns nil when the run left no directory there.
func readRun(ctx context.Context, c modules.Conn, root, host, id string) (*rbSite, error) {
	dir, legacy := RunDir(root, host, id), legacyRunDir(root, id)
	var sb strings.Builder
	sb.WriteString(shPrelude)
	fmt.Fprintf(&sb, "D=%s; L=%s\n", remote.Quote(dir), remote.Quote(legacy))
	sb.WriteString(`if [ -d "$D" ]; then :; elif [ -f "$L/run.json" ] || [ -d "$L/changes" ]; then D=$L; echo LEGACY; else echo NORUN; exit 0; fi
cd "$D" || exit 1
for f in run.json changes/*.json changes/*.json.enc files/*.meta.json files/*.data.enc files/*.tar.enc files/*/*.meta.json files/*/*.data.enc files/*/*.tar.enc; do
  [ -f "$f" ] && iklim_frame "$f" "$f"
done
for f in files/*.path files/*/*.path; do
  [ -f "$f" ] || continue
  s=$(iklim_st '""' "$(cat "$f")") || s='{"path":"","exists":false,"type":"error"}'
  printf 'C %s %s\n' "$f" "$s"
done
set --; for f in files/*.data files/*/*.data; do [ -f "$f" ] && set -- "$@" "$f"; done
[ $# -eq 0 ] || sha256sum -- "$@" | while read -r h f; do printf 'H %s %s\n' "$f" "$h"; done
exit 0
`)
	res, err := c.Run(ctx, sb.String())
	if err != nil {
		return nil, err
	}
	if err := res.Err("read " + dir); err != nil {
		return nil, err
	}
	frames, err := parseFrames(res.Stdout)
	if err != nil {
		return nil, err
	}
	s := &rbSite{conn: c, root: root, dir: dir, cur: map[string]FileMeta{}}
	bySeq := map[int]*rbEntry{}
	sums := map[string]string{} // snapshot → its data's sha256
	entry := func(seq int) *rbEntry {
		e, ok := bySeq[seq]
		if !ok {
			e = &rbEntry{site: s, seq: seq, metas: map[int]*FileMeta{}, snaps: map[int]string{}, enc: map[int][]byte{}}
			bySeq[seq] = e
		}
		return e
	}
	for _, f := range frames {
		if f.Kind == "NORUN" {
			return nil, nil
		}
		if f.Kind == "LEGACY" {
			s.dir = legacy
			continue
		}
		name := f.Name
		switch {
		case f.Kind == "F" && name == "run.json":
			var rr RunRecord
			if err := json.Unmarshal(f.Data, &rr); err == nil {
				s.run = &rr
			}
		case f.Kind == "F" && strings.HasPrefix(name, "changes/"):
			base := strings.TrimPrefix(name, "changes/")
			num, rest, _ := strings.Cut(base, ".")
			seq, err := strconv.Atoi(num)
			if err != nil {
				continue
			}
			e := entry(seq)
			switch rest {
			case "json":
				var rec runner.ChangeRecord
				if err := json.Unmarshal(f.Data, &rec); err != nil || rec.Change == nil {
					// A record cut short: its change was never applied.
					delete(bySeq, seq)
					continue
				}
				e.rec = rec
			case "json.enc":
				e.sealed = f.Data
			case "after.json":
				var a AfterRecord
				if err := json.Unmarshal(f.Data, &a); err == nil {
					e.after = &a
				}
			}
		case f.Kind == "F" && strings.HasPrefix(name, "files/"):
			seq, n, snap, kind, ok := parseFileRef(name)
			if !ok {
				continue
			}
			e := entry(seq)
			switch kind {
			case "meta.json":
				var fm FileMeta
				if err := json.Unmarshal(f.Data, &fm); err == nil {
					e.metas[n] = &fm
					e.snaps[n] = snap
				}
			case "data.enc", "tar.enc":
				e.enc[n] = f.Data
			}
		case f.Kind == "H":
			name, sum, _ := strings.Cut(name, " ")
			if _, _, snap, kind, ok := parseFileRef(name); ok && kind == "data" {
				sums[snap] = sum
			}
		case f.Kind == "C":
			seq, n, _, _, ok := parseFileRef(name)
			if !ok {
				continue
			}
			var fm FileMeta
			if err := json.Unmarshal(f.Data, &fm); err == nil {
				s.cur[ref(seq, n)] = fm
			}
		}
	}
	for _, e := range bySeq {
		if e.rec.Change == nil {
			continue // snapshot without a record: Before never returned
		}
		for n, m := range e.metas {
			// Recorded without it: the content's is the data's.
			if m.SHA256 == "" && !m.Encrypted && (m.Type == "file" || m.Type == "symlink") {
				m.SHA256 = sums[e.snaps[n]]
			}
		}
		s.entries = append(s.entries, e)
	}
	sort.Slice(s.entries, func(i, j int) bool { return s.entries[i].seq < s.entries[j].seq })
	return s, nil
}

// parseFileRef splits "files/0001-2.meta.json" into 1, 2, its snapshot
// "files/0001-2" and "meta.json"; it reads the layout with a directory per
// change, "files/0001/2.meta.json", too.
func parseFileRef(name string) (seq, n int, snap, kind string, ok bool) {
	rest, found := strings.CutPrefix(name, "files/")
	if !found {
		return 0, 0, "", "", false
	}
	snap, kind, _ = strings.Cut(rest, ".")
	s, num, flat := strings.Cut(snap, "-")
	if !flat {
		s, num, _ = strings.Cut(snap, "/")
	}
	var err1, err2 error
	seq, err1 = strconv.Atoi(s)
	n, err2 = strconv.Atoi(num)
	return seq, n, "files/" + snap, kind, err1 == nil && err2 == nil
}

// unseal opens sealed records with this control machine's key.
func (p *rbPlan) unseal() error {
	need := false
	for _, e := range p.entries {
		if len(e.sealed) > 0 || len(e.enc) > 0 {
			need = true
		}
	}
	if !need {
		return nil
	}
	key, err := loadKey(StateDir(), false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("the run sealed secrets with a backup key this control machine does not have (%s)", KeyFile(StateDir()))
		}
		return err
	}
	p.key = key
	for _, e := range p.entries {
		if len(e.sealed) == 0 {
			continue
		}
		plain, err := unseal(key, e.sealed)
		if err != nil {
			return fmt.Errorf("change %d: %w", e.seq, err)
		}
		var rec runner.ChangeRecord
		if err := json.Unmarshal(plain, &rec); err != nil || rec.Change == nil {
			return fmt.Errorf("change %d: sealed record unreadable", e.seq)
		}
		e.rec = rec
	}
	return nil
}

// drift lists how the host differs from what the run left. Each path is
// compared with the state recorded after the last change of the run that
// touched it; changes without an after record (the run died mid-apply)
// cannot be checked and are restored as they are.
func (p *rbPlan) drift(ctx context.Context, module func(string) (modules.Module, bool)) ([]string, error) {
	var out []string
	for _, s := range p.sites {
		type last struct {
			e *rbEntry
			n int
		}
		lastOf := map[string]last{}
		var order []string
		for _, e := range s.entries {
			for i, f := range e.rec.Change.Files {
				if _, ok := lastOf[f]; !ok {
					order = append(order, f)
				}
				lastOf[f] = last{e, i + 1}
			}
		}
		where := ""
		if s.control {
			where = " (control machine)"
		}
		for _, f := range order {
			l := lastOf[f]
			if l.e.after == nil || len(l.e.after.Files) < l.n {
				continue
			}
			if l.e.metas[l.n] == nil {
				continue // no snapshot (of this path): reported by Check
			}
			want := l.e.after.Files[l.n-1]
			cur, ok := s.cur[ref(l.e.seq, l.n)]
			if !ok {
				out = append(out, fmt.Sprintf("%s%s: cannot read its current state", f, where))
				continue
			}
			if d := compareMeta(want, cur); d != "" {
				out = append(out, fmt.Sprintf("%s%s: %s", f, where, d))
			}
		}
		for _, e := range s.entries {
			mod, ok := module(e.rec.Module)
			if !ok {
				continue
			}
			d, ok := mod.(Drifter)
			if !ok {
				continue
			}
			msg, err := d.Drift(ctx, s.conn, e.rec.Change)
			if err != nil {
				return nil, fmt.Errorf("drift of change %d (%s): %w", e.seq, e.rec.Module, err)
			}
			if msg != "" {
				out = append(out, fmt.Sprintf("step %q (%s)%s: %s", e.rec.Step, e.rec.Module, where, msg))
			}
		}
	}
	return out, nil
}

// compareMeta describes how cur differs from want, or "".
func compareMeta(want, cur FileMeta) string {
	switch {
	case cur.Type == "error":
		return "cannot read its current state"
	case want.Exists != cur.Exists:
		if want.Exists {
			return "deleted since (was " + want.describe() + ")"
		}
		return "created since (now " + cur.describe() + ")"
	case !want.Exists:
		return ""
	case want.Type != cur.Type:
		return fmt.Sprintf("was a %s, now a %s", want.Type, cur.Type)
	}
	var d []string
	if want.SHA256 != cur.SHA256 {
		d = append(d, "content changed")
	}
	if want.Perm() != cur.Perm() && want.Type != "symlink" {
		d = append(d, fmt.Sprintf("mode %04o → %04o", want.Perm(), cur.Perm()))
	}
	if want.UID != cur.UID || want.GID != cur.GID {
		d = append(d, fmt.Sprintf("owner %d:%d → %d:%d", want.UID, want.GID, cur.UID, cur.GID))
	}
	return strings.Join(d, ", ")
}

// Apply implements modules.Module: newest change first, files are restored
// from their snapshots, then the module's Rollback undoes the rest. File
// restores are batched into one remote command per machine between module
// rollbacks.
func (m *Rollback) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	p := m.plan
	if p == nil {
		return errors.New("rollback: Apply without Check")
	}
	batches := map[*rbSite]*strings.Builder{}
	var kept []string
	restored, undone := 0, 0
	flush := func(final bool) error {
		for _, s := range p.sites {
			b := batches[s]
			if b == nil && !final {
				continue
			}
			if b == nil {
				b = &strings.Builder{}
			}
			if final {
				fmt.Fprintf(b, "date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ > %s || true\n", remote.Quote(s.dir+"/rolled_back"))
			}
			res, err := s.conn.Run(ctx, "umask 077\n"+b.String())
			if err != nil {
				return err
			}
			if err := res.Err("restore on " + s.conn.Host()); err != nil {
				return err
			}
			for _, line := range strings.Split(res.Stdout, "\n") {
				if p, ok := strings.CutPrefix(line, "KEPT "); ok {
					kept = append(kept, p)
				}
			}
			delete(batches, s)
		}
		return nil
	}
	for i := len(p.entries) - 1; i >= 0; i-- {
		e := p.entries[i]
		for n := len(e.rec.Change.Files); n >= 1; n-- {
			meta := e.metas[n]
			if meta == nil || meta.Type == "other" {
				continue
			}
			if meta.Encrypted {
				if err := flush(false); err != nil {
					return fmt.Errorf("rollback %s: %w", m.Run, err)
				}
				if err := restoreSealed(ctx, e, n, meta, p.key); err != nil {
					return fmt.Errorf("rollback %s: %w", m.Run, err)
				}
				restored++
				continue
			}
			b := batches[e.site]
			if b == nil {
				b = &strings.Builder{}
				batches[e.site] = b
			}
			b.WriteString(restoreScript(e.site.dir+"/"+e.snaps[n], meta))
			restored++
		}
		if e.undoable(m.reg) != undoModule {
			continue
		}
		if err := flush(false); err != nil {
			return fmt.Errorf("rollback %s: %w", m.Run, err)
		}
		mod, _ := m.module(e.rec.Module)
		rb := mod.(modules.Rollbacker)
		if err := rb.Rollback(ctx, e.site.conn, e.rec.Change); err != nil {
			return fmt.Errorf("rollback %s: undo step %q (%s): %w", m.Run, e.rec.Step, e.rec.Module, err)
		}
		undone++
	}
	if err := flush(true); err != nil {
		return fmt.Errorf("rollback %s: %w", m.Run, err)
	}
	m.output = map[string]any{
		"run": m.Run, "restored_files": restored, "undone_changes": undone,
	}
	if len(p.before.NotUndone) > 0 {
		m.output["not_undone"] = p.before.NotUndone
	}
	if len(kept) > 0 {
		m.output["kept_dirs"] = kept
	}
	return nil
}

// restoreScript is the sh that puts one snapshotted path back from the
// snapshot snap (a path without its extension).
func restoreScript(snap string, meta *FileMeta) string {
	p := remote.Quote(meta.Path)
	data := remote.Quote(snap + ".data")
	fail := fmt.Sprintf("{ echo %s >&2; exit 1; }", remote.Quote("restore "+meta.Path+" failed"))
	owner := fmt.Sprintf("%d:%d", meta.UID, meta.GID)
	mode := fmt.Sprintf("%04o", meta.Perm())
	// A directory in the way is removed only when empty.
	clearDir := fmt.Sprintf("if [ -d %s ] && [ ! -L %s ]; then rmdir -- %s || %s; fi\n", p, p, p, fail)
	parent := fmt.Sprintf("mkdir -p -- \"$(dirname -- %s)\" || %s\n", p, fail)
	switch {
	case !meta.Exists:
		return fmt.Sprintf("if [ -d %s ] && [ ! -L %s ]; then rmdir -- %s 2>/dev/null || printf 'KEPT %%s\\n' %s; else rm -f -- %s || %s; fi\n",
			p, p, p, p, p, fail)
	case meta.Type == "dir":
		// The tree comes back from its tar; a directory in the way is
		// merged into, never removed.
		tarball := remote.Quote(snap + ".tar")
		return fmt.Sprintf("if [ -L %s ] || { [ -e %s ] && [ ! -d %s ]; }; then rm -f -- %s || %s; fi\n", p, p, p, p, fail) +
			parent + fmt.Sprintf("if [ -f %s ]; then tar -C \"$(dirname -- %s)\" --numeric-owner -xpf %s || %s; fi\n", tarball, p, tarball, fail) +
			fmt.Sprintf("mkdir -p -- %s && chown %s %s && chmod %s %s || %s\n", p, owner, p, mode, p, fail)
	case meta.Type == "symlink":
		return parent + clearDir + fmt.Sprintf("rm -f -- %s && ln -s -- \"$(cat %s)\" %s && chown -h %s %s || %s\n",
			p, data, p, owner, p, fail)
	default: // file
		tmp := fmt.Sprintf("\"$(dirname -- %s)/.iklim-rb.$$\"", p)
		return parent + fmt.Sprintf("cp -- %s %s && chown %s %s && chmod %s %s || { rm -f -- %s; %s; }\n",
			data, tmp, owner, tmp, mode, tmp, tmp, fail) +
			clearDir + fmt.Sprintf("if [ -L %s ]; then rm -f -- %s; fi\nmv -f -- %s %s || %s\n", p, p, tmp, p, fail)
	}
}

// restoreSealed restores a file whose snapshot is sealed: it is opened on
// the control machine and uploaded.
func restoreSealed(ctx context.Context, e *rbEntry, n int, meta *FileMeta, key []byte) error {
	sealed := e.enc[n]
	if sealed == nil || key == nil {
		return fmt.Errorf("restore %s: sealed snapshot missing", meta.Path)
	}
	plain, err := unseal(key, sealed)
	if err != nil {
		return fmt.Errorf("restore %s: %w", meta.Path, err)
	}
	c := e.site.conn
	p := remote.Quote(meta.Path)
	if meta.Type == "dir" {
		script := fmt.Sprintf("umask 077\nif [ -L %s ] || { [ -e %s ] && [ ! -d %s ]; }; then rm -f -- %s || exit 1; fi\nmkdir -p -- \"$(dirname -- %s)\" && tar -C \"$(dirname -- %s)\" --numeric-owner -xpf - && chown %d:%d %s && chmod %04o %s",
			p, p, p, p, p, p, meta.UID, meta.GID, p, meta.Perm(), p)
		res, err := c.Run(ctx, script, modules.WithStdin(bytes.NewReader(plain)))
		if err == nil {
			err = res.Err("untar")
		}
		if err != nil {
			return fmt.Errorf("restore %s: %w", meta.Path, err)
		}
		return nil
	}
	res, err := c.Run(ctx, fmt.Sprintf("mkdir -p -- \"$(dirname -- %s)\"", p))
	if err == nil {
		err = res.Err("mkdir")
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", meta.Path, err)
	}
	rnd := make([]byte, 6)
	_, _ = rand.Read(rnd)
	tmp := path.Join(path.Dir(meta.Path), ".iklim-rb-"+hex.EncodeToString(rnd))
	if err := c.Upload(ctx, tmp, bytes.NewReader(plain), 0o600); err != nil {
		return fmt.Errorf("restore %s: %w", meta.Path, err)
	}
	t := remote.Quote(tmp)
	script := fmt.Sprintf("chown %d:%d %s && chmod %04o %s || { rm -f -- %s; exit 1; }\nif [ -d %s ] && [ ! -L %s ]; then rmdir -- %s || exit 1; fi\nif [ -L %s ]; then rm -f -- %s; fi\nmv -f -- %s %s",
		meta.UID, meta.GID, t, meta.Perm(), t, t, p, p, p, p, p, t, p)
	res, err = c.Run(ctx, script)
	if err == nil {
		err = res.Err("install")
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", meta.Path, err)
	}
	return nil
}

// RollbackPlaybook is the playbook `iklim rollback --run ID` runs: one play
// over every host (narrow it with runner.Options.Limit). Without phases it
// has one rollback step, in which each host undoes its changes by itself,
// as playbooks/rollback.hcl does. With the run's phases (RollbackPhases) it
// has one step per phase, newest first, each a barrier: no host undoes a
// phase before every host has undone the later ones, so a node leaves its
// cluster before the manager removes the cluster's service.
func RollbackPlaybook(run string, force bool, phases ...int) *runner.Playbook {
	step := func(name string, phase int) runner.Step {
		return runner.Step{
			Name:    name,
			Module:  RollbackModule,
			Barrier: true,
			Build: func(*runner.StepContext) (modules.Module, error) {
				return &Rollback{Run: run, Force: force, Phase: phase}, nil
			},
		}
	}
	var steps []runner.Step
	if len(phases) == 0 {
		steps = append(steps, step("roll back run "+run, 0))
	}
	for _, p := range slices.Backward(slices.Sorted(slices.Values(phases))) {
		steps = append(steps, step(fmt.Sprintf("roll back run %s, phase %d", run, p), p))
	}
	return &runner.Playbook{
		File:  "rollback",
		Plays: []runner.Play{{Name: "rollback " + run, Hosts: "all", Steps: steps}},
	}
}

// RollbackPhases reads, in check mode, the phases of run id's changes on the
// hosts opts reaches, for RollbackPlaybook. It returns none when one step
// does as well: the run has a single phase, or it was recorded by a version
// without phases, or no host could be read (the rollback itself then says
// why).
func RollbackPhases(ctx context.Context, id string, opts runner.Options) ([]int, error) {
	var mu sync.Mutex
	var seen []*Rollback
	pb := &runner.Playbook{File: "rollback", Plays: []runner.Play{{
		Name: "rollback " + id + " (phases)", Hosts: "all",
		Steps: []runner.Step{{
			Name: "read run " + id, Module: RollbackModule,
			Build: func(*runner.StepContext) (modules.Module, error) {
				// Force: drift is reported by the rollback, not here.
				m := &Rollback{Run: id, Force: true}
				mu.Lock()
				seen = append(seen, m)
				mu.Unlock()
				return m, nil
			},
		}},
	}}}
	opts.Check, opts.Diff, opts.Recorder, opts.Events = true, false, nil, nil
	if _, err := runner.Run(ctx, pb, opts); err != nil {
		return nil, err
	}
	var phases []int
	for _, m := range seen {
		for _, p := range m.phases {
			if p == 0 {
				return nil, nil
			}
			if !slices.Contains(phases, p) {
				phases = append(phases, p)
			}
		}
	}
	if len(phases) < 2 {
		return nil, nil
	}
	slices.Sort(phases)
	return phases, nil
}
