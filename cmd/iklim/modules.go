package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/agext/levenshtein"
	"github.com/iklimco/iklim/modules"
	"github.com/urfave/cli/v2"
)

var modulesCommand = &cli.Command{
	Name:      "modules",
	Usage:     "list modules, or show one module's arguments",
	ArgsUsage: "[NAME]",
	Action: func(c *cli.Context) error {
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		defer w.Flush()
		if c.NArg() == 0 {
			for _, m := range modules.All() {
				fmt.Fprintf(w, "%s\t%s\n", m.Name, m.Doc)
			}
			return nil
		}
		name := c.Args().First()
		info, ok := modules.Lookup(name)
		if !ok {
			return cli.Exit(fmt.Sprintf("unknown module %q%s", name, didYouMean(name, modules.Names())), exitInvalid)
		}
		fmt.Fprintf(w, "%s: %s\n\n", info.Name, info.Doc)
		defer func() {
			if info.Example != "" {
				w.Flush()
				fmt.Fprintf(c.App.Writer, "\nEXAMPLE\n%s\n", info.Example)
			}
		}()
		fmt.Fprintln(w, "ARGUMENT\tTYPE\tREQUIRED\tDESCRIPTION")
		for _, a := range info.Args() {
			req := "no"
			if a.Required {
				req = "yes"
			}
			doc := a.Doc
			if a.Sensitive {
				doc += " (sensitive)"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", a.Name, a.Type, req, doc)
		}
		return nil
	},
}

// didYouMean suggests the closest name, for typos.
func didYouMean(name string, names []string) string {
	best, bestD := "", 3
	if len(name) > 64 {
		return "" // the distance costs the product of the lengths
	}
	for _, n := range names {
		if l := len(n) - len(name); l >= bestD || -l >= bestD {
			continue
		}
		if d := levenshtein.Distance(name, n, nil); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}
