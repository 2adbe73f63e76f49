// Package lock implements the deploy lock a playbook declares
// (lock "prod-deploy" { host = "…" }): a directory on the lock host that
// one run at a time creates, with the holder's identity and a heartbeat.
//
// Layout on the lock host, under Dir (default /var/lib/iklim/locks):
//
//	<name>.lock/             created with mkdir, which is atomic: the lock
//	<name>.lock/holder.json  Holder: run id, user, control host, pid, playbook, ttl
//	<name>.lock/run_id       the holder's run id, raw, for remote compare-and-delete
//	<name>.lock/since        epoch seconds (lock host's clock) of acquisition
//	<name>.lock/heartbeat    epoch seconds (lock host's clock) of the last heartbeat
//
// Both writing and judging heartbeats use the lock host's clock (date +%s
// in the same command), so clock skew between control machines does not
// matter. A lock whose heartbeat is older than its TTL is stale: its holder
// died. Stale locks are taken over only when asked (LockSpec.TakeOverStale,
// or the CLI's --force).
package lock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner"
)

// DefaultDir is where lock directories live on the lock host.
const DefaultDir = "/var/lib/iklim/locks"

// DefaultTTL is how long a holder may miss heartbeats before its lock is
// stale, when the playbook sets no ttl.
const DefaultTTL = 2 * time.Minute

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Holder is who holds a lock.
type Holder struct {
	Name     string `json:"name"`
	RunID    string `json:"run_id"`
	User     string `json:"user"`
	Host     string `json:"host"` // the control machine
	PID      int    `json:"pid"`
	Playbook string `json:"playbook"`
	TTLSec   int    `json:"ttl_seconds"`
	// Since and Heartbeat are read from the lock host.
	Since     time.Time `json:"since"`
	Heartbeat time.Time `json:"heartbeat"`
	// Age is how long ago the last heartbeat was, by the lock host's clock.
	Age time.Duration `json:"age_ns"`
	// Stale: Age exceeds the TTL; the holder stopped heartbeating.
	Stale bool `json:"stale"`

	rawRunID, rawHeartbeat string // as read, for compare-and-delete
}

// TTL is the holder's time to live.
func (h *Holder) TTL() time.Duration { return time.Duration(h.TTLSec) * time.Second }

// String describes the holder for messages: "alice@ctl (run …, playbook
// site.hcl) since … (heartbeat 3s ago)".
func (h *Holder) String() string {
	who := h.User
	if who == "" {
		who = "an unknown holder (lock being created?)"
	}
	pb := h.Playbook
	if pb != "" {
		pb = filepath.Base(pb)
	}
	return fmt.Sprintf("%s (run %s, playbook %s) since %s (heartbeat %s ago)",
		who, orDash(h.RunID), orDash(pb), h.Since.UTC().Format(time.RFC3339), h.Age.Round(time.Second))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// HeldError is returned when another run holds the lock.
type HeldError struct {
	Holder *Holder
	Waited time.Duration
}

func (e *HeldError) Error() string {
	msg := fmt.Sprintf("lock %q is held by %s", e.Holder.Name, e.Holder)
	if e.Waited > 0 {
		msg += fmt.Sprintf("; gave up after waiting %s", e.Waited.Round(time.Second))
	}
	return msg
}

// StaleError is returned when the lock is stale and taking it over was not
// allowed.
type StaleError struct{ Holder *Holder }

func (e *StaleError) Error() string {
	return fmt.Sprintf("lock %q is stale: held by %s, ttl %s; take it over with take_over_stale = true or --force",
		e.Holder.Name, e.Holder, e.Holder.TTL())
}

// Option configures a Locker or the Status/Release/List functions.
type Option func(*options)

type options struct {
	dir string
	// minBeat floors the heartbeat interval (tests use short TTLs).
	minBeat time.Duration
	logf    func(format string, args ...any)
}

// WithDir puts lock directories under dir instead of DefaultDir.
func WithDir(dir string) Option { return func(o *options) { o.dir = dir } }

// WithLogf reports heartbeat trouble (default: dropped; the library never
// prints, the CLI turns it into a warning event).
func WithLogf(f func(format string, args ...any)) Option { return func(o *options) { o.logf = f } }

func apply(opts []Option) options {
	o := options{dir: DefaultDir, minBeat: 100 * time.Millisecond, logf: func(string, ...any) {}}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Locker implements runner.Locker.
type Locker struct{ o options }

var _ runner.Locker = (*Locker)(nil)

// New returns a Locker.
func New(opts ...Option) *Locker { return &Locker{o: apply(opts)} }

func lockDir(o options, name string) string { return path.Join(o.dir, name+".lock") }

// maxName keeps "<name>.lock" within a file name's 255 bytes.
const maxName = 200

// CheckName refuses a name this package cannot use (it names a directory on
// the lock host); playbooks call it so that a bad name is an error before
// any host is touched.
func CheckName(name string) error {
	if !nameRe.MatchString(name) || len(name) > maxName {
		return fmt.Errorf("lock name %q must start with a letter or digit and hold only letters, digits, '.', '_' and '-', at most %d of them", name, maxName)
	}
	return nil
}

// readScript prints the lock's state, framed: "NOW <epoch>", "MTIME
// <epoch>" when the lock exists, and "F <file> <len>" + content per file.
// Each file is read once into a variable, so a length always matches its
// content even while another run rewrites the file (LC_ALL=C: ${#v} counts
// bytes).
const readScript = `LC_ALL=C
for _f in holder.json run_id since heartbeat; do
  if [ -f "$N/$_f" ]; then _v=$(cat "$N/$_f" 2>/dev/null); printf 'F %s %s\n%s\n' "$_f" "${#_v}" "$_v"; fi
done
`

// Acquire implements runner.Locker. One remote command tries to take the
// lock (mkdir) and, when it is held, reports the holder. A held lock is
// waited for with backoff up to spec.Wait; a stale one is taken over when
// spec.TakeOverStale is set, in the same kind of single command, and only
// if it is still the stale holder that was seen (compare-and-delete).
func (l *Locker) Acquire(ctx context.Context, conn modules.Conn, spec runner.LockSpec, run runner.RunInfo) (func(context.Context) error, error) {
	if err := CheckName(spec.Name); err != nil {
		return nil, err
	}
	if run.ID == "" {
		return nil, fmt.Errorf("lock %q: run has no id", spec.Name)
	}
	ttl := spec.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	ctlHost, _ := os.Hostname()
	holder := Holder{
		Name: spec.Name, RunID: run.ID, User: run.User, Host: ctlHost, PID: os.Getpid(),
		Playbook: run.Playbook, TTLSec: max(1, int(ttl.Round(time.Second)/time.Second)),
	}
	if ttl < time.Second {
		holder.TTLSec = 1
	}
	body, _ := json.Marshal(holder)

	start := time.Now()
	backoff := 200 * time.Millisecond
	var takeOver *Holder
	for {
		got, h, err := l.try(ctx, conn, spec.Name, run.ID, body, takeOver)
		if err != nil {
			return nil, fmt.Errorf("lock %q on %s: %w", spec.Name, conn.Host(), err)
		}
		if got {
			return l.hold(ctx, conn, spec.Name, run.ID, time.Duration(holder.TTLSec)*time.Second), nil
		}
		takeOver = nil
		if h.Stale {
			if !spec.TakeOverStale {
				return nil, &StaleError{Holder: h}
			}
			takeOver = h
			continue
		}
		waited := time.Since(start)
		if waited >= spec.Wait {
			return nil, &HeldError{Holder: h, Waited: waited}
		}
		d := min(backoff, spec.Wait-waited)
		backoff = min(2*backoff, 5*time.Second)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lock %q: %w while waiting for %s", spec.Name, ctx.Err(), h)
		case <-time.After(d):
		}
	}
}

// try runs the acquire script once. With stale set it first removes the
// lock if it still is exactly that stale holder's.
func (l *Locker) try(ctx context.Context, conn modules.Conn, name, runID string, body []byte, stale *Holder) (bool, *Holder, error) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "umask 077\nL=%s; N=%s; now=$(date +%%s)\nmkdir -p \"$L\" || exit 1\n", remote.Quote(l.o.dir), remote.Quote(lockDir(l.o, name)))
	if stale != nil {
		// Compare-and-delete under a short-lived guard, so two runs that
		// both saw the stale lock cannot both remove a lock.
		fmt.Fprintf(&sb, `G="$L/.%s.takeover"
if mkdir "$G" 2>/dev/null; then
  if [ "$(cat "$N/run_id" 2>/dev/null)" = %s ] && [ "$(cat "$N/heartbeat" 2>/dev/null)" = %s ]; then
    mv "$N" "$N.stale.$$" && rm -rf "$N.stale.$$"
  fi
  rmdir "$G"
else
  _m=$(stat -c %%Y "$G" 2>/dev/null || echo "$now")
  [ $((now - _m)) -gt 60 ] && rmdir "$G" 2>/dev/null
fi
`, name, remote.Quote(stale.rawRunID), remote.Quote(stale.rawHeartbeat))
	}
	fmt.Fprintf(&sb, `if mkdir "$N" 2>/dev/null; then
  { cat > "$N/holder.json" && printf '%%s\n' %s > "$N/run_id" && echo "$now" > "$N/since" && echo "$now" > "$N/heartbeat"; } || { rm -rf "$N"; exit 1; }
  echo "ACQUIRED $now"; exit 0
fi
cat > /dev/null
if [ "$(cat "$N/run_id" 2>/dev/null)" = %s ]; then echo "ACQUIRED $now"; exit 0; fi
echo "NOW $now"
[ -d "$N" ] && echo "MTIME $(stat -c %%Y "$N")"
`, remote.Quote(runID), remote.Quote(runID))
	sb.WriteString(readScript)
	res, err := conn.Run(ctx, sb.String(), modules.WithStdin(bytes.NewReader(body)))
	if err != nil {
		return false, nil, err
	}
	if err := res.Err("acquire"); err != nil {
		return false, nil, err
	}
	if strings.HasPrefix(res.Stdout, "ACQUIRED ") {
		return true, nil, nil
	}
	h, err := parseState(name, res.Stdout, 0)
	if err != nil {
		return false, nil, err
	}
	if h == nil {
		// Released between mkdir and read: try again at once.
		return l.try(ctx, conn, name, runID, body, nil)
	}
	return false, h, nil
}

// parseState reads the framed lock state; nil means the lock is free.
// fallbackTTL judges a lock without a holder.json.
func parseState(name, out string, fallbackTTL time.Duration) (*Holder, error) {
	var now, mtime int64
	files := map[string]string{}
	rest := out
	for rest != "" {
		line, after, _ := strings.Cut(rest, "\n")
		rest = after
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "NOW":
			now, _ = strconv.ParseInt(f[1], 10, 64)
		case len(f) == 2 && f[0] == "MTIME":
			mtime, _ = strconv.ParseInt(f[1], 10, 64)
		case len(f) == 3 && f[0] == "F":
			n, err := strconv.Atoi(f[2])
			if err != nil || n > len(rest) {
				return nil, fmt.Errorf("malformed lock state %q", line)
			}
			files[f[1]] = rest[:n]
			rest = strings.TrimPrefix(rest[n:], "\n")
		}
	}
	if mtime == 0 && len(files) == 0 {
		return nil, nil
	}
	h := &Holder{Name: name}
	if b, ok := files["holder.json"]; ok {
		_ = json.Unmarshal([]byte(b), h)
		h.Name = name
	}
	h.rawRunID = strings.TrimSpace(files["run_id"])
	h.rawHeartbeat = strings.TrimSpace(files["heartbeat"])
	if h.RunID == "" {
		h.RunID = h.rawRunID
	}
	since, _ := strconv.ParseInt(strings.TrimSpace(files["since"]), 10, 64)
	beat, _ := strconv.ParseInt(h.rawHeartbeat, 10, 64)
	if since == 0 {
		since = mtime
	}
	if beat == 0 {
		beat = since
	}
	h.Since, h.Heartbeat = time.Unix(since, 0).UTC(), time.Unix(beat, 0).UTC()
	if now > 0 {
		h.Age = time.Duration(now-beat) * time.Second
	}
	ttl := h.TTL()
	if ttl <= 0 {
		ttl = fallbackTTL
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if h.TTLSec == 0 {
		h.TTLSec = int(ttl / time.Second)
	}
	h.Stale = h.Age > ttl
	return h, nil
}

// hold starts heartbeating and returns the release function.
func (l *Locker) hold(ctx context.Context, conn modules.Conn, name, runID string, ttl time.Duration) func(context.Context) error {
	every := max(ttl/3, l.o.minBeat)
	stop := make(chan struct{})
	done := make(chan struct{})
	var mu sync.Mutex
	var lost error
	bctx := context.WithoutCancel(ctx)
	n := remote.Quote(lockDir(l.o, name))
	beat := fmt.Sprintf(`N=%s
if [ "$(cat "$N/run_id" 2>/dev/null)" = %s ]; then date +%%s > "$N/.heartbeat.$$" && mv -f "$N/.heartbeat.$$" "$N/heartbeat" && echo OK; else echo LOST; fi`,
		n, remote.Quote(runID))
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			cctx, cancel := context.WithTimeout(bctx, max(every, time.Second))
			res, err := conn.Run(cctx, beat)
			cancel()
			switch {
			case err != nil:
				l.o.logf("lock %q: heartbeat: %v", name, err)
			case strings.TrimSpace(res.Stdout) == "LOST":
				mu.Lock()
				lost = fmt.Errorf("lock %q was taken over while this run held it", name)
				mu.Unlock()
				l.o.logf("lock %q: lost: another run took it over", name)
				return
			case !res.OK():
				l.o.logf("lock %q: heartbeat: %v", name, res.Err("heartbeat"))
			}
		}
	}()
	var once sync.Once
	var relErr error
	return func(ctx context.Context) error {
		once.Do(func() {
			close(stop)
			<-done
			mu.Lock()
			relErr = lost
			mu.Unlock()
			if relErr != nil {
				return
			}
			if _, err := removeIf(ctx, l.o, conn, name, runID); err != nil {
				relErr = fmt.Errorf("lock %q: release: %w", name, err)
			}
		})
		return relErr
	}
}

// removeIf deletes the lock if its run id is runID; it reports whether it did.
func removeIf(ctx context.Context, o options, conn modules.Conn, name, runID string) (bool, error) {
	script := fmt.Sprintf(`N=%s
if [ -d "$N" ] && [ "$(cat "$N/run_id" 2>/dev/null)" = %s ]; then mv "$N" "$N.released.$$" && rm -rf "$N.released.$$" && echo REMOVED; fi`,
		remote.Quote(lockDir(o, name)), remote.Quote(runID))
	res, err := conn.Run(ctx, script)
	if err != nil {
		return false, err
	}
	if err := res.Err("release"); err != nil {
		return false, err
	}
	return strings.TrimSpace(res.Stdout) == "REMOVED", nil
}

// Status reads who holds lock name on the host behind conn; nil means the
// lock is free. For `iklim lock status NAME`.
func Status(ctx context.Context, conn modules.Conn, name string, opts ...Option) (*Holder, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	o := apply(opts)
	script := fmt.Sprintf("N=%s; echo \"NOW $(date +%%s)\"\n[ -d \"$N\" ] && echo \"MTIME $(stat -c %%Y \"$N\")\"\n%s", remote.Quote(lockDir(o, name)), readScript)
	res, err := conn.Run(ctx, script)
	if err != nil {
		return nil, fmt.Errorf("lock %q on %s: %w", name, conn.Host(), err)
	}
	if err := res.Err("lock status"); err != nil {
		return nil, fmt.Errorf("lock %q on %s: %w", name, conn.Host(), err)
	}
	return parseState(name, res.Stdout, 0)
}

// List reads every lock on the host behind conn, by name. For
// `iklim lock status` without a name.
func List(ctx context.Context, conn modules.Conn, opts ...Option) ([]*Holder, error) {
	o := apply(opts)
	script := fmt.Sprintf(`for N in %s/*.lock; do
  [ -d "$N" ] || continue
  _n=${N##*/}; echo "LOCK ${_n%%.lock}"; echo "NOW $(date +%%s)"; echo "MTIME $(stat -c %%Y "$N")"
%sdone`, remote.Quote(o.dir), readScript)
	res, err := conn.Run(ctx, script)
	if err != nil {
		return nil, fmt.Errorf("locks on %s: %w", conn.Host(), err)
	}
	if err := res.Err("lock list"); err != nil {
		return nil, fmt.Errorf("locks on %s: %w", conn.Host(), err)
	}
	var out []*Holder
	for _, part := range strings.Split(res.Stdout, "LOCK ")[1:] {
		name, body, _ := strings.Cut(part, "\n")
		h, err := parseState(name, body, 0)
		if err != nil {
			return nil, err
		}
		if h != nil {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ErrNotHeld is returned by Release when the lock is free.
var ErrNotHeld = errors.New("lock is not held")

// Release removes lock name for `iklim lock release NAME` and returns who
// held it. A live lock (heartbeat within its TTL) is released only with
// force, since its run is still going. The removal is compare-and-delete:
// if another run took the lock meanwhile, nothing is removed.
func Release(ctx context.Context, conn modules.Conn, name string, force bool, opts ...Option) (*Holder, error) {
	h, err := Status(ctx, conn, name, opts...)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("lock %q on %s: %w", name, conn.Host(), ErrNotHeld)
	}
	if !h.Stale && !force {
		return h, fmt.Errorf("lock %q is live: held by %s; release it anyway with --force", name, h)
	}
	o := apply(opts)
	ok, err := removeIf(ctx, o, conn, name, h.rawRunID)
	if err != nil {
		return h, fmt.Errorf("lock %q on %s: %w", name, conn.Host(), err)
	}
	if !ok {
		return h, fmt.Errorf("lock %q on %s changed hands while releasing; look again", name, conn.Host())
	}
	return h, nil
}
