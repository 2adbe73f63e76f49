package main

import (
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/printer"
	"github.com/urfave/cli/v2"
)

var colorFlag = &cli.StringFlag{Name: "color", Value: "auto", EnvVars: []string{"IKLIM_COLOR"},
	Usage: "colour the output: auto (on a terminal, unless NO_COLOR is set), always or never"}

var stillWaitingFlag = &cli.DurationFlag{Name: "still-waiting", Value: 10 * time.Second,
	Usage: "when the output is not a terminal, print a line for each step that runs longer than this, and again while it runs"}

// textEvents is the text printer of a run, with its progress: a live block
// of running steps on a terminal, "still waiting" lines elsewhere. stop
// ends the progress when the command is done.
func textEvents(c *cli.Context) (events func(runner.Event), stop func(), err error) {
	color := false
	switch c.String("color") {
	case "auto", "":
		color = isTTY(os.Stdout) && os.Getenv("NO_COLOR") == ""
	case "always":
		color = true
	case "never":
	default:
		return nil, nil, cli.Exit("iklim: --color must be auto, always or never", exitInvalid)
	}
	w := c.App.Writer
	tp := &printer.Text{W: w, Diff: c.Bool("diff"), Verbose: c.Bool("verbose"), Color: color}
	// --step asks on the terminal between steps: a redrawn block would
	// scribble over its question.
	live := w == os.Stdout && isTTY(os.Stdout) && os.Getenv("TERM") != "dumb" && !c.Bool("step")
	p := printer.NewProgress(printer.ProgressOptions{W: w, Print: tp.Event, Live: live, Color: color,
		Width: func() int { return termWidth(os.Stdout) }, StillAfter: c.Duration("still-waiting")})
	return p.Event, p.Close, nil
}

// termWidth is the number of columns of the terminal f, or 0.
func termWidth(f *os.File) int {
	var ws struct{ Row, Col, X, Y uint16 }
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))
	if errno != 0 {
		return 0
	}
	return int(ws.Col)
}
