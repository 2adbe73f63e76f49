package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// testConnector returns a connector that reads an empty ssh_config, so that
// the machine's ~/.ssh/config cannot change what a test does.
func testConnector(t testing.TB, opts SSHOptions) *SSHConnector {
	t.Helper()
	if opts.SSHConfigFile == "" {
		opts.SSHConfigFile = filepath.Join(t.TempDir(), "ssh_config")
		require.NoError(t, os.WriteFile(opts.SSHConfigFile, nil, 0o600))
	}
	c := NewSSHConnector(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sshConn connects to h through a fresh test connector.
func sshConn(t testing.TB, h *inventories.Host) *SSHConn {
	t.Helper()
	conn, err := testConnector(t, SSHOptions{}).Connect(context.Background(), h)
	require.NoError(t, err)
	require.IsType(t, &SSHConn{}, conn)
	return conn.(*SSHConn)
}

// remoteDir makes a fresh directory on the test host, owned by the login user.
func remoteDir(t testing.TB, c modules.Conn) string {
	t.Helper()
	res, err := c.Run(context.Background(), "mktemp -d /tmp/iklim-test.XXXXXX", modules.RunOption(func(o *modules.RunOptions) { o.NoBecome = true }))
	require.NoError(t, err)
	require.True(t, res.OK(), res.Stderr)
	dir := strings.TrimSpace(res.Stdout)
	t.Cleanup(func() {
		_, _ = c.Run(context.Background(), "rm -rf "+remote.Quote(dir), func(o *modules.RunOptions) { o.NoBecome = true })
	})
	return dir
}

func mustRun(t testing.TB, c modules.Conn, cmd string, opts ...modules.RunOption) string {
	t.Helper()
	res, err := c.Run(context.Background(), cmd, opts...)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode, "%s: %s", cmd, res.Stderr)
	return res.Stdout
}

func TestSSHRun(t *testing.T) {
	s := sshtest.Start(t)
	c := sshConn(t, s.Hosts(1)[0])
	require.Equal(t, "h001", c.Host())

	big := strings.Repeat("a", 3<<20)
	tests := []struct {
		name   string
		cmd    string
		stdout string
		stderr string
		code   int
	}{
		{"stdout", "echo hello", "hello\n", "", 0},
		{"stderr and exit code", "echo out; echo oops >&2; exit 3", "out\n", "oops\n", 3},
		{"false", "false", "", "", 1},
		{"runs in sh as login user", `id -un; echo "$SHELL"`, "iklimtest\n/bin/sh\n", "", 0},
		{"multi-line script", "x=1\nif [ $x = 1 ]; then\n  echo one\nfi", "one\n", "", 0},
		{"killed by signal", "kill -TERM $$", "", "", 128 + 15},
		{"large output drained", "head -c 3145728 /dev/zero | tr '\\0' a; echo done >&2", big, "done\n", 0},
		{"not found", "no-such-command-iklim", "", "", 127},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.Run(context.Background(), tt.cmd)
			require.NoError(t, err)
			require.Equal(t, tt.code, res.ExitCode, res.Stderr)
			require.Equal(t, tt.stdout, res.Stdout)
			if tt.name != "not found" {
				require.Equal(t, tt.stderr, res.Stderr)
			}
		})
	}
}

func TestSSHRunStdin(t *testing.T) {
	s := sshtest.Start(t)
	c := sshConn(t, s.Hosts(1)[0])

	data := make([]byte, 1<<20+17)
	_, err := rand.Read(data)
	require.NoError(t, err)
	res, err := c.Run(context.Background(), "sha256sum | cut -d' ' -f1; echo x >&2", modules.WithStdin(bytes.NewReader(data)))
	require.NoError(t, err)
	require.Equal(t, sha256hex(data)+"\n", res.Stdout)

	res, err = c.Run(context.Background(), "cat", modules.WithStdin(strings.NewReader("line1\nline2")))
	require.NoError(t, err)
	require.Equal(t, "line1\nline2", res.Stdout)

	// Without stdin the command sees EOF at once instead of hanging.
	res, err = c.Run(context.Background(), "cat; echo end")
	require.NoError(t, err)
	require.Equal(t, "end\n", res.Stdout)
}

// TestSSHInputLeftUnread: a command that ends well before it has read all
// its input (a batch script stopped at a shut gate, with more gate words on
// their way) ends with its own status. The input still on its way met the
// closed channel, and the run failed with "EOF".
func TestSSHInputLeftUnread(t *testing.T) {
	s := sshtest.Start(t)
	c := sshConn(t, s.Hosts(1)[0])
	// More than the channel's window: the rest is still being sent when the
	// command has gone.
	input := "first\n" + strings.Repeat("more\n", 2<<20)
	for _, tt := range []struct {
		script string
		code   int
	}{{"read l; echo \"$l\"", 0}, {"read l; echo \"$l\"; exit 3", 3}} {
		res, err := c.Run(context.Background(), tt.script, modules.WithStdin(strings.NewReader(input)))
		require.NoError(t, err, tt.script)
		require.Equal(t, modules.Result{Stdout: "first\n", ExitCode: tt.code}, res, tt.script)
		var out bytes.Buffer
		code, err := c.Stream(context.Background(), tt.script, strings.NewReader(input), &out, io.Discard)
		require.NoError(t, err, tt.script)
		require.Equal(t, tt.code, code)
		require.Equal(t, "first\n", out.String())
	}
}

func TestSSHRunEnvQuoting(t *testing.T) {
	s := sshtest.Start(t)
	c := sshConn(t, s.Hosts(1)[0])

	nasty := map[string]string{
		"EMPTY":     "",
		"SPACES":    "  two  spaces  ",
		"QUOTE":     "it's",
		"QUOTES":    `'"'"''"`,
		"SUBST":     "$(touch /tmp/iklim-pwned) `touch /tmp/iklim-pwned` ${HOME}",
		"NEWLINES":  "a\nb\n\nc\n",
		"BACKSLASH": `\\ \n \' \`,
		"GLOB":      "* ? [a-z] ~",
		"OPS":       "a; b && c | d > e < f & g",
		"UNICODE":   "ğüşiöç ✓ 日本",
		"DASH":      "-n -e",
		"PERCENT":   "%s %d %%",
	}
	for k, v := range nasty {
		t.Run(k, func(t *testing.T) {
			res, err := c.Run(context.Background(), `printf '%s' "$`+k+`"`, modules.WithEnv(map[string]string{k: v}))
			require.NoError(t, err)
			require.Equal(t, 0, res.ExitCode, res.Stderr)
			require.Equal(t, v, res.Stdout)
		})
	}
	// All at once, and visible to every command of a compound command.
	res, err := c.Run(context.Background(), `true && printf '%s|%s' "$QUOTE" "$NEWLINES"; test ! -e /tmp/iklim-pwned`, modules.WithEnv(nasty))
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode, "command substitution in a value was executed")
	require.Equal(t, nasty["QUOTE"]+"|"+nasty["NEWLINES"], res.Stdout)

	_, err = c.Run(context.Background(), "true", modules.WithEnv(map[string]string{"BAD NAME": "x"}))
	require.ErrorContains(t, err, "invalid environment variable name")
}

func TestSSHUploadDownload(t *testing.T) {
	s := sshtest.Start(t)
	c := sshConn(t, s.Hosts(1)[0])
	dir := remoteDir(t, c)
	ctx := context.Background()

	random := make([]byte, 5<<20+3)
	_, err := rand.Read(random)
	require.NoError(t, err)
	tests := []struct {
		name string
		data []byte
		mode fs.FileMode
		want string // stat -c %a
	}{
		{"empty", nil, 0o644, "644"},
		{"small private", []byte("secret\n"), 0o600, "600"},
		{"binary 5MB", random, 0o640, "640"},
		{"executable", []byte("#!/bin/sh\necho hi\n"), 0o755, "755"},
		{"setgid", []byte("x"), 0o644 | fs.ModeSetgid, "2644"},
		{"read-only", []byte("ro"), 0o444, "444"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := dir + "/" + strings.ReplaceAll(tt.name, " ", "_")
			require.NoError(t, c.Upload(ctx, p, bytes.NewReader(tt.data), tt.mode))
			require.Equal(t, tt.want+"\n", mustRun(t, c, "stat -c %a "+remote.Quote(p)))
			require.Equal(t, sha256hex(tt.data)+"\n", mustRun(t, c, "sha256sum < "+remote.Quote(p)+" | cut -d' ' -f1"))
			var got bytes.Buffer
			require.NoError(t, c.Download(ctx, p, &got))
			require.True(t, bytes.Equal(tt.data, got.Bytes()), "download differs")
		})
	}

	// A reader of unknown size (not a bytes.Reader) works too.
	p := dir + "/piped"
	require.NoError(t, c.Upload(ctx, p, io.MultiReader(bytes.NewReader(random[:1<<20]), strings.NewReader("tail")), 0o600))
	var got bytes.Buffer
	require.NoError(t, c.Download(ctx, p, &got))
	require.Equal(t, append(append([]byte{}, random[:1<<20]...), "tail"...), got.Bytes())

	// Overwrite replaces content and mode.
	require.NoError(t, c.Upload(ctx, p, strings.NewReader("new"), 0o640))
	require.Equal(t, "640 new", strings.TrimSpace(mustRun(t, c, "printf '%s ' $(stat -c %a "+p+"); cat "+p)))

	err = c.Download(ctx, dir+"/missing", io.Discard)
	require.Error(t, err)
	require.Contains(t, err.Error(), "h001: download "+dir+"/missing")
	err = c.Upload(ctx, dir+"/no/such/dir/f", strings.NewReader("x"), 0o644)
	require.ErrorContains(t, err, "h001: upload")

	require.Empty(t, strings.TrimSpace(mustRun(t, c, "ls -A "+dir+" | grep '^.iklim-' || true")), "temp files left behind")
}

// failingReader fails after n bytes.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("source broke")
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	for i := range p {
		p[i] = 'z'
	}
	f.n -= len(p)
	return len(p), nil
}

func TestSSHUploadAtomic(t *testing.T) {
	s := sshtest.Start(t)
	c := sshConn(t, s.Hosts(1)[0])
	dir := remoteDir(t, c)
	ctx := context.Background()
	p := dir + "/conf"

	const size = 512 << 10
	a, b := bytes.Repeat([]byte("A"), size), bytes.Repeat([]byte("B"), size)
	require.NoError(t, c.Upload(ctx, p, bytes.NewReader(a), 0o644))
	// A hard link keeps the old inode: rewriting in place would change it too.
	mustRun(t, c, "ln "+p+" "+p+".old")

	// A reader on the host must only ever see all of A or all of B, never a
	// mix or a short file, while the file is replaced again and again.
	sumA, sumB := sha256hex(a), sha256hex(b)
	script := fmt.Sprintf(`n=0; bad=0; while [ ! -e %[1]s.stop ] && [ $n -lt 2000 ]; do
  s=$(sha256sum < %[1]s | cut -d' ' -f1)
  [ "$s" = %[2]s ] || [ "$s" = %[3]s ] || bad=$((bad+1))
  n=$((n+1)); echo >> %[1]s.reads
done; echo $n $bad`, p, sumA, sumB)
	var wg sync.WaitGroup
	var readerOut string
	var readerErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, err := c.Run(ctx, script)
		readerOut, readerErr = res.Stdout+res.Stderr, err
	}()
	// Replace the file at least 30 times, and until the reader has read it
	// 20 times: on a loaded machine the reader may start late.
	readsSoFar := func() int {
		res, err := c.Run(ctx, "wc -l < "+p+".reads 2>/dev/null || echo 0")
		require.NoError(t, err)
		n, _ := strconv.Atoi(strings.TrimSpace(res.Stdout))
		return n
	}
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; i < 30 || (readsSoFar() < 20 && time.Now().Before(deadline)); i++ {
		data := a
		if i%2 == 0 {
			data = b
		}
		require.NoError(t, c.Upload(ctx, p, bytes.NewReader(data), 0o644))
	}
	mustRun(t, c, "touch "+p+".stop")
	wg.Wait()
	require.NoError(t, readerErr)
	var reads, bad int
	_, err := fmt.Sscan(readerOut, &reads, &bad)
	require.NoError(t, err, readerOut)
	t.Logf("%d reads during the uploads", reads)
	require.GreaterOrEqual(t, reads, 20)
	require.Zero(t, bad, "a reader saw a partial file")
	require.Equal(t, sumA+"\n", mustRun(t, c, "sha256sum < "+p+".old | cut -d' ' -f1"), "file was rewritten in place, not renamed over")
	mustRun(t, c, "rm "+p+".old "+p+".stop "+p+".reads")

	// A failed upload leaves the old file alone and no temp file behind.
	before := mustRun(t, c, "sha256sum < "+p)
	err = c.Upload(ctx, p, &failingReader{n: 200 << 10}, 0o644)
	require.ErrorContains(t, err, "source broke")
	require.Equal(t, before, mustRun(t, c, "sha256sum < "+p))
	require.Equal(t, "conf\n", mustRun(t, c, "ls -A "+dir))
}

func TestSSHBecome(t *testing.T) {
	sshtest.RequireSudo(t)
	s := sshtest.Start(t)
	h := s.Hosts(1)[0]
	h.Become = true
	c := sshConn(t, h)
	ctx := context.Background()
	noBecome := func(o *modules.RunOptions) { o.NoBecome = true }

	require.Equal(t, "root\n", mustRun(t, c, "id -un"))
	require.Equal(t, "iklimtest\n", mustRun(t, c, "id -un", noBecome))
	// Env reaches the command inside sudo, which resets the environment.
	v := "it's $(id) \"x\"\n"
	require.Equal(t, v, mustRun(t, c, `printf '%s' "$V"`, modules.WithEnv(map[string]string{"V": v})))
	require.Equal(t, "in\n", mustRun(t, c, "cat", modules.WithStdin(strings.NewReader("in\n"))))
	res, err := c.Run(ctx, "echo e >&2; exit 4")
	require.NoError(t, err)
	require.Equal(t, 4, res.ExitCode)
	require.Equal(t, "e\n", res.Stderr)

	// Upload into a directory only root can write to.
	dir := strings.TrimSpace(mustRun(t, c, "mktemp -d /root/iklim-test.XXXXXX && chmod 700 /root"))
	t.Cleanup(func() { _, _ = c.Run(context.Background(), "rm -rf "+remote.Quote(dir)) })
	p := dir + "/secret.conf"
	data := make([]byte, 300<<10)
	_, _ = rand.Read(data)
	require.NoError(t, c.Upload(ctx, p, bytes.NewReader(data), 0o600))
	require.Equal(t, "600 root\n", mustRun(t, c, "stat -c '%a %U' "+p))
	require.NoError(t, c.Upload(ctx, p, bytes.NewReader(data[:1000]), 0o640))
	require.Equal(t, "640 root\n", mustRun(t, c, "stat -c '%a %U' "+p))
	var got bytes.Buffer
	require.NoError(t, c.Download(ctx, p, &got))
	require.True(t, bytes.Equal(data[:1000], got.Bytes()))
	require.Equal(t, "secret.conf\n", mustRun(t, c, "ls -A "+dir), "temp files left behind")

	res, _ = c.Run(ctx, "cat "+p, noBecome)
	require.NotEqual(t, 0, res.ExitCode, "login user must not read the root-only file")
	err = c.Download(ctx, dir+"/missing", io.Discard)
	require.ErrorContains(t, err, "No such file")
	err = c.Upload(ctx, dir+"/no/dir/f", strings.NewReader("x"), 0o644)
	require.ErrorContains(t, err, "h001: upload")

	// BecomeUser picks the sudo target.
	h2 := *h
	h2.Name, h2.BecomeUser = "as-nobody", "nobody"
	c2 := sshConn(t, &h2)
	require.Equal(t, "nobody\n", mustRun(t, c2, "id -un"))
}

func TestSSHRunCancel(t *testing.T) {
	s := sshtest.Start(t)
	c := sshConn(t, s.Hosts(1)[0])

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Run(ctx, "sleep 30")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 20*time.Second, "Run waited for the remote command")

	// SIGINT reached the remote process group: the sleep is gone.
	require.Eventually(t, func() bool {
		out, err := exec.Command("pgrep", "-u", sshtest.User, "-f", "sleep 30").Output()
		var ee *exec.ExitError
		return errors.As(err, &ee) && ee.ExitCode() == 1 && len(out) == 0
	}, 30*time.Second, 50*time.Millisecond, "remote sleep 30 still running")

	// A command that ignores SIGINT cannot hold Run (the bound is far below
	// the command's 300 s, not a speed claim), and SIGKILL ends it.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	start = time.Now()
	_, err = c.Run(ctx2, "trap '' INT; sleep 300")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 60*time.Second)
	require.Eventually(t, func() bool {
		out, err := exec.Command("pgrep", "-u", sshtest.User, "-f", "sleep 300").Output()
		var ee *exec.ExitError
		return errors.As(err, &ee) && ee.ExitCode() == 1 && len(out) == 0
	}, 30*time.Second, 50*time.Millisecond, "remote sleep 300 that ignores SIGINT still running")

	// The connection is still good, and already-cancelled contexts fail fast.
	require.Equal(t, "ok\n", mustRun(t, c, "echo ok"))
	done, cancel3 := context.WithCancel(context.Background())
	cancel3()
	_, err = c.Run(done, "echo never")
	require.ErrorIs(t, err, context.Canceled)
}

// A cancel that comes right after the exec reaches sshd before the command's
// process group exists ("killpg: No such process" in sshd's log), so the
// SIGINT is lost: SIGKILL must still end the command.
func TestSSHRunCancelRightAfterStart(t *testing.T) {
	s := sshtest.Start(t)
	c := sshConn(t, s.Hosts(1)[0])
	for i := 0; i < 45; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%15)*time.Millisecond)
		_, err := c.Run(ctx, fmt.Sprintf("sleep 4%03d", i))
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	require.Eventually(t, func() bool {
		out, err := exec.Command("pgrep", "-u", sshtest.User, "-f", "sleep 4[0-9][0-9][0-9]").Output()
		var ee *exec.ExitError
		return errors.As(err, &ee) && ee.ExitCode() == 1 && len(out) == 0
	}, 30*time.Second, 100*time.Millisecond, "a cancelled remote sleep is still running")
}

func TestSSHSessionBackpressure(t *testing.T) {
	// The server allows 5 sessions per connection; the connector assumes
	// the default 10 and opens up to 9 at once: refusals must be retried.
	s := sshtest.Start(t, sshtest.MaxSessions(5))
	c := sshConn(t, s.Hosts(1)[0])

	const n = 30
	var wg sync.WaitGroup
	errs := make([]error, n)
	outs := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Run(context.Background(), fmt.Sprintf("sleep 0.2; echo %d", i))
			errs[i], outs[i] = err, res.Stdout
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		require.NoError(t, errs[i], i)
		require.Equal(t, fmt.Sprintf("%d\n", i), outs[i])
	}
}

func TestSSHManyHosts(t *testing.T) {
	s := sshtest.Start(t, sshtest.MaxSessions(20))
	hosts := s.Hosts(60)
	conn := testConnector(t, SSHOptions{})

	const perHost = 10
	var mu sync.Mutex
	ok, failed := 0, []error{}
	var wg sync.WaitGroup
	start := time.Now()
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := conn.Connect(context.Background(), h)
			if err != nil {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
				return
			}
			for i := 0; i < perHost; i++ {
				res, err := c.Run(context.Background(), "echo $SSH_CONNECTION", modules.WithEnv(map[string]string{"I": fmt.Sprint(i)}))
				mu.Lock()
				switch {
				case err != nil:
					failed = append(failed, err)
				case !strings.Contains(res.Stdout, " "+h.Address+" "):
					failed = append(failed, fmt.Errorf("%s: reached %q", h.Name, res.Stdout))
				default:
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d hosts x %d commands in %s", len(hosts), perHost, time.Since(start))
	require.Empty(t, failed)
	require.Equal(t, len(hosts)*perHost, ok)
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
