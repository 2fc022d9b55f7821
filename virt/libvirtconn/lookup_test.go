package libvirtconn

import "testing"

// A name is tried as a UUID only when libvirt could parse it as one: a
// domain named with 32 other characters, dashes aside, is looked up by
// name alone (found in CI: "TestInstantRestoreFinish-27532-12-i" failed
// with libvirt's "Invalid UUID" instead of being found).
func TestLooksLikeUUID(t *testing.T) {
	for s, want := range map[string]bool{
		"4dea22b3-1d52-d8f3-2516-782e98ab3fa0": true,
		"4DEA22B31D52D8F32516782E98AB3FA0":     true,
		"TestInstantRestoreFinish-27532-12-i":  false,
		"4dea22b3-1d52-d8f3-2516-782e98ab3fa":  false,
		"vm1":                                  false,
	} {
		if got := looksLikeUUID(s); got != want {
			t.Errorf("looksLikeUUID(%q) = %v, want %v", s, got, want)
		}
	}
}
