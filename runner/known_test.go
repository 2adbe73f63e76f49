package runner_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
)

// TestThenProbesOfAWrittenFileAreKnown: in a deploy where a copy rewrites
// app.conf and a line then edits it, the line goes in the copy's round
// trip (chain.go), and the probes that apply answers for the steps after
// it (a copy of the file beside it, a stat) are told from what was
// written, not read back (runner/known.go): the apply's output says so.
// The stat then reports the file as it is on the host.
func TestThenProbesOfAWrittenFileAreKnown(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{})
	conf := f.file("h1", "app.conf")
	rev := "1"
	var stat *files.Stat
	pb := &runner.Playbook{File: "known.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		step("config", func(*inventories.Host) modules.Module {
			c := "rev = " + rev + "\n"
			return &files.Copy{Dest: conf, Content: &c, Mode: "0640"}
		}),
		step("limit", func(*inventories.Host) modules.Module {
			return &files.Line{Path: conf, Line: "max = 100", Create: true}
		}),
		step("beside", func(*inventories.Host) modules.Module {
			c := "TOKEN=x\n"
			return &files.Copy{Dest: f.file("h1", "secret.env"), Content: &c, Mode: "0600"}
		}),
		step("stat", func(*inventories.Host) modules.Module {
			stat = &files.Stat{Path: conf}
			return stat
		}),
	}}}}
	f.runRecorded(pb, f.conn)

	rev = "2"
	cc := &countingConnector{Connector: f.conn, n: map[string]int{}}
	_, got := f.runRecorded(pb, cc)
	ch, ok := runner.StatusChanged, runner.StatusOK
	require.Equal(t, map[string]runner.Status{"config": ch, "limit": ch, "beside": ok, "stat": ok}, got)
	known := 0
	for _, out := range cc.outputs {
		known += strings.Count(out, "\nIKLIM-KNOWN\n")
	}
	require.Equal(t, 1, known, "the apply of the copy and the line (chained) told the probes after it")
	want := "rev = 2\nmax = 100\n"
	require.Equal(t, want, lstate(t, conf))
	sum := sha256.Sum256([]byte(want))
	out := stat.Output()
	require.Equal(t, hex.EncodeToString(sum[:]), out["sha256"])
	require.Equal(t, int64(len(want)), out["size"])
	require.Equal(t, "0640", out["mode"])
	fi, err := os.Stat(conf)
	require.NoError(t, err)
	require.Equal(t, int(fi.Sys().(*syscall.Stat_t).Uid), out["uid"])
	require.Equal(t, int(fi.Sys().(*syscall.Stat_t).Gid), out["gid"])
}
