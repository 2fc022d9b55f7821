package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"vbackup/chain"
	"vbackup/contentsum"
)

// Checked is one disk of one backup, verified.
type Checked struct {
	Backup   string `json:"backup"`
	Disk     string `json:"disk"`
	Status   string `json:"status"` // ok, damaged, depends (on a damaged backup), error
	Checksum string `json:"checksum"`
	Found    string `json:"found,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

// Verified counts what Verify checked.
type Verified struct {
	Disks, Backups int
}

// Verify reads back each disk of every backup in store (or of the one at
// names: a backup, or latest; "all" for every one) through its chain,
// recomputes its content checksum and compares it with the manifest; it
// also checks that each overlay's backing file is the one the manifest
// names. Each disk's outcome goes to report as it is known, backup by
// backup, disk by disk. A damaged backup is named, and so are the later
// backups built on it; the error lists every disk that does not match.
//
// For all backups, each stored byte is read once: a full image whole, and
// each overlay only the chunks it holds itself, the others' digests coming
// from the point below, verified just before (see pointDigests). One
// backup's chain is read whole.
func Verify(ctx context.Context, store *chain.Store, at string, report func(Checked) error) (Verified, error) {
	unlock, err := chain.LockReading(store.Dir)
	if err != nil {
		return Verified{}, err
	}
	defer unlock()
	if store, err = chain.Open(store.Dir); err != nil {
		return Verified{}, err
	}
	backups := store.Backups
	if at != "all" {
		b, err := store.Find(at)
		if err != nil {
			return Verified{}, err
		}
		backups = []*chain.Backup{b}
	}
	if len(backups) == 0 {
		return Verified{}, fmt.Errorf("%s holds no backups to verify", store.Dir)
	}
	var below *pointDigests
	if at == "all" {
		below = newPointDigests(backups)
	}
	damaged := map[string]string{} // backup/disk: the damaged backup it is or builds on
	var bad []string
	n := Verified{Backups: len(backups)}
	for _, b := range backups {
		for _, d := range b.Disks {
			res := verifyDisk(ctx, store, b, d, damaged, below)
			if err := context.Cause(ctx); err != nil {
				// Stopped (Ctrl-C): what this disk's read met says nothing
				// of the backup, and nothing is reported of it.
				return n, fmt.Errorf("verifying %s stopped at backup %s, disk %s: %w", store.Dir, b.Name(), d.Name, err)
			}
			below.done(b, d)
			n.Disks++
			if res.Status != "ok" {
				bad = append(bad, fmt.Sprintf("%s (%s: %s)", b.Name(), d.Name, res.Status))
				if res.Status == "damaged" || res.Status == "error" {
					damaged[b.Name()+"/"+d.Name] = b.Name()
				}
			}
			if err := report(res); err != nil {
				return n, err
			}
		}
		if res, ok := verifyFirmware(b); ok {
			if res.Status != "ok" {
				bad = append(bad, fmt.Sprintf("%s (nvram: %s)", b.Name(), res.Status))
			}
			if err := report(res); err != nil {
				return n, err
			}
		}
	}
	if len(bad) > 0 {
		return n, fmt.Errorf("%d of %d disk images in %s do not match their manifests: %s", len(bad), n.Disks, store.Dir, strings.Join(bad, ", "))
	}
	return n, nil
}

// verifyDisk checks one disk of b. damaged maps backup/disk to the damaged
// backup it is, for the backups checked before. below, if set, holds the
// digests of the points verified before; nil: the chain is read whole.
func verifyDisk(ctx context.Context, store *chain.Store, b *chain.Backup, d chain.Disk, damaged map[string]string, below *pointDigests) Checked {
	res := Checked{Backup: b.Name(), Disk: d.Name, Checksum: d.Checksum}
	fail := func(status, detail string) Checked {
		res.Status, res.Detail = status, detail
		return res
	}
	links, err := store.Chain(b, d.Name)
	if err != nil {
		return fail("error", err.Error())
	}
	for _, l := range links[:len(links)-1] {
		if bad, ok := damaged[l.Name()+"/"+d.Name]; ok {
			return fail("depends", "builds on damaged backup "+bad)
		}
	}
	if d.Level == chain.Incremental {
		// What the manifest names, or, while an unfinished prune removes
		// the backup below, the one below that: the removal rebases this
		// image before its manifest says so.
		names := store.BackingNames(b, d)
		got, err := backingFile(b.File(d))
		if err != nil {
			return fail("error", err.Error())
		}
		if len(names) == 0 || !slices.Contains(names, got) {
			want := ""
			if len(names) > 0 {
				want = names[0]
			}
			return fail("damaged", fmt.Sprintf("its backing file is %q, not %q", got, want))
		}
	}
	want, err := contentsum.Parse(d.Checksum)
	if err != nil {
		return fail("error", "the manifest's checksum: "+err.Error())
	}
	opts, keep, err := below.options(ctx, b, d)
	if err != nil {
		return fail("error", err.Error())
	}
	got, err := contentsum.File(ctx, b.File(d), d.Format, opts)
	if err != nil {
		return fail("error", err.Error())
	}
	if !got.Equal(want) {
		res.Found = got.String()
		return fail("damaged", "content is "+got.String())
	}
	keep(got)
	res.Status = "ok"
	return res
}
