package transport

import (
	"io/fs"
	"strconv"
	"strings"

	"github.com/iklimco/iklim/modules/remote"
)

// buildCommand is the exact command line sent to the host's login shell:
// cmd with env exported in front of it, and wrapped in sudo when become.
// With neither it returns cmd unchanged, without allocating.
func buildCommand(cmd string, env map[string]string, become bool, becomeUser string) (string, error) {
	if len(env) == 0 && !become {
		return cmd, nil
	}
	var inner strings.Builder
	if len(env) > 0 {
		inner.Grow(len(cmd) + 32*len(env))
		if err := remote.WriteExport(&inner, env); err != nil {
			return "", err
		}
	}
	inner.WriteString(cmd)
	if !become {
		return inner.String(), nil
	}
	return becomeWrap(inner.String(), becomeUser), nil
}

// becomeWrap runs script as user (root when empty) through sudo. -n makes
// sudo fail at once instead of waiting for a password nobody will type.
func becomeWrap(script, user string) string {
	if user == "" {
		user = "root"
	}
	return "sudo -n -u " + remote.Quote(user) + " -- /bin/sh -c " + remote.Quote(script)
}

// octalMode renders mode as chmod(1) understands it, special bits included.
func octalMode(mode fs.FileMode) string {
	m := uint32(mode.Perm())
	if mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return "0" + strconv.FormatUint(uint64(m), 8)
}

// becomeUploadScript reads the file from stdin into a temp name inside the
// destination directory, sets its mode, and renames it over dest, so the
// replacement is atomic and the content never sits in a shared place such
// as /tmp. umask 077 keeps the half-written file private until chmod.
func becomeUploadScript(dest, tmpName string, mode fs.FileMode) string {
	t := remote.Quote(tmpName)
	return "umask 077; t=" + t + "; cat > \"$t\" && chmod " + octalMode(mode) + " \"$t\" && mv -f \"$t\" " +
		remote.Quote(dest) + " || { rc=$?; rm -f \"$t\"; exit $rc; }"
}
