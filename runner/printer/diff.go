package printer

import (
	"fmt"
	"strings"
)

// UnifiedDiff renders a small line diff of before and after. It is meant for
// config files shown in diff mode, not as a general diff tool: it trims the
// common head and tail and prints the differing middle.
func UnifiedDiff(label, before, after string) string {
	if before == after {
		return ""
	}
	a, b := splitLines(before), splitLines(after)
	head := 0
	for head < len(a) && head < len(b) && a[head] == b[head] {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && a[len(a)-1-tail] == b[len(b)-1-tail] {
		tail++
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "    --- before: %s\n    +++ after: %s\n", label, label)
	fmt.Fprintf(&sb, "    @@ -%d,%d +%d,%d @@\n", head+1, len(a)-head-tail, head+1, len(b)-head-tail)
	for _, l := range a[head : len(a)-tail] {
		sb.WriteString("    -" + l + "\n")
	}
	for _, l := range b[head : len(b)-tail] {
		sb.WriteString("    +" + l + "\n")
	}
	return sb.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
