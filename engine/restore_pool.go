package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

	"vbackup/progress"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// PoolVolume is the name of a restored disk's volume in the pool:
// NAME-DISK.FORMAT, after the domain defined on it.
func PoolVolume(domain, disk, format string) string {
	return domain + "-" + disk + "." + format
}

// restoreIntoPool is a restore whose images go into req.Pool, a storage
// pool of req.Conn's host, over the libvirt connection: each image is
// written and checked in a local staging folder (a new folder in req.To,
// or in the system's temporary folder), uploaded as a volume, and the
// domain req.Define is defined on the volumes. That works over any URI:
// it is the remote restore. Everything that could refuse (the pool, the
// volume names, the domain name) is asked before anything is written; a
// failed upload deletes the volumes made; the staging folder is removed
// in every case. req.Limit caps the upload (not the staging copy).
func restoreIntoPool(ctx context.Context, req RestoreRequest, printer progress.Printer, notes progress.Notifier) (Restored, error) {
	var out Restored
	if req.Define == "" || req.Conn == nil {
		return out, errors.New("a restore into a storage pool defines a domain on its volumes: give the domain's name (--define)")
	}
	if len(req.Targets) > 0 {
		return out, errors.New("a restore into a storage pool writes every disk as a volume: it takes no NAME=TARGET")
	}
	store, err := OpenFolder(req.From)
	if err != nil {
		return out, err
	}
	b, err := store.Find(req.At)
	if err != nil {
		return out, err
	}
	disks, err := restoreDisks(b, req)
	if err != nil {
		return out, err
	}
	if b.Firmware != nil && (b.Firmware.NVRAM != nil || b.Firmware.TPM != nil) {
		return out, fmt.Errorf("backup %s holds the domain's UEFI variables or TPM state, which a restore into a storage pool cannot place yet; restore with --to DIR on the host instead", b.Name())
	}
	if err := checkPool(ctx, req.Conn, req.Pool); err != nil {
		return out, err
	}
	taken, err := req.Conn.StorageVolumes(ctx, req.Pool)
	if err != nil {
		return out, err
	}
	for _, d := range disks {
		if v := PoolVolume(req.Define, d.Name, d.Format); slices.Contains(taken, v) {
			return out, fmt.Errorf("pool %s has a volume %s already; vbackup never writes over one: delete it (virsh vol-delete %s --pool %s) or choose another --define name",
				req.Pool, v, v, req.Pool)
		}
	}
	switch _, err := req.Conn.Domain(ctx, req.Define); {
	case err == nil:
		return out, fmt.Errorf("--define %s: a domain of that name exists already; choose another name", req.Define)
	case !errors.Is(err, virt.ErrNoDomain):
		return out, err
	}

	stagingIn := req.To
	if stagingIn != "" {
		if err := os.MkdirAll(stagingIn, 0o755); err != nil {
			return out, err
		}
	}
	staging, err := os.MkdirTemp(stagingIn, "vbackup-restore-")
	if err != nil {
		return out, err
	}
	defer os.RemoveAll(staging)
	local := req
	local.To, local.Pool, local.Define = staging, "", ""
	// The cap is for what crosses the connection, the upload: the staging
	// copy reads the backup here.
	local.Limit = nil
	var pace virt.Pace
	if req.Limit != nil {
		pace = req.Limit.Take
	}
	res, err := Restore(ctx, local, printer, notes)
	out.Backup = res.Backup
	if err != nil {
		return out, err
	}

	notes.Infof("Uploading the images into pool %s of %s", req.Pool, req.Conn.URI())
	images := map[string]xmlgen.RestoredDisk{}
	var made []string
	undo := func() {
		for _, v := range made {
			_ = req.Conn.DeleteVolume(context.WithoutCancel(ctx), req.Pool, v)
		}
	}
	for i, d := range res.Disks {
		vol := PoolVolume(req.Define, d.Name, disks[i].Format)
		path, err := req.Conn.UploadVolume(ctx, req.Pool, vol, d.Path, pace)
		if err != nil {
			undo()
			return Restored{Backup: b}, fmt.Errorf("disk %s: %w; no volume was kept", d.Name, err)
		}
		made = append(made, vol)
		images[d.Name] = xmlgen.RestoredDisk{Path: path, Format: disks[i].Format}
		out.Disks = append(out.Disks, RestoredDisk{Name: d.Name, Path: path, Size: d.Size, Volume: vol})
	}
	doc, filled, err := xmlgen.RestoredDomain(b.Domain.XML, req.Define, images)
	if err != nil {
		undo()
		return Restored{Backup: b}, fmt.Errorf("backup %s: %w", b.Name(), err)
	}
	for _, n := range filled {
		notes.Notef("note: %s", n)
	}
	dom, err := req.Conn.DefineDomain(ctx, doc)
	if err != nil {
		return out, fmt.Errorf("defining domain %s: %w; the volumes are kept in pool %s", req.Define, err, req.Pool)
	}
	out.Domain = dom.Name()
	return out, nil
}

// checkPool refuses a pool that is not there (naming those that are) or
// not started.
func checkPool(ctx context.Context, conn virt.Conn, name string) error {
	pools, err := conn.StoragePools(ctx)
	if err != nil {
		return fmt.Errorf("listing the storage pools of %s: %w", conn.URI(), err)
	}
	var names []string
	for _, p := range pools {
		if p.Name == name {
			if !p.Active {
				return fmt.Errorf("storage pool %s of %s is not active: start it (virsh pool-start %s) and restore again", name, conn.URI(), name)
			}
			return nil
		}
		names = append(names, p.Name)
	}
	return fmt.Errorf("no storage pool %s on %s; %s", name, conn.URI(), virt.Listing("storage pools", names))
}
