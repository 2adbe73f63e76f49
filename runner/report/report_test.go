package report

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/stretchr/testify/require"
)

func sampleRun() *Run {
	t0 := time.Date(2026, 11, 21, 10, 15, 4, 0, time.UTC)
	end := t0.Add(10 * time.Second)
	ev := func(host, step string, st runner.Status, at, took time.Duration, diff *modules.Diff, errText string) runner.Event {
		return runner.Event{Type: runner.EventHostResult, Time: t0.Add(at + took), Play: "p", Step: step, Module: "copy",
			Source: "site.hcl:7", Host: host, Status: st, Duration: took, Diff: diff, Error: errText, Summary: "write " + step}
	}
	return &Run{
		ID: "2026-11-21T10-15-04Z",
		Journal: &backup.Journal{RunInfo: runner.RunInfo{ID: "2026-11-21T10-15-04Z", User: "ci", Started: t0, Playbook: "site.hcl", Inventory: "my inv.hcl"},
			Status: backup.StatusFailed, Finished: &end, Hosts: []runner.HostRecap{{Host: "a", Changed: 1}, {Host: "b", Failed: 1}}},
		Events: []runner.Event{
			{Type: runner.EventStepStart, Time: t0, Host: "a", Step: "<script>alert(1)</script>"},
			ev("a", "<script>alert(1)</script>", runner.StatusChanged, time.Second, 6*time.Second, &modules.Diff{Label: "/etc/x", Before: "a=1\n", After: "a=2\n"}, ""),
			ev("b", "conf", runner.StatusFailed, 2*time.Second, time.Second, nil, "exit 3: boom"),
			ev("b", "later", runner.StatusChanged, 4*time.Second, time.Second, nil, ""),
		},
		Records: []backup.HostRecords{{Host: "a", Changes: []backup.Recorded{{ChangeRecord: runner.ChangeRecord{
			Seq: 1, Host: "a", Play: "p", Step: "<script>alert(1)</script>", Module: "copy", Source: "site.hcl:7", Time: t0.Add(time.Second),
			Change: &modules.Change{Summary: "write /etc/x"}}, After: &backup.AfterRecord{Outcome: "applied"}}}}},
		Inventory: "my inv.hcl",
	}
}

func TestHTMLShowsTheRunAndEscapes(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, sampleRun().WriteHTML(&b))
	page := b.String()
	require.NotContains(t, page, "<script", "step names are escaped")
	require.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;")
	require.Contains(t, page, "<code>iklim rollback --run 2026-11-21T10-15-04Z -i &#39;my inv.hcl&#39;</code>")
	require.Contains(t, page, `<span class="del">-a=1</span><span class="add">&#43;a=2</span>`)
	require.Contains(t, page, `style="left:10.00%;width:60.00%"`, "the 6 s step of a 10 s run starting at 1 s")
	require.Contains(t, page, "exit 3: boom")
	require.Contains(t, page, `<span class="src">site.hcl:7</span>`)
}

func TestTextGivesTheSameFacts(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, sampleRun().WriteText(&b))
	text := b.String()
	require.Contains(t, text, "RUN 2026-11-21T10-15-04Z  failed\n")
	require.Contains(t, text, "  iklim rollback --run 2026-11-21T10-15-04Z -i 'my inv.hcl'\n")
	require.Contains(t, text, "failed: b step \"conf\" (copy) at site.hcl:7\n    exit 3: boom\n")
	require.Contains(t, text, "    -a=1\n    +a=2\n")
	require.Regexp(t, `(?m)^\s+\+1s\s+6s\s+changed\s+<script>alert\(1\)</script> \(copy\) at site.hcl:7: write`, text)
	require.Contains(t, text, "b step \"later\" (copy) at site.hcl:7: write later — changed (no record read)",
		"a changed step without a record is still listed")
}

func TestNoRollbackForCheckRunsOrRunsWithoutChanges(t *testing.T) {
	r := sampleRun()
	require.NotEmpty(t, r.RollbackCommand())
	r.Journal.Check = true
	require.Empty(t, r.RollbackCommand())
	r = sampleRun()
	r.Records = nil
	require.Empty(t, r.RollbackCommand())
	var b bytes.Buffer
	require.NoError(t, r.WriteText(&b))
	require.Contains(t, b.String(), "nothing to roll back")
	require.True(t, strings.HasPrefix(b.String(), "RUN "))
}
