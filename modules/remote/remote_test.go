package remote_test

import (
	"os/exec"
	"testing"

	"github.com/iklimco/iklim/modules/remote"
	"github.com/stretchr/testify/require"
)

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "''"},
		{"plain", "plain"},
		{"/etc/app.conf", "/etc/app.conf"},
		{"a=b,c:d@e%f+g-h_i.j", "a=b,c:d@e%f+g-h_i.j"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"'", `''\'''`},
		{"$HOME", "'$HOME'"},
		{"a\nb", "'a\nb'"},
		{"~", "'~'"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, remote.Quote(tt.in), tt.in)
	}
}

// TestShellQuoteRoundTrip feeds quoted words to a real /bin/sh and checks
// that each arrives as exactly one, unchanged argument.
func TestShellQuoteRoundTrip(t *testing.T) {
	words := []string{"", " ", "it's", `'"'"'`, "$(echo pwned)", "`echo pwned`", "${HOME}", "a\nb\n",
		`\`, `\\'\`, "*", "?", "[a]", "~root", "a;b", "a|b", "a&b", "<>", "#comment", "-n", "ğüş 日本", "!", "%s", "\t"}
	for _, w := range words {
		out, err := exec.Command("/bin/sh", "-c", "printf '%s|' "+remote.Quote(w)+" end").Output()
		require.NoError(t, err, w)
		require.Equal(t, w+"|end|", string(out), "word %q", w)
	}
}
