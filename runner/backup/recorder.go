package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner"
	"github.com/zclconf/go-cty/cty"
)

// KeepVar is the host variable that overrides how many runs the host keeps:
// vars { backup_keep = 10 } on a host or group.
const KeepVar = "backup_keep"

// RecorderOptions configure a Recorder.
type RecorderOptions struct {
	// Info describes the run; Info.ID names its directories.
	Info runner.RunInfo
	// Keep is how many runs each host keeps after a successful run: 0 means
	// DefaultKeep, negative never prunes. The host variable backup_keep
	// overrides it per host or group.
	Keep int
	// KeepJournals is how many runs' journals ($IKLIM_STATE_DIR/runs/<id>)
	// the control machine keeps after WriteJournal: 0 means
	// DefaultKeepJournals, negative never prunes.
	KeepJournals int
	// StateDir holds the backup key; empty means StateDir().
	StateDir string
	// Secrets redact records when ctx carries none (runner.Run puts the
	// run's Secrets on ctx, so the CLI needs not set this).
	Secrets *modules.Secrets
	// Control names this control machine in the hosts' owner markers and
	// run.json; empty means its hostname. Set it where the hostname is not
	// stable (CI containers) or to tell control machines apart.
	Control string
}

// Recorder implements runner.Recorder: it writes each change record and the
// snapshot of the files it replaces into <backup_root>/<host>/<run-id>/ on the
// recording host (the control machine for delegated steps), finishes run.json
// and prunes old runs.
type Recorder struct {
	opts    RecorderOptions
	control string // this control machine: RecorderOptions.Control or the hostname
	pid     int
	owner   string // control host, pid and a random token: who writes the run dirs
	tok     string // the random token, in the names of this recorder's temp files

	mu      sync.Mutex
	sites   map[string]*siteState
	secrets *modules.Secrets // the run's, learnt from the first ctx
	key     []byte
}

// siteState is what the recorder knows of one recording host.
type siteState struct {
	mu          sync.Mutex
	initialized bool // run.json written
	changes     int
	rollbackOf  string
	listed      bool       // runs holds the host's runs as the first Before found them
	runs        []runEntry // for retention
}

// NewRecorder returns a Recorder for one run and starts the run's journal on
// the control machine (best effort: the journal is informational).
func NewRecorder(opts RecorderOptions) *Recorder {
	if opts.StateDir == "" {
		opts.StateDir = StateDir()
	}
	if opts.Keep == 0 {
		opts.Keep = DefaultKeep
	}
	if opts.KeepJournals == 0 {
		opts.KeepJournals = DefaultKeepJournals
	}
	host := opts.Control
	if host == "" {
		host, _ = os.Hostname()
	}
	tok := make([]byte, 8)
	_, _ = rand.Read(tok)
	r := &Recorder{opts: opts, control: host, pid: os.Getpid(), sites: map[string]*siteState{}, secrets: opts.Secrets,
		owner: fmt.Sprintf("%s pid %d %x", host, os.Getpid(), tok), tok: hex.EncodeToString(tok)}
	_ = startJournal(opts.Info)
	return r
}

var _ runner.Recorder = (*Recorder)(nil)

func (r *Recorder) site(h *inventories.Host) *siteState {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sites[h.Name]
	if !ok {
		s = &siteState{}
		r.sites[h.Name] = s
	}
	return s
}

// UseSecrets implements modules.SecretsUser: the engine hands the recorder
// the run's Secrets, which redact and seal its records.
func (r *Recorder) UseSecrets(s *modules.Secrets) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secrets == nil {
		r.secrets = s
	}
}

func (r *Recorder) runSecrets() *modules.Secrets {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.secrets
}

func (r *Recorder) sealKey() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.key == nil {
		k, err := loadKey(r.opts.StateDir, true)
		if err != nil {
			return nil, err
		}
		r.key = k
	}
	return r.key, nil
}

func (r *Recorder) runRecord(h *inventories.Host, st *siteState, status string) RunRecord {
	return RunRecord{
		RunInfo: r.opts.Info, Host: h.Name, Control: r.control, PID: r.pid,
		Status: status, Changes: st.changes, RollbackOf: st.rollbackOf,
	}
}

// Before implements runner.Recorder. In one remote command it snapshots
// every file of the change (content, mode, owner, or absence) and then writes
// the change record, so that a record that parses always has its snapshots.
// The first change of a host in the run also checks the host directory's
// owner marker, claims the run directory, writes run.json and lists the
// host's runs for retention, in that same command. Changes that touch
// secrets take one more round trip: their files are read through the Conn
// and stored sealed with the control machine's key. When the command fails
// (a full disk, another owner) it removes what it wrote, and the runner
// does not apply the change.
func (r *Recorder) Before(ctx context.Context, conn modules.Conn, h *inventories.Host, rec *runner.ChangeRecord) error {
	st := r.site(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	b, err := r.before(ctx, conn, h, st, rec, nil, false)
	if err != nil {
		return err
	}
	res, err := conn.Run(ctx, b.script.String(), modules.WithStdin(bytes.NewReader(b.payload)))
	if err != nil {
		return fmt.Errorf("%s: %s: %w", b.where, b.dir, err)
	}
	return r.recorded(st, b, res)
}

// beforeScript is the script (and its stdin) that records one change.
type beforeScript struct {
	where, host, root, hdir, dir, seq string
	first                             bool
	untar                             bool // the script reads its stdin to the end
	rollbackOf                        string
	script                            strings.Builder
	payload                           []byte
}

// before builds the script that records rec, ahead of ap's when ap is not
// nil (RecordApply); st.mu is held. Its stdin is the files ap writes (see
// receiveFiles), then the payload: the record when inline, then a tar.
// chained tells that the script follows another change's in the same
// command (RecordApplyChain), which set up the shell and the run directory;
// a sensitive change is then errNotChained, since its files are read in a
// round trip of their own before the command.
func (r *Recorder) before(ctx context.Context, conn modules.Conn, h *inventories.Host, st *siteState, rec *runner.ChangeRecord, ap *modules.ScriptApply, chained bool) (*beforeScript, error) {
	if rec == nil || rec.Change == nil {
		return nil, errors.New("backup: empty change record")
	}
	where := fmt.Sprintf("backup on %s, step %q", h.Name, rec.Step)
	if rec.Delegated {
		where = fmt.Sprintf("backup on %s (delegated for %s), step %q", h.Name, rec.Host, rec.Step)
	}
	sec := r.runSecrets()
	full, err := marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("%s: encode change record: %w", where, err)
	}
	red, redacted, err := redactJSON(full, sec)
	if err != nil {
		return nil, fmt.Errorf("%s: redact change record: %w", where, err)
	}
	sensitive := rec.Change.Sensitive || redacted || diffHasSecret(rec.Change.Diff, sec) || rec.SensitiveArgs
	if chained && sensitive {
		return nil, errNotChained
	}

	seq := seqName(rec.Seq)
	root := hostRoot(h)
	hdir := HostDir(root, h.Name)
	dir := RunDir(root, h.Name, r.opts.Info.ID)
	tw := newTarBuf()
	tmp := "changes/." + seq + ".json." + r.tok + ".tmp"

	rollbackOf := ""
	if rec.Module == RollbackModule {
		var b rollbackBefore
		if json.Unmarshal(rec.Change.Before, &b) == nil && ValidRunID(b.Run) {
			rollbackOf = b.Run
			// Rolling back sealed snapshots puts secrets back on the host:
			// what is there now is as sensitive.
			sensitive = sensitive || b.Sensitive
		}
	}
	first := !st.initialized && !chained
	var runJSON []byte
	if first {
		rr := r.runRecord(h, st, StatusRunning)
		if rollbackOf != "" {
			rr.RollbackOf = rollbackOf
		}
		runJSON, _ = marshal(rr)
	}
	// A record of up to maxInlineRecord comes on stdin ahead of the tar,
	// read by the shell's read (never in argv, where ps shows it), and is
	// written once the snapshot is whole by printf straight to its name: cut
	// short it is not JSON, which readers take for a change never applied
	// (as they do a missing one), so it needs no temp file and no mv.
	inline := len(red) <= maxInlineRecord && bytes.HasSuffix(red, []byte("\n"))
	if !inline {
		tw.add(tmp, red)
	}
	var key []byte
	if sensitive {
		if key, err = r.sealKey(); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	if redacted {
		enc, err := seal(key, full)
		if err != nil {
			return nil, fmt.Errorf("%s: seal change record: %w", where, err)
		}
		tw.add("changes/"+seq+".json.enc", enc)
	}

	// Regular files and directory trees of a sensitive change are read here
	// and stored sealed.
	sealed := map[int]bool{}
	if sensitive && len(rec.Change.Files) > 0 {
		got, err := readRegularFiles(ctx, conn, rec.Change.Files)
		if err != nil {
			return nil, fmt.Errorf("%s: read files to seal: %w", where, err)
		}
		for i, f := range got {
			ext := ".tar.enc"
			if f.meta.Type == "file" {
				sum := sha256.Sum256(f.data)
				f.meta.SHA256 = hex.EncodeToString(sum[:])
				ext = ".data.enc"
			}
			f.meta.Encrypted = true
			enc, err := seal(key, f.data)
			if err != nil {
				return nil, fmt.Errorf("%s: seal %s: %w", where, f.meta.Path, err)
			}
			mb, _ := marshal(f.meta)
			snap := "files/" + snapName(seq, i)
			tw.add(snap+".meta.json", mb)
			tw.add(snap+".path", []byte(f.meta.Path))
			tw.add(snap+ext, enc)
			sealed[i] = true
		}
	}
	// The run's first record makes changes/ and files/ with mkdir; the tar
	// is only for what a record carries besides an inline one.
	untar := tw.files > 0
	payload, err := tw.bytes()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if !untar {
		payload = nil
	}

	if inline {
		payload = append(red[:len(red):len(red)], payload...)
	}
	b := &beforeScript{where: where, host: h.Name, root: root, hdir: hdir, dir: dir, seq: seq, first: first, untar: untar, rollbackOf: rollbackOf, payload: payload}
	sb := &b.script
	var files []modules.ScriptFile
	var known []modules.ScriptBefore
	if ap != nil {
		files, known = ap.Files, ap.Before
	}
	if !chained {
		if ap != nil {
			// In the builder itself: the script is the largest thing a
			// host holds while it applies, and a thousand hosts apply at
			// once.
			sb.WriteString(loginUmask)
		}
		sb.WriteString(shPrelude)
	}
	fmt.Fprintf(sb, "R=%s; HD=%s; D=%s; F=\"$D/files\"; DC=\n", remote.Quote(root), remote.Quote(hdir), remote.Quote(dir))
	// iklim_fail removes what this command wrote: the whole run directory
	// when it created it, else this change's files.
	// A shell builtin that hits a full disk may say only "I/O error", so
	// the free space is told too.
	fmt.Fprintf(sb, `iklim_fail() {
  [ -n "$1" ] && printf '%%s\n' "$1" >&2
  _a=$(df -Pk -- "$R" 2>/dev/null | awk 'NR==2 {print $4}')
  if [ "$_a" = 0 ]; then echo "No space left on device: the filesystem of $R is full" >&2; fi
  [ -n "$DC" ] && rm -rf -- "$D"
  rm -rf -- "$F/%s-"* "$D/%s" "$D/changes/%s.json" "$D/changes/%s.json.enc" 2>/dev/null
  exit 1
}
`, seq, tmp, seq, seq)
	receiveFiles(sb, files)
	if inline {
		readLines(sb, "_ikrec", bytes.Count(red, []byte("\n")), `iklim_fail "the change record came short"`)
	}
	if first {
		// The host directory's owner marker is checked before anything is
		// made; one without a marker (most likely not there yet) is claimed
		// once the run directory is made in it, by the one mkdir -p that
		// makes the root and the host directory too.
		sb.WriteString(ownerScript(hostDirName(h.Name), hostDirName(r.control)))
		// Claim the run directory: run ids are unique per control machine,
		// so two control machines could pick the same one. The claim is its
		// owner file, made with noclobber (O_EXCL), so that one mkdir makes
		// the directory and both subdirectories. An existing one is only
		// read: nothing is made in another run's. A mkdir that fails
		// halfway takes back what it made (rmdir: empty directories only).
		fmt.Fprintf(sb, "O=%s; DX=\n", remote.Quote(r.owner))
		sb.WriteString(`if [ -e "$D" ] || [ -L "$D" ]; then { IFS= read -r DX < "$D/owner"; } 2>/dev/null
else
  mkdir -p -- "$D/changes" "$F" || { rmdir -- "$D/changes" "$F" "$D" 2>/dev/null; iklim_fail "cannot create $D"; }
  set -C; { printf '%s\n' "$O" > "$D/owner"; } 2>/dev/null && DC=1; set +C
  if [ -z "$DC" ]; then
    { IFS= read -r DX < "$D/owner"; } 2>/dev/null
    [ -n "$DX" ] || { DC=1; iklim_fail "cannot write $D/owner"; } # made, not filled: a full disk
  fi
fi
[ -n "$DC" ] || [ "$DX" = "$O" ] || { echo "$D belongs to another run: $DX" >&2; exit 1; }
[ -d "$D/changes" ] && [ -d "$F" ] || mkdir -p -- "$D/changes" "$F" || iklim_fail "cannot create $D"
`)
		sb.WriteString(claimHostScript)
		// Written in place: if this command fails, the run directory it
		// created goes with it.
		fmt.Fprintf(sb, "printf '%%s\\n' %s > \"$D/run.json\" || iklim_fail \"cannot write $D/run.json\"\n", remote.Quote(strings.TrimRight(string(runJSON), "\n")))
	}
	if untar {
		sb.WriteString("tar -xf - -C \"$D\" || iklim_fail \"cannot write the change record into $D\"\n")
	}
	for i, p := range rec.Change.Files {
		n := i + 1
		if sealed[n] {
			continue
		}
		if sensitive {
			// It was not a regular file a moment ago; never store one in clear.
			fmt.Fprintf(sb, "if { [ -f %s ] || [ -d %s ]; } && [ ! -L %s ]; then iklim_fail %s; fi\n",
				remote.Quote(p), remote.Quote(p), remote.Quote(p), remote.Quote(p+" changed while being recorded"))
		}
		// What the check read comes on stdin after the record: only in a
		// script with no tar, which would read stdin to its end.
		if k := slices.IndexFunc(known, func(kb modules.ScriptBefore) bool { return kb.Path == p }); k >= 0 && !sensitive && !untar &&
			knownSnapshot(sb, jsq(p), p, snapName(seq, n), known[k]) {
			b.payload = append(b.payload, known[k].Data...)
			continue
		}
		fmt.Fprintf(sb, "iklim_snap %s %s \"$F\" %s || iklim_fail %s\n",
			jsq(p), remote.Quote(p), snapName(seq, n), remote.Quote("snapshot "+p+" failed"))
	}
	if rollbackOf != "" {
		fmt.Fprintf(sb, "printf '%%s\\n' %s > \"$D/rollback_of\" || iklim_fail \"cannot write $D/rollback_of\"\n", remote.Quote(rollbackOf))
	}
	// The record appears last and whole: the change counts as recorded.
	if inline {
		fmt.Fprintf(sb, "printf '%%s' \"$_ikrec\" > \"$D/changes/%s.json\" || iklim_fail \"cannot write $D/changes/%s.json\"\n", seq, seq)
	} else {
		fmt.Fprintf(sb, "mv -f -- \"$D/%s\" \"$D/changes/%s.json\" || iklim_fail \"cannot write $D/changes/%s.json\"\n", tmp, seq, seq)
	}
	if first {
		sb.WriteString("echo LIST; iklim_list \"$HD\"; echo LEGACY; iklim_list \"$R\"\n")
	}

	return b, nil
}

// recorded reads the outcome of a script that began with b; st.mu is held.
func (r *Recorder) recorded(st *siteState, b *beforeScript, res modules.Result) error {
	if res.ExitCode == ownerConflictExit {
		return fmt.Errorf("%s: %w", b.where, ownerConflict(b.hdir, res.Stderr))
	}
	if err := res.Err(b.dir); err != nil {
		return fmt.Errorf("%s: %w", b.where, err)
	}
	r.listed(st, b, res.Stdout)
	return nil
}

// listed notes a change as recorded, with the runs the first record listed.
func (r *Recorder) listed(st *siteState, b *beforeScript, stdout string) {
	if _, list, ok := strings.Cut(stdout, "LIST\n"); b.first && ok {
		if runs, err := parseRunList(list, b.hdir, b.root); err == nil {
			st.runs, st.listed = ownRuns(runs, b.host, true), true
		}
	}
	st.initialized = true
	st.changes++
	if b.rollbackOf != "" {
		st.rollbackOf = b.rollbackOf
	}
}

// ownerConflictExit is the exit status of a script that found another
// owner's marker in the host directory.
const ownerConflictExit = 3

// ownerScript reads the owner marker of the host directory $HD and exits
// ownerConflictExit naming both owners (iklim_other) when it names another
// host, machine or control machine; with no marker it sets HN, for
// claimHostScript. The machine is /etc/machine-id (else the kernel
// hostname), read with shell builtins.
func ownerScript(host, control string) string {
	return fmt.Sprintf(`iklim_other() { printf 'OWNER %%s\nOURS %%s\n' "$HX" "$HO" >&2; exit %d; }
M=; { read -r M < /etc/machine-id || read -r M < /var/lib/dbus/machine-id; } 2>/dev/null
[ -n "$M" ] || { { read -r M < /proc/sys/kernel/hostname; } 2>/dev/null; M="hostname:$M"; }
HO="host=%s machine=$M control=%s"; HX=; HN=
{ IFS= read -r HX < "$HD/owner"; } 2>/dev/null
if [ -z "$HX" ] && [ ! -e "$HD/owner" ]; then HN=1
elif [ "$HX" != "$HO" ]; then iklim_other; fi
`, ownerConflictExit, host, control)
}

// claimHostScript writes the owner marker of a host directory that had
// none (HN), once the run directory $D is made in it: the marker appears
// whole (a link of a finished file, the run directory's host-owner) or not
// at all. Where another recorder's marker came first, the run directory
// this script made goes (DC) and the script exits naming both owners.
const claimHostScript = `if [ -n "$HN" ]; then
  printf '%s\n' "$HO" > "$D/host-owner" || iklim_fail "cannot write $HD/owner"
  ln -- "$D/host-owner" "$HD/owner" 2>/dev/null || [ -e "$HD/owner" ] || mv -n -- "$D/host-owner" "$HD/owner"
  { IFS= read -r HX < "$HD/owner"; } 2>/dev/null
  [ "$HX" = "$HO" ] || { [ -n "$DC" ] && rm -rf -- "$D"; iklim_other; }
fi
`

// ErrOwnerConflict is wrapped by the error of a recorder that found another
// host or control machine's owner marker in the host directory.
var ErrOwnerConflict = errors.New("backup directory has another owner")

func ownerConflict(hdir, stderr string) error {
	var theirs, ours string
	for _, l := range strings.Split(stderr, "\n") {
		if v, ok := strings.CutPrefix(l, "OWNER "); ok {
			theirs = v
		} else if v, ok := strings.CutPrefix(l, "OURS "); ok {
			ours = v
		}
	}
	if theirs == "" {
		theirs = "(an empty or unreadable marker)"
	}
	return fmt.Errorf("%w: %s belongs to %q, but this run is %q: two hosts or two control machines would write one backup directory "+
		"(give them different backup_root values or inventory names, or remove %s/owner on the host to hand the directory over)",
		ErrOwnerConflict, hdir, theirs, ours, hdir)
}

type readFile struct {
	meta FileMeta
	data []byte
}

// readRegularFiles reads the paths that are regular files or directories,
// in one command: their FileMeta and content (a tar for a directory), keyed
// by 1-based index.
func readRegularFiles(ctx context.Context, conn modules.Conn, paths []string) (map[int]readFile, error) {
	var sb strings.Builder
	sb.WriteString(shPrelude)
	for i, p := range paths {
		q := remote.Quote(p)
		// A private copy is framed, so that its length holds even if the
		// file changes meanwhile; Go hashes what it received.
		fmt.Fprintf(&sb, `if [ -f %s ] && [ ! -L %s ]; then s=$(iklim_st %s %s) || exit 1; printf 'C %d %%s\n' "$s"
  T=$(mktemp) && cat -- %s > "$T" && iklim_frame %d "$T" || { rm -f "$T"; exit 1; }; rm -f "$T"
elif [ -d %s ] && [ ! -L %s ]; then s=$(iklim_st %s %s) || exit 1; printf 'C %d %%s\n' "$s"
  T=$(mktemp) && iklim_tar %s > "$T" && iklim_frame %d "$T" || { rm -f "$T"; exit 1; }; rm -f "$T"
fi
`, q, q, jsq(p), q, i+1, q, i+1, q, q, jsq(p), q, i+1, q, i+1)
	}
	res, err := conn.Run(ctx, sb.String())
	if err != nil {
		return nil, err
	}
	if err := res.Err("read files"); err != nil {
		return nil, err
	}
	frames, err := parseFrames(res.Stdout)
	if err != nil {
		return nil, err
	}
	out := map[int]readFile{}
	for _, f := range frames {
		n, err := strconv.Atoi(f.Name)
		if err != nil || n < 1 || n > len(paths) {
			return nil, fmt.Errorf("unexpected output %q", f.Name)
		}
		rf := out[n]
		switch f.Kind {
		case "C":
			if err := json.Unmarshal(f.Data, &rf.meta); err != nil {
				return nil, fmt.Errorf("stat %s: %w", paths[n-1], err)
			}
		case "F":
			rf.data = f.Data
		}
		out[n] = rf
	}
	return out, nil
}

// After implements runner.Recorder: it writes changes/<seq>.after.json with
// the outcome and the state of the change's files right after Apply.
func (r *Recorder) After(ctx context.Context, conn modules.Conn, h *inventories.Host, rec *runner.ChangeRecord, applyErr error) error {
	if rec == nil || rec.Change == nil {
		return errors.New("backup: empty change record")
	}
	script, err := r.afterScript(h, rec, applyErr, "exit", nil)
	if err != nil {
		return err
	}
	dir := RunDir(hostRoot(h), h.Name, r.opts.Info.ID)
	res, err := conn.Run(ctx, shPrelude+script)
	if err != nil {
		return fmt.Errorf("backup on %s, step %q: %s: %w", h.Name, rec.Step, dir, err)
	}
	if err := res.Err(dir); err != nil {
		return fmt.Errorf("backup on %s, step %q: %w", h.Name, rec.Step, err)
	}
	return nil
}

// afterScript is the script (after shPrelude) that writes rec's after
// record; it ends with quit 1 ("exit", or "return" in a function) when it
// cannot. ap, when the change was applied by that script (RecordApply's,
// which set _iku and _ikg first), tells what it wrote.
func (r *Recorder) afterScript(h *inventories.Host, rec *runner.ChangeRecord, applyErr error, quit string, ap *modules.ScriptApply) (string, error) {
	sec := r.runSecrets()
	ar := AfterRecord{Seq: rec.Seq, Outcome: "applied", Time: time.Now().UTC(), Files: []FileMeta{}}
	if applyErr != nil {
		ar.Outcome = "failed"
		ar.Error = sec.Redact(applyErr.Error())
	}
	head, err := marshal(ar)
	if err != nil {
		return "", err
	}
	// The script splices the files' states into the empty list.
	prefix := strings.TrimSpace(string(head))
	i := strings.LastIndex(prefix, "[]")
	if i < 0 {
		return "", errors.New("backup: after record: unexpected encoding")
	}
	pre, post := prefix[:i+1], prefix[i+1:]

	dir := RunDir(hostRoot(h), h.Name, r.opts.Info.ID)
	seq := seqName(rec.Seq)
	var sb strings.Builder
	// Straight to its name, like an inline change record: cut short it is
	// not JSON, and readers take it for a missing one (the run died before
	// it could tell the outcome).
	fmt.Fprintf(&sb, "A=%s\n{ printf '%%s' %s\n", remote.Quote(dir+"/changes/"+seq+".after.json"), remote.Quote(pre))
	known := map[string]modules.ScriptFile{}
	dirs := map[string]uint32{}
	links := map[string]modules.ScriptLink{}
	if ap != nil {
		for _, f := range ap.Files {
			if f.Dest != "" {
				known[f.Dest] = f
			}
		}
		for _, d := range ap.Dirs {
			dirs[d.Path] = d.Mode & 0o7777
		}
		for _, l := range ap.Links {
			links[l.Path] = l
		}
	}
	for i, p := range rec.Change.Files {
		if i > 0 {
			sb.WriteString("printf ,\n")
		}
		st := fmt.Sprintf("iklim_st %s %s || %s 1", jsq(p), remote.Quote(p), quit)
		q := remote.Quote(p)
		owned := shellsOwn(q)
		if f, ok := known[p]; ok {
			// What the apply wrote, as iklim_st prints it, when the file is
			// there and the shell's own (else its owner is read too).
			sum := sha256.Sum256(f.Data)
			st = fmt.Sprintf(`if [ -f %s ] && %s; then %s; else %s; fi`,
				q, owned, shellsMeta(jsq(p), "file", f.DestMode, hex.EncodeToString(sum[:])), st)
		} else if l, ok := links[p]; ok {
			// A link's hash is its target's, which the apply has just
			// written (as readlink prints it). Its owner is read (test -O
			// would follow the link), unless the shell made it and left it
			// so: then it is the shell's, but in a setgid directory, whose
			// group it takes.
			sum := remote.SHA256String(l.Target + "\n")
			read := fmt.Sprintf("iklim_st %s %s %s || %s 1", jsq(p), q, sum, quit)
			if l.Own {
				read = fmt.Sprintf(`if [ ! -g %s ] && [ -n "$_iku" ] && [ -n "$_ikg" ]; then %s; else %s; fi`,
					remote.Quote(path.Dir(p)), shellsMeta(jsq(p), "symlink", 0o777, sum), read)
			}
			st = fmt.Sprintf("if [ -L %s ]; then %s; else %s; fi", q, read, st)
		} else if mode, ok := dirs[p]; ok {
			// Likewise a directory made with its permission bits; the
			// special ones may differ (a setgid parent passes its bit on,
			// chmod keeps a directory's), so they are tested.
			st = fmt.Sprintf(`if [ -d %s ] && %s && %s; then %s; else %s; fi`,
				q, owned, specialBits(q, mode), shellsMeta(jsq(p), "dir", mode, ""), st)
		}
		sb.WriteString(st + "\n")
	}
	fmt.Fprintf(&sb, "printf '%%s\\n' %s; } > \"$A\" || { rm -f -- \"$A\"; %s 1; }\n", remote.Quote(post), quit)
	return sb.String(), nil
}

// shellsOwn is an sh test, builtins only, that the path q (quoted) is not a
// symlink and is owned by the shell's effective user and group, whose ids
// ($_iku, $_ikg) the script has read.
func shellsOwn(q string) string {
	return fmt.Sprintf(`[ ! -L %s ] && [ -O %s ] && [ -G %s ] && [ -n "$_iku" ] && [ -n "$_ikg" ]`, q, q, q)
}

// shellsMeta is the printf that prints the FileMeta of a path (jpath, its
// JSON string quoted for sh) owned by the shell's ids, $_iku and $_ikg, as
// iklim_st prints it: of type typ, with mode, and its sha256 unless sum is
// "".
func shellsMeta(jpath, typ string, mode uint32, sum string) string {
	if sum != "" {
		sum = `,"sha256":"` + sum + `"`
	}
	return fmt.Sprintf(`printf '{"path":%%s,"exists":true,"type":"%s","mode":"%o","uid":%%s,"gid":%%s%s}' %s "$_iku" "$_ikg"`, typ, mode&0o7777, sum, jpath)
}

// specialBits is an sh test, builtins only, that the setuid, setgid and
// sticky bits of the path q (quoted) are those of mode.
func specialBits(q string, mode uint32) string {
	var tests []string
	for _, b := range []struct {
		bit  uint32
		test string
	}{{0o4000, "-u"}, {0o2000, "-g"}, {0o1000, "-k"}} {
		not := "! "
		if mode&b.bit != 0 {
			not = ""
		}
		tests = append(tests, fmt.Sprintf("[ %s%s %s ]", not, b.test, q))
	}
	return strings.Join(tests, " && ")
}

// Finish implements runner.Recorder: it writes the host's final run.json
// and, when the run succeeded on the host, prunes the host's old runs (see
// pruneSet for what is kept), in one command: the runs to prune were listed
// by the host's first Before.
func (r *Recorder) Finish(ctx context.Context, conn modules.Conn, h *inventories.Host, res runner.HostRecap) error {
	st := r.site(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	body, prune, err := r.finalRecord(h, st, res, ctx.Err() != nil)
	if err != nil {
		return err
	}
	dir := RunDir(hostRoot(h), h.Name, r.opts.Info.ID)
	var sb strings.Builder
	sb.WriteString(shPrelude)
	// In the script (it is redacted), not on stdin: printf is a builtin.
	r.finishScript(&sb, h, remote.Quote(strings.TrimRight(string(body), "\n")), "exit")
	switch {
	case prune && st.listed:
		sb.WriteString(r.listedPrune(st, r.keepFor(h), "exit"))
	case prune:
		sb.WriteString("echo LIST; iklim_list \"$HD\"; echo LEGACY; iklim_list \"$R\"\n")
	}
	out, err := conn.Run(ctx, sb.String())
	if err != nil {
		return fmt.Errorf("backup on %s: %s: %w", h.Name, dir, err)
	}
	if err := out.Err(dir); err != nil {
		return fmt.Errorf("backup on %s: %w", h.Name, err)
	}
	if !prune || st.listed {
		return nil
	}
	// No Before listed the runs (a caller that finishes without changes).
	hdir := HostDir(hostRoot(h), h.Name)
	_, list, _ := strings.Cut(out.Stdout, "LIST\n")
	runs, err := parseRunList(list, hdir, hostRoot(h))
	if err != nil {
		return fmt.Errorf("backup on %s: list runs in %s: %w", h.Name, hdir, err)
	}
	script := pruneScript(pruneDirs(ownRuns(runs, h.Name, true), r.opts.Info.ID, st.rollbackOf, r.keepFor(h)), "exit")
	if script == "" {
		return nil
	}
	out, err = conn.Run(ctx, fmt.Sprintf("HD=%s\n%s", remote.Quote(hdir), script))
	if err != nil {
		return fmt.Errorf("backup on %s: prune: %w", h.Name, err)
	}
	if err := out.Err("prune " + hdir); err != nil {
		return fmt.Errorf("backup on %s: %w", h.Name, err)
	}
	return nil
}

var _ runner.ScriptFinisher = (*Recorder)(nil)

// FinishScript implements runner.ScriptFinisher: Finish as a command that
// takes the final run.json from its payload, whose first line says whether
// to prune. A host whose runs no Before listed needs Finish itself.
func (r *Recorder) FinishScript(h *inventories.Host) *runner.ScriptFinish {
	st := r.site(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	keep := r.keepFor(h)
	if !st.initialized || keep > 0 && !st.listed {
		return nil
	}
	v := runner.FinishPayloadVar
	var sb strings.Builder
	fmt.Fprintf(&sb, "_ikprune=${%s%%%%\"$_iknl\"*}; _ikbody=${%s#*\"$_iknl\"}; _ikbody=${_ikbody%%\"$_iknl\"}\n", v, v)
	r.finishScript(&sb, h, "\"$_ikbody\"", "return")
	if prune := r.listedPrune(st, keep, "return"); prune != "" {
		fmt.Fprintf(&sb, "if [ \"$_ikprune\" = prune ]; then\n%sfi\n", prune)
	}
	dir := RunDir(hostRoot(h), h.Name, r.opts.Info.ID)
	return &runner.ScriptFinish{
		// The batch's shell has the session's umask; records are private.
		Script: "umask 077; _iknl='\n'\n" + sb.String(),
		Payload: func(res runner.HostRecap) (string, error) {
			st.mu.Lock()
			defer st.mu.Unlock()
			body, prune, err := r.finalRecord(h, st, res, false)
			if err != nil {
				return "", err
			}
			first := "keep\n"
			if prune {
				first = "prune\n"
			}
			return first + strings.TrimRight(string(body), "\n") + "\n", nil
		},
		Done: func(out modules.Result) error {
			if err := out.Err(dir); err != nil {
				return fmt.Errorf("backup on %s: %w", h.Name, err)
			}
			return nil
		},
	}
}

// finalRecord is h's final run.json for result res, and whether to prune
// h's old runs; st.mu is held.
func (r *Recorder) finalRecord(h *inventories.Host, st *siteState, res runner.HostRecap, interrupted bool) ([]byte, bool, error) {
	status := StatusOK
	switch {
	case res.Error == "interrupted" || interrupted:
		status = StatusInterrupted
	case res.Failed > 0 || res.Unreachable > 0:
		status = StatusFailed
	}
	now := time.Now().UTC()
	rr := r.runRecord(h, st, status)
	rr.Finished = &now
	res.Error = r.runSecrets().Redact(res.Error)
	rr.Result = &res
	body, err := marshal(rr)
	if err != nil {
		return nil, false, err
	}
	return body, status == StatusOK && r.keepFor(h) > 0, nil
}

// finishScript writes the sh that replaces h's run.json with body (a shell
// word), through a temp file, and ends with quit (exit, or return in a
// function) when it fails; a host without the run directory has nothing to
// finish.
func (r *Recorder) finishScript(sb *strings.Builder, h *inventories.Host, body, quit string) {
	root := hostRoot(h)
	fmt.Fprintf(sb, "R=%s; HD=%s; D=%s; T=\"$D/.run.json.%s.tmp\"\n", remote.Quote(root), remote.Quote(HostDir(root, h.Name)),
		remote.Quote(RunDir(root, h.Name, r.opts.Info.ID)), r.tok)
	// No run directory: the one change a cut-off command may have recorded
	// was not (and a directory made here would have no owner marker).
	fmt.Fprintf(sb, "[ -d \"$D\" ] || %s 0\n", quit)
	fmt.Fprintf(sb, "printf '%%s\\n' %s > \"$T\" && mv -f -- \"$T\" \"$D/run.json\" || { rm -f -- \"$T\"; %s 1; }\n", body, quit)
}

// listedPrune is the sh that prunes the runs the host's first Before
// listed, keeping keep; st.mu is held.
func (r *Recorder) listedPrune(st *siteState, keep int, quit string) string {
	return pruneScript(pruneDirs(st.runs, r.opts.Info.ID, st.rollbackOf, keep), quit)
}

// pruneDirs is the directories of the runs pruneSet lets go, given the runs
// a host had when this run (current, rolling back rollbackOf if set) began.
func pruneDirs(runs []runEntry, current, rollbackOf string, keep int) []string {
	all := append([]runEntry{}, runs...)
	found := false
	for i := range all {
		if all[i].ID == current && !all[i].Legacy {
			all[i].RollbackOf, found = rollbackOf, true
		}
	}
	if !found {
		all = append(all, runEntry{ID: current, RollbackOf: rollbackOf})
	}
	gone := map[string]bool{}
	for _, id := range pruneSet(all, current, keep) {
		gone[id] = true
	}
	var out []runEntry
	for _, e := range all {
		if gone[e.ID] {
			out = append(out, e)
		}
	}
	// Newest first: a rollback goes before the run it targets, which
	// pruneScript would keep while the rollback is there.
	sort.Slice(out, func(i, j int) bool { return CompareRunIDs(out[i].ID, out[j].ID) > 0 })
	dirs := make([]string, len(out))
	for i, e := range out {
		dirs[i] = e.Dir
	}
	return dirs
}

// pruneScript removes run directories (full paths) unless a run of the host
// directory $HD names one in its rollback_of, which a run that began after
// the listing could have written; a removal that fails ends it with quit
// (exit, or return in a function).
func pruneScript(dirs []string, quit string) string {
	if len(dirs) == 0 {
		return ""
	}
	var sb strings.Builder
	sb.WriteString("for P in")
	for _, d := range dirs {
		sb.WriteString(" " + remote.Quote(d))
	}
	sb.WriteString(`; do
  K=; for B in "$HD"/*/rollback_of; do [ -f "$B" ] || continue; X=; read -r X < "$B"; [ "$X" = "${P##*/}" ] && K=1; done
  [ -n "$K" ] || rm -rf -- "$P" || ` + quit + ` 1
done
`)
	return sb.String()
}

// keepFor is how many runs h keeps.
func (r *Recorder) keepFor(h *inventories.Host) int {
	if v, ok := h.Vars[KeepVar]; ok && v.IsKnown() && !v.IsNull() {
		switch v.Type() {
		case cty.Number:
			if n, acc := v.AsBigFloat().Int64(); acc == big.Exact {
				if n == 0 {
					return DefaultKeep
				}
				return int(n)
			}
		case cty.String:
			if n, err := strconv.Atoi(v.AsString()); err == nil {
				return n
			}
		}
	}
	return r.opts.Keep
}

// runEntry is one run directory as iklim_list shows it.
type runEntry struct {
	ID         string
	Dir        string     // its directory
	Legacy     bool       // <root>/<run-id>, from before host directories
	Rec        *RunRecord // nil when run.json is missing or unreadable
	RollbackOf string
	RolledBack bool
	Changes    int
}

func (e runEntry) finished() bool {
	return e.RolledBack || (e.Rec != nil && e.Rec.Status != StatusRunning)
}

// parseRunList reads the output of `iklim_list "$HD"; echo LEGACY;
// iklim_list "$R"`: the runs of host directory hdir, then those of the old
// layout under root.
func parseRunList(out, hdir, root string) ([]runEntry, error) {
	frames, err := parseFrames(out)
	if err != nil {
		return nil, err
	}
	var runs []runEntry
	legacy := false
	for _, f := range frames {
		switch f.Kind {
		case "LEGACY":
			legacy = true
			continue
		case "R":
			dir := path.Join(hdir, f.Name)
			if legacy {
				dir = legacyRunDir(root, f.Name)
			}
			runs = append(runs, runEntry{ID: f.Name, Dir: dir, Legacy: legacy})
			continue
		}
		if len(runs) == 0 {
			continue
		}
		e := &runs[len(runs)-1]
		switch {
		case f.Kind == "N":
			e.Changes, _ = strconv.Atoi(f.Name)
		case f.Kind == "F" && f.Name == "run.json":
			var rr RunRecord
			if json.Unmarshal(f.Data, &rr) == nil {
				e.Rec = &rr
			}
		case f.Kind == "F" && f.Name == "rollback_of":
			e.RollbackOf = strings.TrimSpace(string(f.Data))
		case f.Kind == "F" && f.Name == "rolled_back":
			e.RolledBack = true
		}
	}
	valid := runs[:0]
	for _, e := range runs {
		if ValidRunID(e.ID) {
			if e.RollbackOf == "" && e.Rec != nil {
				e.RollbackOf = e.Rec.RollbackOf
			}
			valid = append(valid, e)
		}
	}
	return valid, nil
}

// ownRuns is runs without the old-layout runs of other hosts: those whose
// run.json names another host, and, when strict, those that name none.
func ownRuns(runs []runEntry, host string, strict bool) []runEntry {
	var out []runEntry
	for _, e := range runs {
		if e.Legacy {
			named := e.Rec != nil && e.Rec.Host != ""
			if named && e.Rec.Host != host || !named && strict {
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// pruneSet decides which runs of one host to delete after run current
// succeeded there:
//   - only finished runs (final status, or rolled back) count and go; a run
//     still "running" is in progress or was interrupted, and is the one most
//     likely to need a rollback, so it stays until it is rolled back;
//   - the newest keep finished runs stay, current among them;
//   - a run that a remaining run rolls back (rollback_of) stays, and so on
//     down the chain, so a rollback target never disappears under it.
func pruneSet(runs []runEntry, current string, keep int) []string {
	var done []runEntry
	stay := map[string]bool{current: true}
	for _, e := range runs {
		if e.ID == current || !e.finished() {
			stay[e.ID] = true
			continue
		}
		done = append(done, e)
	}
	sort.Slice(done, func(i, j int) bool { return CompareRunIDs(done[i].ID, done[j].ID) > 0 })
	room := keep - 1 // current is kept
	for _, e := range done {
		if room > 0 {
			stay[e.ID] = true
			room--
		}
	}
	byID := map[string]runEntry{}
	for _, e := range runs {
		byID[e.ID] = e
	}
	for changed := true; changed; {
		changed = false
		for id := range stay {
			if t := byID[id].RollbackOf; t != "" && !stay[t] {
				if _, ok := byID[t]; ok {
					stay[t] = true
					changed = true
				}
			}
		}
	}
	var gone []string
	for _, e := range done {
		if !stay[e.ID] {
			gone = append(gone, e.ID)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return CompareRunIDs(gone[i], gone[j]) < 0 })
	return gone
}

// tarBuf builds the tar stream a script unpacks into a run directory.
type tarBuf struct {
	buf   bytes.Buffer
	tw    *tar.Writer
	files int // regular files added
	err   error
}

// maxInlineRecord is the largest change record the record script reads
// with the shell's read (a byte per system call) rather than from its tar.
const maxInlineRecord = 32 << 10

func newTarBuf() *tarBuf {
	t := &tarBuf{}
	t.tw = tar.NewWriter(&t.buf)
	return t
}

func (t *tarBuf) add(name string, data []byte) {
	if t.err != nil {
		return
	}
	t.files++
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: time.Now().Truncate(time.Second), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
	if t.err = t.tw.WriteHeader(hdr); t.err == nil {
		_, t.err = t.tw.Write(data)
	}
}

func (t *tarBuf) addDir(name string) {
	if t.err != nil {
		return
	}
	t.err = t.tw.WriteHeader(&tar.Header{Name: name + "/", Mode: 0o700, ModTime: time.Now().Truncate(time.Second), Typeflag: tar.TypeDir, Format: tar.FormatUSTAR})
}

func (t *tarBuf) bytes() ([]byte, error) {
	if t.err == nil {
		t.err = t.tw.Close()
	}
	return t.buf.Bytes(), t.err
}
