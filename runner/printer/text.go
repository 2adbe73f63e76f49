package printer

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/iklimco/iklim/runner"
)

// Text writes events for people: a line per host result, diffs when asked,
// warnings, and a recap. Step statuses are shown by Progress, not here.
type Text struct {
	W       io.Writer
	Diff    bool
	Verbose bool
	// Color uses ANSI colors for statuses.
	Color bool
	mu    sync.Mutex
}

var statusColor = map[runner.Status]string{
	runner.StatusOK: "32", runner.StatusChanged: "33", runner.StatusFailed: "31", runner.StatusSkipped: "36", runner.StatusUnreachable: "35",
}

// Event implements runner.Options.Events.
func (p *Text) Event(ev runner.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Type {
	case runner.EventRunStart:
		fmt.Fprintf(p.W, "RUN %s\n", ev.RunID)
	case runner.EventPlayStart:
		fmt.Fprintf(p.W, "\nPLAY [%s] %d host(s)\n", ev.Play, len(ev.Hosts))
	case runner.EventHostResult:
		p.hostResult(ev)
	case runner.EventWarning:
		if ev.Host != "" {
			fmt.Fprintf(p.W, "warning: %s: %s\n", ev.Host, ev.Error)
		} else {
			fmt.Fprintf(p.W, "warning: %s\n", ev.Error)
		}
	case runner.EventRecap:
		p.recap(ev.Recap)
	}
}

func (p *Text) hostResult(ev runner.Event) {
	if ev.Status == runner.StatusSkipped && !p.Verbose {
		return
	}
	status := string(ev.Status)
	if p.Color {
		status = "\x1b[" + statusColor[ev.Status] + "m" + status + "\x1b[0m"
	}
	line := fmt.Sprintf("%-11s %s [%s]", status+":", ev.Host, ev.Step)
	if ev.Summary != "" {
		line += " " + ev.Summary
	}
	if ev.Error != "" {
		line += "\n    " + strings.ReplaceAll(ev.Error, "\n", "\n    ")
		if ev.Source != "" {
			line += "\n    (step at " + ev.Source + ")"
		}
	}
	fmt.Fprintln(p.W, line)
	if p.Diff && ev.Diff != nil {
		fmt.Fprint(p.W, UnifiedDiff(ev.Diff.Label, ev.Diff.Before, ev.Diff.After))
	}
	if p.Verbose && len(ev.Output) > 0 {
		b, _ := json.MarshalIndent(ev.Output, "    ", "  ")
		fmt.Fprintf(p.W, "    %s\n", b)
	}
}

func (p *Text) recap(r *runner.Recap) {
	if r == nil {
		return
	}
	mode := ""
	if r.Check {
		mode = " (check mode: nothing was changed)"
	}
	fmt.Fprintf(p.W, "\nRECAP run %s in %s%s\n", r.RunID, r.Duration.Round(1e6), mode)
	width := 0
	for _, h := range r.Hosts {
		width = max(width, len(h.Host))
	}
	for _, h := range r.Hosts {
		fmt.Fprintf(p.W, "%-*s  ok=%d changed=%d failed=%d skipped=%d unreachable=%d ignored=%d\n",
			width, h.Host, h.OK, h.Changed, h.Failed, h.Skipped, h.Unreachable, h.Ignored)
	}
}
