package report

import (
	"fmt"
	"html/template"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/printer"
)

// WriteHTML writes the run as one self-contained HTML page: inline CSS, no
// script, no external asset. It shows a per-host timeline of the steps, the
// slowest steps, every change with its diff, failures with their file:line
// and the command that rolls the run back.
func (r *Run) WriteHTML(w io.Writer) error {
	return page.Execute(w, r.view())
}

// view is the page's data, computed once.
type view struct {
	*Run
	Start, End  time.Time
	Took        string
	Status      string
	Hosts       []hostView
	Slowest     []stepView
	Failures    []stepView
	Changes     []changeView
	Rollback    string
	Axis        []axisMark
	NoLog       bool
	ChangeCount int
}

type hostView struct {
	Name    string
	Recap   *runner.HostRecap
	Steps   []stepView
	Busy    string // summed step time
	Records int
}

type stepView struct {
	Step
	Offset, Took string
	Bar          template.CSS // the timeline bar's position
	Class        string
}

type changeView struct {
	Host, Play, Step, Module, Source string
	Summary, Outcome, Error          string
	Seq                              int
	Delegated, Sealed, Sensitive     bool
	Files                            []string
	Diff                             []diffLine
	DiffNote                         string
}

type diffLine struct{ Class, Text string }

type axisMark struct {
	Left  template.CSS
	Label string
}

func (r *Run) view() view {
	v := view{Run: r, Status: r.Status(), Rollback: r.RollbackCommand(), NoLog: r.Events == nil, ChangeCount: r.Changes()}
	v.Start, v.End = r.Span()
	total := v.End.Sub(v.Start)
	v.Took = duration(total)
	steps := r.Steps()
	sv := func(s Step) stepView {
		x := stepView{Step: s, Offset: "+" + duration(s.Start.Sub(v.Start)), Took: duration(s.Duration), Class: "st-" + string(s.Status)}
		if total > 0 {
			left := float64(s.Start.Sub(v.Start)) / float64(total) * 100
			width := float64(s.Duration) / float64(total) * 100
			left = min(max(left, 0), 100)
			width = min(max(width, 0.4), 100-left+0.4)
			x.Bar = template.CSS(fmt.Sprintf("left:%.2f%%;width:%.2f%%", left, width))
		} else {
			x.Bar = template.CSS("left:0;width:100%")
		}
		return x
	}
	recaps := map[string]*runner.HostRecap{}
	if r.Journal != nil {
		for i := range r.Journal.Hosts {
			recaps[r.Journal.Hosts[i].Host] = &r.Journal.Hosts[i]
		}
	}
	records := map[string]int{}
	for _, hr := range r.Records {
		records[hr.Host] += len(hr.Changes)
	}
	for _, h := range r.Hosts() {
		hv := hostView{Name: h, Recap: recaps[h], Records: records[h]}
		var busy time.Duration
		for _, s := range steps {
			if s.Host == h {
				hv.Steps = append(hv.Steps, sv(s))
				busy += s.Duration
			}
		}
		hv.Busy = duration(busy)
		v.Hosts = append(v.Hosts, hv)
	}
	slow := append([]Step(nil), steps...)
	sort.SliceStable(slow, func(i, j int) bool { return slow[i].Duration > slow[j].Duration })
	for _, s := range slow[:min(len(slow), 10)] {
		v.Slowest = append(v.Slowest, sv(s))
	}
	for _, s := range r.Failures() {
		v.Failures = append(v.Failures, sv(s))
	}
	v.Changes = r.changeViews(steps)
	if total > 0 {
		for i := 0; i <= 4; i++ {
			v.Axis = append(v.Axis, axisMark{Left: template.CSS(fmt.Sprintf("left:%d%%", i*25)), Label: duration(total * time.Duration(i) / 4)})
		}
	}
	return v
}

// changeViews pairs each recorded change with its step's diff from the log;
// changed steps of a log without records (a run whose hosts cannot be read)
// are shown from the log alone.
func (r *Run) changeViews(steps []Step) []changeView {
	diffs := map[string]Step{}
	for _, s := range steps {
		if s.Status == runner.StatusChanged || s.Summary != "" {
			diffs[s.Host+"\x00"+s.Play+"\x00"+s.Name] = s
		}
	}
	var out []changeView
	used := map[string]bool{}
	for _, hr := range r.Records {
		for _, c := range hr.Changes {
			cv := changeView{Host: c.Host, Play: c.Play, Step: c.Step, Module: c.Module, Source: c.Source, Seq: c.Seq,
				Delegated: c.Delegated, Sealed: c.Sealed}
			if c.Change != nil {
				cv.Summary, cv.Sensitive = c.Change.Summary, c.Change.Sensitive
			}
			switch {
			case c.After == nil:
				cv.Outcome = "recorded, never finished (interrupted)"
			default:
				cv.Outcome, cv.Error = c.After.Outcome, c.After.Error
			}
			for _, m := range c.Snapshots {
				cv.Files = append(cv.Files, describeMeta(m))
			}
			key := c.Host + "\x00" + c.Play + "\x00" + c.Step
			if s, ok := diffs[key]; ok {
				used[key] = true
				cv.Diff, cv.DiffNote = diffLines(s.Diff)
			} else {
				cv.DiffNote = "no diff: the run kept no step log"
			}
			out = append(out, cv)
		}
	}
	for _, s := range steps {
		key := s.Host + "\x00" + s.Play + "\x00" + s.Name
		if s.Status != runner.StatusChanged || used[key] {
			continue
		}
		cv := changeView{Host: s.Host, Play: s.Play, Step: s.Name, Module: s.Module, Source: s.Source, Summary: s.Summary,
			Outcome: "changed (no record read)"}
		cv.Diff, cv.DiffNote = diffLines(s.Diff)
		out = append(out, cv)
	}
	return out
}

func diffLines(d *modules.Diff) ([]diffLine, string) {
	if d == nil {
		return nil, "the module shows no diff for this change"
	}
	text := printer.UnifiedDiff(d.Label, d.Before, d.After)
	if text == "" {
		return nil, "no difference in text"
	}
	var out []diffLine
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		l = strings.TrimPrefix(l, "    ")
		cls := "ctx"
		switch {
		case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"):
			cls = "hdr"
		case strings.HasPrefix(l, "@@"):
			cls = "hunk"
		case strings.HasPrefix(l, "+"):
			cls = "add"
		case strings.HasPrefix(l, "-"):
			cls = "del"
		}
		out = append(out, diffLine{cls, l})
	}
	return out, ""
}

func describeMeta(m backup.FileMeta) string {
	if !m.Exists {
		return m.Path + ": absent before (created by the run)"
	}
	s := fmt.Sprintf("%s: %s %s %d:%d", m.Path, m.Type, m.Mode, m.UID, m.GID)
	if m.SHA256 != "" {
		s += " sha256:" + m.SHA256[:min(12, len(m.SHA256))]
	}
	if m.Encrypted {
		s += " (snapshot sealed)"
	}
	return s
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"inc": func(i int) int { return i + 1 },
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
	},
}).Parse(pageHTML))

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>iklim run {{.ID}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #d8dde5;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:#fff;border:1px solid #d8dde5;border-radius:6px;padding:10px;overflow-x:auto;margin:6px 0}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}dl.meta dt{color:#5b6577}dl.meta dd{margin:0}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;vertical-align:middle}
.st-ok{background:#2f9e44}.st-changed{background:#e8a317}.st-failed{background:#d6336c}.st-skipped{background:#74c0fc}.st-unreachable{background:#9c36b5}
.st-interrupted{background:#868e96}.st-running{background:#1c7ed6}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d8dde5}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f4;vertical-align:top}th{background:#eef1f6;font-weight:600}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.timeline{background:#fff;border:1px solid #d8dde5;border-radius:6px;padding:10px 12px}
.row{display:flex;align-items:center;margin:5px 0}.row .host{width:160px;flex:none;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.track{position:relative;flex:1;height:22px;background:#eef1f6;border-radius:4px}
.bar{position:absolute;top:2px;bottom:2px;border-radius:3px;opacity:.9;min-width:2px;overflow:hidden;white-space:nowrap;color:#fff;font-size:11px;line-height:18px;text-indent:4px;box-shadow:inset -1px 0 #fff}
.axis{position:relative;margin-left:160px;height:18px;color:#5b6577;font-size:11px}.axis span{position:absolute;transform:translateX(-50%)}.axis span:first-child{transform:none}
.legend span{margin-right:12px}.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
.change,.failure{background:#fff;border:1px solid #d8dde5;border-radius:6px;padding:10px 12px;margin:10px 0}
.failure{border-left:4px solid #d6336c}.change{border-left:4px solid #e8a317}
.muted{color:#5b6577}.src{font-family:ui-monospace,Menlo,Consolas,monospace;color:#364fc7}
.diff .add{background:#e6ffec;color:#116329}.diff .del{background:#ffebe9;color:#82071e}.diff .hunk{color:#8250df}.diff .hdr{color:#5b6577}
.diff span{display:block;white-space:pre}
.rollback pre{border-left:4px solid #1c7ed6}
</style>
</head>
<body><main>
<h1>iklim run <code>{{.ID}}</code> <span class="badge st-{{.Status}}">{{.Status}}</span></h1>
<dl class="meta">
{{with .Journal}}<dt>playbook</dt><dd><code>{{.Playbook}}</code></dd>
<dt>inventory</dt><dd><code>{{.Inventory}}</code></dd>
<dt>by</dt><dd>{{.User}}{{if .Control}} on {{.Control}}{{end}}</dd>
{{if .GitCommit}}<dt>git commit</dt><dd><code>{{.GitCommit}}</code></dd>{{end}}
{{if .Check}}<dt>mode</dt><dd>check mode: nothing was changed</dd>{{end}}
{{if .Error}}<dt>error</dt><dd>{{.Error}}</dd>{{end}}{{end}}
<dt>started</dt><dd>{{ts .Start}}</dd>
<dt>finished</dt><dd>{{ts .End}} ({{.Took}})</dd>
<dt>hosts</dt><dd>{{len .Hosts}}</dd>
<dt>changes recorded</dt><dd>{{.ChangeCount}}</dd>
</dl>

<section class="rollback" id="rollback">
<h2>Rollback</h2>
{{if .Rollback}}<p>Undo this run on its hosts, newest change first (see first what it would restore with <code>--check</code>):</p>
<pre><code>{{.Rollback}}</code></pre>
<pre><code>{{.Rollback}} --check</code></pre>
{{else}}<p class="muted">Nothing to roll back: the run recorded no change.</p>{{end}}
</section>

{{if .Failures}}<section id="failures">
<h2>Failures ({{len .Failures}})</h2>
{{range .Failures}}<div class="failure">
<div><span class="badge {{.Class}}">{{.Status}}</span> <b>{{.Host}}</b> step <b>{{.Name}}</b> <span class="muted">({{.Module}}, play {{.Play}})</span> at <span class="src">{{.Source}}</span></div>
<pre>{{.Error}}</pre>
</div>{{end}}
</section>{{end}}

<section id="timeline">
<h2>Timeline</h2>
{{if .NoLog}}<p class="muted">This run kept no step log (runs before it was introduced, or recorded elsewhere): only recorded changes are shown.</p>{{end}}
<div class="timeline">
<div class="legend muted"><span><i class="st-ok"></i>ok</span><span><i class="st-changed"></i>changed</span><span><i class="st-failed"></i>failed</span><span><i class="st-skipped"></i>skipped</span><span><i class="st-unreachable"></i>unreachable</span></div>
{{range .Hosts}}<div class="row"><div class="host" title="{{.Name}}">{{.Name}}</div><div class="track">{{range .Steps}}<div class="bar {{.Class}}" style="{{.Bar}}" title="{{.Name}}: {{.Status}} in {{.Took}} (at {{.Offset}})">{{.Name}}</div>{{end}}</div></div>
{{end}}<div class="axis">{{range .Axis}}<span style="{{.Left}}">{{.Label}}</span>{{end}}</div>
</div>
{{if .Slowest}}<h3>Where the time went</h3>
<table><tr><th>step</th><th>host</th><th>module</th><th>status</th><th>took</th><th>at</th><th>source</th></tr>
{{range .Slowest}}<tr><td>{{.Name}}</td><td>{{.Host}}</td><td>{{.Module}}</td><td><span class="badge {{.Class}}">{{.Status}}</span></td><td class="num">{{.Took}}</td><td class="num">{{.Offset}}</td><td class="src">{{.Source}}</td></tr>
{{end}}</table>{{end}}
</section>

<section id="hosts">
<h2>Hosts</h2>
{{range .Hosts}}<h3>{{.Name}}</h3>
<p class="muted">{{with .Recap}}ok={{.OK}} changed={{.Changed}} failed={{.Failed}} skipped={{.Skipped}} unreachable={{.Unreachable}} ignored={{.Ignored}} · {{end}}{{len .Steps}} steps, {{.Busy}} in steps · {{.Records}} changes recorded{{with .Recap}}{{if .Error}}<br>first failure: {{.Error}}{{end}}{{end}}</p>
{{if .Steps}}<table><tr><th>#</th><th>play</th><th>step</th><th>module</th><th>status</th><th>at</th><th>took</th><th>source</th><th>summary</th></tr>
{{range $i, $s := .Steps}}<tr><td class="num">{{inc $i}}</td><td>{{$s.Play}}</td><td>{{$s.Name}}</td><td>{{$s.Module}}</td><td><span class="badge {{$s.Class}}">{{$s.Status}}</span></td><td class="num">{{$s.Offset}}</td><td class="num">{{$s.Took}}</td><td class="src">{{$s.Source}}</td><td>{{$s.Summary}}</td></tr>
{{end}}</table>{{end}}
{{end}}
</section>

<section id="changes">
<h2>Changes ({{len .Changes}})</h2>
{{range .Changes}}<div class="change">
<div><b>{{.Host}}</b>{{if .Seq}} #{{.Seq}}{{end}} step <b>{{.Step}}</b> <span class="muted">({{.Module}}, play {{.Play}})</span> at <span class="src">{{.Source}}</span>{{if .Delegated}} <span class="muted">(delegated: recorded on the control machine)</span>{{end}}</div>
<div>{{.Summary}} — <b>{{.Outcome}}</b>{{if .Error}}: {{.Error}}{{end}}</div>
{{if .Sealed}}<div class="muted">The full record is sealed with the control machine's backup key; the redacted record is shown.</div>{{end}}
{{if .Files}}<div class="muted">files snapshotted before the change:</div><ul>{{range .Files}}<li><code>{{.}}</code></li>{{end}}</ul>{{end}}
{{if .Diff}}<pre class="diff">{{range .Diff}}<span class="{{.Class}}">{{.Text}}</span>{{end}}</pre>{{else}}<div class="muted">{{.DiffNote}}</div>{{end}}
</div>{{end}}
</section>

{{if .Problems}}<section id="problems"><h2>Could not be read</h2><ul>{{range .Problems}}<li>{{.}}</li>{{end}}</ul></section>{{end}}
<p class="muted">Generated by iklim from the run's journal, step log and backup records. Secrets were redacted before they were recorded; sealed records were not opened.</p>
</main></body>
</html>
`
