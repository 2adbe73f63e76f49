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

	f := flockWait(t, filepath.Join(lab.Dir, DockerdLockFile), syscall.LOCK_SH)
	defer f.Close()
	done := waitsForHold(t, "the restart", 5*time.Second, func() error { return lab.RestartDockerd(host) })
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
	defer f.Close()
	done := waitsForHold(t, "the check", 2*time.Second, func() error { return lab.checkUp(t) })
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_UN))
	require.NoError(t, <-done)
}

// waitsForHold starts fn and requires that it has not returned after d,
// since a lock the test holds must keep it waiting; its error comes on the
// channel once the test lets go. Not a speed claim: fn done without
// waiting returns well before d.
func waitsForHold(t *testing.T, what string, d time.Duration, fn func() error) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		t.Fatalf("%s did not wait for the hold (err %v)", what, err)
	case <-time.After(d):
	}
	return done
}
