package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/report"
	"github.com/urfave/cli/v2"
)

var reportCommand = &cli.Command{
	Name:      "report",
	Usage:     "write a run as one self-contained HTML page: per-host timeline, changes with their diffs, failures, the rollback command",
	ArgsUsage: "RUN",
	Flags: []cli.Flag{inventoryFlag, limitFlag,
		&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "write the page to `FILE` (default: standard output)"}},
	Action: func(c *cli.Context) error {
		r, err := loadReport(c)
		if err != nil {
			return err
		}
		var b bytes.Buffer
		if err := r.WriteHTML(&b); err != nil {
			return fmt.Errorf("report %s: %w", r.ID, err)
		}
		if out := c.String("out"); out != "" {
			if err := os.WriteFile(out, b.Bytes(), 0o600); err != nil {
				return fmt.Errorf("report %s: %w", r.ID, err)
			}
		} else if _, err := c.App.Writer.Write(b.Bytes()); err != nil {
			return err
		}
		return reportProblems(r)
	},
}

var backupsShowCommand = &cli.Command{
	Name:      "show",
	Usage:     "show one run as text: per-host steps and times, changes with their diffs, failures, the rollback command",
	ArgsUsage: "RUN",
	Flags:     []cli.Flag{inventoryFlag, limitFlag},
	Action: func(c *cli.Context) error {
		r, err := loadReport(c)
		if err != nil {
			return err
		}
		if err := r.WriteText(c.App.Writer); err != nil {
			return err
		}
		return reportProblems(r)
	},
}

// loadReport reads the run named by the command's argument: its journal
// and step log here, its records on the inventory's hosts. Without -i, the
// inventory the run used is read.
func loadReport(c *cli.Context) (*report.Run, error) {
	if c.NArg() != 1 {
		return nil, cli.Exit("iklim: "+c.Command.Name+" takes one run id, as iklim backups list shows it (see --help)", exitInvalid)
	}
	id := c.Args().First()
	if !backup.ValidRunID(id) {
		return nil, cli.Exit(fmt.Sprintf("iklim: %q is not a run id (want e.g. 2026-11-21T10-15-04Z)", id), exitInvalid)
	}
	j, _ := backup.ReadJournal(id)
	if !c.IsSet("inventory") && j != nil && j.Inventory != "" {
		if err := c.Set("inventory", j.Inventory); err != nil {
			return nil, err
		}
	}
	s, err := newSession(c)
	if err != nil {
		return nil, err
	}
	defer s.close()
	hosts, err := s.hosts(c.String("limit"))
	if err != nil {
		return nil, err
	}
	r, err := report.Load(c.Context, id, s.Connector(), hosts, s.Control())
	if err != nil {
		return nil, cli.Exit("iklim: "+err.Error(), exitFailed)
	}
	r.Inventory = c.String("inventory")
	return r, nil
}

// reportProblems makes a report that could not read some hosts exit as
// backups list does.
func reportProblems(r *report.Run) error {
	if len(r.Problems) == 0 {
		return nil
	}
	return cli.Exit("iklim: some records could not be read:\n  "+strings.Join(r.Problems, "\n  "), exitUnreachable)
}
