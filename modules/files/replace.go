package files

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

func replaceInfo() modules.Info {
	return modules.Info{
		Name: "replace",
		Doc:  "Replace every match of a regular expression in a text file, with backreferences, like Ansible's replace",
		Example: `step "image_tag" {
  module  = "replace"
  path    = "/srv/app/docker-compose.yml"
  regexp  = "^(\\s+image:\\s+registry.example.com/framework):.*$"
  replace = "\\1:abc1234-1696234567"
}`,
		Outputs: []modules.Output{
			{Name: "path", Type: "string", Doc: "the file"},
			{Name: "matches", Type: "number", Doc: "how many matches the regexp has"},
			{Name: "lines", Type: "list(number)", Doc: "the lines (from 1) where a match changes text"},
		},
		Diff:  "the changed lines before and after",
		Files: true,
		New:   func() modules.Module { return &Replace{} },
	}
}

// Replace rewrites every match of a regular expression in a text file, like
// Ansible's replace: ^ and $ match at every line, and the replacement
// refers to groups as \1 or \g<name>. Check reads the file in one round
// trip and computes the new content on the control machine; Apply writes it
// atomically, keeping mode and owner. The runner snapshots the file before
// Apply, so rollback restores it byte-exact. A symlink at path is followed.
type Replace struct {
	modules.RunSecrets

	Path         string `hcl:"path" doc:"absolute remote path of a text file"`
	Regexp       string `hcl:"regexp" doc:"Go (RE2) regexp, multi-line: ^ and $ match at each line; write one that also matches its own result (as seed 001's image line does) so a rerun is no change"`
	Replace      string `hcl:"replace,optional" doc:"replacement; \\1 … \\99 and \\g<name> insert groups, \\n and \\t a newline and a tab, \\\\ a backslash, $ is literal (in HCL write \"\\\\1\"); default empty"`
	AllowNoMatch bool   `hcl:"allow_no_match,optional" doc:"zero matches is no change instead of an error"`

	target   string
	st       remote.FileStat
	content  []byte
	matches  int
	replaced int   // matches whose replacement differs from them
	lines    []int // lines (from 1) where a match changes text
	changed  bool
}

// Validate implements modules.Validator.
func (m *Replace) Validate() error {
	if err := remote.AbsPath("path", m.Path); err != nil {
		return fmt.Errorf("replace: %w", err)
	}
	if _, err := regexp.Compile("(?m)" + m.Regexp); err != nil {
		return modules.ArgErrorf("regexp", "replace %s: %v", m.Path, err)
	}
	if m.Regexp == "" {
		return modules.ArgErrorf("regexp", "replace %s: regexp is empty", m.Path)
	}
	if _, err := goTemplate(m.Replace); err != nil {
		return modules.ArgErrorf("replace", "replace %s: %v", m.Path, err)
	}
	return nil
}

// Check implements modules.Module: one round trip prints the resolved path,
// its stat and its content.
func (m *Replace) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	target, st, old, err := readText(ctx, c, "replace", m.Path)
	if err != nil {
		return nil, err
	}
	m.target, m.st = target, st
	switch {
	case !st.Exists:
		return nil, fmt.Errorf("replace %s: does not exist", m.Path)
	case st.Type != "file":
		return nil, fmt.Errorf("replace %s: %s is a %s, not a file", m.Path, target, st.Type)
	}

	newContent := m.edit([]byte(old))
	if m.matches == 0 {
		if m.AllowNoMatch {
			return nil, nil
		}
		return nil, fmt.Errorf("replace %s: regexp %q matches nothing (set allow_no_match = true if that is fine)", target, m.Regexp)
	}
	if len(m.lines) == 0 {
		return nil, nil
	}
	m.content = newContent
	ch := &modules.Change{
		Summary: fmt.Sprintf("replace %d %s in %s (%s %s)", m.replaced, matchesWord(m.replaced),
			target, plural(len(m.lines), "line"), joinInts(m.lines)),
		Files: []string{target},
		// A file that holds a known secret, before or after, is snapshotted
		// sealed; the runner redacts the secret from the diff.
		Sensitive: m.Secrets().Contains(old) || m.Secrets().Contains(string(newContent)),
		Diff:      replaceDiff(target, st, []byte(old), newContent),
	}
	if err := ch.SetBefore(newContentBefore(st)); err != nil {
		return nil, err
	}
	return ch, nil
}

// edit replaces every match in old and notes where the text changed.
func (m *Replace) edit(old []byte) []byte {
	re := regexp.MustCompile("(?m)" + m.Regexp)
	tmpl, _ := goTemplate(m.Replace)
	var out []byte
	last := 0
	m.matches, m.replaced, m.lines = 0, 0, nil
	for _, loc := range re.FindAllSubmatchIndex(old, -1) {
		m.matches++
		repl := re.Expand(nil, tmpl, old, loc)
		out = append(out, old[last:loc[0]]...)
		out = append(out, repl...)
		last = loc[1]
		if !bytes.Equal(repl, old[loc[0]:loc[1]]) {
			m.replaced++
			line := bytes.Count(old[:loc[0]], []byte("\n")) + 1
			if n := len(m.lines); n == 0 || m.lines[n-1] != line {
				m.lines = append(m.lines, line)
			}
		}
	}
	return append(out, old[last:]...)
}

// replaceDiff shows only the changed lines, numbered, when the line count
// stays (the usual case: a tag in three lines of a long compose file);
// otherwise the whole content.
func replaceDiff(p string, st remote.FileStat, old, new []byte) *modules.Diff {
	ol, nl := bytes.Split(old, []byte("\n")), bytes.Split(new, []byte("\n"))
	if len(ol) != len(nl) || !remote.IsText(old) || !remote.IsText(new) {
		return contentDiff(p, st, old, new)
	}
	var b, a strings.Builder
	for i := range ol {
		if !bytes.Equal(ol[i], nl[i]) {
			fmt.Fprintf(&b, "%d: %s\n", i+1, ol[i])
			fmt.Fprintf(&a, "%d: %s\n", i+1, nl[i])
		}
	}
	return &modules.Diff{Label: p + " (changed lines)", Before: b.String(), After: a.String()}
}

// goTemplate translates an Ansible (Python re.sub) replacement into a
// template for regexp.Expand: \1 and \g<1> become ${1}, \g<name> ${name},
// \\ a backslash, \n and \t a newline and a tab, and $ is doubled so it
// stays literal.
func goTemplate(s string) ([]byte, error) {
	var b []byte
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch == '$' {
			b = append(b, "$$"...)
			continue
		}
		if ch != '\\' || i+1 == len(s) {
			b = append(b, ch)
			continue
		}
		i++
		switch n := s[i]; {
		case n >= '0' && n <= '9':
			j := i + 1
			if j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			b = append(b, "${"+s[i:j]+"}"...)
			i = j - 1
		case n == 'g':
			end := strings.IndexByte(s[i:], '>')
			if i+1 >= len(s) || s[i+1] != '<' || end < 0 {
				return nil, fmt.Errorf(`\g must be followed by <group>`)
			}
			name := s[i+2 : i+end]
			if name == "" || !validGroupName(name) {
				return nil, fmt.Errorf(`\g<%s> is not a group number or name`, name)
			}
			b = append(b, "${"+name+"}"...)
			i += end
		case n == '\\':
			b = append(b, '\\')
		case n == 'n':
			b = append(b, '\n')
		case n == 't':
			b = append(b, '\t')
		default:
			b = append(b, '\\', n)
		}
	}
	return b, nil
}

func validGroupName(s string) bool {
	for _, r := range s {
		if !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// Apply implements modules.Module: an atomic upload keeping mode and owner.
func (m *Replace) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	if err := remote.WriteFile(ctx, c, m.target, m.content, m.st.Mode, strconv.Itoa(m.st.UID), strconv.Itoa(m.st.GID)); err != nil {
		return fmt.Errorf("replace: %w", err)
	}
	m.changed = true
	return nil
}

// ApplyScript implements modules.ScriptApplier: Apply as one script, the
// content delivered with it.
func (m *Replace) ApplyScript(*modules.Change) *modules.ScriptApply {
	return remote.WriteFileApply(m.target, m.content, m.st.Mode, strconv.Itoa(m.st.UID), strconv.Itoa(m.st.GID))
}

// ScriptApplied implements modules.ScriptApplier.
func (m *Replace) ScriptApplied() { m.changed = true }

// Rollback is the runner's: it restores the file from the snapshot it took
// of Change.Files before Apply, byte-exact with mode and owner.

// Output implements modules.Outputter: path, changed, matches (all of
// them) and lines (where the text changed).
func (m *Replace) Output() map[string]any {
	out := changedOutput(m.Path, m.changed)
	out["matches"] = m.matches
	lines := make([]any, len(m.lines))
	for i, l := range m.lines {
		lines[i] = l
	}
	out["lines"] = lines
	return out
}

// CheckAhead implements modules.CheckAheader: Check reads the file.
func (m *Replace) CheckAhead() modules.CheckAhead { return modules.CheckAheadReadOnly }

func matchesWord(n int) string {
	if n == 1 {
		return "match"
	}
	return "matches"
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
