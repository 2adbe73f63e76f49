// Command embed shows iklim used as a library: load an inventory, run an HCL
// playbook, run steps built in Go without any HCL, and run one module on one
// connection.
//
//	go run ./examples/embed -i inventories/lab.hcl -dir /tmp/iklim-embed [-playbook examples/site.hcl]
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

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
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
	if err := fs.Parse(args); err != nil {
		return err
	}

	// 1. Load an inventory.
	inv, diags := inventories.Load(*invPath)
	if diags.HasErrors() {
		return diags
	}
	secrets := modules.NewSecrets()
	connector := runner.NewSSHConnector(runner.SSHOptions{Secrets: secrets})
	defer connector.Close()
	opts := runner.Options{
		Inventory: inv, Connector: connector, Secrets: secrets,
		Events: (&runner.TextPrinter{W: out}).Event,
	}

	// 2. Run an HCL playbook.
	if *pbPath != "" {
		f, diags := playbooks.Load(*pbPath)
		if diags.HasErrors() {
			return diags
		}
		pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: inv, Secrets: secrets})
		if diags.HasErrors() {
			return diags
		}
		if err := check(runner.Run(ctx, pb, opts)); err != nil {
			return err
		}
	}

	// 3. Build steps in Go, without HCL: a directory and a file per host.
	content := func(sc *runner.StepContext) string { return "managed by iklim for " + sc.Host.Name + "\n" }
	pb := &runner.Playbook{Plays: []runner.Play{{
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
	if err := check(runner.Run(ctx, pb, opts)); err != nil {
		return err
	}

	// 4. Run one module on one connection, no engine involved.
	hosts, err := inv.Select(*pattern)
	if err != nil {
		return err
	}
	conn, err := connector.Connect(ctx, hosts[0])
	if err != nil {
		return err
	}
	m := &files.Stat{Path: path.Join(*dir, "motd")}
	if _, err := m.Check(ctx, conn); err != nil {
		return err
	}
	st := m.Output()
	fmt.Fprintf(out, "stat %s on %s: size=%v mode=%v sha256=%v\n", path.Join(*dir, "motd"), conn.Host(), st["size"], st["mode"], st["sha256"])
	return nil
}

// check turns a recap with failures into an error.
func check(recap *runner.Recap, err error) error {
	if err != nil {
		return err
	}
	if recap.Failed() {
		return errors.New("some hosts failed; see above")
	}
	return nil
}
