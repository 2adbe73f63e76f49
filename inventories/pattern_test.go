package inventories

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

var (
	app   = []string{"iklim-app-01", "iklim-app-02", "iklim-app-03"}
	db    = []string{"iklim-db-01", "iklim-db-02", "iklim-db-03"}
	every = append(append(append([]string{}, app...), db...), "control")
)

func TestSelect(t *testing.T) {
	inv := loadFull(t)
	tests := []struct {
		pattern string
		want    []string
	}{
		// Single terms.
		{"all", every},
		{"*", every},
		{"iklim-app-02", []string{"iklim-app-02"}},
		{"control", []string{"control"}},
		{"app", app},
		{"swarm", append(append([]string{}, app...), db...)}, // through children
		{"spare", []string{}},                                // a group without hosts
		// Globs over host names.
		{"iklim-app-*", app},
		{"iklim-*-01", []string{"iklim-app-01", "iklim-db-01"}},
		{"iklim-app-0?", app},
		{"iklim-app-0[12]", []string{"iklim-app-01", "iklim-app-02"}},
		{"iklim-app-0[!1]", []string{"iklim-app-02", "iklim-app-03"}},
		{"iklim-app-0[^1]", []string{"iklim-app-02", "iklim-app-03"}},
		{"iklim-*-0[2-3]", []string{"iklim-app-02", "iklim-app-03", "iklim-db-02", "iklim-db-03"}},
		{"c*", []string{"control"}},
		// Globs over group names.
		{"wor*", db},
		{"*ers", every[:6]}, // managers, workers
		{"sp*", []string{}},
		// Union, in inventory order whatever the pattern order, without duplicates.
		{"app:db", every[:6]},
		{"db,app", every[:6]},
		{"control:iklim-db-01", []string{"iklim-db-01", "control"}},
		{"app:iklim-app-01:iklim-app-*:managers", app},
		{" app , control ", []string{"iklim-app-01", "iklim-app-02", "iklim-app-03", "control"}},
		// Intersection.
		{"app:&managers", app},
		{"swarm:&db", db},
		{"all:&iklim-*-01", []string{"iklim-app-01", "iklim-db-01"}},
		{"app:&db", []string{}},
		{"app:db:&swarm:&iklim-*-02", []string{"iklim-app-02", "iklim-db-02"}},
		{"&app", app}, // no plain term: start from all
		// Exclusion.
		{"app:!iklim-app-02", []string{"iklim-app-01", "iklim-app-03"}},
		{"all:!swarm", []string{"control"}},
		{"!db", []string{"iklim-app-01", "iklim-app-02", "iklim-app-03", "control"}},
		{"!db:!app", []string{"control"}},
		{"all:!iklim-*-0[12]", []string{"iklim-app-03", "iklim-db-03", "control"}},
		// Ansible order: unions first, then intersections, then exclusions,
		// whatever their position.
		{"!iklim-app-01:app", []string{"iklim-app-02", "iklim-app-03"}},
		{"&swarm:control:app", app},
		{"!iklim-app-01:&swarm:app:db", []string{"iklim-app-02", "iklim-app-03", "iklim-db-01", "iklim-db-02", "iklim-db-03"}},
		{"app:!managers:db", db},
		{"app,!iklim-app-03,&redis", []string{"iklim-app-01", "iklim-app-02"}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			got, err := inv.Select(tt.pattern)
			require.NoError(t, err)
			require.Equal(t, tt.want, names(got))

			p, err := ParsePattern(tt.pattern)
			require.NoError(t, err)
			require.Equal(t, tt.pattern, p.String())
			got, err = inv.Match(p)
			require.NoError(t, err)
			require.Equal(t, tt.want, names(got))
		})
	}
}

func TestSelectNoMatch(t *testing.T) {
	inv := loadFull(t)
	tests := []struct {
		pattern string
		want    string
		terms   []string
	}{
		{"nope", `pattern "nope" matches no host or group`, []string{"nope"}},
		{"app:!nope", `pattern "nope" matches no host or group`, []string{"nope"}},
		{"app:&nope", `pattern "nope" matches no host or group`, []string{"nope"}},
		{"iklim-web-*", `pattern "iklim-web-*" matches no host or group`, []string{"iklim-web-*"}},
		{"APP", `pattern "APP" matches no host or group`, []string{"APP"}}, // case-sensitive
		{"nope1,app,nope2", "pattern \"nope1\" matches no host or group\npattern \"nope2\" matches no host or group",
			[]string{"nope1", "nope2"}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			got, err := inv.Select(tt.pattern)
			require.Nil(t, got)
			require.EqualError(t, err, tt.want)
			var nm *NoMatchError
			require.True(t, errors.As(err, &nm))
			require.Equal(t, tt.terms[0], nm.Term)
		})
	}
}

func TestEmptyInventoryAll(t *testing.T) {
	inv := New()
	for _, p := range []string{"all", "*", "!all"} {
		got, err := inv.Select(p)
		require.NoError(t, err, p)
		require.Empty(t, got, p)
	}
	_, err := inv.Select("x*")
	require.EqualError(t, err, `pattern "x*" matches no host or group`)
}

func TestParsePatternErrors(t *testing.T) {
	tests := []struct {
		pattern string
		want    string
	}{
		{"", `host pattern "": empty pattern`},
		{"  ", `host pattern "  ": empty pattern`},
		{"a,,b", `host pattern "a,,b": empty term`},
		{"a:", `host pattern "a:": empty term`},
		{":a", `host pattern ":a": empty term`},
		{"a, ,b", `host pattern "a, ,b": empty term`},
		{"a:&", `host pattern "a:&": "&" must be followed by a host, group or glob`},
		{"a:!", `host pattern "a:!": "!" must be followed by a host, group or glob`},
		{"&", `host pattern "&": "&" must be followed by a host, group or glob`},
		{"a:&!b", `host pattern "a:&!b": term "&!b" has more than one of & and !`},
		{"a:!!b", `host pattern "a:!!b": term "!!b" has more than one of & and !`},
		{"[", `host pattern "[": bad glob "["`},
		{"iklim-app-[", `host pattern "iklim-app-[": bad glob "iklim-app-["`},
		{"app:!iklim-[a-", `host pattern "app:!iklim-[a-": bad glob "iklim-[a-"`},
		{"web[]", `host pattern "web[]": bad glob "web[]"`},
		{"~web.*", `host pattern "~web.*": regular expressions (~) are not supported; use a glob`},
		{"a b", `host pattern "a b": term "a b" contains whitespace`},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			require.EqualError(t, err, tt.want)
			var pe *PatternError
			require.True(t, errors.As(err, &pe))
			require.Equal(t, tt.pattern, pe.Pattern)
			require.Equal(t, Pattern{}, p)

			inv := New()
			_, err = inv.Select(tt.pattern)
			require.EqualError(t, err, tt.want, "Select checks syntax first")
		})
	}
}

func TestMatchZeroPattern(t *testing.T) {
	_, err := New().Match(Pattern{})
	require.EqualError(t, err, `host pattern "": empty pattern`)
}

func TestLimit(t *testing.T) {
	inv := loadFull(t)
	swarm, err := inv.Select("swarm")
	require.NoError(t, err)

	tests := []struct {
		limit string
		want  []string
	}{
		{"", every[:6]},
		{"   ", every[:6]},
		{"app", app},
		{"iklim-db-0[12]", []string{"iklim-db-01", "iklim-db-02"}},
		{"all:!iklim-app-01", every[1:6]},
		{"control", []string{}}, // exists, but not among the hosts
		{"control:iklim-db-03", []string{"iklim-db-03"}},
	}
	for _, tt := range tests {
		t.Run(tt.limit, func(t *testing.T) {
			got, err := inv.Limit(swarm, tt.limit)
			require.NoError(t, err)
			require.Equal(t, tt.want, names(got))
		})
	}

	_, err = inv.Limit(swarm, "nope")
	require.EqualError(t, err, `limit: pattern "nope" matches no host or group`)
	var nm *NoMatchError
	require.ErrorAs(t, err, &nm)
	_, err = inv.Limit(swarm, "a,,b")
	require.EqualError(t, err, `limit: host pattern "a,,b": empty term`)

	// Limit keeps the caller's order.
	rev := []*Host{swarm[5], swarm[0]}
	got, err := inv.Limit(rev, "all")
	require.NoError(t, err)
	require.Equal(t, []string{"iklim-db-03", "iklim-app-01"}, names(got))
}

func TestSelectHostGroupsOnly(t *testing.T) {
	// An inventory built by hand with only Host.Groups set still matches
	// groups.
	inv := &Inventory{Hosts: []*Host{
		{Name: "a", Groups: []string{"all", "web"}},
		{Name: "b", Groups: []string{"db"}},
	}}
	got, err := inv.Select("web:db")
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, names(got))
	got, err = inv.Select("!web")
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, names(got))
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{
		"all", "*", "app", "app:db", "app,db", "app:&db", "app:!db", "!db", "&app",
		"iklim-app-0[12]", "iklim-app-0[!1]", "[", "a,,b", "a:&", "~x", "a b", "",
		"\\", "[]]", "[a-", "app:!iklim-*-0[2-3],&swarm",
	} {
		f.Add(s)
	}
	inv, diags := Parse([]byte(`
host "iklim-app-01" {}
host "iklim-db-01" {}
group "app" {
  hosts = ["iklim-app-01"]
}
group "swarm" {
  children = ["app"]
  hosts    = ["iklim-db-01"]
}
`), "fuzz.hcl")
	require.Empty(f, diags)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			var pe *PatternError
			require.ErrorAs(t, err, &pe)
			return
		}
		require.Equal(t, s, p.String())
		require.NotEmpty(t, p.terms)
		hosts, err := inv.Match(p)
		if err != nil {
			var nm *NoMatchError
			require.ErrorAs(t, err, &nm)
			return
		}
		seen := map[string]bool{}
		for _, h := range hosts {
			require.False(t, seen[h.Name], "duplicate %s", h.Name)
			seen[h.Name] = true
		}
	})
}
