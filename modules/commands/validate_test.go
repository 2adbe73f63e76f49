package commands_test

import (
	"errors"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/stretchr/testify/require"
)

// TestArgErrors: Validate errors about one argument are ArgErrors naming
// it, so the diagnostic points at that attribute.
func TestArgErrors(t *testing.T) {
	tests := []struct {
		name      string
		m         modules.Validator
		arg, want string
	}{
		{"command argv[0]", &commands.Command{Argv: []string{""}}, "argv", "argv[0]"},
		{"command cmd quoting", &commands.Command{Cmd: `echo "open`}, "cmd", "command"},
		{"command env", &commands.Command{Argv: []string{"true"}, Env: map[string]string{"1X": ""}}, "env", "env name"},
		{"shell cmd", &commands.Shell{Cmd: " "}, "cmd", "cmd is empty"},
		{"wait_for port", &commands.WaitFor{Port: 70000}, "port", "out of range"},
		{"wait_for host", &commands.WaitFor{Path: "/x", Host: "h"}, "host", "only for port"},
		{"wait_for path", &commands.WaitFor{Path: "rel"}, "path", "absolute path"},
		{"wait_for max_wait", &commands.WaitFor{Port: 80, MaxWait: "soon"}, "max_wait", `max_wait "soon"`},
		{"wait_for interval", &commands.WaitFor{Port: 80, Interval: "-1s"}, "interval", "interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			var ae *modules.ArgError
			require.True(t, errors.As(err, &ae), "%v is not an ArgError", err)
			require.Equal(t, tc.arg, ae.Arg)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
