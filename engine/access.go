package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"vbackup/chain"
)

// An instant restore's QEMU reads the backup's images as whatever user it
// runs as, while the backups are root's and private (0600 files in 0700
// folders). Rather than loosen their modes for every local user, vbackup
// gives that one user read access to exactly the images of the chain (and
// passage through the folders above them) with POSIX ACL entries, records
// each entry it added, and takes them back when the domain no longer reads
// the folder. The files' contents and modes are not touched.

const aclXattr = "system.posix_acl_access"

// ACL entry tags and permissions, as the kernel's xattr form has them.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20

	permRead   = 4
	permSearch = 1
	aclVersion = 2
	aclUndef   = 0xffffffff
)

type aclEntry struct {
	tag, perm uint16
	id        uint32
}

// readACL is path's access ACL, or the one its mode amounts to.
func readACL(path string) ([]aclEntry, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(path, aclXattr, buf)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP) {
		m := uint16(fi.Mode().Perm())
		return []aclEntry{{aclUserObj, m >> 6 & 7, aclUndef}, {aclGroupObj, m >> 3 & 7, aclUndef}, {aclOther, m & 7, aclUndef}}, fi, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the ACL of %s: %w", path, err)
	}
	if n < 4 || binary.LittleEndian.Uint32(buf) != aclVersion || (n-4)%8 != 0 {
		return nil, nil, fmt.Errorf("the ACL of %s is not in a form vbackup reads", path)
	}
	var out []aclEntry
	for off := 4; off < n; off += 8 {
		out = append(out, aclEntry{binary.LittleEndian.Uint16(buf[off:]), binary.LittleEndian.Uint16(buf[off+2:]), binary.LittleEndian.Uint32(buf[off+4:])})
	}
	return out, fi, nil
}

// writeACL sets path's access ACL with mask as its mask; with no named
// entries left there is no mask, and the kernel folds the ACL back into
// the file's mode.
func writeACL(path string, entries []aclEntry, mask uint16) error {
	entries = slices.DeleteFunc(slices.Clone(entries), func(e aclEntry) bool { return e.tag == aclMask })
	if slices.ContainsFunc(entries, func(e aclEntry) bool { return e.tag == aclUser || e.tag == aclGroup }) {
		entries = append(entries, aclEntry{aclMask, mask, aclUndef})
	}
	slices.SortFunc(entries, func(a, b aclEntry) int {
		if a.tag != b.tag {
			return int(a.tag) - int(b.tag)
		}
		return int(a.id) - int(b.id)
	})
	buf := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range entries {
		buf = binary.LittleEndian.AppendUint16(buf, e.tag)
		buf = binary.LittleEndian.AppendUint16(buf, e.perm)
		buf = binary.LittleEndian.AppendUint32(buf, e.id)
	}
	if err := unix.Setxattr(path, aclXattr, buf, 0); err != nil {
		return fmt.Errorf("setting an ACL entry on %s: %w (does its filesystem take POSIX ACLs?)", path, err)
	}
	return nil
}

// account is the user QEMU runs as: its uid and every group it is in.
type account struct {
	uid  int
	gids []int
	name string
}

func lookupAccount(uid, gid int) account {
	a := account{uid: uid, gids: []int{gid}, name: strconv.Itoa(uid)}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		a.name = u.Username
		if ids, err := u.GroupIds(); err == nil {
			for _, s := range ids {
				if g, err := strconv.Atoi(s); err == nil && !slices.Contains(a.gids, g) {
					a.gids = append(a.gids, g)
				}
			}
		}
	}
	return a
}

// may reports whether a has perm on path, as the kernel's ACL check has it.
func (a account) may(path string, perm uint16) (bool, error) {
	entries, fi, err := readACL(path)
	if err != nil {
		return false, err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if a.uid == 0 {
		return true, nil
	}
	mask := uint16(7)
	for _, e := range entries {
		if e.tag == aclMask {
			mask = e.perm
		}
	}
	if int(st.Uid) == a.uid {
		return entries[0].perm&perm == perm, nil
	}
	for _, e := range entries {
		if e.tag == aclUser && int(e.id) == a.uid {
			return e.perm&mask&perm == perm, nil
		}
	}
	inGroup, granted := false, false
	for _, e := range entries {
		g := -1
		switch e.tag {
		case aclGroupObj:
			g = int(st.Gid)
		case aclGroup:
			g = int(e.id)
		}
		if g >= 0 && slices.Contains(a.gids, g) {
			inGroup = true
			granted = granted || e.perm&mask&perm == perm
		}
	}
	if inGroup {
		return granted, nil
	}
	for _, e := range entries {
		if e.tag == aclOther {
			return e.perm&perm == perm, nil
		}
	}
	return false, nil
}

// maskOf is the bits an ACL lets named entries and the owning group have:
// its mask, or without one (no named entry) the owning group's own.
func maskOf(entries []aclEntry) uint16 {
	var group uint16
	for _, e := range entries {
		switch e.tag {
		case aclMask:
			return e.perm
		case aclGroupObj:
			group = e.perm
		}
	}
	return group
}

// grant gives a perm on path by a named ACL entry, unless it has it
// already; the grant returned (ok) is what to take back. The mask gains
// only that perm: recomputing it from the entries would undo a mask an
// admin set to limit other named entries.
func (a account) grant(path string, perm uint16) (chain.Grant, bool, error) {
	if ok, err := a.may(path, perm); err != nil || ok {
		return chain.Grant{}, false, err
	}
	entries, _, err := readACL(path)
	if err != nil {
		return chain.Grant{}, false, err
	}
	mask := maskOf(entries)
	added, found := perm, false
	for i, e := range entries {
		if e.tag == aclUser && int(e.id) == a.uid {
			// What the entry had (and the mask withheld) is not ours to
			// take back.
			added &^= e.perm
			entries[i].perm |= perm
			found = true
		}
	}
	if !found {
		entries = append(entries, aclEntry{aclUser, perm, uint32(a.uid)})
	}
	if err := writeACL(path, entries, mask|perm); err != nil {
		return chain.Grant{}, false, err
	}
	return chain.Grant{Path: path, UID: a.uid, Perm: added, Mask: perm &^ mask}, true, nil
}

// revoke takes back what grant added, but not the mask bits that others,
// grants still in force on the same files, need.
func revoke(g chain.Grant, others []chain.Grant) error {
	entries, _, err := readACL(g.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	entries = slices.DeleteFunc(entries, func(e aclEntry) bool {
		return e.tag == aclUser && int(e.id) == g.UID && e.perm&^g.Perm == 0
	})
	for i, e := range entries {
		if e.tag == aclUser && int(e.id) == g.UID {
			entries[i].perm &^= g.Perm
		}
	}
	mask := maskOf(entries) &^ g.Mask
	for _, o := range others {
		if o.Path == g.Path {
			mask |= o.Perm
		}
	}
	return writeACL(g.Path, entries, mask)
}

// revokeUnshared takes back the grants of domain's record in dir that no
// other record of dir names.
func revokeUnshared(dir, domain string, grants []chain.Grant) error {
	recs, err := chain.ReadInUse(dir)
	if err != nil {
		return err
	}
	var keep []chain.Grant
	for _, r := range recs {
		if r.Domain != domain {
			keep = append(keep, r.Grants...)
		}
	}
	return revokeAll(slices.DeleteFunc(slices.Clone(grants), func(g chain.Grant) bool {
		return slices.ContainsFunc(keep, g.Same)
	}), keep)
}

// dropRecord takes back the grants of domain's record in dir that no other
// record names, then removes the record, with the records locked.
func dropRecord(dir, domain string, grants []chain.Grant) error {
	unlock, err := chain.LockInUse(dir)
	if err != nil {
		return err
	}
	defer unlock()
	if err := revokeUnshared(dir, domain, grants); err != nil {
		return fmt.Errorf("taking back the read access given to QEMU's user: %w", err)
	}
	return chain.RemoveInUse(dir, domain)
}

// sharedGrants are the grants every record of dir names.
func sharedGrants(dir string) ([]chain.Grant, error) {
	recs, err := chain.ReadInUse(dir)
	if err != nil {
		return nil, err
	}
	var out []chain.Grant
	for _, r := range recs {
		out = append(out, r.Grants...)
	}
	return out, nil
}

// revokeAll takes back grants, the last first, keeping what others need.
func revokeAll(grants, others []chain.Grant) error {
	var errs []error
	for i := len(grants) - 1; i >= 0; i-- {
		errs = append(errs, revoke(grants[i], others))
	}
	return errors.Join(errs...)
}

// openTo makes each of files readable by a, with passage through its
// folders from inside (and including) dir; the folders above dir are not
// vbackup's to change, and one that a cannot pass is an error naming it.
//
// An entry another instant restore of the folder gave the same user is
// listed as this one's too, not added again: each record names all it
// needs, and an entry goes only with the last record that names it.
func openTo(a account, dir string, files []string, shared []chain.Grant) ([]chain.Grant, error) {
	var grants, added []chain.Grant
	fail := func(err error) ([]chain.Grant, error) {
		return nil, errors.Join(err, revokeAll(added, shared))
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		ok, err := a.may(p, permSearch)
		if err != nil {
			return fail(err)
		}
		if !ok {
			return fail(fmt.Errorf("QEMU's user %s cannot pass through %s, above the backup folder %s: give it passage (chmod o+x %s, or setfacl -m u:%s:x %s), or keep the backups where it can reach them",
				a.name, p, dir, p, a.name, p))
		}
		if p == filepath.Dir(p) { // the root, or "." of a relative dir
			break
		}
	}
	add := func(path string, perm uint16) error {
		for _, g := range grants {
			if g.Path == path {
				return nil
			}
		}
		for _, g := range shared {
			if g.Path == path && g.UID == a.uid && g.Perm&perm == perm {
				grants = append(grants, g)
				return nil
			}
		}
		g, ok, err := a.grant(path, perm)
		if ok {
			grants = append(grants, g)
			added = append(added, g)
		}
		return err
	}
	for _, f := range files {
		rel, err := filepath.Rel(dir, f)
		if err != nil {
			return fail(err)
		}
		p := dir
		if err := add(p, permSearch); err != nil {
			return fail(err)
		}
		for _, part := range splitPath(filepath.Dir(rel)) {
			p = filepath.Join(p, part)
			if err := add(p, permSearch); err != nil {
				return fail(err)
			}
		}
		if err := add(f, permRead); err != nil {
			return fail(err)
		}
	}
	return grants, nil
}

func splitPath(rel string) []string {
	if rel == "." || rel == "" {
		return nil
	}
	var out []string
	for rel != "." && rel != "/" && rel != "" {
		out = append([]string{filepath.Base(rel)}, out...)
		rel = filepath.Dir(rel)
	}
	return out
}
