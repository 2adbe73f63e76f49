package runner

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// TestBatchConnSendBatch runs commands in one batch script and checks that
// each gets what it would have got alone: stdout (with or without a final
// newline), stderr, exit status and env. A command that breaks the script (a
// syntax error) and the ones after it fall back to running alone.
func TestBatchConnSendBatch(t *testing.T) {
	conn := transport.NewLocalConn("h1")
	cmds := []struct {
		cmd string
		env map[string]string
	}{
		{cmd: "printf abc"},
		{cmd: "echo out; echo err >&2; exit 3"},
		{cmd: "exit 0"},
		{cmd: `printf '%s\n' "$FOO"`, env: map[string]string{"FOO": "it's a b"}},
		{cmd: "_f() { exit 4; }\n_f\necho never"},
		{cmd: "cat; echo \"stdin done\""},
		{cmd: "exec printf '%s\\n' exec'd"},
		{cmd: "if then fi"}, // breaks the whole script
		{cmd: "echo after"},
	}
	b := &batchConn{conn: conn, ctx: context.Background()}
	var reqs []*batchReq
	for i, c := range cmds {
		reqs = append(reqs, &batchReq{order: i, cmd: c.cmd, env: c.env, done: make(chan struct{})})
	}
	b.send(reqs)
	for i, c := range cmds {
		var opts []modules.RunOption
		if c.env != nil {
			opts = append(opts, modules.WithEnv(c.env))
		}
		want, err := conn.Run(context.Background(), c.cmd, opts...)
		require.NoError(t, err)
		require.NoError(t, reqs[i].err, c.cmd)
		require.Equal(t, want, reqs[i].res, c.cmd)
	}
}

// TestBatchConnOneRoundTripPerRound counts the commands that reach the
// connection when several checks run at once.
func TestBatchConnOneRoundTripPerRound(t *testing.T) {
	conn := &countConn{Conn: transport.NewLocalConn("h1")}
	b := &batchConn{conn: conn, ctx: context.Background()}
	const n = 5
	out := make([]string, n)
	done := make(chan struct{})
	b.active = n
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			v := &batchView{b: b, order: i}
			r1, err := v.Run(context.Background(), "echo first "+string(rune('a'+i)))
			require.NoError(t, err)
			r2, err := v.Run(context.Background(), "echo second")
			require.NoError(t, err)
			out[i] = r1.Stdout + r2.Stdout
			b.finished()
		}()
	}
	for range n {
		<-done
	}
	for i := range n {
		require.Equal(t, "first "+string(rune('a'+i))+"\nsecond\n", out[i])
	}
	require.Equal(t, 2, conn.runs, "two rounds of five commands")
}

type countConn struct {
	modules.Conn
	runs int
}

func (c *countConn) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	c.runs++ // rounds run one at a time
	return c.Conn.Run(ctx, cmd, opts...)
}

// TestBatchConnGates streams one script with two gated commands: the first
// gate opens, the second shuts, and the command behind it never runs.
func TestBatchConnGates(t *testing.T) {
	dir := t.TempDir()
	b := newBatchConn(context.Background(), transport.NewLocalConn("h1"))
	require.NotNil(t, b.stream)
	b.gates[1] = &gate{decided: make(chan struct{})}
	b.gates[3] = &gate{decided: make(chan struct{})}
	cmds := []string{"echo a", "echo b; touch " + dir + "/b", "echo c >&2; exit 2", "touch " + dir + "/d"}
	var reqs []*batchReq
	for i, c := range cmds {
		reqs = append(reqs, &batchReq{order: i, cmd: c, gated: b.gates[i] != nil, done: make(chan struct{})})
	}
	go b.send(reqs)

	<-reqs[0].done
	require.Equal(t, modules.Result{Stdout: "a\n"}, reqs[0].res)
	select {
	case <-reqs[1].done:
		t.Fatal("a gated command ran before its gate opened")
	case <-time.After(100 * time.Millisecond):
	}
	require.NoFileExists(t, dir+"/b")

	b.open(1, true)
	<-reqs[1].done
	<-reqs[2].done
	require.Equal(t, modules.Result{Stdout: "b\n"}, reqs[1].res)
	require.Equal(t, modules.Result{Stderr: "c\n", ExitCode: 2}, reqs[2].res)
	require.FileExists(t, dir+"/b")

	b.closeGates()
	<-reqs[3].done
	require.ErrorIs(t, reqs[3].err, errNotAhead)
	require.NoFileExists(t, dir+"/d")
}

// TestBatchConnRoundAtAGateWaitsBeforeItsSession: a round whose first
// command is gated opens no session until the gate is decided, and none
// at all when it shuts (a step before it changed the host).
func TestBatchConnRoundAtAGateWaitsBeforeItsSession(t *testing.T) {
	for _, open := range []bool{true, false} {
		dir := t.TempDir()
		local := transport.NewLocalConn("h1")
		conn := &countConn{Conn: local}
		var sessions atomic.Int32
		b := newBatchConn(context.Background(), conn)
		b.stream = func(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
			sessions.Add(1)
			return local.Stream(ctx, cmd, stdin, stdout, stderr)
		}
		b.gates[1] = &gate{decided: make(chan struct{})}
		b.gates[3] = &gate{decided: make(chan struct{})}
		reqs := []*batchReq{
			{order: 1, cmd: "touch " + dir + "/b", gated: true, done: make(chan struct{})},
			{order: 2, cmd: "echo c", done: make(chan struct{})},
			{order: 3, cmd: "touch " + dir + "/d", gated: true, done: make(chan struct{})},
		}
		go b.send(reqs)
		time.Sleep(100 * time.Millisecond)
		require.Zero(t, sessions.Load()+int32(conn.runs), "a session opened before the gate was decided")
		if open {
			b.open(1, true)
			<-reqs[1].done
			require.NoError(t, reqs[0].err)
			require.Equal(t, modules.Result{Stdout: "c\n"}, reqs[1].res)
			require.FileExists(t, dir+"/b")
			require.Equal(t, int32(1), sessions.Load(), "one session, waiting at the next gate")
			b.closeGates()
			<-reqs[2].done
			require.ErrorIs(t, reqs[2].err, errNotAhead)
		} else {
			b.closeGates()
			for _, r := range reqs {
				<-r.done
				require.ErrorIs(t, r.err, errNotAhead)
			}
			require.Zero(t, sessions.Load()+int32(conn.runs), "a session opened behind a shut gate")
		}
		require.NoFileExists(t, dir+"/d")
	}
}

// TestBatchConnProbeUnitLeavesNothingBehind: a batch's probes run in a
// function of the batch's own shell, not in a subshell; what they ran
// answers them as a probe script alone does, and the commands after them
// see none of their functions or variables.
func TestBatchConnProbeUnitLeavesNothingBehind(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(file, []byte("x\n"), 0o644))
	conn := transport.NewLocalConn("h1")
	ps := []remote.Probe{{Path: file, Sum: true}, {Path: filepath.Join(dir, "absent")}}
	want, wantErrs, err := remote.ProbeAlone(context.Background(), conn, ps)
	require.NoError(t, err)
	b := &batchConn{conn: conn, ctx: context.Background()}
	var reqs []*batchReq
	for i := range ps {
		reqs = append(reqs, &batchReq{order: i, probe: &ps[i], done: make(chan struct{})})
	}
	after := &batchReq{order: len(ps), done: make(chan struct{}),
		cmd: `echo "[$_p][$_n][$_c][$_ikh]"; for f in _ikprobe _ikt _iks _ikf _ikr; do command -v $f; done; exit 2`}
	reqs = append(reqs, after)
	b.send(reqs)
	for i := range ps {
		require.Equal(t, wantErrs[i], reqs[i].err)
		require.Equal(t, want[i], reqs[i].pres)
	}
	require.NoError(t, after.err)
	require.Equal(t, modules.Result{Stdout: "[][][][]\n", ExitCode: 2}, after.res)
}

// TestBatchConnGateDecidedBeforeItsScriptStarts: a gate decided after send
// looked at it but before its script could be told (a step before it was
// answered without a round trip) still reaches the script.
func TestBatchConnGateDecidedBeforeItsScriptStarts(t *testing.T) {
	for _, open := range []bool{true, false} {
		dir := t.TempDir()
		b := newBatchConn(context.Background(), transport.NewLocalConn("h1"))
		b.gates[1] = &gate{decided: make(chan struct{})}
		reqs := []*batchReq{
			{order: 0, cmd: "echo a", done: make(chan struct{})},
			{order: 1, cmd: "touch " + dir + "/b", gated: true, done: make(chan struct{})},
		}
		b.open(1, open)
		done := make(chan []*batchReq)
		go func() { done <- b.sendBatch(reqs) }()
		select {
		case left := <-done:
			if open {
				require.Empty(t, left)
			} else {
				require.Equal(t, reqs[1:], left, "the script ended at the shut gate")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the script waits for a gate decided before it started")
		}
		if open {
			require.FileExists(t, dir+"/b")
		} else {
			require.NoFileExists(t, dir+"/b")
		}
	}
}

// TestBatchConnCutTakesNoAnswer: once a batch is cut, a check that probes
// late neither takes an answer prefetched for it nor is recorded as asking:
// the apply that cut the batch asks what was recorded, and the rest is still
// in the answers for the next apply. (A check that took an answer between
// the two readings had its probe asked by neither, and the step after paid
// a round trip of its own.)
func TestBatchConnCutTakesNoAnswer(t *testing.T) {
	p := remote.Probe{Path: "/etc/hostname", Sum: true}
	answered := func() *probeAnswers {
		return &probeAnswers{groups: []probeGroup{{step: "c", probes: []remote.Probe{p}}},
			answers: map[remote.Probe]remote.ProbeResult{p: {}}}
	}
	b := newBatchConn(context.Background(), transport.NewLocalConn("h1"))
	b.pf, b.pfBefore = answered(), 10
	_, err := (&batchView{b: b, order: 2}).Probe(context.Background(), p)
	require.NoError(t, err, "before the cut the answer is taken")
	require.Equal(t, []remote.Probe{p}, b.asked[2])
	require.Empty(t, b.pf.left(""))

	b = newBatchConn(context.Background(), transport.NewLocalConn("h1"))
	b.pf, b.pfBefore = answered(), 10
	b.closeGates()
	_, err = (&batchView{b: b, order: 2}).Probe(context.Background(), p)
	require.ErrorIs(t, err, errNotAhead)
	require.Empty(t, b.asked[2])
	require.Equal(t, []probeGroup{{step: "c", probes: []remote.Probe{p}}}, b.pf.left(""), "the answer is left for the next apply")
}

// TestBatchConnPayloadGate: the finish's gate (finish.go) opens with a
// payload that the script reads into FinishPayloadVar before running the
// finish as a function; a script that dies before it leaves the finish to
// the run's end at once, without waiting for its gate. The finish is no
// check: delivering it wakes none.
func TestBatchConnPayloadGate(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "payload")
	b := newBatchConn(context.Background(), transport.NewLocalConn("h1"))
	b.gates[0] = &gate{decided: make(chan struct{})}
	b.gates[1] = &gate{decided: make(chan struct{})}
	check := &batchReq{order: 0, cmd: "echo a", gated: true, done: make(chan struct{})}
	fin := &batchReq{order: 1, cmd: `printf '%s' "$` + FinishPayloadVar + `" > ` + out + "; return 3", gated: true, payload: true, done: make(chan struct{})}
	go b.send([]*batchReq{check, fin})
	b.open(0, true)
	<-check.done
	require.Equal(t, modules.Result{Stdout: "a\n"}, check.res)
	b.openWith(1, "keep\n{\"a\": \"b c\\\\n\"}")
	<-fin.done
	require.NoError(t, fin.err)
	require.Equal(t, 3, fin.res.ExitCode)
	b2, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "keep\n{\"a\": \"b c\\\\n\"}\n", string(b2))
	require.Equal(t, 1, b.active, "one check woken")

	// The script dies before the finish's gate.
	b = newBatchConn(context.Background(), transport.NewLocalConn("h1"))
	b.gates[1] = &gate{decided: make(chan struct{})}
	dies := &batchReq{order: 0, cmd: "kill -9 $$", done: make(chan struct{})}
	fin = &batchReq{order: 1, cmd: "touch " + out + "2; return 0", gated: true, payload: true, done: make(chan struct{})}
	go b.send([]*batchReq{dies, fin})
	select {
	case <-fin.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the finish waits for a gate its script can no longer read")
	}
	require.Error(t, fin.err)
	<-dies.done
	require.Equal(t, 1, b.active, "one check woken")
	b.openWith(1, "keep\n")
	require.NoFileExists(t, out+"2")
}
