package cluster

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseQuickTakesOnlyAWholeAnswer(t *testing.T) {
	js := `{"is_running":true,"version":"3.10.8","running_nodes":["rabbit@a","rabbit@b"],"disk_nodes":["rabbit@a","rabbit@b"],"ram_nodes":[],` +
		`"policies":[{"apply-to":"queues","definition":"{\"ha-mode\":\"all\"}","name":"ha-all","pattern":".*","priority":0,"vhost":"/"}]}`
	hx := strings.ToUpper(hex.EncodeToString([]byte(js)))
	q, ok := parseQuick(`{ok, "` + hx + `"}` + "\n")
	require.True(t, ok)
	require.True(t, q.IsRunning)
	require.Equal(t, []string{"rabbit@a", "rabbit@b"}, q.RunningNodes)
	require.Equal(t, "3.10.8", q.Version)
	require.Len(t, q.Policies, 1)
	def, err := canonicalJSON(q.Policies[0].Definition)
	require.NoError(t, err)
	require.Equal(t, `{"ha-mode":"all"}`, def)

	for _, out := range []string{
		"",
		"erl_call: can't create C node c17@host; 0",
		`{error, "*** eval: {'EXIT',{undef,[{rabbit_nodes,list_running,[],[]}]}}"}`,
		`{ok, "` + hx[:len(hx)-1] + `"}`, // cut short: odd hex
		`{ok, "` + hx[:len(hx)-2] + `"}`, // cut short: not JSON
		`{ok, "zz"}`,
		`{ok, #Bin<123,34>}`,
	} {
		_, ok := parseQuick(out)
		require.False(t, ok, "%q", out)
	}
}

// The vhost reaches erl_call as byte values, so no text of the user's is
// Erlang source.
func TestQuickExprQuotesNothingOfTheUsers(t *testing.T) {
	m := &RabbitJoin{Seed: "a", Vhost: `x"]),halt().%`, Policies: []RabbitPolicy{{Name: "p"}}}
	m.self = "a"
	e := m.quickExpr()
	require.Contains(t, e, "list_to_binary([120,34,93,41,44,104,97,108,116,40,41,46,37])")
	require.NotContains(t, e, "halt")
	m.self = "b"
	require.NotContains(t, m.quickExpr(), "policies", "a peer does not read the policies")
}
