package main

import (
	"context"
	"errors"
	"os"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/printer"
	"github.com/iklimco/iklim/runner/session"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/urfave/cli/v2"
)

var errInterrupted = errors.New("interrupted")

// cliSession is a session.Session plus what the CLI adds: the HCL parser
// (so diagnostics can quote any file) and the printer chosen by the flags.
type cliSession struct {
	*session.Session
	parser *hclparse.Parser
	inv    *inventories.Inventory
	// stopProgress ends the live progress of the text printer.
	stopProgress func()
}

func newSession(c *cli.Context) (*cliSession, error) {
	path := c.String("inventory")
	parser := hclparse.NewParser()
	inv, diags := inventories.LoadWith(parser, path)
	if diags.HasErrors() {
		return nil, printDiags(diags, parser.Files())
	}
	if limit := c.String("limit"); limit != "" {
		if _, err := inventories.ParsePattern(limit); err != nil {
			return nil, cli.Exit("iklim: --limit: "+err.Error(), exitInvalid)
		}
	}
	var events func(runner.Event)
	stopProgress := func() {}
	switch c.String("output") {
	case "json":
		events = (&printer.JSON{W: c.App.Writer}).Event
	case "text", "":
		var err error
		if events, stopProgress, err = textEvents(c); err != nil {
			return nil, err
		}
	default:
		return nil, cli.Exit("iklim: --output must be text or json", exitInvalid)
	}
	s, err := session.New(session.Options{
		Inventory: inv, InventoryPath: path, Modules: moduleRegistry(c.App), Events: events,
		Keep: c.Int("keep"), KeepJournals: c.Int("keep-journals"), ControlName: os.Getenv("IKLIM_CONTROL_NAME"),
		SSH: transport.SSHOptions{
			MaxHandshakes:     c.Int("max-handshakes"),
			KeepaliveInterval: c.Duration("keepalive-interval"),
			KeepaliveCount:    c.Int("keepalive-count"),
		},
	})
	if err != nil {
		stopProgress()
		return nil, err
	}
	return &cliSession{Session: s, parser: parser, inv: inv, stopProgress: stopProgress}, nil
}

func (s *cliSession) close() {
	s.stopProgress()
	_ = s.Close()
}

// hosts selects the inventory hosts a --limit pattern names; all without one.
func (s *cliSession) hosts(limit string) ([]*inventories.Host, error) {
	if limit == "" {
		return s.inv.Hosts, nil
	}
	hosts, err := s.inv.Select(limit)
	if err != nil {
		return nil, cli.Exit("iklim: --limit: "+err.Error(), exitInvalid)
	}
	return hosts, nil
}

// compile loads and checks a playbook; every error is reported before any
// host is contacted.
func (s *cliSession) compile(path string, extra map[string]string) (*runner.Playbook, error) {
	f, diags := playbooks.LoadWith(s.parser, path)
	if diags.HasErrors() {
		return nil, printDiags(diags, s.parser.Files())
	}
	pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: s.inv, ExtraVars: extra, Secrets: s.Secrets(), Modules: s.Modules()})
	if diags.HasErrors() {
		return nil, printDiags(diags, s.parser.Files())
	}
	return pb, nil
}

// playOptions reads the run knobs from the flags.
func playOptions(c *cli.Context) session.PlayOptions {
	return session.PlayOptions{
		Check: c.Bool("check"), Diff: c.Bool("diff"), Verbose: c.Bool("verbose"),
		Forks: c.Int("forks"), Limit: c.String("limit"),
		Tags: c.StringSlice("tags"), SkipTags: c.StringSlice("skip-tags"),
		NoCheckAhead: !c.Bool("check-ahead"),
		StepTimeout:  c.Duration("step-timeout"),
	}
}

// result turns a run's outcome into the CLI's exit status.
func result(recap *runner.Recap, err error) error {
	if errors.Is(err, context.Canceled) {
		err = errInterrupted
	}
	return resultError(recap, err)
}
