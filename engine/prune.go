package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"vbackup/chain"
	"vbackup/contentsum"
	"vbackup/progress"
)

// PruneRequest is one prune of a backup folder.
type PruneRequest struct {
	Dir    string
	Policy Policy
	DryRun bool // judge and estimate, change nothing
	Now    func() time.Time
}

// Pruned is what a prune did (or, dry, would do).
type Pruned struct {
	Verdicts []Verdict // every backup, oldest first
	Merges   []Merge
	// Freed is the space given back: measured, or estimated when dry.
	Freed uint64
	// Completed names a removal that an interrupted prune left half done,
	// completed first.
	Completed string
	// Removed names the backups removed, in order: all that the policy
	// does not keep, unless the prune failed or was stopped.
	Removed []string
}

// Merge is one disk of a removed backup whose data moved into the backup
// built on it, so that this one still reads as it did.
type Merge struct {
	Removed, Into, Disk string
	// Down: the removed image was a full one, and the next one's data went
	// into it, which then took the next one's place. Otherwise the removed
	// image's data that the next one does not overwrite went up into it,
	// and it was rebased onto the image below.
	Down  bool
	Bytes uint64 // the data of the overlay merged
}

// Prune removes the backups the policy does not keep, merging each removed
// point that a kept one builds on, so that every kept point still restores
// exactly what its manifest says. Each removal is recorded in the folder
// before it changes anything, and every step of it can be repeated: a
// prune stopped at any moment is completed by the next prune or backup.
func Prune(ctx context.Context, req PruneRequest, notes progress.Notifier) (Pruned, error) {
	var out Pruned
	// A folder that is none, or holds no backup, is refused before the
	// lock, whose file would be the first change; a manifest that does
	// not read is refused once the lock is taken (the folder is a backup
	// folder, where the lock's file belongs).
	if fi, err := os.Stat(req.Dir); err != nil || !fi.IsDir() {
		return out, notAFolder(req.Dir)
	} else if !chain.Holds(req.Dir) {
		return out, fmt.Errorf("%s holds no backups to prune (no backup folder with a %s in it)", req.Dir, chain.ManifestFile)
	}
	// A dry run only reads; a prune excludes backups (the folder's lock)
	// and readers of the images it rewrites.
	lock := chain.LockRewriting
	if req.DryRun {
		lock = chain.LockReading
	} else {
		unlock, err := chain.Lock(req.Dir)
		if err != nil {
			return out, err
		}
		defer unlock()
	}
	unlock, err := lock(req.Dir)
	if err != nil {
		return out, err
	}
	defer unlock()
	store, err := chain.Open(req.Dir)
	if err != nil {
		return out, err
	}
	if store.RemovalLeft() {
		if req.DryRun && store.Removing != nil {
			notes.Notef("note: an interrupted prune left the removal of backup %s half done; the next prune or backup completes it (what it frees is not counted here)", store.Removing.Name())
		} else if !req.DryRun {
			if store.Removing != nil {
				out.Completed = store.Removing.Name()
			}
			if err := completeRemoval(ctx, store, notes); err != nil {
				return out, err
			}
		}
	}
	if !req.DryRun {
		left, err := store.Leftovers()
		if err != nil {
			return out, err
		}
		for _, name := range left {
			notes.Notef("note: removed what an interrupted run left of %s in %s", name, req.Dir)
		}
	}
	if len(store.Backups) == 0 {
		return out, fmt.Errorf("%s holds no backups to prune", req.Dir)
	}
	out.Verdicts = req.Policy.Apply(store.Backups)
	stale, err := keepInUse(store, out.Verdicts, notes)
	if err != nil {
		return out, err
	}
	// A disk image two later backups build on cannot be merged into both:
	// refused before anything changes.
	for _, v := range out.Verdicts {
		if v.Keep {
			continue
		}
		for _, d := range v.Backup.Disks {
			if deps := store.Dependents(v.Backup, d.Name); len(deps) > 1 {
				return out, fmt.Errorf("backup %s: disk %s is the base of %d later backups (%s and %s); it cannot be merged into both, so nothing was pruned; keep it with --keep-last or another rule",
					v.Backup.Name(), d.Name, len(deps), deps[0].Name(), deps[1].Name())
			}
		}
	}
	if err := dropStale(store, stale, req.DryRun, notes); err != nil {
		return out, err
	}
	dry := &dryRun{full: map[string]bool{}, ranges: map[string][]contentsum.Range{}}
	for _, v := range out.Verdicts {
		if v.Keep {
			continue
		}
		if req.DryRun {
			freed, merges, err := dry.removalCost(ctx, store, v.Backup)
			if err != nil {
				return out, err
			}
			out.Freed += freed
			out.Merges = append(out.Merges, merges...)
			continue
		}
		if err := context.Cause(ctx); err != nil {
			return out, fmt.Errorf("prune stopped before removing backup %s: %w", v.Backup.Name(), err)
		}
		// What a removal frees is measured in the folders it changes
		// alone: a walk of years of backups would cost more than it.
		dirs := touched(store, v.Backup)
		before := storedBytes(dirs...)
		merges, err := remove(ctx, store, v.Backup, req.Now(), notes)
		if after := storedBytes(dirs...); after < before {
			out.Freed += before - after
		}
		out.Merges = append(out.Merges, merges...)
		if err != nil {
			if c := context.Cause(ctx); c != nil && !errors.Is(err, c) {
				err = fmt.Errorf("%w (%w)", c, err)
			}
			return out, err
		}
		out.Removed = append(out.Removed, v.Backup.Name())
	}
	return out, nil
}

// completeRemoval finishes the removal an interrupted prune left, by the
// plan it recorded.
func completeRemoval(ctx context.Context, store *chain.Store, notes progress.Notifier) error {
	r := store.Removing
	if r == nil {
		return store.EndRemoval() // only the record was left
	}
	notes.Notef("note: completing the removal of backup %s, which an interrupted prune left half done", r.Name())
	if _, err := merge(ctx, store, r, store.Plan, notes); err != nil {
		return fmt.Errorf("completing the removal of backup %s: %w", r.Name(), err)
	}
	return store.EndRemoval()
}

// remove takes backup r out of the store, merging each of its disks into
// the backup built on it.
func remove(ctx context.Context, store *chain.Store, r *chain.Backup, now time.Time, notes progress.Notifier) ([]Merge, error) {
	var plan []chain.Planned
	for _, d := range r.Disks {
		if deps := store.Dependents(r, d.Name); len(deps) == 1 {
			plan = append(plan, chain.Planned{Disk: d.Name, Into: deps[0].Name()})
		}
	}
	if err := store.BeginRemoval(r, plan, now); err != nil {
		return nil, err
	}
	if err := stop("recorded"); err != nil {
		return nil, err
	}
	merges, err := merge(ctx, store, r, plan, notes)
	if err != nil {
		return merges, fmt.Errorf("removing backup %s: %w; the next prune or backup completes it", r.Name(), err)
	}
	if err := stop("merged"); err != nil {
		return merges, err
	}
	return merges, store.EndRemoval()
}

// merge carries out a removal's plan.
func merge(ctx context.Context, store *chain.Store, r *chain.Backup, plan []chain.Planned, notes progress.Notifier) ([]Merge, error) {
	var merges []Merge
	for _, p := range plan {
		d, ok := r.Disk(p.Disk)
		if !ok {
			return merges, fmt.Errorf("backup %s has no disk %s", r.Name(), p.Disk)
		}
		next, err := store.Find(p.Into)
		if err != nil {
			return merges, err
		}
		m, err := mergeDisk(ctx, store, r, d, next, notes)
		if err != nil {
			return merges, err
		}
		merges = append(merges, m)
	}
	return merges, nil
}

// touched is the folders that removing r changes: its own, and those of
// the backups built on it, which take its data.
func touched(store *chain.Store, r *chain.Backup) []string {
	dirs := []string{r.Dir}
	for _, d := range r.Disks {
		for _, next := range store.Dependents(r, d.Name) {
			if !slices.Contains(dirs, next.Dir) {
				dirs = append(dirs, next.Dir)
			}
		}
	}
	return dirs
}

// storedBytes is the space the files under paths take (none for a path
// that is gone).
func storedBytes(paths ...string) uint64 {
	var n uint64
	for _, p := range paths {
		_ = filepath.WalkDir(p, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			if fi, err := e.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += uint64(st.Blocks) * 512
				}
			}
			return nil
		})
	}
	return n
}
