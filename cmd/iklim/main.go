// Command iklim runs HCL playbooks over SSH. It is a thin layer over the
// iklim packages: everything it does, a Go program can do with them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/iklimco/iklim/modules/stock"
	"github.com/urfave/cli/v2"
)

// Exit codes, stable for scripts.
const (
	exitFailed      = 1 // a host failed
	exitInvalid     = 2 // bad input: diagnostics, usage
	exitUnreachable = 4 // a host was unreachable, none failed
	exitInterrupted = 130
)

var version = "dev"

func main() {
	app := &cli.App{
		Name:    "iklim",
		Usage:   "agentless, parallel SSH executor for Docker Swarm clusters",
		Version: version,
		Commands: []*cli.Command{
			playCommand,
			modulesCommand,
			backupsCommand,
			rollbackCommand,
			lockCommand,
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main prints errors once
	}
	// The first Ctrl-C cancels the run: remote commands get SIGINT and
	// records are finished. A second one exits at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	stopProfiling := startProfiling()
	err := app.RunContext(ctx, os.Args)
	stopProfiling()
	os.Exit(exitCode(err))
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
