package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"vbackup/chain"
	"vbackup/contentsum"
	exportfetch "vbackup/fetch"
	"vbackup/nbd"
	"vbackup/progress"
	"vbackup/qemunbd"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// RestoreRequest is one restore of a backup point into a folder.
type RestoreRequest struct {
	From   string   // the backup folder
	At     string   // a backup (checkpoint) name, or latest
	To     string   // where the images go, absolute
	Format string   // of the images: qcow2 or raw
	Disks  []string // only these; all by default
	Define string   // define a domain of this name on the images
	// Targets write these disks onto what exists already (a block device
	// or a file), raw, instead of a new image in To (restore_target.go).
	Targets map[string]string
	Conn    virt.Conn
	Now     func() time.Time
	Limit   *nbd.Limiter // caps the rate of the data read from the backup; nil: no cap
	// Pool, with Define, puts the images into this storage pool of Conn's
	// host as volumes, uploaded over the connection (restore_pool.go); To
	// is then where they are staged, if given.
	Pool string
}

// Restored is what a restore wrote.
type Restored struct {
	Backup *chain.Backup
	Disks  []RestoredDisk
	Domain string // the domain defined on the images, if any
}

// RestoredDisk is one image written, and the disk size it holds.
type RestoredDisk struct {
	Name, Path string
	Size       uint64
	Volume     string // with RestoreRequest.Pool: the volume's name (Path is its path on the pool's host)
}

// Restore writes each disk of the backup req.At names as one image, reads
// every image back against the manifest, and defines a domain on them
// when asked. Everything that could refuse is asked before anything is
// written; a failed restore keeps no image.
func Restore(ctx context.Context, req RestoreRequest, printer progress.Printer, notes progress.Notifier) (Restored, error) {
	if req.Pool != "" {
		return restoreIntoPool(ctx, req, printer, notes)
	}
	var out Restored
	store, err := OpenFolder(req.From)
	if err != nil {
		return out, err
	}
	unlock, err := chain.LockReading(req.From)
	if err != nil {
		return out, err
	}
	defer unlock()
	// Read again under the lock: a prune may have ended meanwhile.
	if store, err = OpenFolder(req.From); err != nil {
		return out, err
	}
	b, err := store.Find(req.At)
	if err != nil {
		return out, err
	}
	out.Backup = b
	disks, err := restoreDisks(b, req)
	if err != nil {
		return out, err
	}
	targets, err := checkTargets(b, req.Targets)
	if err != nil {
		return out, err
	}
	disks = slices.DeleteFunc(disks, func(d exportfetch.Disk) bool { _, ok := req.Targets[d.Name]; return ok })
	if req.Define != "" {
		switch _, err := req.Conn.Domain(ctx, req.Define); {
		case err == nil:
			return out, fmt.Errorf("--define %s: a domain of that name exists already; choose another name", req.Define)
		case !errors.Is(err, virt.ErrNoDomain):
			return out, err
		}
	}
	for _, d := range disks {
		if _, err := os.Lstat(d.Path); err == nil {
			return out, fmt.Errorf("%s exists already; vbackup never writes over a file: move it away or restore into another folder", d.Path)
		}
	}
	if _, err := nvramTarget(b, req.Define, req.To); err != nil {
		return out, err
	}
	if len(disks) > 0 {
		// A domain defined on the images runs as OUTDIR's owner, or as
		// the owner of the folder OUTDIR is made in.
		owner, err := overlayOwner(req.To)
		if err != nil {
			return out, err
		}
		if _, err := os.Stat(req.To); errors.Is(err, os.ErrNotExist) && req.Define != "" && os.Geteuid() == 0 {
			if err := os.MkdirAll(req.To, 0o755); err != nil {
				return out, err
			}
			if err := os.Chown(req.To, owner.uid, owner.gids[0]); err != nil {
				return out, err
			}
		}
		if err := os.MkdirAll(req.To, 0o755); err != nil {
			return out, err
		}
		if err := copyChains(ctx, b, disks, printer, req, notes); err != nil {
			return out, err
		}
		if err := checkRestored(ctx, b, disks); err != nil {
			for _, d := range disks {
				os.Remove(d.Path)
			}
			return out, err
		}
	}
	for _, d := range disks {
		md, _ := b.Disk(d.Name)
		out.Disks = append(out.Disks, RestoredDisk{Name: d.Name, Path: d.Path, Size: md.VirtualSize})
	}
	written, err := restoreTargets(ctx, b, targets, notes)
	out.Disks = append(out.Disks, written...)
	if err != nil {
		return out, err
	}
	if req.Define == "" {
		return out, nil
	}
	out.Domain, err = defineRestored(ctx, req, b, disks, targets, notes)
	return out, err
}

// copyChains serves each disk's chain over NBD and copies it into its image.
func copyChains(ctx context.Context, b *chain.Backup, disks []exportfetch.Disk, printer progress.Printer, req RestoreRequest, notes progress.Notifier) error {
	var servers []*qemunbd.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	for i, d := range disks {
		md, _ := b.Disk(d.Name)
		srv, err := qemunbd.Serve(ctx, b.File(md), md.Format)
		if err != nil {
			return fmt.Errorf("backup %s, disk %s: %w", b.Name(), d.Name, err)
		}
		servers = append(servers, srv)
		disks[i].URI = srv.URI()
	}
	notes.Infof("Restoring backup %s (%s, %s) into %s", b.Name(), b.Time.Local().Format(time.DateTime), b.Level, req.To)
	if _, err := exportfetch.Run(ctx, disks, exportfetch.Options{Printer: printer, Now: req.Now, What: "restore", KeepCache: true, Limit: req.Limit}); err != nil {
		// Run removed what it wrote; what is there now is not ours.
		return fmt.Errorf("restoring backup %s: %w; no image was kept", b.Name(), err)
	}
	return nil
}

// restoreDisks lists the images to write.
func restoreDisks(b *chain.Backup, req RestoreRequest) ([]exportfetch.Disk, error) {
	names := make([]string, len(b.Disks))
	for i, d := range b.Disks {
		names[i] = d.Name
	}
	if err := virt.CheckDiskNames("backup "+b.Name(), names, req.Disks); err != nil {
		return nil, err
	}
	var out []exportfetch.Disk
	for _, d := range b.Disks {
		if virt.Wanted(req.Disks, d.Name) {
			out = append(out, exportfetch.Disk{Name: d.Name, Format: req.Format, Path: filepath.Join(req.To, d.Name+"."+req.Format)})
		}
	}
	return out, nil
}

// checkRestored reads every restored image back and compares its content
// with the checksum the backup recorded.
func checkRestored(ctx context.Context, b *chain.Backup, disks []exportfetch.Disk) error {
	for _, d := range disks {
		md, _ := b.Disk(d.Name)
		want, err := contentsum.Parse(md.Checksum)
		if err != nil {
			return fmt.Errorf("backup %s, disk %s: the manifest's checksum: %w", b.Name(), d.Name, err)
		}
		got, err := contentsum.File(ctx, d.Path, d.Format, contentsum.Options{})
		if err != nil {
			return fmt.Errorf("reading back %s: %w", d.Path, err)
		}
		if !got.Equal(want) {
			return fmt.Errorf("the restored image of disk %s is not the disk of backup %s (content %s, manifest %s): the chain is damaged, and the image was removed; "+
				"'vbackup verify --from %s' names the damaged backup", d.Name, b.Name(), got, want, filepath.Dir(b.Dir))
		}
	}
	return nil
}

// defineRestored defines a new domain on the restored images.
func defineRestored(ctx context.Context, req RestoreRequest, b *chain.Backup, disks []exportfetch.Disk, targets []target, notes progress.Notifier) (string, error) {
	images := targetImages(targets)
	for _, d := range disks {
		images[d.Name] = xmlgen.RestoredDisk{Path: d.Path, Format: d.Format}
	}
	doc, filled, err := xmlgen.RestoredDomain(b.Domain.XML, req.Define, images)
	if err != nil {
		return "", fmt.Errorf("backup %s: %w", b.Name(), err)
	}
	if doc, filled, err = definedFirmware(req, b, disks, doc, filled); err != nil {
		return "", err
	}
	for _, n := range filled {
		notes.Notef("note: %s", n)
	}
	dom, err := req.Conn.DefineDomain(ctx, doc)
	if err != nil {
		return "", fmt.Errorf("defining domain %s: %w; the images are in %s", req.Define, err, req.To)
	}
	if err := definedTPM(ctx, b, dom, notes); err != nil {
		return "", fmt.Errorf("domain %s is defined, but %w", req.Define, err)
	}
	return dom.Name(), nil
}
