package labtest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRestartWaitsForDockerdUsers holds the dockerd users' lock shared, as
// UseDockerd does, and asks lab.sh to restart a dockerd: the restart must
// wait until the hold ends (a test's containers and logins went with an
// unannounced restart), then happen.
func TestRestartWaitsForDockerdUsers(t *testing.T) {
	lab := Require(t)
	if os.Geteuid() != 0 {
		t.Skip("lab.sh restart-dockerd needs root")
	}
	lab.LockSwarm(t) // a restart would break a running swarm test
	const host = "iklim-db-03"
	pid := func() string {
		b, err := os.ReadFile(filepath.Join(lab.Dir, "hosts", host, "dockerd.pid"))
		require.NoError(t, err)
		return string(b)
	}
	before := pid()

	f, err := os.OpenFile(filepath.Join(lab.Dir, DockerdLockFile), os.O_CREATE|os.O_RDWR, 0o644)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_SH))

	done := make(chan error, 1)
	go func() { done <- lab.RestartDockerd(host) }()
	// Not a speed claim: an unlocked restart would be done well before.
	select {
	case err := <-done:
		t.Fatalf("the restart did not wait for the shared hold (err %v)", err)
	case <-time.After(5 * time.Second):
	}
	require.Equal(t, before, pid(), "dockerd restarted while a test used it")

	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_UN))
	require.NoError(t, <-done)
	require.NotEqual(t, before, pid(), "the restart happened once the hold ended")
	out, err := lab.Docker(t, host, "info", "--format", "{{.Name}}")
	require.NoError(t, err)
	require.Equal(t, host, out)
}

// TestRequireChecksBetweenDockerdRestarts holds the dockerd users' lock
// alone, as lab.sh restart-dockerd does while a host's dockerd and its pid
// file are gone: Require's look at the lab must wait for it to end rather
// than find a dockerd missing (it told a test starting then that the lab
// was down).
func TestRequireChecksBetweenDockerdRestarts(t *testing.T) {
	lab := Require(t)
	f := flockWait(t, filepath.Join(lab.Dir, DockerdLockFile), syscall.LOCK_EX)
	done := make(chan error, 1)
	go func() { done <- lab.checkUp(t) }()
	// Not a speed claim: a check that does not wait is done well before.
	select {
	case err := <-done:
		t.Fatalf("the check did not wait for the restart's hold (err %v)", err)
	case <-time.After(2 * time.Second):
	}
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_UN))
	require.NoError(t, <-done)
}
