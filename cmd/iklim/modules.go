package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

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
	for _, n := range names {
		if d := editDistance(name, n); d < bestD || (strings.HasPrefix(n, name) && bestD > 1) {
			best, bestD = n, min(d, 1)
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
