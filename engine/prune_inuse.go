package engine

import (
	"fmt"
	"os"
	"path/filepath"

	"vbackup/chain"
	"vbackup/progress"
)

// keepInUse keeps every backup whose files a domain recorded in the folder
// reads (an instant restore not yet finished): removing one would pull a
// disk from under a running domain, and merging into one would rewrite a
// file QEMU has open. A record whose overlays no longer read from the
// folder (finished by hand with 'virsh blockpull', or deleted with the
// domain) keeps nothing: a prune drops it, and a dry run says it would.
func keepInUse(store *chain.Store, verdicts []Verdict, dry bool, notes progress.Notifier) error {
	recs, err := store.InUse()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if !stillReads(rec, store.Dir) {
			if dry {
				notes.Notef("note: instant restore %s no longer reads from %s (its overlays are gone or hold all their data): the prune drops its record", rec.Domain, store.Dir)
				continue
			}
			if err := revokeUnshared(store.Dir, rec.Domain, rec.Grants); err != nil {
				return err
			}
			if err := chain.RemoveInUse(store.Dir, rec.Domain); err != nil {
				return err
			}
			notes.Notef("note: instant restore %s no longer reads from %s (its overlays are gone or hold all their data): its record was dropped", rec.Domain, store.Dir)
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
	return nil
}

// stillReads reports whether any overlay of rec exists and is still backed
// by an image in dir. It asks no libvirt: a domain deleted while its
// overlays stay could be defined on them again, so those are kept.
func stillReads(rec chain.InUse, dir string) bool {
	for _, d := range rec.Disks {
		if _, err := os.Stat(d.Overlay); err != nil {
			continue
		}
		b, err := backingFile(d.Overlay)
		if err != nil {
			return true // unreadable: assume the worst
		}
		if b != "" && under(filepath.Clean(b), dir) {
			return true
		}
	}
	return false
}
