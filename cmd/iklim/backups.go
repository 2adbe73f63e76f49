package main

import (
	"encoding/json"
	"fmt"

	"github.com/iklimco/iklim/runner/backup"
	"github.com/urfave/cli/v2"
)

var backupsCommand = &cli.Command{
	Name:  "backups",
	Usage: "inspect the runs recorded on hosts",
	Subcommands: []*cli.Command{{
		Name:  "list",
		Usage: "list recorded runs across hosts: id, hosts, changes, status",
		Flags: []cli.Flag{inventoryFlag, limitFlag,
			&cli.StringFlag{Name: "output", Value: "text", Usage: "text or json"}},
		Action: func(c *cli.Context) error {
			s, err := newSession(c)
			if err != nil {
				return err
			}
			defer s.close()
			hosts, err := s.hosts(c.String("limit"))
			if err != nil {
				return err
			}
			runs, listErr := s.Backups(c.Context, hosts)
			if c.String("output") == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(runs); err != nil {
					return err
				}
			} else {
				fmt.Fprint(c.App.Writer, backup.FormatSummaries(runs))
			}
			if listErr != nil {
				return cli.Exit("iklim: some hosts could not be read: "+listErr.Error(), exitUnreachable)
			}
			return nil
		},
	}, backupsShowCommand},
}

var rollbackCommand = &cli.Command{
	Name:  "rollback",
	Usage: "undo a recorded run on its hosts, newest change first (recorded as a new run)",
	Flags: []cli.Flag{inventoryFlag, limitFlag,
		&cli.StringFlag{Name: "run", Required: true, Usage: "run `ID` to undo, as `iklim backups list` shows"},
		&cli.BoolFlag{Name: "check", Aliases: []string{"C"}, Usage: "show what would be restored, change nothing"},
		&cli.BoolFlag{Name: "diff", Aliases: []string{"D"}, Usage: "show what would be restored"},
		&cli.BoolFlag{Name: "force", Usage: "roll back even where the host drifted since the run"},
		&cli.IntFlag{Name: "forks", Aliases: []string{"f"}, Value: 100},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}},
		&cli.StringFlag{Name: "output", Value: "text"},
		colorFlag, stillWaitingFlag,
		&cli.IntFlag{Name: "keep", Value: 5, Usage: "backup runs kept per host"},
	},
	Action: func(c *cli.Context) error {
		id := c.String("run")
		if !backup.ValidRunID(id) {
			return cli.Exit(fmt.Sprintf("iklim: %q is not a run id (want e.g. 2026-11-21T10-15-04Z)", id), exitInvalid)
		}
		s, err := newSession(c)
		if err != nil {
			return err
		}
		defer s.close()
		return result(s.Rollback(c.Context, id, c.Bool("force"), playOptions(c)))
	},
}
