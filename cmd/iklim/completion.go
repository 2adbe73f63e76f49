package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/iklimco/iklim/inventories"
	"github.com/urfave/cli/v2"
)

// The completion scripts ask `iklim __complete WORD... CURRENT` for the
// candidates, one a line, so that commands, flags, module names and the
// inventory's hosts and groups are always those of the binary and the
// inventory at hand. No candidate means: complete file names.
const bashCompletion = `# bash completion for iklim; load with: source <(iklim completion bash)
_iklim() {
	local cur="${COMP_WORDS[COMP_CWORD]}" IFS=$'\n'
	COMPREPLY=($(compgen -W "$(iklim __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)" -- "$cur"))
}
complete -o default -o bashdefault -F _iklim iklim
`

const zshCompletion = `#compdef iklim
# zsh completion for iklim; load with: source <(iklim completion zsh)
_iklim() {
	local -a cands
	cands=("${(@f)$(iklim __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
	if (( ${#cands} )) && [[ -n "${cands[1]}" ]]; then
		compadd -Q -- "${cands[@]}"
	else
		_files
	fi
}
if (( $+functions[compdef] )); then compdef _iklim iklim; fi
`

const fishCompletion = `# fish completion for iklim; load with: iklim completion fish | source
function __iklim_complete
	set -l words (commandline -opc)
	set -l cur (commandline -ct)
	set -l out (iklim __complete $words[2..-1] "$cur" 2>/dev/null)
	if test (count $out) -eq 0
		__fish_complete_path "$cur"
	else
		printf '%s\n' $out
	end
end
complete -c iklim -f -a '(__iklim_complete)'
`

var completionCommand = &cli.Command{
	Name:      "completion",
	Usage:     "print a completion script: source <(iklim completion bash), iklim completion fish | source",
	ArgsUsage: "bash|zsh|fish",
	Action: func(c *cli.Context) error {
		scripts := map[string]string{"bash": bashCompletion, "zsh": zshCompletion, "fish": fishCompletion}
		s, ok := scripts[c.Args().First()]
		if c.NArg() != 1 || !ok {
			return cli.Exit("usage: iklim completion bash|zsh|fish", exitInvalid)
		}
		_, err := fmt.Fprint(c.App.Writer, s)
		return err
	},
}

// completeCommand prints the candidates for the last of its arguments,
// given the words before it; the completion scripts call it.
var completeCommand = &cli.Command{
	Name:            "__complete",
	Hidden:          true,
	SkipFlagParsing: true,
	Action: func(c *cli.Context) error {
		words := c.Args().Slice()
		if len(words) == 0 {
			words = []string{""}
		}
		for _, s := range completions(c.App, words) {
			fmt.Fprintln(c.App.Writer, s)
		}
		return nil
	},
}

// completions returns the candidates for the last word, which may be empty.
func completions(app *cli.App, words []string) []string {
	cur, prev := words[len(words)-1], words[:len(words)-1]
	var cmd *cli.Command
	list := visible(app.Commands)
	flags := app.Flags
	inventory := os.Getenv("IKLIM_INVENTORY")
	if inventory == "" {
		inventory = inventoryFlag.Value
	}
	var pending cli.Flag // a flag whose value is the next word
	positional := 0
	for _, w := range prev {
		if pending != nil {
			if pending.Names()[0] == "inventory" {
				inventory = w
			}
			pending = nil
			continue
		}
		if w == "--" {
			positional++ // everything after it is positional; good enough here
			continue
		}
		if strings.HasPrefix(w, "-") && len(w) > 1 {
			name, val, hasVal := strings.Cut(strings.TrimLeft(w, "-"), "=")
			f := findFlag(flags, name)
			if f != nil && f.Names()[0] == "inventory" && hasVal {
				inventory = val
			}
			if f != nil && !hasVal {
				if dg, ok := f.(cli.DocGenerationFlag); ok && dg.TakesValue() {
					pending = f
				}
			}
			continue
		}
		if sub := findCommand(list, w); sub != nil && positional == 0 {
			cmd, list, flags = sub, visible(sub.Subcommands), sub.Flags
			continue
		}
		positional++
	}
	var cands []string
	switch {
	case pending != nil:
		switch pending.Names()[0] {
		case "limit":
			return patternCandidates(inventory, cur)
		case "host":
			return filter(hostNames(inventory), cur)
		case "output":
			cands = []string{"text", "json"}
		}
	case strings.HasPrefix(cur, "-"):
		for _, f := range flags {
			for _, n := range f.Names() {
				if len(n) == 1 {
					cands = append(cands, "-"+n)
				} else {
					cands = append(cands, "--"+n)
				}
			}
		}
		cands = append(cands, "--help")
	case len(list) > 0 && positional == 0:
		for _, c := range list {
			cands = append(cands, c.Name)
		}
	case cmd != nil && cmd.Name == "modules" && positional == 0:
		cands = moduleRegistry(app).Names()
	case cmd != nil && cmd.Name == "completion" && positional == 0:
		cands = []string{"bash", "zsh", "fish"}
	case cmd != nil && cmd.Name == "inventory" && positional == 0:
		inv, _ := inventories.Load(inventory)
		if inv != nil {
			cands = groupNames(inv)
		}
	}
	return filter(cands, cur)
}

func visible(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, c := range cmds {
		if !c.Hidden {
			out = append(out, c)
		}
	}
	return out
}

func filter(cands []string, prefix string) []string {
	var out []string
	for _, c := range cands {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// hostNames lists the inventory's hosts; none when it does not load.
func hostNames(path string) []string {
	inv, diags := inventories.Load(path)
	if inv == nil || diags.HasErrors() {
		return nil
	}
	names := make([]string, len(inv.Hosts))
	for i, h := range inv.Hosts {
		names[i] = h.Name
	}
	return names
}

// patternCandidates completes the last term of a host pattern (a:b, a:&b,
// a:!b) with the inventory's hosts and groups.
func patternCandidates(path, cur string) []string {
	inv, diags := inventories.Load(path)
	if inv == nil || diags.HasErrors() {
		return nil
	}
	i := strings.LastIndexAny(cur, ":,&!")
	head, term := cur[:i+1], cur[i+1:]
	names := append(hostNames(path), groupNames(inv)...)
	names = append(names, inventories.AllGroup)
	var out []string
	for _, n := range filter(names, term) {
		out = append(out, head+n)
	}
	return out
}
