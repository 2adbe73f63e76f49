package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/agext/levenshtein"
	"github.com/iklimco/iklim/modules"
	"github.com/urfave/cli/v2"
)

// modulesDoc is the command that regenerates docs/modules.md, named in the
// file and in the test that finds it stale.
const modulesDoc = "go run ./cmd/iklim modules --markdown > docs/modules.md"

var modulesCommand = &cli.Command{
	Name:      "modules",
	Usage:     "list modules, or show one module's arguments, outputs, support and example",
	ArgsUsage: "[NAME]",
	Flags: []cli.Flag{&cli.BoolFlag{Name: "markdown",
		Usage: "print every module's documentation as Markdown (docs/modules.md)"}},
	Action: func(c *cli.Context) error {
		reg := moduleRegistry(c.App)
		if c.Bool("markdown") {
			return writeModulesMarkdown(c.App.Writer, reg.All())
		}
		if c.NArg() == 0 {
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			for _, m := range reg.All() {
				fmt.Fprintf(w, "%s\t%s\n", m.Name, m.Doc)
			}
			return w.Flush()
		}
		name := c.Args().First()
		info, ok := reg.Lookup(name)
		if !ok {
			return cli.Exit(fmt.Sprintf("unknown module %q%s", name, didYouMean(name, reg.Names())), exitInvalid)
		}
		return writeModuleText(c.App.Writer, info)
	},
}

// writeModuleText is `iklim modules NAME`: arguments, outputs, what the
// module supports and its example.
func writeModuleText(out io.Writer, info modules.Info) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "%s: %s\n\n", info.Name, info.Doc)
	fmt.Fprintln(w, "ARGUMENT\tTYPE\tREQUIRED\tDESCRIPTION")
	for _, a := range info.Args() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", a.Name, a.Type, yesNo(a.Required), argDoc(a))
	}
	fmt.Fprintln(w, "\nOUTPUT (register)\tTYPE\tDESCRIPTION")
	for _, o := range outputs(info) {
		fmt.Fprintf(w, "%s\t%s\t%s\n", o.Name, o.Type, o.Doc)
	}
	s := info.Supports()
	fmt.Fprintf(w, "\nCHECK MODE\t%s\nDIFF\t%s\nROLLBACK\t%s\n", s.Check, s.Diff, s.Rollback)
	if err := w.Flush(); err != nil {
		return err
	}
	if info.Example != "" {
		_, err := fmt.Fprintf(out, "\nEXAMPLE\n%s\n", info.Example)
		return err
	}
	return nil
}

// writeModulesMarkdown writes docs/modules.md from the registry.
func writeModulesMarkdown(out io.Writer, infos []modules.Info) error {
	var b strings.Builder
	b.WriteString("# iklim modules\n\n")
	b.WriteString("<!-- Generated from the module registry; do not edit. Regenerate: " + modulesDoc + " -->\n\n")
	b.WriteString("Every module supports check mode (`--check`: only its Check runs) and is shown by `iklim modules NAME`. " +
		"Besides its arguments, every step takes the meta-arguments `when`, `register`, `run_once`, `delegate`, `barrier`, `tags`, `timeout` and `ignore_errors`. " +
		"A step's `register` gets the outputs listed, and always `changed`.\n\n")
	b.WriteString("| module | description |\n| --- | --- |\n")
	for _, i := range infos {
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s |\n", i.Name, i.Name, mdCell(i.Doc))
	}
	for _, i := range infos {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", i.Name, i.Doc)
		s := i.Supports()
		fmt.Fprintf(&b, "- **Check mode:** %s\n- **Diff:** %s\n- **Rollback:** %s\n\n", s.Check, s.Diff, s.Rollback)
		b.WriteString("| argument | type | required | description |\n| --- | --- | --- | --- |\n")
		for _, a := range i.Args() {
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", a.Name, a.Type, yesNo(a.Required), mdCell(argDoc(a)))
		}
		b.WriteString("\n| output | type | description |\n| --- | --- | --- |\n")
		for _, o := range outputs(i) {
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", o.Name, o.Type, mdCell(o.Doc))
		}
		if i.Example != "" {
			fmt.Fprintf(&b, "\n```hcl\n%s\n```\n", i.Example)
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// outputs is what a module's register gets: its own outputs and changed.
func outputs(i modules.Info) []modules.Output {
	return append(append([]modules.Output(nil), i.Outputs...), modules.Changed)
}

func argDoc(a modules.Arg) string {
	if a.Sensitive {
		return a.Doc + " (sensitive)"
	}
	return a.Doc
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// mdCell escapes text for a Markdown table cell.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;").Replace(s)
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
