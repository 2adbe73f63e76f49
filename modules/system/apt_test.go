package system_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/system"
	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
)

// aptRepo is a flat local apt repository of tiny packages built by the
// test, listed in a test-only sources.list.d file.
type aptRepo struct {
	t      *testing.T
	dir    string
	prefix string // every package name starts with it: unique per test
	pkgs   map[string]bool
}

func newAptRepo(t *testing.T) *aptRepo {
	t.Helper()
	for _, tool := range []string{"dpkg-deb", "dpkg-scanpackages", "apt-get"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dpkg-dev)", tool)
		}
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	r := &aptRepo{t: t, prefix: "iklim-t" + hex.EncodeToString(b), pkgs: map[string]bool{}}
	// Not t.TempDir: apt reads file: sources as the _apt user.
	dir, err := os.MkdirTemp("", "iklim-apt-"+hex.EncodeToString(b)+"-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	r.dir = dir
	list := "/etc/apt/sources.list.d/" + r.prefix + ".list"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "Packages"), nil, 0o644))
	require.NoError(t, os.WriteFile(list, []byte("deb [trusted=yes] file:"+dir+" ./\n"), 0o644))
	t.Cleanup(func() {
		var names []string
		for n := range r.pkgs {
			names = append(names, n)
		}
		if len(names) > 0 {
			_ = exec.Command("dpkg", append([]string{"--purge"}, names...)...).Run()
		}
		os.Remove(list)
		// The lists apt fetched from the source, named after its path.
		lists, _ := filepath.Glob("/var/lib/apt/lists/*" + filepath.Base(dir) + "*")
		for _, l := range lists {
			os.Remove(l)
		}
		for _, n := range names {
			debs, _ := filepath.Glob("/var/cache/apt/archives/" + n + "_*.deb")
			for _, d := range debs {
				os.Remove(d)
			}
		}
		os.RemoveAll(dir)
	})
	return r
}

// name is the package name for short name s.
func (r *aptRepo) name(s string) string { return r.prefix + "-" + s }

// add builds package s at version into the repository and rescans it.
func (r *aptRepo) add(s, version, depends string) string {
	t := r.t
	t.Helper()
	name := r.name(s)
	r.pkgs[name] = true
	root := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "usr/share/iklim-test"), 0o755))
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: iklim tests <iklim@example.invalid>\nDescription: iklim apt test package\n", name, version)
	if depends != "" {
		control += "Depends: " + r.name(depends) + "\n"
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, "DEBIAN/control"), []byte(control), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "usr/share/iklim-test", name), []byte(version+"\n"), 0o644))
	deb := filepath.Join(r.dir, name+"_"+version+"_all.deb")
	out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput()
	require.NoError(t, err, "%s", out)
	r.scan()
	return deb
}

// scan rewrites the Packages index from the .debs in the directory.
func (r *aptRepo) scan() {
	cmd := exec.Command("dpkg-scanpackages", "-m", ".", "/dev/null")
	cmd.Dir = r.dir
	out, err := cmd.Output()
	require.NoError(r.t, err)
	require.NoError(r.t, os.WriteFile(filepath.Join(r.dir, "Packages"), out, 0o644))
}

// version is the installed version of short name s, "" when not installed.
func (r *aptRepo) version(s string) string {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", r.name(s)).Output()
	f := strings.Fields(string(out))
	if len(f) != 2 || f[0] != "ii" {
		return ""
	}
	return f[1]
}

func aptStep(m *system.Apt) runner.Step { return step("apt", "apt", m) }

// TestAptInstallCheckIdempotentRollback installs a package with a
// dependency from a local repository over a real sshd (sudo), after check
// mode listed both; a rerun changes nothing; rollback removes both.
func TestAptInstallCheckIdempotentRollback(t *testing.T) {
	e := newEnv(t)
	repo := newAptRepo(t)
	repo.add("b", "1.0", "")
	repo.add("a", "1.0", "b")
	a, b := repo.name("a"), repo.name("b")

	// The cache: updated when asked without a validity time, then fresh.
	r := e.play(false, aptStep(&system.Apt{UpdateCache: true}))
	requireOK(t, r)
	require.Equal(t, 1, r.changed)
	require.Contains(t, r.summaries()[0], "update the apt cache")
	require.Equal(t, true, r.output()["cache_updated"])
	r = e.play(false, aptStep(&system.Apt{UpdateCache: true, CacheValidTime: "1h"}))
	requireOK(t, r)
	require.Zero(t, r.changed, "cache updated less than 1h ago")

	install := func() *system.Apt {
		return &system.Apt{Name: []string{a}, UpdateCache: true, CacheValidTime: "1h"}
	}
	// Check mode lists the package and its dependency, installs nothing.
	r = e.play(true, aptStep(install()))
	requireOK(t, r)
	require.Equal(t, 1, r.changed)
	require.Equal(t, []string{"install " + b + " 1.0, " + a + " 1.0"}, r.summaries())
	require.Len(t, r.diffs(), 1)
	require.Equal(t, a+": (absent)\n"+b+": (absent)\n", r.diffs()[0].Before)
	require.Equal(t, a+": 1.0\n"+b+": 1.0\n", r.diffs()[0].After)
	require.Empty(t, repo.version("a"))
	require.Empty(t, repo.version("b"))

	run := e.play(false, aptStep(install()))
	requireOK(t, run)
	require.Equal(t, 1, run.changed)
	require.Equal(t, "1.0", repo.version("a"))
	require.Equal(t, "1.0", repo.version("b"))
	require.Equal(t, map[string]any{a: "1.0"}, run.output()["packages"])

	r = e.play(false, aptStep(install()))
	requireOK(t, r)
	require.Zero(t, r.changed, "rerun must not change anything")

	r = e.rollback(run.id)
	requireOK(t, r)
	require.Empty(t, repo.version("a"), "rollback removes what the run installed")
	require.Empty(t, repo.version("b"), "the dependency too")
	r = e.play(true, aptStep(install()))
	requireOK(t, r)
	require.Equal(t, 1, r.changed, "after rollback the package is missing again")
}

// TestAptVersionsLatestAbsentRollback pins a version, upgrades to the
// newest, removes a package, and rolls each back; a version that no source
// offers any more and that apt's cache lacks is named in the error.
func TestAptVersionsLatestAbsentRollback(t *testing.T) {
	e := newEnv(t)
	repo := newAptRepo(t)
	repo.add("c", "1.0", "")
	repo.add("d", "1.0", "")
	c, d := repo.name("c"), repo.name("d")

	r := e.play(false, aptStep(&system.Apt{Name: []string{c + "=1.0", d}, UpdateCache: true}))
	requireOK(t, r)
	require.Equal(t, "1.0", repo.version("c"))
	require.Equal(t, "1.0", repo.version("d"))

	// latest: 2.0 appears after the cache update.
	repo.add("c", "2.0", "")
	latest := func(valid string) *system.Apt {
		return &system.Apt{Name: []string{c}, State: "latest", UpdateCache: true, CacheValidTime: valid}
	}
	up := e.play(false, aptStep(latest("1ns")))
	requireOK(t, up)
	require.Equal(t, 1, up.changed)
	require.Equal(t, "2.0", repo.version("c"))
	r = e.play(false, aptStep(latest("1h")))
	requireOK(t, r)
	require.Zero(t, r.changed)
	// A pinned version that is installed is no change either.
	r = e.play(false, aptStep(&system.Apt{Name: []string{c + "=2.0"}}))
	requireOK(t, r)
	require.Zero(t, r.changed)
	r = e.rollback(up.id)
	requireOK(t, r)
	require.Equal(t, "1.0", repo.version("c"), "rollback downgrades to the version before the run")

	// A pinned newer version is an upgrade, and check mode says so.
	r = e.play(true, aptStep(&system.Apt{Name: []string{c + "=2.0"}}))
	requireOK(t, r)
	require.Equal(t, []string{"upgrade " + c + " 1.0 → 2.0"}, r.summaries())

	// absent, with check mode first.
	absent := func() *system.Apt { return &system.Apt{Name: []string{d}, State: "absent"} }
	r = e.play(true, aptStep(absent()))
	requireOK(t, r)
	require.Equal(t, []string{"remove " + d + " 1.0"}, r.summaries())
	require.Equal(t, "1.0", repo.version("d"))
	rm := e.play(false, aptStep(absent()))
	requireOK(t, rm)
	require.Equal(t, 1, rm.changed)
	require.Empty(t, repo.version("d"))
	r = e.play(false, aptStep(absent()))
	requireOK(t, r)
	require.Zero(t, r.changed)
	r = e.rollback(rm.id)
	requireOK(t, r)
	require.Equal(t, "1.0", repo.version("d"), "rollback reinstalls what the run removed")

	// Removed again, and 1.0 gone from the repository: rollback says so.
	rm = e.play(false, aptStep(absent()))
	requireOK(t, rm)
	deb, err := os.ReadFile(filepath.Join(repo.dir, d+"_1.0_all.deb"))
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(repo.dir, d+"_1.0_all.deb")))
	repo.scan()
	r = e.play(false, aptStep(&system.Apt{UpdateCache: true}))
	requireOK(t, r)
	r = e.rollback(rm.id)
	require.NotNil(t, r.recap)
	require.Equal(t, 1, r.recap.Hosts[0].Failed)
	require.Contains(t, r.recap.Hosts[0].Error, "cannot reinstall "+d+" 1.0: no source offers that version and no .deb is left in /var/cache/apt/archives")

	// With the .deb in apt's cache, the same rollback reinstalls from it.
	require.NoError(t, os.WriteFile("/var/cache/apt/archives/"+d+"_1.0_all.deb", deb, 0o644))
	r = e.rollback(rm.id)
	requireOK(t, r)
	require.Equal(t, "1.0", repo.version("d"), "reinstalled from /var/cache/apt/archives")
}

func TestAptValidate(t *testing.T) {
	tests := []struct {
		m   system.Apt
		arg string
	}{
		{system.Apt{}, "name"},
		{system.Apt{Name: []string{"Bad Name"}}, "name"},
		{system.Apt{Name: []string{"jq=1.6"}, State: "latest"}, "name"},
		{system.Apt{Name: []string{"jq", "jq=1.6"}}, "name"},
		{system.Apt{Name: []string{"jq"}, State: "gone"}, "state"},
		{system.Apt{Name: []string{"jq"}, Purge: true}, "purge"},
		{system.Apt{UpdateCache: true, CacheValidTime: "soon"}, "cache_valid_time"},
		{system.Apt{Name: []string{"jq"}, LockWait: "x"}, "lock_wait"},
	}
	for _, tc := range tests {
		err := tc.m.Validate()
		var ae *modules.ArgError
		require.ErrorAs(t, err, &ae, "%+v", tc.m)
		require.Equal(t, tc.arg, ae.Arg)
	}
	require.NoError(t, (&system.Apt{Name: []string{"jq=1.6-2.1", "libc6:amd64"}}).Validate())
	require.NoError(t, (&system.Apt{CacheValidTime: "1h"}).Validate())
}
