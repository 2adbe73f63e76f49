package files

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// lineInfo is the line module's registry entry.
func lineInfo() modules.Info {
	return modules.Info{
		Name: "line",
		Doc:  "Ensure a line is present in (or absent from) a text file, like Ansible's lineinfile",
		Example: `step "max map count" {
  module = "line"
  path   = "/etc/sysctl.d/90-app.conf"
  regexp = "^vm.max_map_count="
  line   = "vm.max_map_count=262144"
  create = true
}`,
		Outputs: []modules.Output{
			{Name: "path", Type: "string", Doc: "the file"},
		},
		Diff:  "the file's content before and after",
		Files: true,
		New:   func() modules.Module { return &Line{} },
	}
}

// Line keeps one line of a small text file as wanted, like Ansible's
// lineinfile. Check reads the file (stat and content in one round trip) and
// computes the new content on the control machine; Apply uploads it
// atomically, keeping mode and owner. A symlink at path is followed: its
// target is edited.
type Line struct {
	Path         string `hcl:"path" doc:"absolute remote path of a text file"`
	Line         string `hcl:"line,optional" doc:"the line (without newline); required for state = \"present\""`
	Regexp       string `hcl:"regexp,optional" doc:"Go regexp: present replaces the last matching line (or inserts the line when none matches and it is not already there); absent removes every matching line"`
	State        string `hcl:"state,optional" doc:"present (default) or absent"`
	Create       bool   `hcl:"create,optional" doc:"create the file when it is missing (present only)"`
	InsertAfter  string `hcl:"insertafter,optional" doc:"where a new line goes: EOF (default) or after the last line matching this Go regexp (EOF if none)"`
	InsertBefore string `hcl:"insertbefore,optional" doc:"where a new line goes: BOF or before the last line matching this Go regexp (EOF if none)"`
	Mode         string `hcl:"mode,optional" doc:"octal mode such as \"0644\"; default: keep an existing file's mode, 0644 for a new one"`

	target  string // path after following symlinks
	st      remote.FileStat
	content []byte // new content; nil when only the mode changes
	old     []byte // the content its check read
	changed bool
}

func (m *Line) state() string {
	if m.State == "" {
		return "present"
	}
	return m.State
}

// Validate implements Validator.
func (m *Line) Validate() error {
	if err := remote.AbsPath("path", m.Path); err != nil {
		return modules.ArgErrorf("path", "line: %w", err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("line %s: %s", m.Path, fmt.Sprintf(format, args...))
	}
	argFail := func(arg, format string, args ...any) error {
		return &modules.ArgError{Arg: arg, Err: fail(format, args...)}
	}
	switch m.state() {
	case "present":
		if m.Line == "" {
			return argFail("line", "state = \"present\" needs line")
		}
	case "absent":
		if m.Line == "" && m.Regexp == "" {
			return fail("state = \"absent\" needs line or regexp")
		}
		if m.Create || m.InsertAfter != "" || m.InsertBefore != "" {
			return fail("create, insertafter and insertbefore are only for state = \"present\"")
		}
	default:
		return argFail("state", "state %q is not present or absent", m.State)
	}
	if strings.ContainsAny(m.Line, "\n\r") {
		return argFail("line", "line holds a newline; manage one line per step")
	}
	if m.InsertAfter != "" && m.InsertBefore != "" {
		return fail("set insertafter or insertbefore, not both")
	}
	for name, re := range map[string]string{"regexp": m.Regexp, "insertafter": m.InsertAfter, "insertbefore": m.InsertBefore} {
		if re == "" || (name == "insertafter" && re == "EOF") || (name == "insertbefore" && re == "BOF") {
			continue
		}
		if _, err := regexp.Compile(re); err != nil {
			return argFail(name, "%s: %v", name, err)
		}
	}
	if err := remote.ValidMode(m.Mode); err != nil {
		return argFail("mode", "%v", err)
	}
	return nil
}

// Check implements Module: one round trip prints the resolved path, its
// stat and its content.
func (m *Line) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	target, st, old, err := readText(ctx, c, "line", m.Path)
	if err != nil {
		return nil, err
	}
	m.target, m.st, m.old = target, st, []byte(old)
	if st.Exists && st.Type != "file" {
		return nil, fmt.Errorf("line %s: %s is a %s, not a file", m.Path, target, st.Type)
	}

	var summary string
	switch {
	case !st.Exists && m.state() == "absent":
		return nil, nil
	case !st.Exists && !m.Create:
		return nil, fmt.Errorf("line %s: does not exist (set create = true to create it)", m.Path)
	case !st.Exists:
		m.content = []byte(m.Line + "\n")
		summary = fmt.Sprintf("create %s with line %q", target, remote.Short(m.Line))
	default:
		newContent, what := m.edit(old)
		if what != "" {
			m.content = []byte(newContent)
			summary = what + " " + target
		}
	}
	var drift []string
	if m.Mode != "" && st.Exists {
		drift = remote.Attrs{Mode: m.Mode}.Drift(st)
	}
	if m.content == nil && len(drift) == 0 {
		return nil, nil
	}
	ch := &modules.Change{Files: []string{target}}
	switch {
	case m.content == nil:
		ch.Summary = fmt.Sprintf("set %s: %s", target, strings.Join(drift, ", "))
		b, f := attrDiff("file", st, remote.Attrs{Mode: m.Mode})
		ch.Diff = &modules.Diff{Label: target, Before: b, After: f}
	default:
		ch.Summary = summary
		if len(drift) > 0 {
			ch.Summary += ", " + strings.Join(drift, ", ")
		}
		var before []byte
		if st.Exists {
			before = []byte(old)
		}
		ch.Diff = contentDiff(target, st, before, m.content)
	}
	if err := ch.SetBefore(newContentBefore(st)); err != nil {
		return nil, err
	}
	return ch, nil
}

// edit computes the new content of an existing file. what describes the
// edit, or is "" when the content stays.
func (m *Line) edit(old string) (content, what string) {
	lines := strings.Split(old, "\n")
	if strings.HasSuffix(old, "\n") || old == "" {
		lines = lines[:len(lines)-1]
	}
	var re *regexp.Regexp
	if m.Regexp != "" {
		re = regexp.MustCompile(m.Regexp) // checked by Validate
	}
	matches := func(l string) bool {
		if re != nil {
			return re.MatchString(l)
		}
		return l == m.Line
	}

	if m.state() == "absent" {
		kept := lines[:0:0]
		for _, l := range lines {
			if !matches(l) {
				kept = append(kept, l)
			}
		}
		n := len(lines) - len(kept)
		if n == 0 {
			return old, ""
		}
		return joinLines(kept), fmt.Sprintf("remove %d %s from", n, plural(n, "line"))
	}

	if re != nil {
		if i := lastIndex(lines, re.MatchString); i >= 0 {
			if lines[i] == m.Line {
				return old, ""
			}
			lines[i] = m.Line
			return joinLines(lines), "replace line " + strconv.Itoa(i+1) + " in"
		}
	}
	if lastIndex(lines, func(l string) bool { return l == m.Line }) >= 0 {
		return old, ""
	}
	at := len(lines)
	switch {
	case m.InsertBefore == "BOF":
		at = 0
	case m.InsertBefore != "":
		if i := lastIndex(lines, regexp.MustCompile(m.InsertBefore).MatchString); i >= 0 {
			at = i
		}
	case m.InsertAfter != "" && m.InsertAfter != "EOF":
		if i := lastIndex(lines, regexp.MustCompile(m.InsertAfter).MatchString); i >= 0 {
			at = i + 1
		}
	}
	lines = append(lines[:at], append([]string{m.Line}, lines[at:]...)...)
	return joinLines(lines), "add line " + strconv.Itoa(at+1) + " to"
}

// Apply implements Module: Upload plus one command restoring the owner, or
// one chmod when only the mode changes.
func (m *Line) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	mode := m.writeMode()
	if m.content == nil {
		if err := remote.RunScript(ctx, c, "line "+m.target, remote.Attrs{Mode: m.Mode}.Script(m.target, false, false)); err != nil {
			return err
		}
		m.changed = true
		return nil
	}
	var owner, group string
	if m.st.Exists {
		owner, group = strconv.Itoa(m.st.UID), strconv.Itoa(m.st.GID)
	}
	if err := remote.WriteFile(ctx, c, m.target, m.content, mode, owner, group); err != nil {
		return fmt.Errorf("line: %w", err)
	}
	m.changed = true
	return nil
}

func (m *Line) writeMode() uint32 {
	mode := m.st.Mode
	if m.Mode != "" {
		mode, _ = remote.ParseMode(m.Mode)
	} else if !m.st.Exists {
		mode = 0o644
	}
	return mode
}

// ApplyScript implements modules.ScriptApplier: Apply as one script, the
// content delivered with it.
func (m *Line) ApplyScript(*modules.Change) *modules.ScriptApply {
	var ap *modules.ScriptApply
	if m.content == nil {
		ap = remote.ScriptOnly(remote.Attrs{Mode: m.Mode}.Script(m.target, false, false))
	} else {
		var owner, group string
		if m.st.Exists {
			owner, group = strconv.Itoa(m.st.UID), strconv.Itoa(m.st.GID)
		}
		ap = remote.WriteFileApply(m.target, m.content, m.writeMode(), owner, group)
	}
	if ap != nil {
		ap.Before = knownBefore(m.target, m.st, m.old)
	}
	return ap
}

// ScriptApplied implements modules.ScriptApplier.
func (m *Line) ScriptApplied() { m.changed = true }

// Output implements Outputter: path and changed.
func (m *Line) Output() map[string]any { return changedOutput(m.Path, m.changed) }

func joinLines(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

func lastIndex(lines []string, match func(string) bool) int {
	for i := len(lines) - 1; i >= 0; i-- {
		if match(lines[i]) {
			return i
		}
	}
	return -1
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// CheckAhead implements CheckAheader: Check reads the file.
func (m *Line) CheckAhead() modules.CheckAhead { return modules.CheckAheadReadOnly }
