package main

import (
	"context"
	"fmt"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
)

// greetingInfo is this program's own module, which it adds to its
// registry beside the stock ones: HCL playbooks compiled with that
// registry may use it (greeting.hcl), and a rollback restores its file.
func greetingInfo() modules.Info {
	return modules.Info{
		Name: "greeting",
		Doc:  "Write a file that greets someone (an embedding program's own module)",
		Example: `step "greet" {
  module = "greeting"
  path   = "/tmp/greeting"
  name   = host.name
}`,
		Diff:  "the file's content before and after",
		Files: true, // the runner snapshots the file; rollback restores it
		New:   func() modules.Module { return &Greeting{} },
	}
}

// Greeting writes "hello, NAME" to a file. It shows that a program's
// module is any type with Check and Apply; this one lets the stock copy
// module do the work.
type Greeting struct {
	modules.RunSecrets // handed on to copy

	Path string `hcl:"path" doc:"absolute path of the file"`
	Name string `hcl:"name" doc:"whom to greet"`

	copy files.Copy
}

// Validate implements modules.Validator.
func (g *Greeting) Validate() error {
	if g.Name == "" {
		return modules.ArgErrorf("name", "greeting: name is empty")
	}
	return g.file().Validate()
}

func (g *Greeting) file() *files.Copy {
	content := fmt.Sprintf("hello, %s\n", g.Name)
	g.copy = files.Copy{Dest: g.Path, Content: &content, Mode: "0644"}
	g.copy.UseSecrets(g.Secrets())
	return &g.copy
}

// Check implements modules.Module.
func (g *Greeting) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	return g.file().Check(ctx, c)
}

// Apply implements modules.Module.
func (g *Greeting) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	return g.copy.Apply(ctx, c, ch)
}
