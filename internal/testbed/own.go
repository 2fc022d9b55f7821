package testbed

import "testing"

// Own starts a bed of t's own, stopped when t ends, for a test that must
// see every domain of its daemon (vbackup backup --all): on the shared bed
// it would see, and back up, the domains of the tests running beside it.
// It costs a libvirtd start (a few seconds).
func Own(t testing.TB) *Bed {
	t.Helper()
	b, err := start()
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(func() {
		if err := b.down(); err != nil {
			t.Errorf("testbed: %v", err)
		}
	})
	return b
}
