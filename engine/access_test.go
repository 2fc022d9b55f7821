package engine

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"vbackup/chain"
)

func aclOf(t *testing.T, path string) []aclEntry {
	t.Helper()
	entries, _, err := readACL(path)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// A grant adds the read bit to the mask and nothing more: an admin's mask
// that holds a named group to read stays in force, and revoking gives
// back the ACL exactly as it was.
func TestGrantKeepsTheMask(t *testing.T) {
	f := filepath.Join(t.TempDir(), "image.qcow2")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	before := []aclEntry{{aclUserObj, 6, aclUndef}, {aclGroupObj, 0, aclUndef}, {aclGroup, 6, 4242}, {aclMask, 0, aclUndef}, {aclOther, 0, aclUndef}}
	if err := writeACL(f, before, 0); err != nil {
		t.Fatalf("setting an ACL (instant restore needs POSIX ACLs on the backup folder's filesystem): %v", err)
	}
	before = aclOf(t, f)
	qemu := account{uid: 54321, gids: []int{54321}, name: "qemu"}
	g, ok, err := qemu.grant(f, permRead)
	if err != nil || !ok {
		t.Fatalf("grant: %v %v", ok, err)
	}
	if may, _ := qemu.may(f, permRead); !may {
		t.Fatal("after the grant QEMU's user may not read")
	}
	if m := maskOf(aclOf(t, f)); m != permRead {
		t.Errorf("the mask is %o after the grant, want %o: group 4242 may now %o", m, permRead, m&6)
	}
	if err := revoke(g, nil); err != nil {
		t.Fatal(err)
	}
	if after := aclOf(t, f); !slices.Equal(after, before) {
		t.Errorf("after the revoke the ACL is %v, want %v", after, before)
	}
}

// Another record's grant on the same file keeps the mask bit it needs
// when this one is taken back.
func TestRevokeKeepsOthersMask(t *testing.T) {
	f := filepath.Join(t.TempDir(), "image.qcow2")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := account{uid: 54321, gids: []int{1}}, account{uid: 54322, gids: []int{1}}
	ga, _, err := a.grant(f, permRead)
	if err != nil {
		t.Fatalf("setting an ACL (instant restore needs POSIX ACLs on the backup folder's filesystem): %v", err)
	}
	gb, _, err := b.grant(f, permRead)
	if err != nil {
		t.Fatal(err)
	}
	if err := revoke(ga, []chain.Grant{gb}); err != nil {
		t.Fatal(err)
	}
	if may, _ := b.may(f, permRead); !may {
		t.Error("revoking one user's grant took the other's read access")
	}
	if may, _ := a.may(f, permRead); may {
		t.Error("the revoked user may still read")
	}
	if err := revoke(gb, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(f, aclXattr, make([]byte, 64)); err == nil {
		t.Error("an ACL is left after both grants were taken back")
	}
}
