package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/iklimco/iklim/modules"
)

// LocalConn runs commands on the control machine. Delegated steps use it,
// and so can Go programs and tests that need a real Conn without SSH.
type LocalConn struct {
	name string
}

// NewLocalConn returns a Conn to the control machine that reports itself as
// host name.
func NewLocalConn(name string) *LocalConn { return &LocalConn{name: name} }

// Host implements modules.Conn.
func (l *LocalConn) Host() string { return l.name }

// Run implements modules.Conn. On cancel the command's process group gets
// SIGINT, then SIGKILL if it has not ended within two seconds.
func (l *LocalConn) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	o := modules.ApplyRunOptions(opts)
	c := exec.Command("/bin/sh", "-c", cmd)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if len(o.Env) > 0 {
		c.Env = os.Environ()
		for k, v := range o.Env {
			c.Env = append(c.Env, k+"="+v)
		}
	}
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr, c.Stdin = &stdout, &stderr, o.Stdin
	if err := c.Start(); err != nil {
		return modules.Result{}, fmt.Errorf("%s: start: %w", l.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-done
		}
		return modules.Result{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: -1}, ctx.Err()
	}
	res := modules.Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
	default:
		return res, fmt.Errorf("%s: %w", l.name, err)
	}
	return res, nil
}

// Upload implements modules.Conn: write to a temp file beside path, then
// rename, so readers never see a half-written file.
func (l *LocalConn) Upload(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".iklim-*")
	if err != nil {
		return fmt.Errorf("%s: upload %s: %w", l.name, path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := io.Copy(tmp, readerWithContext(ctx, r)); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: upload %s: %w", l.name, path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: upload %s: %w", l.name, path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: upload %s: %w", l.name, path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("%s: upload %s: %w", l.name, path, err)
	}
	return nil
}

// Download implements modules.Conn.
func (l *LocalConn) Download(ctx context.Context, path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: download %s: %w", l.name, path, err)
	}
	defer f.Close()
	if _, err := io.Copy(w, readerWithContext(ctx, f)); err != nil {
		return fmt.Errorf("%s: download %s: %w", l.name, path, err)
	}
	return nil
}

// Dial implements modules.Dialer with a plain dial from the control machine.
func (l *LocalConn) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", l.name, addr, err)
	}
	return nc, nil
}

// Close implements io.Closer; a LocalConn holds nothing.
func (l *LocalConn) Close() error { return nil }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readerWithContext stops a copy between reads once ctx ends.
func readerWithContext(ctx context.Context, r io.Reader) io.Reader {
	return ctxReader{ctx: ctx, r: r}
}

// Stream runs cmd with a live stdin and output writers (check-ahead's
// gates). On cancel, as Run, the command's process group gets SIGINT, and
// two seconds later it is killed.
func (l *LocalConn) Stream(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGINT) }
	c.WaitDelay = 2 * time.Second
	c.Stdin, c.Stdout, c.Stderr = stdin, stdout, stderr
	err := c.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exitErr) && ctx.Err() == nil:
		return exitErr.ExitCode(), nil
	case ctx.Err() != nil:
		return -1, ctx.Err()
	}
	return -1, err
}
