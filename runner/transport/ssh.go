package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// cancelGrace is how long Run waits, after SIGINT, for a cancelled command
// to end before it returns without it.
const cancelGrace = 500 * time.Millisecond

// cancelKill is when, after SIGINT, a cancelled command that is still
// running gets SIGKILL, as LocalConn does. It also covers a SIGINT that sshd
// dropped because it came before the command's process group existed.
const cancelKill = 2 * time.Second

// sessionRefusedLimit bounds how long Run keeps retrying a session the server
// refuses ("open failed") while this connection holds no other session: a
// refusal then cannot be our own sessions' backpressure. While our own
// sessions are open a refusal is waited out without limit (the step's
// deadline and the keepalives bound it).
const sessionRefusedLimit = time.Minute

// lostGrace is how long an error that looks like a broken transport waits
// for the client to notice that the connection is gone: the session's
// channel is closed a moment before the client's Wait returns.
const lostGrace = time.Second

// keepaliveRequest is OpenSSH's keepalive global request (ServerAliveInterval
// sends it too); sshd answers it, with a failure, which counts as an answer.
const keepaliveRequest = "keepalive@openssh.com"

// SSHConn is a modules.Conn over one SSH connection, kept for the whole run.
// Commands run in sessions of their own, at most MaxSessions-1 at once (one
// is kept for sftp); Upload and Download share one sftp client.
type SSHConn struct {
	name       string
	become     bool
	becomeUser string
	client     *ssh.Client
	sem        chan struct{}
	secrets    *modules.Secrets
	dead       chan struct{} // closed when the connection ends
	open       atomic.Int32  // command sessions open now

	lostMu sync.Mutex
	lost   error // why the connection was given up (no keepalive answer)

	sftpMu    sync.Mutex
	sftp      *sftp.Client
	sftpUsers atomic.Int32 // transfers in flight; raised only under sftpMu

	// killing counts cancelled commands not yet ended or sent SIGKILL;
	// Close waits for them, or closing would spare them their SIGKILL.
	killing sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

var _ modules.Conn = (*SSHConn)(nil)

// newSSHConn wraps an established client for h. With a positive ka.interval
// it sends keepalives and closes the connection when ka.count of them in a
// row go unanswered.
func newSSHConn(h *inventories.Host, client *ssh.Client, maxSessions int, secrets *modules.Secrets, ka keepalive) *SSHConn {
	n := maxSessions - 1
	if n < 1 {
		n = 1
	}
	c := &SSHConn{
		name:       h.Name,
		become:     h.Become,
		becomeUser: h.BecomeUser,
		client:     client,
		sem:        make(chan struct{}, n),
		secrets:    secrets,
		dead:       make(chan struct{}),
	}
	go func() {
		_ = client.Wait()
		close(c.dead)
	}()
	if ka.interval > 0 {
		go c.keepalive(ka)
	}
	return c
}

// keepalive is how a connection notices that its host vanished (network
// gone, host powered off) instead of waiting on it forever: a request every
// interval, given up after count intervals without an answer.
type keepalive struct {
	interval time.Duration
	count    int
}

// bound is the longest a vanished host goes unnoticed: the link may go
// just after an answer, and a keepalive is then given count intervals.
func (k keepalive) bound() time.Duration { return k.interval * time.Duration(k.count+1) }

// keepalive sends keepalives until the connection ends, and ends it when
// ka.count intervals pass without an answer. Only one request is in flight:
// a missing answer counts once per interval.
func (c *SSHConn) keepalive(ka keepalive) {
	t := time.NewTicker(ka.interval)
	defer t.Stop()
	answered := make(chan struct{}, 1)
	pending, missed := false, 0
	for {
		select {
		case <-c.dead:
			return
		case <-answered:
			pending, missed = false, 0
		case <-t.C:
			if !pending {
				pending = true
				go func() {
					if _, _, err := c.client.SendRequest(keepaliveRequest, true, nil); err == nil {
						answered <- struct{}{}
					}
				}()
				continue
			}
			if missed++; missed >= ka.count {
				c.giveUp(fmt.Errorf("no answer to keepalives for %s (%d × %s)",
					ka.interval*time.Duration(ka.count), ka.count, ka.interval))
				return
			}
		}
	}
}

// giveUp closes a connection that stopped answering; commands waiting on it
// fail with an *UnreachableError that carries why.
func (c *SSHConn) giveUp(why error) {
	c.lostMu.Lock()
	c.lost = why
	c.lostMu.Unlock()
	_ = c.client.Close()
}

func (c *SSHConn) lostReason() error {
	c.lostMu.Lock()
	defer c.lostMu.Unlock()
	return c.lost
}

// Host implements modules.Conn.
func (c *SSHConn) Host() string { return c.name }

// Close ends the sftp client and the connection, after the SIGKILL of any
// cancelled command still running (at most cancelKill).
func (c *SSHConn) Close() error {
	c.closeOnce.Do(func() {
		c.killing.Wait()
		c.sftpMu.Lock()
		if c.sftp != nil {
			_ = c.sftp.Close()
			c.sftp = nil
		}
		c.sftpMu.Unlock()
		c.closeErr = c.client.Close()
		if errors.Is(c.closeErr, net.ErrClosed) {
			c.closeErr = nil
		}
	})
	return c.closeErr
}

// alive reports whether the connection is still up.
func (c *SSHConn) alive() bool {
	select {
	case <-c.dead:
		return false
	default:
		return c.lostReason() == nil
	}
}

// goneAfter reports whether the connection has ended, after err. An error
// that looks like a broken transport gets up to lostGrace for the client to
// notice: a session's channel is closed a moment before the client ends.
func (c *SSHConn) goneAfter(err error) bool {
	if !c.alive() {
		return true
	}
	if !transportErr(err) {
		return false
	}
	t := time.NewTimer(lostGrace)
	defer t.Stop()
	select {
	case <-c.dead:
		return true
	case <-t.C:
		return !c.alive()
	}
}

// transportErr reports whether err may come from the connection going away
// rather than from the command or the file.
func transportErr(err error) bool {
	var missing *ssh.ExitMissingError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.As(err, &missing) || errors.Is(err, errConnLost)
}

// errConnLost is a session that ended with no exit status on a connection
// that ended meanwhile.
var errConnLost = errors.New("connection lost before the command ended")

// Run implements modules.Conn: one session, one exec. On cancel the remote
// command's process group gets SIGINT; if it has not ended within half a
// second Run returns ctx.Err() without it, and the group gets SIGKILL two
// seconds after the SIGINT. If the connection has died the error is an
// *UnreachableError.
func (c *SSHConn) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	o := modules.ApplyRunOptions(opts)
	var stdout, stderr bytes.Buffer
	code, complete, err := c.exec(ctx, cmd, o.Env, c.become && !o.NoBecome, o.Stdin, &stdout, &stderr)
	if err != nil && err != ctx.Err() {
		err = c.cmdErr(cmd, err)
	}
	if !complete {
		// The session may still write into the buffers; leave them be.
		return modules.Result{ExitCode: -1}, err
	}
	return modules.Result{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: code}, err
}

// exec runs cmd in a new session. complete is false when exec returned
// before the session ended (cancelled command that ignored SIGINT): stdout
// and stderr may still be written to afterwards. A cancelled exec returns
// ctx.Err() itself; other errors are returned bare, for the caller to wrap.
func (c *SSHConn) exec(ctx context.Context, cmd string, env map[string]string, become bool,
	stdin io.Reader, stdout, stderr io.Writer) (code int, complete bool, err error) {
	full, err := buildCommand(cmd, env, become, c.becomeUser)
	if err != nil {
		return -1, true, err
	}
	if err := ctx.Err(); err != nil {
		return -1, true, err
	}
	sess, err := c.session(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return -1, true, ctx.Err()
		}
		return -1, true, err
	}
	released := false
	defer func() {
		if !released {
			c.release(sess)
		}
	}()
	var in io.WriteCloser
	if stdin != nil {
		if in, err = sess.StdinPipe(); err != nil {
			return -1, true, err
		}
	}
	var head *headWriter // the start of stderr, to tell why sudo refused
	if become {
		head = &headWriter{w: stderr}
		stderr = head
	}
	sess.Stdout, sess.Stderr = stdout, stderr
	if err := sess.Start(full); err != nil {
		return -1, true, err
	}
	if in != nil {
		go sendInput(ctx, in, stdin)
	}

	if ctx.Done() == nil {
		err = sess.Wait()
	} else {
		done := make(chan error, 1)
		go func() { done <- sess.Wait() }()
		select {
		case err = <-done:
		case <-ctx.Done():
			_ = sess.Signal(ssh.SIGINT)
			t := time.NewTimer(cancelGrace)
			defer t.Stop()
			select {
			case <-done:
				return -1, true, ctx.Err()
			case <-t.C:
				// Do not wait for the command; keep its session (sshd
				// signals only through it) and slot until it has ended.
				released = true
				c.killing.Add(1)
				go c.killCancelled(sess, done)
				return -1, false, ctx.Err()
			}
		}
	}
	if err == nil {
		return 0, true, nil
	}
	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case errors.As(err, &exitErr):
		if head != nil && exitErr.ExitStatus() == 1 {
			if err := c.sudoRefused(head.String()); err != nil {
				return 1, true, err
			}
		}
		return exitErr.ExitStatus(), true, nil
	case errors.As(err, &missing):
		if c.goneAfter(err) {
			return -1, true, errConnLost
		}
		return -1, true, errors.New("the command ended without an exit status")
	}
	return -1, true, err
}

// sendInput writes stdin to a command's input and closes it. Its own copy,
// not the session's: that one took two 32 KiB buffers per command, which a
// thousand hosts applying at once held together, and gave its error (the
// rest of the input meeting the channel a command closed once it had read
// what it needed, as a batch script stopped at a shut gate) as the
// command's. The command's status tells how it ended.
func sendInput(ctx context.Context, in io.WriteCloser, stdin io.Reader) {
	size := 2 << 10 // a live stream: gate words
	if l, ok := stdin.(interface{ Len() int }); ok {
		size = min(max(l.Len(), 512), 32<<10)
	}
	_, _ = io.CopyBuffer(in, readerWithContext(ctx, stdin), make([]byte, size))
	_ = in.Close()
}

// killCancelled ends a cancelled command that outlived cancelGrace: SIGKILL
// at cancelKill, then the session is closed and its slot released once the
// command is gone (or the connection is).
func (c *SSHConn) killCancelled(sess *ssh.Session, done <-chan error) {
	defer c.release(sess)
	kill := time.NewTimer(cancelKill - cancelGrace)
	defer kill.Stop()
	select {
	case <-done:
		c.killing.Done()
		return
	case <-kill.C:
	}
	_ = sess.Signal(ssh.SIGKILL)
	c.killing.Done()
	closeAfter := time.NewTimer(cancelGrace)
	defer closeAfter.Stop()
	select {
	case <-done:
	case <-closeAfter.C:
		_ = sess.Close()
		<-done
	}
}

// cmdErr wraps err with the host and a short, redacted form of cmd. When
// the connection has died it is an *UnreachableError, so that the engine
// can tell a lost host from a failed command.
func (c *SSHConn) cmdErr(cmd string, err error) error {
	const max = 80
	if i := strings.IndexByte(cmd, '\n'); i >= 0 {
		cmd = cmd[:i] + " …"
	}
	if len(cmd) > max {
		cmd = cmd[:max] + "…"
	}
	return c.lostOr(fmt.Errorf("run %q: %w", c.secrets.Redact(cmd), err))
}

// lostOr returns err as an *UnreachableError when the connection is gone,
// else err prefixed with the host name.
func (c *SSHConn) lostOr(err error) error {
	if c.goneAfter(err) {
		if why := c.lostReason(); why != nil {
			return &UnreachableError{Host: c.name, Err: fmt.Errorf("connection lost: %v: %w", why, err)}
		}
		return &UnreachableError{Host: c.name, Err: fmt.Errorf("connection lost: %w", err)}
	}
	return fmt.Errorf("%s: %w", c.name, err)
}

// session opens a session within the session cap. A refusal by the server
// ("open failed", administratively prohibited: its MaxSessions is reached,
// often because it has not yet freed a session we just closed) is
// backpressure: wait and try again.
func (c *SSHConn) session(ctx context.Context) (*ssh.Session, error) {
	select {
	case c.sem <- struct{}{}:
	default:
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.dead:
			return nil, errors.New("connection closed")
		}
	}
	s, err := c.retryRefused(ctx, c.client.NewSession)
	if err != nil {
		<-c.sem
		return nil, err
	}
	c.open.Add(1)
	return s, nil
}

func (c *SSHConn) release(s *ssh.Session) {
	_ = s.Close()
	c.open.Add(-1)
	<-c.sem
}

// retryRefused calls open until it succeeds, fails for another reason than
// a refused channel, ctx ends, the connection ends, or the server has
// refused for too long while this connection held no other session. A
// refusal while our own sessions are open is the server's MaxSessions
// (lower than ours, a busy host): wait for ours to end. An idle sftp
// session is closed to make room; it is opened again when needed.
func (c *SSHConn) retryRefused(ctx context.Context, open func() (*ssh.Session, error)) (*ssh.Session, error) {
	var start time.Time
	backoff := 2 * time.Millisecond
	for {
		s, err := open()
		if err == nil || !isChannelRefused(err) {
			return s, err
		}
		if c.dropIdleSFTP() {
			continue
		}
		switch {
		case c.open.Load() > 0 || c.sftpBusy():
			start = time.Time{} // our own sessions: backpressure, no limit
		case start.IsZero():
			start = time.Now()
		case time.Since(start) > sessionRefusedLimit:
			return nil, fmt.Errorf("server kept refusing new sessions for %s (is its MaxSessions below the connector's?): %w", sessionRefusedLimit, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-c.dead:
			t.Stop()
			return nil, err
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

func isChannelRefused(err error) bool {
	var oe *ssh.OpenChannelError
	if errors.As(err, &oe) {
		return oe.Reason == ssh.Prohibited || oe.Reason == ssh.ResourceShortage || strings.Contains(oe.Message, "open failed")
	}
	return strings.Contains(err.Error(), "open failed") || strings.Contains(err.Error(), "administratively prohibited")
}

// dropIdleSFTP closes the sftp client when no transfer uses it, so that its
// session is free for a command; it reports whether it did. It never waits
// for sftpMu: whoever holds it is opening or using sftp.
func (c *SSHConn) dropIdleSFTP() bool {
	if !c.sftpMu.TryLock() {
		return false
	}
	defer c.sftpMu.Unlock()
	if c.sftp == nil || c.sftpUsers.Load() > 0 {
		return false
	}
	_ = c.sftp.Close()
	c.sftp = nil
	return true
}

// sftpBusy reports whether a transfer is in flight.
func (c *SSHConn) sftpBusy() bool { return c.sftpUsers.Load() > 0 }

// doneSFTP ends a transfer begun with sftpClient.
func (c *SSHConn) doneSFTP() { c.sftpUsers.Add(-1) }

// sftpClient returns the connection's sftp client, opening it on first use,
// and counts a transfer on it: call doneSFTP when it ends. It uses the one
// session kept out of the command cap.
func (c *SSHConn) sftpClient(ctx context.Context) (*sftp.Client, error) {
	c.sftpMu.Lock()
	defer c.sftpMu.Unlock()
	if c.sftp != nil {
		c.sftpUsers.Add(1)
		return c.sftp, nil
	}
	var sc *sftp.Client
	_, err := c.retryRefused(ctx, func() (*ssh.Session, error) {
		var err error
		sc, err = sftp.NewClient(c.client, sftp.UseConcurrentWrites(true))
		return nil, err
	})
	if err != nil {
		return nil, c.lostOr(fmt.Errorf("open sftp: %w", err))
	}
	c.sftp = sc
	c.sftpUsers.Add(1)
	return sc, nil
}

// dropSFTP forgets a broken sftp client so that the next transfer opens one.
func (c *SSHConn) dropSFTP(sc *sftp.Client, err error) {
	if !errors.Is(err, sftp.ErrSSHFxConnectionLost) {
		return
	}
	c.sftpMu.Lock()
	if c.sftp == sc {
		_ = sc.Close()
		c.sftp = nil
	}
	c.sftpMu.Unlock()
}

// Upload implements modules.Conn. The data goes to <dir>/.iklim-<random>,
// which gets mode and is then renamed over path. With become, the bytes are
// streamed through sudo's stdin into that temp name instead (sftp runs as
// the login user): one round trip, nothing left in /tmp, and it works for a
// BecomeUser that could not read the login user's files.
func (c *SSHConn) Upload(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	tmp := path.Join(path.Dir(p), ".iklim-"+randomHex())
	if c.become {
		var stderr bytes.Buffer
		code, _, err := c.exec(ctx, becomeUploadScript(p, tmp, mode), nil, true, r, io.Discard, &stderr)
		if err != nil {
			if err == ctx.Err() {
				return err
			}
			return c.lostOr(fmt.Errorf("upload %s: %w", p, err))
		}
		if code != 0 {
			return fmt.Errorf("%s: upload %s: exit %d: %s", c.name, p, code, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
	sc, err := c.sftpClient(ctx)
	if err != nil {
		return err
	}
	defer c.doneSFTP()
	if err := c.sftpUpload(ctx, sc, p, tmp, r, mode); err != nil {
		c.dropSFTP(sc, err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.lostOr(fmt.Errorf("upload %s: %w", p, err))
	}
	return nil
}

func (c *SSHConn) sftpUpload(ctx context.Context, sc *sftp.Client, p, tmp string, r io.Reader, mode fs.FileMode) (err error) {
	f, err := sc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = sc.Remove(tmp)
		}
	}()
	// Mode first, so a secret is never readable by others, even half-written.
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.ReadFrom(uploadReader(ctx, r)); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := sc.PosixRename(tmp, p); err != nil {
		var se *sftp.StatusError
		if !errors.As(err, &se) || se.FxCode() != sftp.ErrSSHFxOpUnsupported {
			return err
		}
		// No posix-rename@openssh.com: plain rename refuses to replace.
		_ = sc.Remove(p)
		return sc.Rename(tmp, p)
	}
	return nil
}

// Download implements modules.Conn. With become the file is read with
// `sudo cat`; without, over sftp.
func (c *SSHConn) Download(ctx context.Context, p string, w io.Writer) error {
	if c.become {
		gw := &gatedWriter{w: w}
		var stderr bytes.Buffer
		code, complete, err := c.exec(ctx, "cat -- "+remote.Quote(p), nil, true, nil, gw, &stderr)
		if !complete {
			gw.shut()
		}
		if err != nil {
			if err == ctx.Err() {
				return err
			}
			return c.lostOr(fmt.Errorf("download %s: %w", p, err))
		}
		if code != 0 {
			return fmt.Errorf("%s: download %s: exit %d: %s", c.name, p, code, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
	sc, err := c.sftpClient(ctx)
	if err != nil {
		return err
	}
	defer c.doneSFTP()
	f, err := sc.Open(p)
	if err != nil {
		c.dropSFTP(sc, err)
		return c.lostOr(fmt.Errorf("download %s: %w", p, err))
	}
	stop := context.AfterFunc(ctx, func() { _ = f.Close() })
	_, err = f.WriteTo(w)
	if stop() {
		_ = f.Close()
	}
	if err != nil {
		c.dropSFTP(sc, err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.lostOr(fmt.Errorf("download %s: %w", p, err))
	}
	return nil
}

// gatedWriter stops passing writes on once shut, so a session that outlives
// Download cannot write into the caller's writer afterwards.
type gatedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, io.ErrClosedPipe
	}
	return g.w.Write(p)
}

func (g *gatedWriter) shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// sizedCtxReader stops between reads once ctx ends and tells sftp the size
// when the wrapped reader knows it (-1 otherwise), so that sftp's concurrent
// writes stay on.
type sizedCtxReader struct {
	ctxReader
	size int64
}

func (s sizedCtxReader) Size() int64 { return s.size }

func uploadReader(ctx context.Context, r io.Reader) io.Reader {
	size := int64(-1)
	switch v := r.(type) {
	case interface{ Len() int }:
		size = int64(v.Len())
	case interface{ Size() int64 }:
		size = v.Size()
	case *io.LimitedReader:
		size = v.N
	}
	return sizedCtxReader{ctxReader: ctxReader{ctx: ctx, r: r}, size: size}
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Stream runs cmd with a live stdin and output writers (check-ahead's
// gates); the exit code is returned, an error only when the outcome is
// unknown.
func (c *SSHConn) Stream(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	code, _, err := c.exec(ctx, cmd, nil, c.become, stdin, stdout, stderr)
	if err != nil && err != ctx.Err() {
		err = c.cmdErr(cmd, err)
	}
	return code, err
}

// Dial implements modules.Dialer: a direct-tcpip channel over the host's SSH
// connection, so addr is resolved and reached from the host's side.
func (c *SSHConn) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := c.client.DialContext(ctx, network, addr)
	if err != nil {
		return nil, c.lostOr(fmt.Errorf("dial %s through ssh: %w", addr, err))
	}
	return nc, nil
}

// headWriter passes writes on and keeps the first bytes written.
type headWriter struct {
	w    io.Writer
	mu   sync.Mutex
	head []byte
}

func (h *headWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	if n := 256 - len(h.head); n > 0 {
		h.head = append(h.head, p[:min(n, len(p))]...)
	}
	h.mu.Unlock()
	return h.w.Write(p)
}

func (h *headWriter) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.head)
}

// ErrSudoPassword is returned (wrapped) when sudo on a host wants a
// password or a terminal: iklim runs sudo -n and never types a password.
var ErrSudoPassword = errors.New("sudo wants a password")

// sudoRefused explains a become command that sudo refused to start, from
// the start of its stderr; nil when sudo did not refuse it.
func (c *SSHConn) sudoRefused(stderr string) error {
	if !strings.HasPrefix(stderr, "sudo: ") {
		return nil
	}
	user := c.client.User()
	who := c.becomeUser
	if who == "" {
		who = "root"
	}
	switch {
	case strings.Contains(stderr, "password is required"):
		return fmt.Errorf("%w: %s may not run commands as %s through sudo without a password (iklim runs sudo -n: it never types one); "+
			"allow it on the host, e.g. `%s ALL=(ALL:ALL) NOPASSWD: ALL` in /etc/sudoers.d/iklim (edit it with visudo -f), "+
			"or set become = false for this host", ErrSudoPassword, user, who, user)
	case strings.Contains(stderr, "terminal is required"), strings.Contains(stderr, "no tty present"):
		return fmt.Errorf("%w: sudo on the host needs a terminal (requiretty) or a password for %s; iklim runs sudo -n without one: "+
			"give %s NOPASSWD and drop requiretty for it in /etc/sudoers.d/iklim (`Defaults:%s !requiretty`), or set become = false",
			ErrSudoPassword, user, user, user)
	}
	return nil
}
