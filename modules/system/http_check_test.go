package system_test

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/system"
	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
)

func boolp(b bool) *bool { return &b }

// TestHTTPCheck asks real net/http servers on loopback, from the host
// behind a real sshd (the request goes through the SSH connection) and,
// delegated, from the control machine.
func TestHTTPCheck(t *testing.T) {
	e := newEnv(t)
	var flaky atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "version: A\n") })
	mux.HandleFunc("/flaky", func(w http.ResponseWriter, r *http.Request) {
		if flaky.Add(1) <= 3 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ready")
	})
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "welcome")
	})
	mux.Handle("/moved", http.RedirectHandler("/ok", http.StatusFound))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tlsSrv := httptest.NewTLSServer(mux)
	t.Cleanup(tlsSrv.Close)

	check := func(m *system.HTTPCheck) runner.Step { return step("health", "http_check", m) }
	hostErr := func(r result) string {
		require.NotNil(t, r.recap)
		return r.recap.Hosts[0].Error
	}

	t.Run("as expected: no change, twice, and in check mode; nothing recorded", func(t *testing.T) {
		for _, checkMode := range []bool{false, false, true} {
			r := e.play(checkMode, check(&system.HTTPCheck{URL: srv.URL + "/ok", BodyRegex: `version: (A)`}))
			requireOK(t, r)
			require.Zero(t, r.changed)
			out := r.output()
			require.Equal(t, 200, out["status"])
			require.Equal(t, "version: A\n", out["body"])
			require.Equal(t, 1, out["attempts"])
			require.Greater(t, out["latency_ms"].(float64), 0.0)
		}
		// Read-only: no backup record, so a rollback has nothing to undo.
		ents, err := os.ReadDir(e.host.BackupRoot)
		if err == nil {
			for _, d := range ents {
				sub, _ := os.ReadDir(filepath.Join(e.host.BackupRoot, d.Name()))
				require.Empty(t, sub, "a read-only check must leave no run record")
			}
		}
	})

	t.Run("retries until healthy", func(t *testing.T) {
		r := e.play(false, check(&system.HTTPCheck{URL: srv.URL + "/flaky", Within: "20s", Interval: "50ms"}))
		requireOK(t, r)
		require.Equal(t, 4, r.output()["attempts"])
		require.Equal(t, "ready", r.output()["body"])
	})

	t.Run("deadline: the error names the last answer", func(t *testing.T) {
		start := time.Now()
		r := e.play(false, check(&system.HTTPCheck{URL: srv.URL + "/down", Within: "1s", Interval: "100ms"}))
		require.Less(t, time.Since(start), 30*time.Second, "the 1 s deadline was not kept")
		msg := hostErr(r)
		require.Contains(t, msg, "http_check "+srv.URL+"/down: not as expected within 1s (")
		require.Contains(t, msg, `status 503, want 200; body: "maintenance\n"`)
	})

	t.Run("body must match", func(t *testing.T) {
		r := e.play(false, check(&system.HTTPCheck{URL: srv.URL + "/ok", BodyRegex: `version: B`, Within: "0s"}))
		require.Contains(t, hostErr(r), `status 200, but the body does not match "version: B"`)
		require.Contains(t, hostErr(r), "(1 attempt)")
	})

	t.Run("redirects, methods, headers", func(t *testing.T) {
		r := e.play(false, check(&system.HTTPCheck{URL: srv.URL + "/moved", FollowRedirect: boolp(false), Status: []int{302}}))
		requireOK(t, r)
		r = e.play(false, check(&system.HTTPCheck{URL: srv.URL + "/moved", BodyRegex: "version"}))
		requireOK(t, r)
		r = e.play(false, check(&system.HTTPCheck{URL: srv.URL + "/auth", Method: "POST", Body: "x", Headers: map[string]string{"Authorization": "Bearer s3cret"}}))
		requireOK(t, r)
		require.Equal(t, "welcome", r.output()["body"])
	})

	t.Run("TLS is verified by default", func(t *testing.T) {
		r := e.play(false, check(&system.HTTPCheck{URL: tlsSrv.URL + "/ok", Within: "0s"}))
		require.Contains(t, hostErr(r), "certificate signed by unknown authority")
		ca := filepath.Join(t.TempDir(), "ca.pem")
		require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644))
		r = e.play(false, check(&system.HTTPCheck{URL: tlsSrv.URL + "/ok", CAFile: ca, BodyRegex: "A"}))
		requireOK(t, r)
		r = e.play(false, check(&system.HTTPCheck{URL: tlsSrv.URL + "/ok", ValidateCerts: boolp(false)}))
		requireOK(t, r)
	})

	t.Run("delegated to the control machine", func(t *testing.T) {
		s := check(&system.HTTPCheck{URL: srv.URL + "/ok"})
		s.Delegate = true
		r := e.play(false, s)
		requireOK(t, r)
		require.Equal(t, 200, r.output()["status"])
	})
}

func TestHTTPCheckValidate(t *testing.T) {
	tests := []struct {
		m   system.HTTPCheck
		arg string
	}{
		{system.HTTPCheck{URL: "ftp://x/"}, "url"},
		{system.HTTPCheck{URL: "http://"}, "url"},
		{system.HTTPCheck{URL: "http://x/", Method: "DELETE"}, "method"},
		{system.HTTPCheck{URL: "http://x/", Body: "b"}, "body"},
		{system.HTTPCheck{URL: "http://x/", Status: []int{42}}, "status"},
		{system.HTTPCheck{URL: "http://x/", BodyRegex: "("}, "body_regex"},
		{system.HTTPCheck{URL: "http://x/", Method: "HEAD", BodyRegex: "x"}, "body_regex"},
		{system.HTTPCheck{URL: "http://x/", Within: "soon"}, "within"},
		{system.HTTPCheck{URL: "http://x/", AttemptTimeout: "0s"}, "attempt_timeout"},
		{system.HTTPCheck{URL: "http://x/", CAFile: "/ca.pem", ValidateCerts: boolp(false)}, "ca_file"},
		{system.HTTPCheck{URL: "http://x/", Headers: map[string]string{"Bad Name": "x"}}, "headers"},
	}
	for _, tc := range tests {
		err := tc.m.Validate()
		var ae *modules.ArgError
		require.ErrorAs(t, err, &ae, "%+v", tc.m)
		require.Equal(t, tc.arg, ae.Arg)
	}
	require.NoError(t, (&system.HTTPCheck{URL: "https://x:8443/health", Status: []int{200, 204}, Within: "0s"}).Validate())
}
