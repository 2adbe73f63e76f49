// Command embed shows iklim used as a library: build a module registry
// (the stock modules plus one of its own, greeting), load an inventory, open
// a session (the run owner: backups, journal, lock, events), run an HCL
// playbook, run steps built in Go without any HCL, roll that run back, read
// the events (warnings included), and run one module on one connection.
//
//	go run ./examples/embed -i inventories/lab.hcl -dir /tmp/iklim-embed [-playbook examples/embed/greeting.hcl -e dir=/tmp/iklim-embed] [-rollback]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"strings"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/printer"
	"github.com/iklimco/iklim/runner/session"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("embed", flag.ContinueOnError)
	invPath := fs.String("i", "inventories/lab.hcl", "inventory file")
	pbPath := fs.String("playbook", "", "optional HCL playbook to run first")
	dir := fs.String("dir", "/tmp/iklim-embed", "remote directory the Go-built steps manage")
	pattern := fs.String("hosts", "all", "host pattern")
	rollback := fs.Bool("rollback", false, "roll back the Go-built run afterwards")
	vars := map[string]string{}
	fs.Func("e", "set a playbook variable: -e key=value (repeatable)", func(kv string) error {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("-e %q: want key=value", kv)
		}
		vars[k] = v
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}

	// 0. Build the program's module registry: every stock module (rollback
	// included) plus its own. Playbooks are compiled, and runs are rolled
	// back, with this registry only.
	reg := stock.Registry()
	if err := reg.Add(greetingInfo()); err != nil {
		return err
	}

	// 1. Load an inventory and open a session. Every event of every run
	// reaches one sink: here a printer, plus a count by type.
	inv, diags := inventories.Load(*invPath)
	if diags.HasErrors() {
		return diags
	}
	text := &printer.Text{W: out}
	seen := map[runner.EventType]int{}
	s, err := session.New(session.Options{
		Inventory: inv, InventoryPath: *invPath, Modules: reg,
		Events: func(ev runner.Event) {
			seen[ev.Type]++ // the sink is called one event at a time
			text.Event(ev)
		},
	})
	if err != nil {
		return err
	}
	defer s.Close()

	// 2. Run an HCL playbook, which may use the program's own module.
	if *pbPath != "" {
		f, diags := playbooks.Load(*pbPath)
		if diags.HasErrors() {
			return diags
		}
		pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: inv, ExtraVars: vars, Secrets: s.Secrets(), Modules: reg})
		if diags.HasErrors() {
			return diags
		}
		if _, err := check(s.Play(ctx, pb, session.PlayOptions{Limit: *pattern})); err != nil {
			return err
		}
	}

	// 3. Build steps in Go, without HCL: a directory and a file per host,
	// recorded in each host's backups like any run.
	content := func(sc *runner.StepContext) string { return "managed by iklim for " + sc.Host.Name + "\n" }
	pb := &runner.Playbook{File: "examples/embed", Plays: []runner.Play{{
		Name: "embedded", Hosts: *pattern,
		Steps: []runner.Step{
			{Name: "directory", Module: "file", Build: func(sc *runner.StepContext) (modules.Module, error) {
				return &files.File{Path: *dir, State: "directory", Mode: "0755"}, nil
			}},
			{Name: "motd", Module: "copy", Build: func(sc *runner.StepContext) (modules.Module, error) {
				c := content(sc)
				return &files.Copy{Dest: path.Join(*dir, "motd"), Content: &c, Mode: "0644"}, nil
			}},
		},
	}}}
	recap, err := check(s.Play(ctx, pb, session.PlayOptions{}))
	if err != nil {
		return err
	}

	// 4. Run one module on one connection, no engine involved.
	hosts, err := inv.Select(*pattern)
	if err != nil {
		return err
	}
	conn, err := s.Connector().Connect(ctx, hosts[0])
	if err != nil {
		return err
	}
	m := &files.Stat{Path: path.Join(*dir, "motd")}
	if _, err := m.Check(ctx, conn); err != nil {
		return err
	}
	st := m.Output()
	fmt.Fprintf(out, "stat %s on %s: size=%v mode=%v sha256=%v\n", path.Join(*dir, "motd"), conn.Host(), st["size"], st["mode"], st["sha256"])

	// 5. Roll the Go-built run back: the files it created go away.
	if *rollback && recap.Changed() > 0 {
		if _, err := check(s.Rollback(ctx, recap.RunID, false, session.PlayOptions{})); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "events: %d step results, %d warnings\n", seen[runner.EventHostResult], seen[runner.EventWarning])
	return nil
}

// check turns a recap with failures into an error.
func check(recap *runner.Recap, err error) (*runner.Recap, error) {
	if err != nil {
		return recap, err
	}
	if recap.Failed() {
		return recap, errors.New("some hosts failed; see above")
	}
	return recap, nil
}
