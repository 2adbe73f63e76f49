package inventories

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseRefusesUnusableConnectionValues(t *testing.T) {
	cases := []struct {
		name, attr, want string
	}{
		{"empty address", `address = ""`, "Invalid address"},
		{"blank address", `address = " "`, "Invalid address"},
		{"address with port", `address = "127.0.0.1:2299"`, "Invalid address"},
		{"address with user", `address = "root@10.0.0.1"`, "Invalid address"},
		{"empty user", `user = ""`, "Invalid user"},
		{"user with space", `user = "a b"`, "Invalid user"},
		{"empty jump hop", `proxy_jump = "a,,b"`, "Invalid proxy_jump"},
		{"bad jump port", `proxy_jump = "h:notaport"`, "Invalid proxy_jump"},
		{"jump port out of range", `proxy_jump = "u@h:70000"`, "Invalid proxy_jump"},
		{"unclosed jump bracket", `proxy_jump = "[::1:22"`, "Invalid proxy_jump"},
		{"NUL in a string", `key = "/tmp/k\u0000x"`, "Invalid value"},
		{"NUL in a label", `labels = { a = "x\u0000" }`, "Invalid value"},
		{"NUL in a var key", `vars = { "a\u0000" = 1 }`, "Invalid value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := fmt.Sprintf("host \"h1\" {\n  %s\n}\n", tc.attr)
			inv, diags := Parse([]byte(src), "inv.hcl")
			require.Nil(t, inv)
			require.Equal(t, []string{"inv.hcl:2," + fmt.Sprint(strings.Index(tc.attr, "=")+5) + ": error: " + tc.want}, diagLines(diags), diags.Error())
		})
	}
	// The same values in defaults and groups are refused too, and good ones
	// pass.
	_, diags := Parse([]byte("defaults {\n  user = \"\"\n}\ngroup \"g\" {\n  proxy_jump = \",\"\n}\n"), "inv.hcl")
	require.Equal(t, []string{"inv.hcl:2,10: error: Invalid user", "inv.hcl:5,16: error: Invalid proxy_jump"}, diagLines(diags))
	inv, diags := Parse([]byte(`host "h1" {
  address    = "::1"
  user       = "deploy"
  proxy_jump = "jump@[2001:db8::1]:2222,bastion:22,other"
}
host "h2" { proxy_jump = "" }
`), "inv.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	require.Equal(t, "::1", inv.Hosts[0].Address)
}

func TestParseRefusesNULInNames(t *testing.T) {
	_, diags := Parse([]byte("host \"a\\u0000b\" {}\ngroup \"g\\u0000\" {}\n"), "inv.hcl")
	require.Equal(t, []string{"inv.hcl:1,6: error: Invalid host name", "inv.hcl:2,7: error: Invalid group name"}, diagLines(diags))
	_, diags = Parse([]byte("host \"a\" {}\n\x00"), "inv.hcl")
	require.Equal(t, []string{"inv.hcl:2,1: error: NUL byte in source"}, diagLines(diags))
}

func TestCheckSourceRefusesWhatWouldOverflowTheStack(t *testing.T) {
	const n = 100000
	cases := map[string]string{
		"parentheses":     "a = " + strings.Repeat("(", n) + "1" + strings.Repeat(")", n) + "\n",
		"lists":           "a = " + strings.Repeat("[", n) + strings.Repeat("]", n) + "\n",
		"interpolations":  "a = " + strings.Repeat(`"${`, n) + "1" + strings.Repeat(`}"`, n) + "\n",
		"unary":           "a = " + strings.Repeat("!", n) + "true\n",
		"negation":        "a = " + strings.Repeat("- ", n) + "1\n",
		"binary chain":    "a = 1" + strings.Repeat(" + 1", n) + "\n",
		"chain in parens": "a = (1" + strings.Repeat("\n+ 1", n) + ")\n",
		"ternary chain":   "a = " + strings.Repeat("true ? 1 : ", n) + "1\n",
		"directives":      "a = <<EOT\n" + strings.Repeat("%{ if true }", n) + strings.Repeat("%{ endif }", n) + "\nEOT\n",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			src = "host \"h\" {}\n" + src
			inv, diags := Parse([]byte(src), "deep.hcl")
			require.Nil(t, inv)
			require.Len(t, diags, 1)
			require.Regexp(t, `^deep\.hcl:\d+,\d+: error: (Nesting too deep|Expression too long)$`, diagLines(diags)[0])
		})
	}
	// Text that only looks deep is not refused: strings, heredocs, comments,
	// and long lists, objects and blocks.
	long := "host \"h\" {\n" +
		"  vars = {\n" +
		"    s = \"" + strings.Repeat("((((!!!!-", 1000) + "\"\n" +
		"    h = <<-EOT\n" + strings.Repeat("((((- - -{[", 1000) + "\n    EOT\n" +
		"    l = [" + strings.Repeat("-1, ", 5000) + "]\n" +
		"    e = \"$${" + strings.Repeat("(", 1000) + "\"\n" +
		"    # " + strings.Repeat("(", 1000) + "\n" +
		"    /* " + strings.Repeat("[", 1000) + " */\n" +
		strings.Repeat("    k-a-b = 1 - 2 - 3\n", 1000) +
		"  }\n}\n"
	require.Empty(t, CheckSource([]byte(long), "long.hcl"))
	_, diags := Parse([]byte(long), "long.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
}

func TestCheckTemplate(t *testing.T) {
	require.Empty(t, CheckTemplate([]byte("a ${x} %{ if y }b%{ endif } (((( "+strings.Repeat("- ", 2000)), "t.tftpl"))
	diags := CheckTemplate([]byte("line\n"+strings.Repeat("%{ for x in y }", 200)), "t.tftpl")
	require.Equal(t, []string{"t.tftpl:2,1906: error: Nesting too deep"}, diagLines(diags))
}

func TestReadFileRefusesWhatIsNotASmallRegularFile(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.hcl")
	require.NoError(t, os.WriteFile(ok, []byte("x"), 0o644))
	b, err := ReadFile(ok)
	require.NoError(t, err)
	require.Equal(t, "x", string(b))

	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(MaxFileSize+1)) // sparse: costs no disk
	require.NoError(t, f.Close())
	for path, want := range map[string]string{
		"/dev/zero":                   "/dev/zero is not a regular file",
		fifo:                          fifo + " is not a regular file",
		dir:                           dir + " is a directory",
		big:                           big + " is larger than 16 MiB",
		filepath.Join(dir, "missing"): "no such file",
	} {
		done := make(chan error, 1)
		go func() { _, err := ReadFile(path); done <- err }()
		select {
		case err := <-done:
			require.ErrorContains(t, err, want)
		case <-time.After(10 * time.Second):
			t.Fatalf("ReadFile(%s) blocked", path)
		}
	}
	_, diags := Load("/dev/zero")
	require.Contains(t, diags.Error(), "Cannot read inventory file /dev/zero: /dev/zero is not a regular file")
}

// TestLargeInventoriesAreLinear adds n and 4n hosts and looks every one up;
// the larger must cost well under the 16 times a quadratic step would.
// Cost is the process's CPU time, not wall time: a busy machine stretches
// wall time by whatever the other processes take (CI saw 12x from that
// alone), but not the CPU this work uses. Parsed inventories share the
// index (checked below); HCL's own parsing is not measured.
func TestLargeInventoriesAreLinear(t *testing.T) {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	build := func(names []string) time.Duration {
		start := cpu()
		inv := New()
		for i, name := range names {
			g := []string{"even"}
			if i%2 == 1 {
				g = []string{"odd"}
			}
			require.NoError(t, inv.Add(&Host{Name: name, Groups: g}))
		}
		for _, name := range names {
			if _, ok := inv.Host(name); !ok {
				t.Fatalf("%s not found", name)
			}
		}
		return cpu() - start
	}
	// The cheapest of three runs of each size.
	fastest := func(n int) time.Duration {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("h%d", i)
		}
		best := time.Duration(1<<63 - 1)
		for range 3 {
			runtime.GC()
			best = min(best, build(names))
		}
		return best
	}
	small, large := fastest(20000), fastest(80000)
	t.Logf("CPU time: 20000 hosts %v, 80000 hosts %v", small, large)
	require.Less(t, large, 10*small, "4x the hosts cost %v against %v", large, small)

	var sb strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&sb, "host \"h%d\" {}\n", i)
	}
	inv, diags := Parse([]byte(sb.String()), "big.hcl")
	require.False(t, diags.HasErrors())
	require.Len(t, inv.byName, 1000, "Parse indexes its hosts")
	h, ok := inv.Host("h999")
	require.True(t, ok)
	require.Same(t, inv.Hosts[999], h)
	_, ok = inv.Host("h1000")
	require.False(t, ok)
	// A host appended by hand is still found.
	inv.Hosts = append(inv.Hosts, &Host{Name: "manual"})
	_, ok = inv.Host("manual")
	require.True(t, ok)
}

// TestCheckSourceCountsPerLine: a newline after a comment ends the
// expression, so many short lines with comments are not one long chain.
func TestCheckSourceCountsPerLine(t *testing.T) {
	src := "host \"h\" {\n  vars = {\n" + strings.Repeat("    a-b-c = 1 - 2 # - - -\n", 300) + "  }\n}\n"
	require.Empty(t, CheckSource([]byte(src), "c.hcl"))
	src = strings.ReplaceAll(src, "# - - -", "// - - -")
	require.Empty(t, CheckSource([]byte(src), "c.hcl"))
}
