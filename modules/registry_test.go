package modules_test

import (
	"context"
	"sync"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type nop struct {
	Path string `hcl:"path"`
}

func (nop) Check(context.Context, modules.Conn) (*modules.Change, error) { return nil, nil }
func (nop) Apply(context.Context, modules.Conn, *modules.Change) error   { return nil }

func info(name string) modules.Info {
	return modules.Info{Name: name, Doc: name + " for tests", New: func() modules.Module { return nop{} }}
}

// TestRegistry: a registry holds what it was given, lists it by name, and
// refuses a duplicate, a nameless or a New-less entry without changing.
func TestRegistry(t *testing.T) {
	reg, err := modules.NewRegistry(info("b"), info("a"))
	require.NoError(t, err)
	got, ok := reg.Lookup("a")
	require.True(t, ok)
	require.Equal(t, "a for tests", got.Doc)
	require.Equal(t, []string{"a", "b"}, reg.Names())
	require.Len(t, reg.All(), 2)

	require.ErrorContains(t, reg.Add(info("c"), info("a")), `"a" is already in the registry`)
	require.ErrorContains(t, reg.Add(info("c"), info("c")), `"c" added twice`)
	require.ErrorContains(t, reg.Add(info("c"), modules.Info{}), "without a name")
	require.ErrorContains(t, reg.Add(modules.Info{Name: "c"}), `"c" has no New`)
	require.Equal(t, []string{"a", "b"}, reg.Names(), "a refused Add adds nothing")

	_, err = modules.NewRegistry(info("x"), info("x"))
	require.Error(t, err)

	require.NoError(t, reg.Add(info("c")))
	require.Equal(t, []string{"a", "b", "c"}, reg.Names())
}

// TestRegistriesAreSeparate: two registries share nothing, and nil or the
// zero value is an empty one.
func TestRegistriesAreSeparate(t *testing.T) {
	a, err := modules.NewRegistry(info("x"))
	require.NoError(t, err)
	b, err := modules.NewRegistry(info("x"))
	require.NoError(t, err, "the same name in another registry is no duplicate")
	require.NoError(t, a.Add(info("y")))
	_, ok := b.Lookup("y")
	require.False(t, ok)

	var none *modules.Registry
	_, ok = none.Lookup("x")
	require.False(t, ok)
	require.Empty(t, none.All())
	require.Empty(t, none.Names())

	var zero modules.Registry
	require.NoError(t, zero.Add(info("z")))
	_, ok = zero.Lookup("z")
	require.True(t, ok)
}

// TestRegistryConcurrent: lookups may run while a program adds modules.
func TestRegistryConcurrent(t *testing.T) {
	reg, err := modules.NewRegistry(info("a"))
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, ok := reg.Lookup("a")
				assert.True(t, ok)
				_ = reg.Names()
			}
		}()
		require.NoError(t, reg.Add(info(string(rune('b'+i)))))
	}
	wg.Wait()
	require.Len(t, reg.All(), 5)
}

type withToken struct {
	Path  string `hcl:"path"`
	Token string `hcl:"token,optional" sensitive:"true"`
}

func (*withToken) Check(context.Context, modules.Conn) (*modules.Change, error) { return nil, nil }
func (*withToken) Apply(context.Context, modules.Conn, *modules.Change) error   { return nil }

// TestTakesSensitive: a module that declares a sensitive argument is
// sensitive whether the step set it or not; one without is not.
func TestTakesSensitive(t *testing.T) {
	assert.True(t, modules.TakesSensitive(&withToken{Path: "/p", Token: "t"}))
	assert.True(t, modules.TakesSensitive(&withToken{Path: "/p"}), "declared, not set")
	assert.False(t, modules.TakesSensitive(nop{Path: "/p"}))
	assert.True(t, modules.TakesSensitive((*withToken)(nil)), "the type decides, not the value")
}
