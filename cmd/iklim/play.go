package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hashicorp/hcl/v2"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
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
		colorFlag, stillWaitingFlag,
		&cli.IntFlag{Name: "keep", Value: 5, Usage: "backup runs kept per host"},
		&cli.IntFlag{Name: "keep-journals", Value: backup.DefaultKeepJournals,
			Usage: "runs whose journal the control machine keeps ($IKLIM_STATE_DIR/runs), at least 1; -1 keeps all"},
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
		&cli.BoolFlag{Name: "syntax-check", Usage: "load the inventory and playbook and check everything; contact no host"},
		&cli.BoolFlag{Name: "list-hosts", Usage: "list each play's hosts (after --limit); contact no host"},
		&cli.BoolFlag{Name: "list-steps", Usage: "list each play's steps (after --tags, --skip-tags, --start-at-step); contact no host"},
		&cli.StringFlag{Name: "start-at-step", Usage: "start the run at the first step named `NAME`"},
		&cli.BoolFlag{Name: "step", Usage: "ask before each step (y: run it, n: skip it, c: run the rest); needs a terminal"},
	},
	Action: playAction,
}

func playAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("usage: iklim play [options] PLAYBOOK", exitInvalid)
	}
	extra, err := parseExtraVars(c.StringSlice("extra-vars"))
	if err != nil {
		return cli.Exit(err.Error(), exitInvalid)
	}
	if k := c.Int("keep-journals"); k == 0 || k < -1 {
		return cli.Exit(fmt.Sprintf("iklim: --keep-journals must be at least 1, or -1 to keep all; got %d", k), exitInvalid)
	}
	dry := c.Bool("syntax-check") || c.Bool("list-hosts") || c.Bool("list-steps")
	var ask *stepper
	if c.Bool("step") && !dry {
		// Refuse before anything is loaded: no answer could ever come.
		if !isTTY(os.Stdin) {
			return cli.Exit("iklim: --step asks before each step and needs a terminal on stdin; run without --step, or narrow the run with --tags or --start-at-step", exitInvalid)
		}
		ask = newStepper(os.Stdin, os.Stderr)
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
	if name := c.String("start-at-step"); name != "" {
		if pb, err = startAtStep(pb, name); err != nil {
			return err
		}
	}
	switch {
	case c.Bool("list-hosts") || c.Bool("list-steps"):
		return listPlays(c, s.inv, pb)
	case c.Bool("syntax-check"):
		n := 0
		for _, p := range pb.Plays {
			n += len(p.Steps)
		}
		fmt.Fprintf(c.App.Writer, "%s: syntax OK (%d play(s), %d step(s)); no host was contacted\n", c.Args().First(), len(pb.Plays), n)
		return nil
	}
	opts := playOptions(c)
	if ask != nil {
		ask.wrap(pb)
		opts.NoCheckAhead = true // a batched check would evaluate later steps before their question
	}
	return result(s.Play(c.Context, pb, opts))
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
	return isTTY(f) && os.Getenv("NO_COLOR") == ""
}

// isTTY reports whether f is a terminal: /dev/null is a character device
// too, so only a terminal's TCGETS answers.
func isTTY(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
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

// startAtStep drops every step before the first one named name, in file
// order; earlier plays keep their hosts but run no step.
func startAtStep(pb *runner.Playbook, name string) (*runner.Playbook, error) {
	var names []string
	for i, p := range pb.Plays {
		for j, st := range p.Steps {
			if st.Name != name {
				names = append(names, st.Name)
				continue
			}
			out := *pb
			out.Plays = slices.Clone(pb.Plays)
			for k := range i {
				out.Plays[k].Steps = nil
			}
			out.Plays[i].Steps = p.Steps[j:]
			return &out, nil
		}
	}
	return nil, cli.Exit(fmt.Sprintf("iklim: --start-at-step: the playbook has no step %q%s; no host was contacted",
		name, didYouMean(name, names)), exitInvalid)
}

// listPlays prints each play's hosts (--list-hosts) and steps
// (--list-steps) as a run with the same flags would see them.
func listPlays(c *cli.Context, inv *inventories.Inventory, pb *runner.Playbook) error {
	w := c.App.Writer
	for _, p := range pb.Plays {
		hosts, err := inv.Select(p.Hosts)
		if err == nil {
			hosts, err = inv.Limit(hosts, c.String("limit"))
		}
		if err != nil {
			return cli.Exit(fmt.Sprintf("iklim: play %q: %v; no host was contacted", p.Name, err), exitInvalid)
		}
		fmt.Fprintf(w, "play %q (%s): %d host(s)\n", p.Name, p.Hosts, len(hosts))
		if c.Bool("list-hosts") {
			for _, h := range hosts {
				fmt.Fprintf(w, "  %s\n", h.Name)
			}
		}
		if c.Bool("list-steps") {
			for _, st := range runner.SelectSteps(p.Steps, c.StringSlice("tags"), c.StringSlice("skip-tags")) {
				line := fmt.Sprintf("  %s\t%s", st.Name, st.Module)
				if len(st.Tags) > 0 {
					line += "\ttags=" + strings.Join(st.Tags, ",")
				}
				if st.Source != "" {
					line += "\t" + st.Source
				}
				fmt.Fprintln(w, line)
			}
		}
	}
	return nil
}

// stepper asks on the terminal before each step (--step). The first host
// that reaches a step asks; the others wait for the same answer.
type stepper struct {
	in  *bufio.Reader
	out io.Writer

	mu      sync.Mutex
	all     bool            // "c": run the rest without asking
	answers map[string]bool // step key -> run it
}

func newStepper(in io.Reader, out io.Writer) *stepper {
	return &stepper{in: bufio.NewReader(in), out: out, answers: map[string]bool{}}
}

// wrap makes every step's When ask first.
func (a *stepper) wrap(pb *runner.Playbook) {
	for i := range pb.Plays {
		p := &pb.Plays[i]
		p.Steps = slices.Clone(p.Steps)
		for j := range p.Steps {
			st := &p.Steps[j]
			key := fmt.Sprintf("%d/%d", i, j)
			label := fmt.Sprintf("%s / %s (%s)", p.Name, st.Name, st.Module)
			when := st.When
			st.When = func(sc *runner.StepContext) (bool, error) {
				if !a.ask(key, label) {
					return false, nil
				}
				if when == nil {
					return true, nil
				}
				return when(sc)
			}
		}
	}
}

func (a *stepper) ask(key, label string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.all {
		return true
	}
	if yes, ok := a.answers[key]; ok {
		return yes
	}
	for {
		fmt.Fprintf(a.out, "Perform step %s? (y)es/(n)o/(c)ontinue: ", label)
		line, err := a.in.ReadString('\n')
		ans := strings.ToLower(strings.TrimSpace(line))
		switch {
		case ans == "y" || ans == "yes":
			a.answers[key] = true
			return true
		case ans == "n" || ans == "no":
			a.answers[key] = false
			return false
		case ans == "c" || ans == "continue":
			a.all = true
			return true
		case err != nil:
			// The terminal closed: run nothing more that was not agreed to.
			a.answers[key] = false
			return false
		}
	}
}
