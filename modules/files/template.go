package files

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/template"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// templateInfo is the template module's registry entry.
func templateInfo() modules.Info {
	return modules.Info{
		Name: "template",
		Doc:  "Render a Go text/template on the control machine and write it like copy",
		Example: `step "nginx conf" {
  module = "template"
  src    = "${path.dir}/nginx.conf.tmpl"
  dest   = "/etc/nginx/conf.d/app.conf"
  vars   = { upstream = "127.0.0.1:8080" }
}`,
		Outputs: []modules.Output{
			{Name: "path", Type: "string", Doc: "the destination file"},
		},
		Diff:  "the rendered file's content before and after",
		Files: true,
		New:   func() modules.Module { return &Template{} },
	}
}

// Template renders a Go text/template with vars and writes the result like
// copy does (same comparison by sha256, atomic write, mode and owner). Vars
// are strings, reached as {{ .name }}; a missing var is an error.
//
// Playbooks can also render with HCL's templatefile() function and pass the
// result to copy's content; template exists for Go templates and for diffs
// that show the rendered text.
type Template struct {
	modules.RunSecrets

	Src     string            `hcl:"src,optional" doc:"template file on the control machine (set src or content)"`
	Content *string           `hcl:"content,optional" doc:"template text (set src or content)"`
	Dest    string            `hcl:"dest" doc:"absolute remote path"`
	Vars    map[string]string `hcl:"vars,optional" doc:"values the template reads as {{ .name }}"`
	Mode    string            `hcl:"mode,optional" doc:"octal mode such as \"0644\"; default: keep an existing file's mode, 0644 for a new one"`
	Owner   string            `hcl:"owner,optional" doc:"owner name or numeric uid; default: keep an existing file's owner"`
	Group   string            `hcl:"group,optional" doc:"group name or numeric gid; default: keep an existing file's group"`

	copy Copy
}

// Validate implements Validator: it also parses the template, so syntax
// errors show before any host is touched.
func (m *Template) Validate() error {
	switch {
	case m.Content != nil && m.Src != "":
		return fmt.Errorf("template %s: set content or src, not both", m.Dest)
	case m.Content == nil && m.Src == "":
		return fmt.Errorf("template %s: content or src is required", m.Dest)
	}
	if err := remote.AbsPath("dest", m.Dest); err != nil {
		return modules.ArgErrorf("dest", "template: %w", err)
	}
	if _, err := m.parse(); err != nil {
		if m.Content != nil {
			return &modules.ArgError{Arg: "content", Err: err}
		}
		return &modules.ArgError{Arg: "src", Err: err}
	}
	if err := m.attrs().Validate(); err != nil {
		return &modules.ArgError{Arg: "mode", Err: err}
	}
	return nil
}

func (m *Template) attrs() remote.Attrs {
	return remote.Attrs{Mode: m.Mode, Owner: m.Owner, Group: m.Group}
}

func (m *Template) parse() (*template.Template, error) {
	name, text := "content", ""
	if m.Content != nil {
		text = *m.Content
	} else {
		b, err := os.ReadFile(m.Src)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", m.Dest, err)
		}
		name, text = m.Src, string(b)
	}
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", m.Dest, err)
	}
	return t, nil
}

// Check implements Module: it renders, then checks like copy (one round trip).
func (m *Template) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	t, err := m.parse()
	if err != nil {
		return nil, err
	}
	vars := m.Vars
	if vars == nil {
		vars = map[string]string{}
	}
	var out strings.Builder
	if err := t.Execute(&out, vars); err != nil {
		return nil, fmt.Errorf("template %s: render: %w", m.Dest, err)
	}
	rendered := out.String()
	m.copy = Copy{Dest: m.Dest, Content: &rendered, Mode: m.Mode, Owner: m.Owner, Group: m.Group,
		module: "template"}
	m.copy.UseSecrets(m.Secrets())
	return m.copy.Check(ctx, c)
}

// Apply implements Module, as copy does.
func (m *Template) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	return m.copy.Apply(ctx, c, ch)
}

// ApplyScript implements modules.ScriptApplier, as copy does.
func (m *Template) ApplyScript(ch *modules.Change) *modules.ScriptApply {
	return m.copy.ApplyScript(ch)
}

// ScriptApplied implements modules.ScriptApplier.
func (m *Template) ScriptApplied() { m.copy.ScriptApplied() }

// Output implements Outputter: path and changed.
func (m *Template) Output() map[string]any { return changedOutput(m.Dest, m.copy.changed) }

// CheckAhead implements CheckAheader: Check renders locally and hashes dest.
func (m *Template) CheckAhead() modules.CheckAhead { return modules.CheckAheadReadOnly }
