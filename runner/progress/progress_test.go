package progress

import (
	"bytes"
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

func start(host, name string) runner.Event {
	return runner.Event{Type: runner.EventStepStart, Time: time.Now(), Host: host, Play: "p", Step: name, Module: "service_wait",
		Extra: map[string]string{"timeout": "7m0s"}}
}

func TestPlainOutputSaysStillWaitingWithoutControlCodes(t *testing.T) {
	var out buffer
	p := New(Options{W: &out, Print: (&runner.TextPrinter{W: &out}).Event, Tick: 10 * time.Millisecond, StillAfter: 100 * time.Millisecond})
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
	p := New(Options{W: &out, Print: (&runner.TextPrinter{W: &out}).Event, Live: true, Tick: 10 * time.Millisecond,
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
