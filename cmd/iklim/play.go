package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/urfave/cli/v2"
)

var inventoryFlag = &cli.StringFlag{
	Name: "inventory", Aliases: []string{"i"}, EnvVars: []string{"IKLIM_INVENTORY"},
	Usage: "inventory `FILE` (HCL)", Value: "inventory.hcl",
}

var limitFlag = &cli.StringFlag{
	Name: "limit", Aliases: []string{"l"}, Usage: "only hosts matching `PATTERN` (a:b, a:&b, a:!b, globs)",
}

var playCommand = &cli.Command{
	Name:      "play",
	Usage:     "run a playbook",
	ArgsUsage: "PLAYBOOK",
	Flags: []cli.Flag{
		inventoryFlag,
		limitFlag,
		&cli.StringSliceFlag{Name: "tags", Aliases: []string{"t"}, Usage: "only steps with one of these `TAGS`"},
		&cli.StringSliceFlag{Name: "skip-tags", Usage: "skip steps with one of these `TAGS`"},
		&cli.BoolFlag{Name: "check", Aliases: []string{"C"}, Usage: "report what would change, change nothing"},
		&cli.BoolFlag{Name: "diff", Aliases: []string{"D"}, Usage: "show before/after of changes"},
		&cli.StringSliceFlag{Name: "extra-vars", Aliases: []string{"e"}, Usage: "set playbook variable `KEY=VALUE` (repeatable)"},
		&cli.IntFlag{Name: "forks", Aliases: []string{"f"}, Usage: "hosts at once (default: all of them)"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "show module output and skipped steps"},
		&cli.StringFlag{Name: "output", Value: "text", Usage: "text or json (one event per line)"},
		&cli.IntFlag{Name: "keep", Value: 5, Usage: "backup runs kept per host"},
		&cli.IntFlag{Name: "max-handshakes", Value: 8, EnvVars: []string{"IKLIM_MAX_HANDSHAKES"},
			Usage: "SSH handshakes in progress at once; keep it below the servers' MaxStartups (OpenSSH's default is 10)"},
		&cli.BoolFlag{Name: "check-ahead", Value: true,
			Usage: "run the read-only checks of a host's consecutive steps in one round trip (false: one per step)"},
		&cli.DurationFlag{Name: "keepalive-interval", Value: transport.DefaultKeepaliveInterval, EnvVars: []string{"IKLIM_KEEPALIVE_INTERVAL"},
			Usage: "ask each host this often whether it is still there (keepalive@openssh.com); negative: never"},
		&cli.IntFlag{Name: "keepalive-count", Value: transport.DefaultKeepaliveCount, EnvVars: []string{"IKLIM_KEEPALIVE_COUNT"},
			Usage: "report a host unreachable after this many keepalive intervals without an answer"},
		&cli.DurationFlag{Name: "step-timeout", Value: runner.DefaultStepTimeout, EnvVars: []string{"IKLIM_STEP_TIMEOUT"},
			Usage: "deadline of a step that sets no timeout of its own; negative: none"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return cli.Exit("usage: iklim play [options] PLAYBOOK", exitInvalid)
		}
		extra, err := parseExtraVars(c.StringSlice("extra-vars"))
		if err != nil {
			return cli.Exit(err.Error(), exitInvalid)
		}
		s, err := newSession(c)
		if err != nil {
			return err
		}
		defer s.close()
		if err := checkLimit(s.inv, c.String("limit")); err != nil {
			return err
		}
		pb, err := s.compile(c.Args().First(), extra)
		if err != nil {
			return err
		}
		return result(s.Play(c.Context, pb, playOptions(c)))
	},
}

// checkLimit refuses a --limit that names nothing of the inventory or
// selects no host, before any host is contacted.
func checkLimit(inv *inventories.Inventory, limit string) error {
	if limit == "" {
		return nil
	}
	hosts, err := inv.Select(limit)
	if err != nil {
		return cli.Exit("iklim: --limit: "+err.Error()+"; no host was contacted", exitInvalid)
	}
	if len(hosts) == 0 {
		return cli.Exit(fmt.Sprintf("iklim: --limit %q selects no host of the inventory %s; no host was contacted", limit, inv.File), exitInvalid)
	}
	return nil
}

func parseExtraVars(kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-e %q: want KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}

// printDiags prints diagnostics with file:line and a source snippet and
// returns the exit error for bad input.
// Source lines are escaped and at most playbooks.MaxDiagnostics are shown.
func printDiags(diags hcl.Diagnostics, sources map[string]*hcl.File) error {
	_ = playbooks.WriteDiagnostics(os.Stderr, sources, diags, isTerminal(os.Stderr))
	n := len(diags.Errs())
	return cli.Exit(fmt.Sprintf("iklim: %d error(s); no host was contacted", n), exitInvalid)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("NO_COLOR") == ""
}

// resultError maps a recap to the process exit status.
func resultError(recap *runner.Recap, runErr error) error {
	if errors.Is(runErr, errInterrupted) {
		return cli.Exit("iklim: interrupted", exitInterrupted)
	}
	if recap == nil {
		// The run did not start: its lock host could not be reached.
		var ue *transport.UnreachableError
		if errors.As(runErr, &ue) {
			return cli.Exit("iklim: "+runErr.Error()+"; no host was changed", exitUnreachable)
		}
		return runErr
	}
	failed, unreachable := 0, 0
	for _, h := range recap.Hosts {
		failed += h.Failed
		unreachable += h.Unreachable
	}
	switch {
	case runErr != nil:
		return cli.Exit("iklim: "+runErr.Error(), exitFailed)
	case failed > 0:
		return cli.Exit("", exitFailed)
	case unreachable > 0:
		return cli.Exit("", exitUnreachable)
	}
	return nil
}
