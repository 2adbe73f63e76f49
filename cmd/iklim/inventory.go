package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/iklimco/iklim/inventories"
	"github.com/urfave/cli/v2"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

var inventoryCommand = &cli.Command{
	Name:  "inventory",
	Usage: "show the inventory: its group tree (--graph) or one host's resolved settings and where each came from (--host)",
	Flags: []cli.Flag{inventoryFlag,
		&cli.BoolFlag{Name: "graph", Usage: "print the groups as a tree with their hosts (the default)"},
		&cli.StringFlag{Name: "host", Usage: "print `HOST`'s resolved connection settings, labels and vars, each with its origin"},
	},
	ArgsUsage: "[GROUP]",
	Action: func(c *cli.Context) error {
		path := c.String("inventory")
		parser := hclparse.NewParser()
		inv, diags := inventories.LoadWith(parser, path)
		if diags.HasErrors() {
			return printDiags(diags, parser.Files())
		}
		if name := c.String("host"); name != "" {
			if c.Bool("graph") || c.NArg() > 0 {
				return cli.Exit("usage: iklim inventory --host HOST (no GROUP, no --graph)", exitInvalid)
			}
			h, ok := inv.Host(name)
			if !ok {
				names := make([]string, len(inv.Hosts))
				for i, h := range inv.Hosts {
					names[i] = h.Name
				}
				return cli.Exit(fmt.Sprintf("iklim: host %q is not in the inventory %s%s", name, path, didYouMean(name, names)), exitInvalid)
			}
			return printHost(c.App.Writer, h, inv.Origins(h.Name))
		}
		root := inventories.AllGroup
		if c.NArg() > 0 {
			root = c.Args().First()
			if _, ok := inv.Groups[root]; !ok && root != inventories.AllGroup {
				return cli.Exit(fmt.Sprintf("iklim: no group %q in the inventory %s%s", root, path, didYouMean(root, groupNames(inv))), exitInvalid)
			}
		}
		printGraph(c.App.Writer, inv, root)
		return nil
	},
}

func groupNames(inv *inventories.Inventory) []string {
	names := make([]string, 0, len(inv.Groups))
	for n := range inv.Groups {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// printGraph prints group root as ansible-inventory --graph does: @group
// lines, children before hosts, each level indented by "  |".
func printGraph(w io.Writer, inv *inventories.Inventory, root string) {
	if root != inventories.AllGroup {
		printGroup(w, inv, root, 0)
		return
	}
	fmt.Fprintf(w, "@%s:\n", root)
	// Top-level groups are those no other group lists as a child.
	child := map[string]bool{}
	for _, g := range inv.Groups {
		for _, c := range g.Children {
			child[c] = true
		}
	}
	for _, n := range groupNames(inv) {
		if !child[n] {
			printGroup(w, inv, n, 1)
		}
	}
	var ungrouped []string
	for _, h := range inv.Hosts {
		if len(h.Groups) <= 1 { // only "all"
			ungrouped = append(ungrouped, h.Name)
		}
	}
	if len(ungrouped) > 0 {
		fmt.Fprintf(w, "%s@ungrouped:\n", indent(1))
		for _, h := range ungrouped {
			fmt.Fprintf(w, "%s%s\n", indent(2), h)
		}
	}
}

func printGroup(w io.Writer, inv *inventories.Inventory, name string, depth int) {
	fmt.Fprintf(w, "%s@%s:\n", indent(depth), name)
	g := inv.Groups[name]
	children := slices.Clone(g.Children)
	sort.Strings(children)
	for _, c := range children {
		printGroup(w, inv, c, depth+1)
	}
	for _, h := range g.Hosts {
		fmt.Fprintf(w, "%s%s\n", indent(depth+1), h)
	}
}

func indent(depth int) string {
	if depth == 0 {
		return ""
	}
	return strings.Repeat("  |", depth-1) + "  |--"
}

// printHost prints one host's settings after defaults, groups and the host
// block are folded in, each with the block that set it (or "default").
func printHost(w io.Writer, h *inventories.Host, origins map[string]string) error {
	from := func(key string) string {
		if o, ok := origins[key]; ok {
			return o
		}
		return "default"
	}
	fmt.Fprintf(w, "host %q\n", h.Name)
	fmt.Fprintf(w, "  groups: %s\n", strings.Join(h.Groups, ", "))
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	port := "22"
	if h.Port != 0 {
		port = fmt.Sprint(h.Port)
	}
	timeout := "0 (the SSH default)"
	if h.ConnectTimeout != 0 {
		timeout = q(h.ConnectTimeout.String())
	}
	rows := [][2]string{
		{"address", q(h.Address)}, {"port", port}, {"user", q(h.User)}, {"key", q(h.Key)},
		{"known_hosts", q(h.KnownHosts)}, {"trust_on_first_use", fmt.Sprint(h.TrustOnFirstUse)},
		{"proxy_jump", q(h.ProxyJump)}, {"become", fmt.Sprint(h.Become)}, {"become_user", q(h.BecomeUser)},
		{"backup_root", q(h.BackupRoot)}, {"connect_timeout", timeout}, {"local", fmt.Sprint(h.Local)},
	}
	fmt.Fprintln(w, "  settings:")
	for _, r := range rows {
		fmt.Fprintf(w, "    %-18s = %-30s # %s\n", r[0], r[1], from(r[0]))
	}
	if len(h.Labels) > 0 {
		fmt.Fprintln(w, "  labels:")
		for _, k := range sortedKeys(h.Labels) {
			fmt.Fprintf(w, "    %-18s = %-30q # %s\n", k, h.Labels[k], from("labels."+k))
		}
	}
	if len(h.Vars) > 0 {
		fmt.Fprintln(w, "  vars:")
		for _, k := range sortedKeys(h.Vars) {
			fmt.Fprintf(w, "    %-18s = %-30s # %s\n", k, ctyString(h.Vars[k]), from("vars."+k))
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ctyString prints a value as JSON, which reads as HCL for these values.
func ctyString(v cty.Value) string {
	if !v.IsWhollyKnown() {
		return "(unknown)"
	}
	b, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		return v.GoString()
	}
	return string(b)
}
