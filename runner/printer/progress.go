// Package printer shows a run: the engine emits events (runner.Event) and
// the printers here turn them into text for people (Text), JSON lines for
// programs (JSON), and, while a run runs, its progress (Progress): on a
// terminal a live block under the printed results with each host's current
// step, how long it has run of its deadline and what it waits for;
// elsewhere (CI logs, pipes) plain "still waiting" lines, without control
// codes, for steps that run long. Printers write only to the writer they
// are given.
package printer

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/iklimco/iklim/runner"
)

// ProgressOptions configure a Progress.
type ProgressOptions struct {
	// W is where the results printer writes; the live block goes there too.
	W io.Writer
	// Print prints one event (a Text's Event writing to W).
	Print func(runner.Event)
	// Live redraws a block of running steps: W is a terminal.
	Live bool
	// Color dims the block's times; only with Live.
	Color bool
	// Width is the terminal's width, so block lines never wrap; nil or 0
	// means 80.
	Width func() int
	// Tick is how often the block is redrawn and long steps are looked
	// for; 0 means a quarter of a second.
	Tick time.Duration
	// StillAfter is when a step first gets a "still waiting" line when not
	// Live; 0 means 10 s. Later lines follow at every StillAfter for the
	// first minute, then every minute.
	StillAfter time.Duration
}

// Progress is a run's event sink that shows running steps. Close it when
// the run ends.
type Progress struct {
	o       ProgressOptions
	mu      sync.Mutex
	running map[string]*step // by host
	drawn   int              // lines of the live block on screen
	stop    chan struct{}
	done    chan struct{}
	closed  bool
}

type step struct {
	host, play, name, module, timeout string
	start                             time.Time
	nextStill                         time.Duration
	// status is what the step waits for (runner.EventStepStatus); when
	// its wait has a bound, waitMax, the time shown is the wait's, from
	// waitStart.
	status, waitMax string
	waitStart       time.Time
}

// NewProgress starts a Progress; its ticker runs until Close.
func NewProgress(o ProgressOptions) *Progress {
	if o.Tick <= 0 {
		o.Tick = 250 * time.Millisecond
	}
	if o.StillAfter <= 0 {
		o.StillAfter = 10 * time.Second
	}
	p := &Progress{o: o, running: map[string]*step{}, stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

// Event implements runner.Options.Events: it prints ev through Print and
// keeps track of the steps that are running.
func (p *Progress) Event(ev runner.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Type {
	case runner.EventStepStart:
		s := &step{host: ev.Host, play: ev.Play, name: ev.Step, module: ev.Module, start: ev.Time, nextStill: p.o.StillAfter}
		if s.start.IsZero() {
			s.start = time.Now()
		}
		if ev.Extra != nil {
			s.timeout = ev.Extra["timeout"]
		}
		p.running[ev.Host] = s
	case runner.EventStepStatus:
		if s := p.running[ev.Host]; s != nil && s.name == ev.Step {
			s.status, s.waitMax = ev.Summary, ev.Extra["max_wait"]
			s.waitStart = ev.Time.Add(-ev.Duration)
			if ev.Time.IsZero() {
				s.waitStart = time.Now().Add(-ev.Duration)
			}
		}
	case runner.EventHostResult:
		delete(p.running, ev.Host)
	case runner.EventRecap:
		clear(p.running)
	}
	p.clearBlock()
	if p.o.Print != nil {
		p.o.Print(ev)
	}
	p.drawBlock(time.Now())
}

// Close stops the ticker and removes the live block.
func (p *Progress) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	p.mu.Unlock()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearBlock()
}

func (p *Progress) loop() {
	defer close(p.done)
	t := time.NewTicker(p.o.Tick)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			if p.o.Live {
				p.clearBlock()
				p.drawBlock(now)
			} else {
				p.still(now)
			}
			p.mu.Unlock()
		}
	}
}

// sorted lists the running steps by host.
func (p *Progress) sorted() []*step {
	out := make([]*step, 0, len(p.running))
	for _, s := range p.running {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].host < out[j].host })
	return out
}

// still prints a plain line for each step past its next threshold.
func (p *Progress) still(now time.Time) {
	for _, s := range p.sorted() {
		took := now.Sub(s.start)
		if took < s.nextStill {
			continue
		}
		fmt.Fprintf(p.o.W, "still waiting: %s [%s] (%s) %s\n", s.host, s.name, s.module, s.progress(now))
		every := p.o.StillAfter
		if took >= time.Minute {
			every = max(every, time.Minute)
		}
		for s.nextStill <= took {
			s.nextStill += every
		}
	}
}

// drawBlock writes the live block; the cursor ends on the line below it.
func (p *Progress) drawBlock(now time.Time) {
	if !p.o.Live || p.closed || len(p.running) == 0 {
		return
	}
	width := 80
	if p.o.Width != nil {
		if w := p.o.Width(); w > 0 {
			width = w
		}
	}
	steps := p.sorted()
	hw := 0
	for _, s := range steps {
		hw = max(hw, len(s.host))
	}
	var b strings.Builder
	lines := 0
	for _, s := range steps {
		head := fmt.Sprintf("%-*s  [%s] ", hw, s.host, s.name)
		line := cut(head+s.progress(now), width-1)
		if s.status != "" {
			// Shorten the status, not the time.
			tail := ", " + s.elapsed(now)
			if room := width - 1 - utf8.RuneCountInString(head+tail); room >= 8 {
				line = head + cut(s.status, room) + tail
			}
		}
		if p.o.Color {
			line = "\x1b[2m" + line + "\x1b[0m"
		}
		b.WriteString(line + "\n")
		lines++
	}
	_, _ = io.WriteString(p.o.W, b.String())
	p.drawn = lines
}

// clearBlock erases the live block, leaving the cursor where it began.
func (p *Progress) clearBlock() {
	if p.drawn == 0 {
		return
	}
	_, _ = io.WriteString(p.o.W, strings.Repeat("\x1b[1A\x1b[2K", p.drawn)+"\r")
	p.drawn = 0
}

// progress is "42s of 7m0s", or with a status "iklimco_redis 2/3
// replicas, 42s of 7m0s".
func (s *step) progress(now time.Time) string {
	if s.status == "" {
		return s.elapsed(now)
	}
	return s.status + ", " + s.elapsed(now)
}

// elapsed is the time of the step of its deadline or, when its status
// names a wait with a bound, the time of that wait of its bound.
func (s *step) elapsed(now time.Time) string {
	if s.waitMax != "" {
		return elapsed(now.Sub(s.waitStart), s.waitMax)
	}
	return elapsed(now.Sub(s.start), s.timeout)
}

// elapsed is "42s of 7m0s" when there is a deadline, else "42s".
func elapsed(d time.Duration, timeout string) string {
	d = max(d, 0)
	s := d.Truncate(time.Second).String()
	if timeout != "" {
		s += " of " + timeout
	}
	return s
}

// cut shortens s to n runes.
func cut(s string, n int) string {
	if n < 1 {
		return ""
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
