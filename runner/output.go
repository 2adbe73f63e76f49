package runner

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
)

// TextPrinter writes events for people: a line per host result, diffs when
// asked, and a recap.
type TextPrinter struct {
	W       io.Writer
	Diff    bool
	Verbose bool
	// Color uses ANSI colors for statuses.
	Color bool
	mu    sync.Mutex
}

// JSONPrinter writes one JSON object per event, one per line; the last line
// is the recap event.
type JSONPrinter struct {
	W   io.Writer
	mu  sync.Mutex
	enc *json.Encoder
}

// Event implements the Options.Events callback.
func (p *JSONPrinter) Event(ev Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.enc == nil {
		p.enc = json.NewEncoder(p.W)
	}
	_ = p.enc.Encode(ev)
}

var statusColor = map[Status]string{
	StatusOK: "32", StatusChanged: "33", StatusFailed: "31", StatusSkipped: "36", StatusUnreachable: "35",
}

// Event implements the Options.Events callback.
func (p *TextPrinter) Event(ev Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Type {
	case EventRunStart:
		fmt.Fprintf(p.W, "RUN %s\n", ev.RunID)
	case EventPlayStart:
		fmt.Fprintf(p.W, "\nPLAY [%s] %d host(s)\n", ev.Play, len(ev.Hosts))
	case EventHostResult:
		p.hostResult(ev)
	case EventWarning:
		if ev.Host != "" {
			fmt.Fprintf(p.W, "warning: %s: %s\n", ev.Host, ev.Error)
		} else {
			fmt.Fprintf(p.W, "warning: %s\n", ev.Error)
		}
	case EventRecap:
		p.recap(ev.Recap)
	}
}

func (p *TextPrinter) hostResult(ev Event) {
	if ev.Status == StatusSkipped && !p.Verbose {
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

func (p *TextPrinter) recap(r *Recap) {
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

// UnifiedDiff renders a small line diff of before and after. It is meant for
// config files shown in diff mode, not as a general diff tool: it trims the
// common head and tail and prints the differing middle.
func UnifiedDiff(label, before, after string) string {
	if before == after {
		return ""
	}
	a, b := splitLines(before), splitLines(after)
	head := 0
	for head < len(a) && head < len(b) && a[head] == b[head] {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && a[len(a)-1-tail] == b[len(b)-1-tail] {
		tail++
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "    --- before: %s\n    +++ after: %s\n", label, label)
	fmt.Fprintf(&sb, "    @@ -%d,%d +%d,%d @@\n", head+1, len(a)-head-tail, head+1, len(b)-head-tail)
	for _, l := range a[head : len(a)-tail] {
		sb.WriteString("    -" + l + "\n")
	}
	for _, l := range b[head : len(b)-tail] {
		sb.WriteString("    +" + l + "\n")
	}
	return sb.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
