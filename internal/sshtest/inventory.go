package sshtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// WriteInventory writes an HCL inventory with n hosts (as Hosts names them)
// that reach the server, each with its own backup root under the test's temp
// dir (every loopback "host" shares this machine's filesystem), and returns
// its path. Groups "odd" and "even" split the hosts for pattern tests.
func (s *Server) WriteInventory(t testing.TB, n int) string {
	t.Helper()
	// Not t.TempDir: its parent is 0700 and the login user is not root.
	dir, err := os.MkdirTemp("", "sshtest-inventory-")
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.MkdirAll(filepath.Join(dir, "backups"), 0o777); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, "backups"), 0o777); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "defaults {\n  user = %q\n  port = %d\n  key = %q\n  known_hosts = %q\n}\n",
		s.User, s.Port, s.KeyPath, s.KnownHostsPath)
	var odd, even []string
	for i, h := range s.Hosts(n) {
		root := filepath.Join(dir, "backups", h.Name)
		fmt.Fprintf(&b, "host %q {\n  address = %q\n  backup_root = %q\n  labels = { index = \"%d\" }\n}\n", h.Name, h.Address, root, i+1)
		if i%2 == 0 {
			odd = append(odd, fmt.Sprintf("%q", h.Name))
		} else {
			even = append(even, fmt.Sprintf("%q", h.Name))
		}
	}
	fmt.Fprintf(&b, "group \"odd\" { hosts = [%s] }\ngroup \"even\" { hosts = [%s] }\n", strings.Join(odd, ", "), strings.Join(even, ", "))
	path := filepath.Join(dir, "inventory.hcl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("sshtest: write inventory: %v", err)
	}
	return path
}
