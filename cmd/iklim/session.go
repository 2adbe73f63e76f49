package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/iklimco/iklim/internal/backup"
	"github.com/iklimco/iklim/internal/lock"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/urfave/cli/v2"
)

var errInterrupted = errors.New("interrupted")

// session is what every command that touches hosts shares: the inventory,
// the run's secrets and one connection per host.
type session struct {
	parser    *hclparse.Parser // one parser, so diagnostics can quote any file
	inv       *inventories.Inventory
	invPath   string
	secrets   *modules.Secrets
	connector *runner.SSHConnector
}

func newSession(c *cli.Context) (*session, error) {
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
	secrets := modules.NewSecrets()
	return &session{
		parser: parser, inv: inv, invPath: path, secrets: secrets,
		connector: runner.NewSSHConnector(runner.SSHOptions{Secrets: secrets, MaxHandshakes: c.Int("max-handshakes"),
			KeepaliveInterval: c.Duration("keepalive-interval"), KeepaliveCount: c.Int("keepalive-count")}),
	}, nil
}

func (s *session) close() { _ = s.connector.Close() }

// hosts selects the inventory hosts a --limit pattern names; all without one.
func (s *session) hosts(limit string) ([]*inventories.Host, error) {
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
func (s *session) compile(path string, extra map[string]string) (*runner.Playbook, error) {
	f, diags := playbooks.LoadWith(s.parser, path)
	if diags.HasErrors() {
		return nil, printDiags(diags, s.parser.Files())
	}
	pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: s.inv, ExtraVars: extra, Secrets: s.secrets})
	if diags.HasErrors() {
		return nil, printDiags(diags, s.parser.Files())
	}
	return pb, nil
}

// run executes pb with backups, the lock and the chosen output.
func (s *session) run(c *cli.Context, pb *runner.Playbook) error {
	info, err := s.runInfo(pb.File, c.Bool("check"))
	if err != nil {
		return err
	}
	var events func(runner.Event)
	switch c.String("output") {
	case "json":
		events = (&runner.JSONPrinter{W: c.App.Writer}).Event
	case "text":
		events = (&runner.TextPrinter{W: c.App.Writer, Diff: c.Bool("diff"), Verbose: c.Bool("verbose"), Color: isTerminal(os.Stdout)}).Event
	default:
		return cli.Exit("iklim: --output must be text or json", exitInvalid)
	}
	warn := func(err error) {
		events(runner.Event{Type: runner.EventWarning, Time: time.Now().UTC(), RunID: info.ID, Error: s.secrets.Redact(err.Error())})
	}
	opts := runner.Options{
		Inventory: s.inv,
		Connector: s.connector,
		Locker:    lock.New(lock.WithLogf(func(f string, a ...any) { warn(fmt.Errorf(f, a...)) })),
		Run:       info,
		Control:   backup.ControlHost(),
		Check:     c.Bool("check"),
		Diff:      c.Bool("diff"),
		Forks:     c.Int("forks"),
		Limit:     c.String("limit"),
		Tags:      c.StringSlice("tags"),
		SkipTags:  c.StringSlice("skip-tags"),
		Verbose:   c.Bool("verbose"),
		Secrets:   s.secrets,
		Events:    events,

		NoCheckAhead: !c.Bool("check-ahead"),
	}
	if !opts.Check {
		opts.Recorder = backup.NewRecorder(backup.RecorderOptions{Info: info, Keep: c.Int("keep")})
	}
	ctx := backup.WithRoots(c.Context, s.inv, opts.Control)
	recap, err := runner.Run(ctx, pb, opts)
	if recap != nil && !opts.Check {
		if jerr := backup.WriteJournal(info, recap, backup.WithSecrets(s.secrets), backup.WithRunError(err)); jerr != nil {
			warn(fmt.Errorf("control journal: %w", jerr))
		}
	}
	if errors.Is(err, context.Canceled) {
		err = errInterrupted
	}
	return resultError(recap, err)
}

func (s *session) runInfo(playbook string, check bool) (runner.RunInfo, error) {
	now := time.Now().UTC()
	id, err := backup.ClaimRunID(now)
	if err != nil {
		return runner.RunInfo{}, err
	}
	abs, _ := filepath.Abs(playbook)
	inv, _ := filepath.Abs(s.invPath)
	return runner.RunInfo{
		ID: id, User: operator(), Started: now, Playbook: abs, Inventory: inv,
		GitCommit: gitCommit(filepath.Dir(abs)), Check: check,
	}, nil
}

func operator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

func gitCommit(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
