// Command iklim runs HCL playbooks over SSH. It is a thin layer over the
// iklim packages: everything it does, a Go program can do with them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/urfave/cli/v2"
)

// Exit codes, stable for scripts.
const (
	exitFailed      = 1  // a host failed
	exitInvalid     = 2  // bad input: diagnostics, usage
	exitUnreachable = 4  // a host was unreachable, none failed
	exitCrash       = 70 // iklim itself failed (a bug); Go's own panic status, 2, would read as bad input
	exitInterrupted = 130
)

func main() {
	os.Exit(run(os.Args, commands()...))
}

// commands are iklim's subcommands, in the order help lists them.
func commands() []*cli.Command {
	return []*cli.Command{playCommand, inventoryCommand, modulesCommand, backupsCommand, reportCommand, rollbackCommand,
		lockCommand, versionCommand, completionCommand, completeCommand}
}

// versionFlag replaces urfave/cli's global --version, whose -v alias would
// clash with the commands' -v (--verbose): -v means --verbose wherever a
// command has it, and nothing at the top level.
var versionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version (as `iklim version`)"}

// run runs the CLI with cmds and returns the exit status; a panic is
// reported as a crash, not as bad input.
func run(args []string, cmds ...*cli.Command) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "iklim: internal error (a bug, please report it): %v\n%s", r, debug.Stack())
			code = exitCrash
		}
	}()
	notFound := "" // the unknown command urfave/cli reports, if any
	app := &cli.App{
		Name:           "iklim",
		Usage:          "agentless, parallel SSH executor for Docker Swarm clusters",
		Version:        buildVersion().String(),
		HideVersion:    true,
		Flags:          []cli.Flag{versionFlag},
		Commands:       cmds,
		Metadata:       map[string]any{registryKey: stock.Registry()},
		ExitErrHandler: func(*cli.Context, error) {}, // run prints errors once
		OnUsageError:   usageError,
		CommandNotFound: func(c *cli.Context, name string) {
			notFound = name
		},
		Action: func(c *cli.Context) error {
			if c.Bool("version") {
				fmt.Fprintln(c.App.Writer, buildVersion().Long())
				return nil
			}
			if c.NArg() > 0 {
				return cli.Exit(fmt.Sprintf("iklim: no command %q (see iklim --help)", c.Args().First()), exitInvalid)
			}
			return cli.ShowAppHelp(c)
		},
	}
	setUsageError(app.Commands)
	// The first Ctrl-C cancels the run: remote commands get SIGINT and
	// records are finished. A second one exits at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	stopProfiling := startProfiling()
	err := app.RunContext(ctx, interspersed(args, cmds))
	stopProfiling()
	if notFound != "" && err == nil {
		err = cli.Exit(fmt.Sprintf("iklim: no command %q (see iklim --help)", notFound), exitInvalid)
	}
	return exitCode(err)
}

// registryKey is where the app's Metadata keeps its module registry.
const registryKey = "modules"

// moduleRegistry is the CLI's module registry: every stock module.
func moduleRegistry(app *cli.App) *modules.Registry {
	reg, _ := app.Metadata[registryKey].(*modules.Registry)
	return reg
}

// interspersed moves the flags that follow a command's positional
// arguments in front of them, because urfave/cli v2 stops parsing flags at
// the first positional one and Ansible users put -e last by habit:
// `iklim play site.hcl -e k=v --check` is `iklim play -e k=v --check site.hcl`.
// A "--" ends the flags; what follows it stays positional.
func interspersed(args []string, cmds []*cli.Command) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	// Global flags take no value.
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
		out = append(out, args[i])
		i++
	}
	var cmd *cli.Command
	for i < len(args) {
		next := findCommand(cmds, args[i])
		if next == nil {
			break
		}
		cmd, cmds = next, next.Subcommands
		out = append(out, args[i])
		i++
		if len(cmds) == 0 {
			break
		}
		// Flags between a command and its subcommand stay where they are.
		for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
			out = append(out, args[i])
			if takesValue(cmd, args[i]) && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
			i++
		}
	}
	if cmd == nil || cmd.SkipFlagParsing {
		return args
	}
	var flags, positional []string
	dashdash := false
	for ; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			dashdash = true
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && a != "-":
			flags = append(flags, a)
			if takesValue(cmd, a) && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		default:
			positional = append(positional, a)
		}
	}
	out = append(out, flags...)
	if dashdash {
		out = append(out, "--")
	}
	return append(out, positional...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether arg (-x or --name, without =value) is a flag
// of cmd that reads the next argument as its value.
func takesValue(cmd *cli.Command, arg string) bool {
	if strings.Contains(arg, "=") {
		return false
	}
	f := findFlag(cmd.Flags, strings.TrimLeft(arg, "-"))
	if f == nil {
		return false
	}
	dg, ok := f.(cli.DocGenerationFlag)
	return ok && dg.TakesValue()
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// usageError makes a bad flag or argument exit with exitInvalid, as other
// bad input does.
func usageError(_ *cli.Context, err error, _ bool) error {
	msg := err.Error()
	if strings.Contains(msg, "-v") && strings.Contains(msg, "not defined") {
		msg += "; -v is --verbose, and only play and rollback have it (the version is --version or iklim version)"
	}
	return cli.Exit("iklim: "+msg+" (see --help)", exitInvalid)
}

func setUsageError(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = usageError
		}
		setUsageError(c.Subcommands)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintln(os.Stderr, "iklim:", err)
	return exitFailed
}
