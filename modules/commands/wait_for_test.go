package commands_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/stretchr/testify/require"
)

// freePort returns a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

func TestWaitForSucceeds(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	open := l.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	present := filepath.Join(dir, "present")
	modtest.WriteFile(t, present, "", 0o644)

	tests := []struct {
		name string
		m    *commands.WaitFor
	}{
		{"open port", &commands.WaitFor{Port: open, MaxWait: "5s"}},
		{"open port on a host", &commands.WaitFor{Port: open, Host: "127.0.0.1", MaxWait: "5s"}},
		{"closed port, state absent", &commands.WaitFor{Port: freePort(t), State: "absent", MaxWait: "5s"}},
		{"path present", &commands.WaitFor{Path: present, MaxWait: "5s"}},
		{"path absent", &commands.WaitFor{Path: filepath.Join(dir, "nope"), State: "absent", MaxWait: "5s"}},
		{"cmd", &commands.WaitFor{Cmd: "test -d " + dir, MaxWait: "5s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.m.Validate())
			c := modtest.NewCountConn()
			ch, err := tc.m.Check(context.Background(), c)
			require.NoError(t, err)
			require.Nil(t, ch, "wait_for never changes anything")
			require.Equal(t, 1, c.Trips())
			require.Less(t, tc.m.Output()["elapsed"].(float64), 2.0)
		})
	}
}

func TestWaitForPathAppears(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ready")
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = os.WriteFile(p, nil, 0o644)
	}()
	m := &commands.WaitFor{Path: p, MaxWait: "10s", Interval: "50ms"}
	c := modtest.NewCountConn()
	start := time.Now()
	ch, err := m.Check(context.Background(), c)
	require.NoError(t, err)
	require.Nil(t, ch)
	took := time.Since(start)
	require.GreaterOrEqual(t, took, 300*time.Millisecond)
	require.Equal(t, 1, c.Trips(), "polling happens on the host, not per round trip")
}

func TestWaitForPortOpensLater(t *testing.T) {
	port := freePort(t)
	listening := make(chan net.Listener, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Error(err)
		}
		listening <- l
	}()
	m := &commands.WaitFor{Port: port, MaxWait: "10s", Interval: "100ms"}
	_, err := m.Check(context.Background(), modtest.NewCountConn())
	require.NoError(t, err)
	if l := <-listening; l != nil {
		l.Close()
	}
}

func TestWaitForTimeout(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	tests := []struct {
		name string
		m    *commands.WaitFor
		err  string
	}{
		{"port", &commands.WaitFor{Port: port, MaxWait: "500ms", Interval: "100ms"},
			"timed out after 500ms waiting for port " + strconv.Itoa(port) + " on 127.0.0.1"},
		{"path", &commands.WaitFor{Path: dir + "/never", MaxWait: "400ms", Interval: "100ms"},
			"timed out after 400ms waiting for " + dir + "/never"},
		{"path absent", &commands.WaitFor{Path: dir, State: "absent", MaxWait: "300ms"},
			"timed out after 300ms waiting for " + dir + " to be removed"},
		{"cmd with its last output", &commands.WaitFor{Cmd: "echo not yet; exit 1", MaxWait: "300ms", Interval: "100ms"},
			`timed out after 300ms waiting for cmd "echo not yet; exit 1" to succeed; last output: not yet`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := tc.m.Check(context.Background(), modtest.NewCountConn())
			require.EqualError(t, err, "wait_for: "+tc.err)
			require.Less(t, time.Since(start), 30*time.Second, "max_wait was not kept")
		})
	}
}

func TestWaitForCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	m := &commands.WaitFor{Path: "/no/such/path", MaxWait: "60s"}
	_, err := m.Check(ctx, modtest.NewCountConn())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 30*time.Second, "cancel stops the remote loop (max_wait is 60 s)")
}

func TestWaitForValidate(t *testing.T) {
	tests := []struct {
		name string
		m    commands.WaitFor
		err  string
	}{
		{"ok", commands.WaitFor{Port: 80}, ""},
		{"nothing", commands.WaitFor{}, "exactly one of port, path or cmd"},
		{"two", commands.WaitFor{Port: 80, Path: "/x"}, "exactly one"},
		{"port range", commands.WaitFor{Port: 70000}, "out of range"},
		{"host without port", commands.WaitFor{Path: "/x", Host: "db"}, "host is only for port"},
		{"bad host", commands.WaitFor{Port: 80, Host: "a b;rm"}, "not a host name"},
		{"bad state", commands.WaitFor{Path: "/x", State: "started"}, `state "started"`},
		{"state with cmd", commands.WaitFor{Cmd: "true", State: "absent"}, "state is not for cmd"},
		{"relative path", commands.WaitFor{Path: "x"}, "absolute path"},
		{"bad max_wait", commands.WaitFor{Port: 80, MaxWait: "soon"}, `max_wait "soon"`},
		{"bad interval", commands.WaitFor{Port: 80, Interval: "-1s"}, `interval "-1s"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
}
