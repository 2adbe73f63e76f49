package labtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                "''",
		"info":            "info",
		"--format":        "--format",
		"{{.Name}}":       "'{{.Name}}'",
		"a b":             "'a b'",
		"it's":            `'it'\''s'`,
		"$HOME":           "'$HOME'",
		"local/redis:7":   "local/redis:7",
		"node.role==mgr":  "node.role==mgr",
		"x;rm -rf /":      "'x;rm -rf /'",
		"line1\nline2":    "'line1\nline2'",
		"type=service,ok": "type=service,ok",
	} {
		assert.Equal(t, want, ShellQuote(in), "ShellQuote(%q)", in)
	}
	assert.Equal(t, `docker info --format '{{.Name}}'`, "docker "+ShellJoin("info", "--format", "{{.Name}}"))
}

// The quoting must survive a real shell.
func TestShellJoinRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	words := []string{"", "a b", "it's", "$HOME", "`id`", "x;y", "{{.Name}}", "tab\there", "nl\nhere", `back\slash`}
	out, err := exec.Command(sh, "-c", "set -- "+ShellJoin(words...)+`; for w in "$@"; do printf '[%s]' "$w"; done`).Output()
	require.NoError(t, err)
	var want strings.Builder
	for _, w := range words {
		fmt.Fprintf(&want, "[%s]", w)
	}
	assert.Equal(t, want.String(), string(out))
}

func TestModuleRootAndInventory(t *testing.T) {
	root, err := ModuleRoot()
	require.NoError(t, err)
	assert.FileExists(t, filepath.Join(root, "go.mod"))
	lab, err := newLab()
	require.NoError(t, err)
	assert.True(t, filepath.IsAbs(lab.InventoryPath))
	src, err := os.ReadFile(lab.InventoryPath)
	require.NoError(t, err, "inventories/lab.hcl must exist")

	// The inventory, the lab script and this package must agree on the hosts.
	hostRe := regexp.MustCompile(`host "([^"]+)" \{\s*address = "([^"]+)"`)
	var inInventory []LabHost
	for _, m := range hostRe.FindAllStringSubmatch(string(src), -1) {
		inInventory = append(inInventory, LabHost{m[1], m[2]})
	}
	assert.Equal(t, DefaultHosts, inInventory)
	script, err := os.ReadFile(filepath.Join(root, "internal", "lab", "lab.sh"))
	require.NoError(t, err)
	for _, h := range DefaultHosts {
		assert.Contains(t, string(script), fmt.Sprintf("%q", h.Name+" "+h.Address), "lab.sh HOSTS")
	}
	for _, want := range []string{
		`user        = "iklim"`,
		`key         = "/var/lib/iklim-lab/id_ed25519"`,
		`known_hosts = "/var/lib/iklim-lab/known_hosts"`,
		`backup_root = "/var/backups/iklim"`,
		`group "swarm"    { children = ["managers", "workers"] }`,
	} {
		assert.Contains(t, string(src), want)
	}
}

// fakeTB records how Require gave up. Skipf and Fatalf end the goroutine
// like the real ones do.
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	skipped string
	failed  string
}

func (f *fakeTB) Helper()             {}
func (f *fakeTB) Logf(string, ...any) {}
func (f *fakeTB) Skipf(s string, a ...any) {
	f.mu.Lock()
	f.skipped = fmt.Sprintf(s, a...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(s string, a ...any) {
	f.mu.Lock()
	f.failed = fmt.Sprintf(s, a...)
	f.mu.Unlock()
	runtime.Goexit()
}

func runRequire(t *testing.T, mode string) *fakeTB {
	t.Helper()
	t.Setenv("IKLIM_LAB", mode)
	t.Setenv("IKLIM_LAB_DIR", t.TempDir()) // an empty state dir: the lab is "down"
	f := &fakeTB{TB: t}
	done := make(chan *Lab)
	go func() {
		var l *Lab
		defer func() { done <- l }()
		l = Require(f)
	}()
	select {
	case l := <-done:
		require.Nil(t, l, "Require returned a lab for an empty state dir")
	case <-time.After(30 * time.Second):
		t.Fatal("Require hung")
	}
	return f
}

func TestRequireSkipsWhenDown(t *testing.T) {
	f := runRequire(t, "")
	assert.Empty(t, f.failed)
	assert.Contains(t, f.skipped, "lab")
	if os.Geteuid() == 0 {
		assert.Contains(t, f.skipped, "not up")
	}
}

func TestRequireFailsWhenRequired(t *testing.T) {
	f := runRequire(t, "required")
	assert.Empty(t, f.skipped, "IKLIM_LAB=required must never skip")
	assert.Contains(t, f.failed, "IKLIM_LAB=required")
}

// TestLab runs against the real lab (skips without one; see Require).
func TestLab(t *testing.T) {
	lab := Require(t)
	lab.UseDockerd(t)
	require.Len(t, lab.Hosts, 6)

	t.Run("hosts", func(t *testing.T) {
		var wg sync.WaitGroup
		for _, h := range lab.Hosts {
			wg.Add(1)
			go func(h LabHost) {
				defer wg.Done()
				out, err := lab.Exec(t, h.Name, "hostname; id -un; sudo -n true && echo sudo-ok")
				if assert.NoError(t, err) {
					assert.Equal(t, h.Name+"\niklim\nsudo-ok", out)
				}
				name, err := lab.Docker(t, h.Address, "info", "--format", "{{.Name}}")
				if assert.NoError(t, err) {
					assert.Equal(t, h.Name, name, "plain `docker` must reach the host's own dockerd")
				}
			}(h)
		}
		wg.Wait()
	})

	t.Run("private dirs", func(t *testing.T) {
		marker := fmt.Sprintf("labtest-%d", time.Now().UnixNano())
		for _, dir := range []string{"/var/backups/iklim", "/srv", "/etc/iklim", "/opt/iklim", "/tmp"} {
			p := dir + "/" + marker
			_, err := lab.Exec(t, "iklim-app-01", "sudo mkdir -p "+dir+" && sudo touch "+p)
			require.NoError(t, err)
			// sudo: a backup root made by an earlier run (the demo) is 0700 root.
			_, err = lab.Exec(t, "iklim-app-01", "sudo test -e "+p)
			assert.NoError(t, err, "%s on iklim-app-01", p)
			_, err = lab.Exec(t, "iklim-app-02", "sudo test ! -e "+p)
			assert.NoError(t, err, "%s of iklim-app-01 is visible on iklim-app-02", p)
			_, err = lab.Exec(t, "iklim-app-01", "sudo rm -f "+p)
			assert.NoError(t, err)
			_, err = os.Stat(p)
			assert.True(t, os.IsNotExist(err) || dir == "/tmp", "%s leaked to the machine itself", p)
		}
	})

	t.Run("exec errors", func(t *testing.T) {
		out, err := lab.Exec(t, "iklim-db-01", "echo partial; echo oops >&2; exit 3")
		require.Error(t, err)
		assert.Equal(t, "partial", out)
		assert.Contains(t, err.Error(), "exit status 3")
		assert.Contains(t, err.Error(), "oops")
		_, err = lab.Exec(t, "no-such-host", "true")
		assert.ErrorContains(t, err, "unknown lab host")
	})

	t.Run("images", func(t *testing.T) {
		out, err := lab.Docker(t, "iklim-db-03", "images", "--format", "{{.Repository}}:{{.Tag}}")
		require.NoError(t, err)
		for _, img := range []string{"local/busybox:1", "local/redis:7", "local/redis-sentinel:7", "local/rabbitmq:3", "local/nginx:1"} {
			assert.Contains(t, strings.Fields(out), img)
		}
		out, err = lab.Docker(t, "iklim-db-03", "run", "--rm", "local/busybox:1", "echo", "hello from busybox")
		require.NoError(t, err)
		assert.Equal(t, "hello from busybox", out)
	})
}
