package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"vbackup/chain"
	"vbackup/progress"
)

// keepInUse keeps every backup whose files a domain recorded in the folder
// reads (an instant restore not yet finished): removing one would pull a
// disk from under a running domain, and merging into one would rewrite a
// file QEMU has open. It returns the records whose overlays no longer
// read from the folder (finished by hand with 'virsh blockpull', or
// deleted with the domain): they keep nothing, and dropStale drops them
// once nothing can refuse the prune any more.
func keepInUse(store *chain.Store, verdicts []Verdict, notes progress.Notifier) ([]chain.InUse, error) {
	recs, err := store.InUse()
	if err != nil {
		return nil, err
	}
	var stale []chain.InUse
	for _, rec := range recs {
		reads, why := stillReads(rec, store.Dir)
		if why != "" {
			notes.Notef("note: instant restore %s: %s; its record and the backups it reads are kept", rec.Domain, why)
		}
		if !reads {
			stale = append(stale, rec)
			continue
		}
		for i, v := range verdicts {
			if rec.Reads(v.Backup.Name()) {
				verdicts[i].Keep = true
				verdicts[i].Reasons = append(verdicts[i].Reasons,
					fmt.Sprintf("in use: domain %s runs from it (instant restore, until 'vbackup restore --finish %s')", rec.Domain, rec.Domain))
			}
		}
	}
	return stale, nil
}

// dropStale drops the records keepInUse found stale, taking back their
// grants; a dry run says it would.
func dropStale(store *chain.Store, stale []chain.InUse, dry bool, notes progress.Notifier) error {
	for _, rec := range stale {
		if dry {
			notes.Notef("note: instant restore %s no longer reads from %s (its overlays are gone or hold all their data): the prune drops its record", rec.Domain, store.Dir)
			continue
		}
		if err := dropRecord(store.Dir, rec.Domain, rec.Grants); err != nil {
			return err
		}
		notes.Notef("note: instant restore %s no longer reads from %s (its overlays are gone or hold all their data): its record was dropped", rec.Domain, store.Dir)
	}
	return nil
}

// stillReads reports whether any overlay of rec exists and is still backed
// by an image in dir. It asks no libvirt: a domain deleted while its
// overlays stay could be defined on them again, so those are kept. Only
// an overlay known not to exist is gone: one that cannot be looked at or
// read counts as reading, and why names it.
func stillReads(rec chain.InUse, dir string) (reads bool, why string) {
	for _, d := range rec.Disks {
		if _, err := os.Stat(d.Overlay); errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return true, fmt.Sprintf("its overlay %s cannot be looked at (%v), so it may still read from %s", d.Overlay, err, dir)
		}
		b, err := backingFile(d.Overlay)
		if err != nil {
			return true, fmt.Sprintf("its overlay %s cannot be read (%v), so it may still read from %s", d.Overlay, err, dir)
		}
		if b != "" && under(filepath.Clean(b), dir) {
			return true, ""
		}
	}
	return false, ""
}
