package printer

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
)

// buffer is a bytes.Buffer safe for the ticker and the test.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *buffer) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func waitFor(t *testing.T, b *buffer, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.String(), s) {
		require.True(t, time.Now().Before(deadline), "never printed %q:\n%q", s, b.String())
		time.Sleep(5 * time.Millisecond)
	}
}

// waitForMatch waits until b matches re.
func waitForMatch(t *testing.T, b *buffer, re string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !regexp.MustCompile(re).MatchString(b.String()) {
		require.True(t, time.Now().Before(deadline), "never printed %s:\n%q", re, b.String())
		time.Sleep(5 * time.Millisecond)
	}
}

func start(host, name string) runner.Event {
	return runner.Event{Type: runner.EventStepStart, Time: time.Now(), Host: host, Play: "p", Step: name, Module: "service_wait",
		Extra: map[string]string{"timeout": "7m0s"}}
}

func TestPlainOutputSaysStillWaitingWithoutControlCodes(t *testing.T) {
	var out buffer
	p := NewProgress(ProgressOptions{W: &out, Print: (&Text{W: &out}).Event, Tick: 10 * time.Millisecond, StillAfter: 100 * time.Millisecond})
	defer p.Close()
	p.Event(start("h1", "redis"))
	p.Event(start("h2", "quick"))
	p.Event(runner.Event{Type: runner.EventHostResult, Host: "h2", Step: "quick", Status: runner.StatusOK})
	waitFor(t, &out, "still waiting: h1 [redis] (service_wait) 0s of 7m0s\n")
	waitFor(t, &out, "still waiting: h1 [redis] (service_wait) 0s of 7m0s\nstill waiting: h1 [redis]")
	p.Event(runner.Event{Type: runner.EventHostResult, Host: "h1", Step: "redis", Status: runner.StatusOK})
	p.Close()
	text := out.String()
	require.NotContains(t, text, "\x1b", "no control codes when the output is not a terminal")
	require.NotContains(t, text, "[quick] (", "a step that ended is not waited for")
	require.Regexp(t, `ok:\s+h2 \[quick\]`, text)
	n := strings.Count(text, "still waiting")
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, n, strings.Count(out.String(), "still waiting"), "nothing after Close")
}

func TestLiveBlockIsRedrawnAndCleared(t *testing.T) {
	var out buffer
	p := NewProgress(ProgressOptions{W: &out, Print: (&Text{W: &out}).Event, Live: true, Tick: 10 * time.Millisecond,
		Width: func() int { return 20 }})
	p.Event(start("app-01", "a very long step name indeed"))
	waitFor(t, &out, "app-01  [a very lo…\n")
	waitFor(t, &out, "\x1b[1A\x1b[2K\r") // redrawn: erased, then drawn again
	p.Event(runner.Event{Type: runner.EventHostResult, Host: "app-01", Step: "a very long step name indeed", Status: runner.StatusChanged})
	p.Close()
	text := out.String()
	i := strings.LastIndex(text, "changed:")
	require.Positive(t, i)
	require.True(t, strings.HasSuffix(text[:i], "\x1b[1A\x1b[2K\r"), "the block is erased before a result is printed: %q", text)
	require.NotContains(t, text[i:], "\x1b", "no block after the last step ended")
	require.NotContains(t, text, "still waiting", "a terminal gets the live block instead")
}

func status(host, name, text string, waited time.Duration, maxWait string) runner.Event {
	ev := runner.Event{Type: runner.EventStepStatus, Time: time.Now(), Host: host, Play: "p", Step: name, Module: "service_wait",
		Summary: text, Duration: waited}
	if maxWait != "" {
		ev.Extra = map[string]string{"max_wait": maxWait}
	}
	return ev
}

// TestStillWaitingSaysWhatItWaitsFor: a step's latest status is in its
// "still waiting" lines, timed by its wait when the wait has a bound, and
// a status of a step that has ended is not shown.
func TestStillWaitingSaysWhatItWaitsFor(t *testing.T) {
	var out buffer
	p := NewProgress(ProgressOptions{W: &out, Print: (&Text{W: &out}).Event, Tick: 10 * time.Millisecond, StillAfter: 100 * time.Millisecond})
	defer p.Close()
	p.Event(start("h1", "redis"))
	p.Event(status("h1", "redis", "iklimco_redis 1/3 replicas", 0, ""))
	waitFor(t, &out, "still waiting: h1 [redis] (service_wait) iklimco_redis 1/3 replicas, 0s of 7m0s\n")
	p.Event(status("h1", "redis", "iklimco_redis 2/3 replicas", 42*time.Second, "7m0s"))
	// The wait's time, from the wait's start, of the wait's bound.
	waitForMatch(t, &out, `still waiting: h1 \[redis\] \(service_wait\) iklimco_redis 2/3 replicas, 4\ds of 7m0s\n`)
	p.Event(status("h1", "other step", "not this one", 0, ""))
	p.Event(status("h9", "redis", "no such host", 0, ""))
	p.Event(runner.Event{Type: runner.EventHostResult, Host: "h1", Step: "redis", Status: runner.StatusChanged})
	p.Close()
	text := out.String()
	require.NotContains(t, text, "not this one")
	require.NotContains(t, text, "no such host")
	require.NotContains(t, text, "\x1b")
	require.Regexp(t, `changed:\s+h1 \[redis\]\n$`, text, "the text printer prints no status line of its own")
}

// TestLiveBlockShowsStatus: the live line holds the status beside the
// time, and a narrow terminal shortens the status, not the time.
func TestLiveBlockShowsStatus(t *testing.T) {
	var out buffer
	width := 80
	var mu sync.Mutex
	p := NewProgress(ProgressOptions{W: &out, Print: (&Text{W: &out}).Event, Live: true, Tick: 10 * time.Millisecond,
		Width: func() int { mu.Lock(); defer mu.Unlock(); return width }})
	defer p.Close()
	p.Event(start("app-01", "redis"))
	p.Event(status("app-01", "redis", "iklimco_redis 2/3 replicas", 42*time.Second, "7m0s"))
	waitForMatch(t, &out, `app-01  \[redis\] iklimco_redis 2/3 replicas, 4\ds of 7m0s\n`)
	mu.Lock()
	width = 40
	mu.Unlock()
	waitForMatch(t, &out, `app-01  \[redis\] iklimco_r…, 4\ds of 7m0s\n`)
}
