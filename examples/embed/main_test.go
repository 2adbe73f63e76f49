package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/stretchr/testify/require"
)

// TestEmbedRunsAgainstRealSSHD runs the example program twice against a real
// sshd: the first run creates the files, the second changes nothing.
func TestEmbedRunsAgainstRealSSHD(t *testing.T) {
	srv := sshtest.Start(t)
	inv := srv.WriteInventory(t, 3)
	// The test sshd's login user is not root: give it a directory it may write.
	base, err := os.MkdirTemp("", "iklim-embed-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o777))
	dir := filepath.Join(base, "managed")

	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-i", inv, "-dir", dir, "-hosts", "h001"}, &out), out.String())
	require.Contains(t, out.String(), "changed=2")
	var got []byte
	got, err = os.ReadFile(filepath.Join(dir, "motd"))
	require.NoError(t, err)
	require.Equal(t, "managed by iklim for h001\n", string(got))
	require.Contains(t, out.String(), fmt.Sprintf("size=%d", len(got)))

	out.Reset()
	require.NoError(t, run(context.Background(), []string{"-i", inv, "-dir", dir, "-hosts", "h001"}, &out), out.String())
	require.Contains(t, out.String(), "changed=0")
	require.NotContains(t, out.String(), "changed=1")
	require.Contains(t, out.String(), "events: 2 step results, 0 warnings")

	// With -rollback the program undoes its own run: what it created is gone.
	other := filepath.Join(base, "rolled-back")
	out.Reset()
	require.NoError(t, run(context.Background(), []string{"-i", inv, "-dir", other, "-hosts", "h001", "-rollback"}, &out), out.String())
	require.Contains(t, out.String(), "changed=2")
	require.Contains(t, out.String(), "roll back run")
	require.NoDirExists(t, other)
}

// TestEmbedOwnModule runs greeting.hcl, whose greeting step uses the
// program's own module, through the registry the program built: the file is
// written once and a second run changes nothing.
func TestEmbedOwnModule(t *testing.T) {
	srv := sshtest.Start(t)
	inv := srv.WriteInventory(t, 3)
	base, err := os.MkdirTemp("", "iklim-embed-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o777))
	dir := filepath.Join(base, "greeted")
	args := []string{"-i", inv, "-dir", dir, "-hosts", "h001", "-playbook", "greeting.hcl", "-e", "dir=" + dir}

	var out bytes.Buffer
	require.NoError(t, run(context.Background(), args, &out), out.String())
	require.Contains(t, out.String(), "changed=2", "the playbook: directory and greeting")
	require.Contains(t, out.String(), "changed=1", "the Go-built steps: motd only, the directory was there")
	got, err := os.ReadFile(filepath.Join(dir, "greeting-h001"))
	require.NoError(t, err)
	require.Equal(t, "hello, h001\n", string(got))
	require.NoFileExists(t, filepath.Join(dir, "greeting-h002"), "-hosts limits the playbook too")

	out.Reset()
	require.NoError(t, run(context.Background(), args, &out), out.String())
	require.Contains(t, out.String(), "changed=0")
	require.NotContains(t, out.String(), "changed=1")
	require.NotContains(t, out.String(), "changed=2")
}
