package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"vbackup/chain"
	"vbackup/contentsum"
	"vbackup/progress"
)

// mergeDisk makes next's image of disk d read as it does without the
// removed backup r's image of it. Moving data between adjacent layers in
// these two directions never changes what next reads, so each step can be
// repeated after a crash, and next restores all the while:
//   - r's image is a full one: next's data is committed into it, next's
//     manifest says full, and r's image takes the place of next's;
//   - r's image is an overlay over prev's: r's data that next does not
//     overwrite is copied up into next, which is rebased onto prev's image.
func mergeDisk(ctx context.Context, store *chain.Store, r *chain.Backup, d chain.Disk, next *chain.Backup, notes progress.Notifier) (Merge, error) {
	nd, _ := next.Disk(d.Name)
	// The overlay merged: next's into the full below it, or r's up into
	// next. What a backup copied from the domain is what its overlay holds.
	m := Merge{Removed: r.Name(), Into: next.Name(), Disk: d.Name, Down: d.Level == chain.Full, Bytes: d.Copied}
	if m.Down {
		m.Bytes = nd.Copied
	}
	nextImg, rImg := next.File(nd), r.File(d)
	backing, err := backingFile(nextImg)
	if err != nil {
		return m, err
	}
	rName := chain.BackingName(r, d)
	// The digest files the manifest no longer names go once the merge is
	// done, after a crash too.
	defer dropUnnamedDigests(next, d.Name)
	if m.Down {
		return m, mergeDown(ctx, store, r, d, next, nd, nextImg, rImg, rName, backing, notes)
	}
	prev, err := store.Chain(r, d.Name)
	if err != nil {
		return m, err
	}
	below := prev[len(prev)-2]
	bd, _ := below.Disk(d.Name)
	return m, rebaseUp(ctx, store, r, d, next, nd, nextImg, rImg, rName, chain.BackingName(below, bd), below.Name(), backing, notes)
}

// mergeDown commits next's overlay into r's full image, then gives that
// image next's name. The manifest says full before the rename: until then
// next's file is an overlay on a base that holds next's data, which reads
// the same.
func mergeDown(ctx context.Context, store *chain.Store, r *chain.Backup, d chain.Disk, next *chain.Backup, nd chain.Disk, nextImg, rImg, rName, backing string, notes progress.Notifier) error {
	_, statErr := os.Stat(rImg)
	switch {
	case statErr == nil && backing == rName:
		// Next's overlay is left as it is; the rename replaces it.
		if err := commitDown(ctx, nextImg, rImg, notes); err != nil {
			return err
		}
		if err := stop("committed"); err != nil {
			return err
		}
	case errors.Is(statErr, os.ErrNotExist) && backing == "":
		// Done before a crash: r's image is next's already.
	default:
		return fmt.Errorf("disk %s: %s builds on %q, not on %s as expected; nothing was merged", nd.Name, nextImg, backing, rName)
	}
	if nd.Level != chain.Full {
		sums, changed, err := digestsAfterMerge(store, r, next, d, true)
		if err != nil {
			return err
		}
		m := withDisk(next.Manifest, nd.Name, func(d *chain.Disk) {
			d.Level, d.Backing = chain.Full, ""
			d.Reason = "merged with the full image of a pruned backup"
			d.Digests, d.DigestsChanged = sums, changed
		})
		if allFull(m.Disks) {
			m.Level = chain.Full
		}
		if err := store.Rewrite(next, m); err != nil {
			return err
		}
		if err := stop("rewritten as full"); err != nil {
			return err
		}
	}
	if statErr == nil {
		if err := os.Rename(rImg, nextImg); err != nil {
			return err
		}
		return syncDir(filepath.Dir(nextImg))
	}
	return nil
}

// rebaseUp copies into next what r's overlay holds and next does not, and
// records prev's image as next's backing file (copyUp).
func rebaseUp(ctx context.Context, store *chain.Store, r *chain.Backup, d chain.Disk, next *chain.Backup, nd chain.Disk, nextImg, rImg, rName, belowName, below, backing string, notes progress.Notifier) error {
	// Before the rebase: until the manifest says so, next's chain reads
	// through r, and the digests are worked out along it.
	sums, changed, err := digestsAfterMerge(store, r, next, d, false)
	if err != nil {
		return err
	}
	switch backing {
	case rName:
		if err := copyUp(ctx, rImg, nextImg, belowName, notes); err != nil {
			return err
		}
		if err := stop("rebased"); err != nil {
			return err
		}
	case belowName:
		// Done before a crash.
	default:
		return fmt.Errorf("disk %s: %s builds on %q, not on %s as expected; nothing was merged", nd.Name, nextImg, backing, rName)
	}
	m := withDisk(next.Manifest, nd.Name, func(d *chain.Disk) {
		d.Backing = below
		d.Digests, d.DigestsChanged = sums, changed
	})
	return store.Rewrite(next, m)
}

// dropUnnamedDigests removes next's digest files of disk that its manifest
// does not name (a merge replaced them).
func dropUnnamedDigests(next *chain.Backup, disk string) {
	nd, _ := next.Disk(disk)
	for _, name := range []string{allDigestsFile(disk), changedDigestsFile(disk)} {
		if name != nd.Digests {
			_ = os.Remove(next.File(chain.Disk{File: name}))
		}
	}
}

// withDisk is a copy of m with disk name changed by edit.
func withDisk(m chain.Manifest, name string, edit func(*chain.Disk)) chain.Manifest {
	m.Disks = append([]chain.Disk(nil), m.Disks...)
	for i := range m.Disks {
		if m.Disks[i].Name == name {
			edit(&m.Disks[i])
		}
	}
	return m
}

func allFull(disks []chain.Disk) bool {
	for _, d := range disks {
		if d.Level != chain.Full {
			return false
		}
	}
	return true
}

// dryRun follows what removals would do to the chain, without doing it:
// which images would have become full, and what each image would hold.
type dryRun struct {
	full   map[string]bool               // backup/disk whose image a removal made full
	ranges map[string][]contentsum.Range // backup/disk: what its image would hold itself
}

func (dr *dryRun) layer(ctx context.Context, b *chain.Backup, d chain.Disk) ([]contentsum.Range, error) {
	if r, ok := dr.ranges[b.Name()+"/"+d.Name]; ok {
		return r, nil
	}
	r, _, err := topLayer(ctx, b.File(d))
	return r, err
}

// removalCost estimates what removing r frees: the files of its disks that
// nothing builds on, and of the others the data the next backup overwrites
// (the rest moves into the next backup), as if the removals before it had
// been made.
func (dr *dryRun) removalCost(ctx context.Context, store *chain.Store, r *chain.Backup) (uint64, []Merge, error) {
	var freed uint64
	var merges []Merge
	for _, d := range r.Disks {
		deps := store.Dependents(r, d.Name)
		if len(deps) == 0 {
			freed += storedBytes(r.File(d))
			continue
		}
		next := deps[0]
		nd, _ := next.Disk(d.Name)
		mine, err := dr.layer(ctx, r, d)
		if err != nil {
			return 0, nil, err
		}
		theirs, err := dr.layer(ctx, next, nd)
		if err != nil {
			return 0, nil, err
		}
		freed += overlap(mine, theirs)
		down := d.Level == chain.Full || dr.full[r.Name()+"/"+d.Name]
		key := next.Name() + "/" + d.Name
		merges = append(merges, Merge{Removed: r.Name(), Into: next.Name(), Disk: d.Name, Down: down, Bytes: rangeBytes(theirs)})
		dr.ranges[key] = union(mine, theirs)
		if down {
			dr.full[key] = true
		}
	}
	return freed, merges, nil
}

func rangeBytes(rs []contentsum.Range) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.Len
	}
	return n
}

// union merges two sorted range lists.
func union(a, b []contentsum.Range) []contentsum.Range {
	all := append(append([]contentsum.Range(nil), a...), b...)
	slices.SortFunc(all, func(x, y contentsum.Range) int { return cmp.Compare(x.Off, y.Off) })
	var out []contentsum.Range
	for _, r := range all {
		if n := len(out); n > 0 && out[n-1].Off+out[n-1].Len >= r.Off {
			out[n-1].Len = max(out[n-1].Len, r.Off+r.Len-out[n-1].Off)
			continue
		}
		out = append(out, r)
	}
	return out
}

// overlap is the bytes where two sorted range lists meet.
func overlap(a, b []contentsum.Range) uint64 {
	var n uint64
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := max(a[i].Off, b[j].Off), min(a[i].Off+a[i].Len, b[j].Off+b[j].Len)
		if lo < hi {
			n += hi - lo
		}
		if a[i].Off+a[i].Len < b[j].Off+b[j].Len {
			i++
		} else {
			j++
		}
	}
	return n
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// stop is where the tests stop a prune, as a crash would, between two
// steps of a removal; in a real run it never does.
var stop = func(step string) error { return nil }
