package main

import (
	"errors"
	"fmt"
	"sync"

	"github.com/iklimco/iklim/runner/lock"
	"github.com/urfave/cli/v2"
)

var lockCommand = &cli.Command{
	Name:  "lock",
	Usage: "show or release deploy locks",
	Subcommands: []*cli.Command{
		{
			Name:      "status",
			Usage:     "show who holds deploy locks on the inventory's hosts",
			ArgsUsage: "[NAME]",
			Flags:     []cli.Flag{inventoryFlag, limitFlag},
			Action:    lockStatus,
		},
		{
			Name:      "release",
			Usage:     "remove a deploy lock (a live holder's lock only with --force)",
			ArgsUsage: "NAME",
			Flags: []cli.Flag{inventoryFlag,
				&cli.StringFlag{Name: "host", Required: true, Usage: "inventory `HOST` that holds the lock"},
				&cli.BoolFlag{Name: "force", Usage: "release even while the holder heartbeats"}},
			Action: lockRelease,
		},
	},
}

func lockStatus(c *cli.Context) error {
	if name := c.Args().First(); name != "" {
		if err := lock.CheckName(name); err != nil {
			return cli.Exit("iklim: "+err.Error(), exitInvalid)
		}
	}
	s, err := newSession(c)
	if err != nil {
		return err
	}
	defer s.close()
	hosts, err := s.hosts(c.String("limit"))
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	found := 0
	for _, h := range hosts {
		wg.Go(func() {
			conn, err := s.Connector().Connect(c.Context, h)
			var holders []*lock.Holder
			if err == nil {
				holders, err = lock.List(c.Context, conn)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
				return
			}
			for _, hd := range holders {
				if name := c.Args().First(); name != "" && hd.Name != name {
					continue
				}
				found++
				fmt.Fprintf(c.App.Writer, "%s on %s: held by %s\n", hd.Name, h.Name, hd)
			}
		})
	}
	wg.Wait()
	if found == 0 {
		fmt.Fprintln(c.App.Writer, "no lock is held")
	}
	if len(errs) > 0 {
		return cli.Exit("iklim: "+errors.Join(errs...).Error(), exitUnreachable)
	}
	return nil
}

func lockRelease(c *cli.Context) error {
	name := c.Args().First()
	if name == "" {
		return cli.Exit("usage: iklim lock release --host HOST NAME", exitInvalid)
	}
	if err := lock.CheckName(name); err != nil {
		return cli.Exit("iklim: "+err.Error(), exitInvalid)
	}
	s, err := newSession(c)
	if err != nil {
		return err
	}
	defer s.close()
	h, ok := s.inv.Host(c.String("host"))
	if !ok {
		return cli.Exit(fmt.Sprintf("iklim: host %q is not in the inventory", c.String("host")), exitInvalid)
	}
	conn, err := s.Connector().Connect(c.Context, h)
	if err != nil {
		return err
	}
	holder, err := lock.Release(c.Context, conn, name, c.Bool("force"))
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "released %s on %s (was held by %s)\n", name, h.Name, holder)
	return nil
}
