package runner

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// statusEvery is how often a host's step statuses may be emitted at most:
// a module may report at every poll, a display needs no more.
const statusEvery = time.Second

// stepStatus turns one step's modules.Status reports into EventStepStatus
// events: one when the status changes, at most one per statusEvery (a
// change within it is emitted when it ends), none after stop.
type stepStatus struct {
	e  *engine
	ev Event // the step's start event: play, step, module, source, host

	mu      sync.Mutex
	shown   modules.Status // the last status emitted
	at      time.Time      // when it was emitted; zero: none yet
	pending *modules.Status
	timer   *time.Timer
	done    bool
}

func (e *engine) newStepStatus(start Event) *stepStatus {
	return &stepStatus{e: e, ev: start}
}

func (s *stepStatus) report(st modules.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	if sameStatus(st, s.shown) {
		s.pending = nil // back to what is shown
		return
	}
	if wait := statusEvery - time.Since(s.at); !s.at.IsZero() && wait > 0 {
		s.pending = &st
		if s.timer == nil {
			s.timer = time.AfterFunc(wait, s.flush)
		}
		return
	}
	s.emitLocked(st)
}

func (s *stepStatus) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = nil
	if !s.done && s.pending != nil {
		s.emitLocked(*s.pending)
	}
}

// emitLocked emits st while s.mu is held, so that stop, which takes it,
// returns only after an event being emitted is out: no status follows the
// step's result.
func (s *stepStatus) emitLocked(st modules.Status) {
	s.pending = nil
	s.shown, s.at = st, time.Now()
	ev := s.ev
	ev.Type, ev.Summary, ev.Extra, ev.Duration = EventStepStatus, st.Text, nil, 0
	if !st.Since.IsZero() {
		ev.Duration = max(time.Since(st.Since), 0)
	}
	if st.Max > 0 {
		ev.Extra = map[string]string{"max_wait": st.Max.String()}
	}
	s.e.emit(ev)
}

// stop ends the step's statuses; call it before the step's result is
// emitted.
func (s *stepStatus) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

func sameStatus(a, b modules.Status) bool {
	return a.Text == b.Text && a.Max == b.Max && a.Since.Equal(b.Since)
}

// wrap is the Conn the step's module gets: c, and a modules.Reporter
// whose reports are s's, and a remote.Prober that answers with probe (none
// when nil). c's Dialer stays visible through it.
func (s *stepStatus) wrap(c modules.Conn, probe proberFunc) modules.Conn {
	sc := &statusConn{Conn: c, s: s, probe: probe}
	if _, ok := c.(modules.Dialer); ok {
		return statusDialer{sc}
	}
	return sc
}

type statusConn struct {
	modules.Conn
	s     *stepStatus
	probe proberFunc // answers from an apply's prefetch, if any
}

type proberFunc func(context.Context, remote.Probe) (remote.ProbeResult, error)

// Probe implements remote.Prober: only what was prefetched is answered.
func (c *statusConn) Probe(ctx context.Context, p remote.Probe) (remote.ProbeResult, error) {
	if c.probe == nil {
		return remote.ProbeResult{}, remote.ErrNoProbe
	}
	return c.probe(ctx, p)
}

// Report implements modules.Reporter.
func (c *statusConn) Report(st modules.Status) { c.s.report(st) }

// statusDialer is a statusConn over a Conn that is a modules.Dialer.
type statusDialer struct{ *statusConn }

// Dial implements modules.Dialer.
func (c statusDialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.Conn.(modules.Dialer).Dial(ctx, network, addr)
}
