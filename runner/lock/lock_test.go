package lock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/lock"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

func runInfo(id, user string) runner.RunInfo {
	return runner.RunInfo{ID: id, User: user, Started: time.Now().UTC(), Playbook: "/srv/deploy/site.hcl"}
}

// sshLockHost starts a real sshd and returns a Conn to one host (as root
// through sudo), its inventory host and connector, and a fresh lock dir.
func sshLockHost(t *testing.T) (modules.Conn, *inventories.Host, runner.Connector, string) {
	t.Helper()
	srv := sshtest.Start(t)
	sshtest.RequireSudo(t)
	h := srv.Hosts(1)[0]
	h.Become = true
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	require.NoError(t, os.WriteFile(cfg, nil, 0o600))
	connector := transport.NewSSHConnector(transport.SSHOptions{SSHConfigFile: cfg})
	t.Cleanup(func() { _ = connector.Close() })
	conn, err := connector.Connect(context.Background(), h)
	require.NoError(t, err)
	return conn, h, connector, filepath.Join(t.TempDir(), "locks")
}

func TestLockAcquireStatusReleaseLocal(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "locks")
	conn := transport.NewLocalConn("lockhost")
	l := lock.New(lock.WithDir(dir))

	release, err := l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", TTL: time.Minute}, runInfo("2026-11-21T10-15-04Z", "alice@ctl"))
	require.NoError(t, err)

	h, err := lock.Status(ctx, conn, "prod-deploy", lock.WithDir(dir))
	require.NoError(t, err)
	require.NotNil(t, h)
	require.Equal(t, "2026-11-21T10-15-04Z", h.RunID)
	require.Equal(t, "alice@ctl", h.User)
	require.Equal(t, "/srv/deploy/site.hcl", h.Playbook)
	require.Equal(t, 60, h.TTLSec)
	require.False(t, h.Stale)
	require.WithinDuration(t, time.Now(), h.Since, 5*time.Second)

	all, err := lock.List(ctx, conn, lock.WithDir(dir))
	require.NoError(t, err)
	require.Len(t, all, 1)
	require.Equal(t, "prod-deploy", all[0].Name)

	fi, err := os.Stat(filepath.Join(dir, "prod-deploy.lock"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())

	require.NoError(t, release(ctx))
	h, err = lock.Status(ctx, conn, "prod-deploy", lock.WithDir(dir))
	require.NoError(t, err)
	require.Nil(t, h)
	// Releasing twice is harmless.
	require.NoError(t, release(ctx))

	_, err = lock.Release(ctx, conn, "prod-deploy", false, lock.WithDir(dir))
	require.ErrorIs(t, err, lock.ErrNotHeld)
}

func TestLockBadName(t *testing.T) {
	_, err := lock.New().Acquire(context.Background(), transport.NewLocalConn("x"), runner.LockSpec{Name: "../etc"}, runInfo("2026-11-21T10-15-04Z", "a"))
	require.ErrorContains(t, err, "lock name")
}

// TestLockContendedFailsNamingHolder: a second run with no wait fails at
// once and names the holder: who, run id, playbook, since, heartbeat age.
func TestLockContendedFailsNamingHolder(t *testing.T) {
	ctx := context.Background()
	conn, _, _, dir := sshLockHost(t)
	l := lock.New(lock.WithDir(dir))
	spec := runner.LockSpec{Name: "prod-deploy", TTL: time.Minute}

	release, err := l.Acquire(ctx, conn, spec, runInfo("2026-11-21T10-15-04Z", "alice@ctl"))
	require.NoError(t, err)
	defer release(ctx)

	start := time.Now()
	_, err = l.Acquire(ctx, conn, spec, runInfo("2026-11-21T10-15-09Z", "bob@ctl2"))
	require.Less(t, time.Since(start), 30*time.Second, "waited for the holder (ttl a minute)")
	var held *lock.HeldError
	require.ErrorAs(t, err, &held)
	msg := err.Error()
	for _, want := range []string{`lock "prod-deploy" is held by alice@ctl`, "run 2026-11-21T10-15-04Z", "playbook site.hcl", "since 20", "heartbeat"} {
		require.Contains(t, msg, want)
	}
}

// TestLockWaitsThenAcquires: with a wait, the second run gets the lock as
// soon as the first releases it; with too short a wait it gives up.
func TestLockWaitsThenAcquires(t *testing.T) {
	ctx := context.Background()
	conn, _, _, dir := sshLockHost(t)
	l := lock.New(lock.WithDir(dir))

	release, err := l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", TTL: time.Minute}, runInfo("2026-11-21T10-15-04Z", "alice@ctl"))
	require.NoError(t, err)

	_, err = l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", Wait: 700 * time.Millisecond}, runInfo("2026-11-21T10-15-05Z", "bob@ctl"))
	require.ErrorContains(t, err, "gave up after waiting")

	go func() {
		time.Sleep(time.Second)
		_ = release(context.Background())
	}()
	start := time.Now()
	release2, err := l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", Wait: 20 * time.Second}, runInfo("2026-11-21T10-15-06Z", "bob@ctl"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 500*time.Millisecond)
	h, err := lock.Status(ctx, conn, "prod-deploy", lock.WithDir(dir))
	require.NoError(t, err)
	require.Equal(t, "2026-11-21T10-15-06Z", h.RunID)
	require.NoError(t, release2(ctx))
}

// TestLockHeartbeat: the holder's heartbeat keeps moving, so a lock held
// longer than its TTL is not stale.
func TestLockHeartbeat(t *testing.T) {
	ctx := context.Background()
	conn, _, _, dir := sshLockHost(t)
	l := lock.New(lock.WithDir(dir))
	const ttl = 3 * time.Second
	release, err := l.Acquire(ctx, conn, runner.LockSpec{Name: "hb", TTL: ttl}, runInfo("2026-11-21T10-15-04Z", "alice@ctl"))
	require.NoError(t, err)
	// Polled, not slept for: a heartbeat that a busy machine delays past the
	// TTL makes the lock stale for that moment, rightly.
	var h *lock.Holder
	require.Eventually(t, func() bool {
		h, err = lock.Status(ctx, conn, "hb", lock.WithDir(dir))
		return err == nil && h != nil && h.Heartbeat.Sub(h.Since) > ttl && !h.Stale
	}, 30*time.Second, 200*time.Millisecond, "never saw the lock held past its TTL with a fresh heartbeat")
	require.NoError(t, release(ctx))
}

// writeStaleLock leaves a lock as a killed holder would: heartbeat long ago.
func writeStaleLock(t *testing.T, conn modules.Conn, dir, name, runID string) {
	t.Helper()
	script := fmt.Sprintf(`umask 077; N=%s/%s.lock; mkdir -p "$N"
printf '{"name":"%s","run_id":"%s","user":"carol@old","host":"old","pid":1,"playbook":"/x/site.hcl","ttl_seconds":2}' > "$N/holder.json"
echo %s > "$N/run_id"; t=$(( $(date +%%s) - 300 )); echo $t > "$N/since"; echo $t > "$N/heartbeat"`, dir, name, name, runID, runID)
	res, err := conn.Run(context.Background(), script)
	require.NoError(t, err)
	require.True(t, res.OK(), res.Stderr)
}

// TestLockStaleTakeover: a lock whose holder stopped heartbeating is
// reported stale; it is taken over only when allowed.
func TestLockStaleTakeover(t *testing.T) {
	ctx := context.Background()
	conn, _, _, dir := sshLockHost(t)
	l := lock.New(lock.WithDir(dir))
	writeStaleLock(t, conn, dir, "prod-deploy", "2026-11-21T09-00-00Z")

	h, err := lock.Status(ctx, conn, "prod-deploy", lock.WithDir(dir))
	require.NoError(t, err)
	require.True(t, h.Stale)
	require.GreaterOrEqual(t, h.Age, 299*time.Second)

	_, err = l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", Wait: time.Minute}, runInfo("2026-11-21T10-15-04Z", "alice@ctl"))
	var stale *lock.StaleError
	require.ErrorAs(t, err, &stale)
	require.Contains(t, err.Error(), "carol@old")
	require.Contains(t, err.Error(), "take_over_stale")

	release, err := l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", TakeOverStale: true}, runInfo("2026-11-21T10-15-04Z", "alice@ctl"))
	require.NoError(t, err)
	h, err = lock.Status(ctx, conn, "prod-deploy", lock.WithDir(dir))
	require.NoError(t, err)
	require.Equal(t, "2026-11-21T10-15-04Z", h.RunID)
	require.Equal(t, "alice@ctl", h.User)
	require.NoError(t, release(ctx))
}

// TestLockConcurrentTakeover: many runs that all see the same stale lock
// and may take it over: exactly one gets it.
func TestLockConcurrentTakeover(t *testing.T) {
	ctx := context.Background()
	conn, _, _, dir := sshLockHost(t)
	writeStaleLock(t, conn, dir, "prod-deploy", "2026-11-21T09-00-00Z")
	l := lock.New(lock.WithDir(dir))
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", TakeOverStale: true, TTL: time.Minute},
				runInfo(fmt.Sprintf("2026-11-21T10-15-0%dZ", i), "u"))
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
			continue
		}
		var held *lock.HeldError
		require.ErrorAs(t, err, &held)
	}
	require.Equal(t, 1, won)
}

// TestLockReleaseCLI: `iklim lock release` refuses a live lock without
// --force; a holder whose lock was released under it learns so on release.
func TestLockReleaseCLI(t *testing.T) {
	ctx := context.Background()
	conn, _, _, dir := sshLockHost(t)
	var logMu sync.Mutex
	var logs []string
	l := lock.New(lock.WithDir(dir), lock.WithLogf(func(f string, a ...any) {
		logMu.Lock()
		logs = append(logs, fmt.Sprintf(f, a...))
		logMu.Unlock()
	}))
	// A live lock: a TTL far above any delay of the heartbeats under load
	// (with a short one, a late heartbeat makes the lock stale, and stale
	// locks are released without --force).
	live, err := l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", TTL: time.Hour}, runInfo("2026-11-21T10-15-03Z", "carol@ctl"))
	require.NoError(t, err)
	_, err = lock.Release(ctx, conn, "prod-deploy", false, lock.WithDir(dir))
	require.ErrorContains(t, err, "--force")
	h, err := lock.Release(ctx, conn, "prod-deploy", true, lock.WithDir(dir))
	require.NoError(t, err)
	require.Equal(t, "2026-11-21T10-15-03Z", h.RunID)
	require.NoError(t, live(ctx), "its lock is gone: releasing it removes nothing and is no error")

	// A holder that heartbeats often (TTL 1s) has its lock released under it.
	release, err := l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", TTL: time.Second}, runInfo("2026-11-21T10-15-04Z", "alice@ctl"))
	require.NoError(t, err)
	h, err = lock.Release(ctx, conn, "prod-deploy", true, lock.WithDir(dir))
	require.NoError(t, err)
	require.Equal(t, "2026-11-21T10-15-04Z", h.RunID)

	// Someone else takes it; the first holder's heartbeat notices.
	release2, err := l.Acquire(ctx, conn, runner.LockSpec{Name: "prod-deploy", TTL: time.Minute}, runInfo("2026-11-21T10-15-05Z", "bob@ctl"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		logMu.Lock()
		defer logMu.Unlock()
		return len(logs) > 0 && strings.Contains(strings.Join(logs, "\n"), "lost")
	}, 30*time.Second, 50*time.Millisecond)
	err = release(ctx)
	require.ErrorContains(t, err, "taken over")
	// and the first holder's release did not remove bob's lock.
	h, err = lock.Status(ctx, conn, "prod-deploy", lock.WithDir(dir))
	require.NoError(t, err)
	require.Equal(t, "2026-11-21T10-15-05Z", h.RunID)
	require.NoError(t, release2(ctx))
}

// sleepy is a module that takes a while and records when it ran. With a
// gate it also waits for the gate to open before it sleeps.
type sleepy struct {
	d    time.Duration
	log  func(string)
	gate <-chan struct{}
}

func (s *sleepy) Check(context.Context, modules.Conn) (*modules.Change, error) {
	return modules.Changef("sleep %s", s.d), nil
}

func (s *sleepy) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	s.log("start")
	defer s.log("end")
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	res, err := c.Run(ctx, fmt.Sprintf("sleep %.1f", s.d.Seconds()))
	if err != nil {
		return err
	}
	return res.Err("sleep")
}

// TestLockTwoConcurrentPlays: two playbooks declaring the same lock run at
// once through the engine: with no wait the second fails naming the first;
// with a wait they run one after the other, never overlapping.
func TestLockTwoConcurrentPlays(t *testing.T) {
	_, h, connector, dir := sshLockHost(t)
	inv := &inventories.Inventory{Hosts: []*inventories.Host{h}}

	var mu sync.Mutex
	var events []string
	play := func(id string, wait time.Duration, gate <-chan struct{}, started func()) (*runner.Recap, error) {
		pb := &runner.Playbook{
			File: "/srv/deploy/site.hcl",
			Lock: &runner.LockSpec{Name: "prod-deploy", Host: h.Name, Wait: wait, TTL: 30 * time.Second},
			Plays: []runner.Play{{Name: "deploy", Hosts: "all", Steps: []runner.Step{{
				Name: "slow", Module: "sleepy",
				Build: func(*runner.StepContext) (modules.Module, error) {
					return &sleepy{d: 1500 * time.Millisecond, gate: gate, log: func(s string) {
						mu.Lock()
						events = append(events, id+" "+s)
						mu.Unlock()
						if s == "start" && started != nil {
							started()
						}
					}}, nil
				},
			}}}},
		}
		return runner.Run(context.Background(), pb, runner.Options{
			Inventory: inv, Connector: connector, Locker: lock.New(lock.WithDir(dir)),
			Run: runInfo(id, "user-"+id+"@ctl"),
		})
	}

	t.Run("no wait: the second fails naming the holder", func(t *testing.T) {
		events = nil
		errs := make([]error, 2)
		ids := []string{"2026-11-21T10-15-04Z", "2026-11-21T10-15-04Z-2"}
		// The second starts once the first holds the lock (its step has
		// begun), and the first's step goes on until the second is done:
		// no sleep decides who comes first.
		gate, started, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			_, errs[0] = play(ids[0], 0, gate, func() { close(started) })
		}()
		select {
		case <-started:
		case <-done:
			t.Fatalf("the first play ended before its step: %v", errs[0])
		}
		_, errs[1] = play(ids[1], 0, nil, nil)
		close(gate)
		<-done
		require.NoError(t, errs[0])
		var held *lock.HeldError
		require.True(t, errors.As(errs[1], &held), "%v", errs[1])
		require.Contains(t, errs[1].Error(), "user-2026-11-21T10-15-04Z@ctl")
		require.Contains(t, errs[1].Error(), "run 2026-11-21T10-15-04Z,")
		require.Equal(t, []string{ids[0] + " start", ids[0] + " end"}, events)
	})

	t.Run("with wait: they take turns", func(t *testing.T) {
		events = nil
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, id := range []string{"2026-11-21T11-00-00Z", "2026-11-21T11-00-00Z-2"} {
			wg.Go(func() { _, errs[i] = play(id, 30*time.Second, nil, nil) })
		}
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		require.Len(t, events, 4)
		// start, end, start, end: never two starts in a row.
		for i := 0; i < 4; i += 2 {
			a, _ := strings.CutSuffix(events[i], " start")
			b, _ := strings.CutSuffix(events[i+1], " end")
			require.Equal(t, a, b, "events %v", events)
		}
	})
}
