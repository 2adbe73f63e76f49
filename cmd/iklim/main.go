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
	"syscall"

	_ "github.com/iklimco/iklim/modules/stock"
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

var version = "dev"

func main() {
	os.Exit(run(os.Args, playCommand, modulesCommand, backupsCommand, rollbackCommand, lockCommand))
}

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
		Version:        version,
		Commands:       cmds,
		ExitErrHandler: func(*cli.Context, error) {}, // run prints errors once
		OnUsageError:   usageError,
		CommandNotFound: func(c *cli.Context, name string) {
			notFound = name
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
	err := app.RunContext(ctx, args)
	stopProfiling()
	if notFound != "" && err == nil {
		err = cli.Exit(fmt.Sprintf("iklim: no command %q (see iklim --help)", notFound), exitInvalid)
	}
	return exitCode(err)
}

// usageError makes a bad flag or argument exit with exitInvalid, as other
// bad input does.
func usageError(_ *cli.Context, err error, _ bool) error {
	return cli.Exit("iklim: "+err.Error()+" (see --help)", exitInvalid)
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
