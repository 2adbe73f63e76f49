package main

import (
	"bytes"
	"fmt"
	"html"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/stretchr/testify/require"
)

// reportRun makes a real run over a real sshd on two hosts, with a
// sensitive variable, a plain change with a diff, a slow step and a step
// that fails on one host. It returns the env of the run's control machine,
// the inventory, the playbook and the run id.
func reportRun(t *testing.T, secret string) (env []string, inv, pb, id string) {
	t.Helper()
	srv := sshtest.Start(t)
	inv = srv.WriteInventory(t, 2)
	base, err := os.MkdirTemp("", "iklim-report-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o777))
	pb = writeFile(t, t.TempDir(), "site.hcl", fmt.Sprintf(`variable "token" {
  sensitive = true
}
play "app" {
  hosts = "all"
  step "app dir" {
    module = "file"
    path   = "%[1]s/${host.name}"
    state  = "directory"
  }
  step "app conf" {
    module  = "copy"
    dest    = "%[1]s/${host.name}/app.conf"
    content = "port=8080\nhost=${host.name}\n"
  }
  step "secret env" {
    module = "line"
    path   = "%[1]s/${host.name}/app.env"
    line   = "TOKEN=${var.token}"
    create = true
  }
  step "warm up" {
    module  = "command"
    cmd     = "sleep 0.4"
    changed = false
  }
  step "migrate" {
    module = "shell"
    cmd    = "if [ ${host.name} = h002 ]; then echo 'migration 7 failed' >&2; exit 3; fi; true"
  }
}
`, base))
	state := t.TempDir()
	env = []string{"IKLIM_VAR_token=" + secret, "IKLIM_STATE_DIR=" + state,
		"IKLIM_CONTROL_BACKUP_ROOT=" + filepath.Join(state, "backups")}
	stdout, stderr, code := iklim(t, env, "play", "-i", inv, pb)
	require.Equal(t, 1, code, "h002's migrate step fails\nstdout: %s\nstderr: %s", stdout, stderr)
	id = strings.TrimPrefix(strings.SplitN(stdout, "\n", 2)[0], "RUN ")
	require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ`, id)
	return env, inv, pb, id
}

// atLeast400ms matches a duration of the "warm up" step (sleep 0.4).
const atLeast400ms = `([4-9]\d\dms|[\d.]+s)`

func TestReportOfARealRun(t *testing.T) {
	const secret = "s3cr3t-R3port-t0ken"
	env, inv, pb, id := reportRun(t, secret)
	out := filepath.Join(t.TempDir(), "run.html")
	stdout, stderr, code := iklim(t, env, "report", id, "-i", inv, "-o", out)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	page := string(b)
	text := html.UnescapeString(page)

	// One self-contained page: no script, no external asset.
	require.True(t, strings.HasPrefix(page, "<!DOCTYPE html>"))
	require.Contains(t, page, "<style>")
	for _, bad := range []string{"<script", "<link", "src=", "url(", "http://", "https://", "@import"} {
		require.NotContains(t, page, bad)
	}
	// The hosts and the steps of the run, on a timeline.
	for _, want := range []string{`class="host" title="h001"`, `class="host" title="h002"`,
		"app dir", "app conf", "secret env", "warm up", "migrate", `class="bar st-changed"`, `class="bar st-failed"`} {
		require.Contains(t, page, want)
	}
	require.Regexp(t, `title="warm up: ok in `+atLeast400ms, page, "the slow step's time is shown")
	// Each change with its diff; the secret's diff is redacted.
	require.Contains(t, text, `<span class="add">+port=8080</span>`)
	require.Contains(t, text, `<span class="add">+(sensitive)</span>`)
	require.Regexp(t, `secret env</b> .*\n<div>create \S+/h001/app.env with line "\(sensitive\)"`, text)
	// The failure with its file:line and error.
	require.Regexp(t, `h002</b> step <b>migrate</b>.*at <span class="src">`+regexp.QuoteMeta(pb)+`:27</span>`, text)
	require.Contains(t, text, "exit 3: migration 7 failed")
	// The exact rollback command.
	require.Contains(t, text, "<code>iklim rollback --run "+id+" -i "+inv+"</code>")
	// No sensitive value, in any form.
	require.NotContains(t, page, secret)
	require.NotContains(t, text, secret)

	// backups show gives the same facts as text.
	text, stderr, code = iklim(t, env, "backups", "show", id, "-i", inv)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, text, "RUN "+id+"  failed")
	require.Regexp(t, `(?m)^  h001\s+ok=1 changed=4 failed=0`, text)
	require.Regexp(t, `(?m)^  h002\s+ok=1 changed=3 failed=1`, text)
	require.Regexp(t, `(?m)^\s+\+[\d.]+m?s\s+`+atLeast400ms+`\s+ok\s+warm up \(command\) at `+regexp.QuoteMeta(pb)+`:\d+$`, text)
	require.Regexp(t, `failed: h002 step "migrate" \(shell\) at `+regexp.QuoteMeta(pb)+`:27\n\s+.*migration 7 failed`, text)
	require.Contains(t, text, "    +port=8080\n")
	require.Contains(t, text, "    +(sensitive)\n")
	require.Contains(t, text, "\n  iklim rollback --run "+id+" -i "+inv+"\n")
	require.NotContains(t, text, secret)

	// The rollback command the report gives works as written.
	args := strings.Fields(strings.TrimPrefix("iklim rollback --run "+id+" -i "+inv, "iklim "))
	stdout, stderr, code = iklim(t, env, args...)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)

	renderInChromium(t, out)
}

// renderInChromium opens the page in headless Chromium (Debian's chromium),
// takes a screenshot and checks that it shows something: a PNG that is not
// one uniform colour.
func renderInChromium(t *testing.T, page string) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (.ci/install installs Debian's chromium): the page was checked, not rendered")
	}
	shot := filepath.Join(t.TempDir(), "shot.png")
	profile := t.TempDir()
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir="+profile, "--hide-scrollbars", "--window-size=1280,1600",
		"--screenshot="+shot, "file://"+page)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("chromium did not finish in 60s:\n%s", out.String())
	}
	require.NoError(t, err, "chromium: %s", out.String())
	f, err := os.Open(shot)
	require.NoError(t, err, "chromium wrote no screenshot: %s", out.String())
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, 1280, 1600), img.Bounds())
	colors := map[[4]uint32]int{}
	bnd := img.Bounds()
	for y := bnd.Min.Y; y < bnd.Max.Y; y += 4 {
		for x := bnd.Min.X; x < bnd.Max.X; x += 4 {
			r, g, b, a := img.At(x, y).RGBA()
			colors[[4]uint32{r, g, b, a}]++
		}
	}
	require.Greater(t, len(colors), 20, "the screenshot is (nearly) blank: %d colours", len(colors))
	// The status colours of the timeline are on screen: changed (#e8a317)
	// and failed (#d6336c) bars.
	require.True(t, hasColor(img, 0xe8, 0xa3, 0x17), "no changed bar (#e8a317) on the screenshot")
	require.True(t, hasColor(img, 0xd6, 0x33, 0x6c), "no failed bar or badge (#d6336c) on the screenshot")
}

func hasColor(img image.Image, r, g, b uint8) bool {
	bnd := img.Bounds()
	near := func(a uint32, want uint8) bool {
		d := int(a>>8) - int(want)
		return d > -12 && d < 12
	}
	for y := bnd.Min.Y; y < bnd.Max.Y; y++ {
		for x := bnd.Min.X; x < bnd.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if near(cr, r) && near(cg, g) && near(cb, b) {
				return true
			}
		}
	}
	return false
}
