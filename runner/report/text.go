package report

import (
	"fmt"
	"io"
	"strings"
)

// WriteText writes the facts of the HTML page as text, for a terminal
// (iklim backups show): the run, each host's steps with their times, the
// failures with their file:line, every change with its diff, and the
// rollback command.
func (r *Run) WriteText(w io.Writer) error {
	v := r.view()
	var b strings.Builder
	fmt.Fprintf(&b, "RUN %s  %s\n", r.ID, v.Status)
	if j := r.Journal; j != nil {
		fmt.Fprintf(&b, "  playbook   %s\n  inventory  %s\n  by         %s", j.Playbook, j.Inventory, j.User)
		if j.Control != "" {
			fmt.Fprintf(&b, " on %s", j.Control)
		}
		b.WriteString("\n")
		if j.GitCommit != "" {
			fmt.Fprintf(&b, "  git commit %s\n", j.GitCommit)
		}
		if j.Check {
			b.WriteString("  mode       check mode: nothing was changed\n")
		}
		if j.Error != "" {
			fmt.Fprintf(&b, "  error      %s\n", j.Error)
		}
	}
	fmt.Fprintf(&b, "  started    %s\n  finished   %s (%s)\n  changes    %d recorded\n", v.Start.UTC().Format("2006-01-02 15:04:05.000 UTC"),
		v.End.UTC().Format("2006-01-02 15:04:05.000 UTC"), v.Took, v.ChangeCount)

	b.WriteString("\nROLLBACK\n")
	if v.Rollback != "" {
		fmt.Fprintf(&b, "  %s\n  %s --check   (shows what it would restore)\n", v.Rollback, v.Rollback)
	} else {
		b.WriteString("  nothing to roll back: the run recorded no change\n")
	}

	if len(v.Failures) > 0 {
		fmt.Fprintf(&b, "\nFAILURES (%d)\n", len(v.Failures))
		for _, f := range v.Failures {
			fmt.Fprintf(&b, "  %s: %s step %q (%s) at %s\n    %s\n", f.Status, f.Host, f.Name, f.Module, f.Source,
				strings.ReplaceAll(f.Error, "\n", "\n    "))
		}
	}

	b.WriteString("\nTIMELINE (at: since the run started)\n")
	if v.NoLog {
		b.WriteString("  the run kept no step log: only recorded changes are shown\n")
	}
	for _, h := range v.Hosts {
		fmt.Fprintf(&b, "  %s", h.Name)
		if rc := h.Recap; rc != nil {
			fmt.Fprintf(&b, "  ok=%d changed=%d failed=%d skipped=%d unreachable=%d ignored=%d", rc.OK, rc.Changed, rc.Failed, rc.Skipped, rc.Unreachable, rc.Ignored)
		}
		fmt.Fprintf(&b, "  (%d steps, %s in steps, %d changes recorded)\n", len(h.Steps), h.Busy, h.Records)
		for _, s := range h.Steps {
			line := fmt.Sprintf("    %9s %9s  %-11s %s (%s) at %s", s.Offset, s.Took, s.Status, s.Name, s.Module, s.Source)
			if s.Summary != "" {
				line += ": " + s.Summary
			}
			b.WriteString(line + "\n")
		}
	}
	if len(v.Slowest) > 0 {
		b.WriteString("\nSLOWEST STEPS\n")
		for _, s := range v.Slowest[:min(len(v.Slowest), 5)] {
			fmt.Fprintf(&b, "  %9s  %s %q (%s) at %s\n", s.Took, s.Host, s.Name, s.Module, s.Source)
		}
	}

	fmt.Fprintf(&b, "\nCHANGES (%d)\n", len(v.Changes))
	for _, c := range v.Changes {
		fmt.Fprintf(&b, "  %s", c.Host)
		if c.Seq > 0 {
			fmt.Fprintf(&b, " #%d", c.Seq)
		}
		fmt.Fprintf(&b, " step %q (%s) at %s: %s — %s", c.Step, c.Module, c.Source, c.Summary, c.Outcome)
		if c.Error != "" {
			b.WriteString(": " + c.Error)
		}
		b.WriteString("\n")
		if c.Delegated {
			b.WriteString("    delegated: recorded on the control machine\n")
		}
		if c.Sealed {
			b.WriteString("    the full record is sealed; the redacted one is shown\n")
		}
		for _, f := range c.Files {
			fmt.Fprintf(&b, "    file %s\n", f)
		}
		for _, d := range c.Diff {
			fmt.Fprintf(&b, "    %s\n", d.Text)
		}
		if len(c.Diff) == 0 && c.DiffNote != "" {
			fmt.Fprintf(&b, "    (%s)\n", c.DiffNote)
		}
	}
	if len(r.Problems) > 0 {
		b.WriteString("\nCOULD NOT BE READ\n")
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "  %s\n", p)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
