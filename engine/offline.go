package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
	exportfetch "vbackup/fetch"
	"vbackup/progress"
	"vbackup/qemunbd"
	"vbackup/virt"
)

// A shut-off domain has no QEMU to run a backup job, and libvirt 9.0
// makes no checkpoint for it. Its images are read as they are instead,
// through qemu-nbd (read-only, with the last checkpoint's bitmap as the
// list of changed blocks), into the same files an online backup writes,
// and the new checkpoint is made as libvirt would have made it: an
// enabled bitmap of its name in every qcow2 image, and its definition
// redefined in libvirt. When libvirtd runs on another host, reached over
// SSH, all of it runs there, through SSH (offline_host.go). Order keeps
// every checkpoint honest:
//
//  1. the new bitmap is added before anything is read, so that it records
//     every write after the point the backup holds;
//  2. the images are served read-only until the backup is in place:
//     QEMU's image lock makes a 'virsh start' meanwhile fail ("Failed to
//     get "write" lock"), and an image another process writes is refused;
//  3. the checkpoint is defined in libvirt only once the folder holds the
//     backup; a run killed before that leaves only a bitmap no checkpoint
//     names (the next offline backup of the folder removes it), killed
//     after, a backup whose checkpoint the next backup redefines from the
//     folder.

// madeCheckpoint is the checkpoint an offline backup makes, as its
// manifest records it before libvirt knows it.
type madeCheckpoint struct {
	cp  virt.Checkpoint
	xml string
}

// checkpointMade is the checkpoint made for this backup and its XML.
func (b *Backup) checkpointMade(ctx context.Context) (virt.Checkpoint, string, error) {
	if b.made != nil {
		return b.made.cp, b.made.xml, nil
	}
	cp, err := b.dom.Checkpoint(ctx, b.name)
	if err != nil {
		return cp, "", fmt.Errorf("the checkpoint made with the job: %w", err)
	}
	doc, err := b.dom.CheckpointXML(ctx, b.name, virt.XMLFlags{})
	return cp, doc, err
}

// usableOffline is usable for a shut-off domain: the images' bitmaps are
// read directly, so a checkpoint libvirt no longer has is no reason for a
// full backup (decideOffline checks each image's bitmap), but one that is
// not this folder's is.
func (b *Backup) usableOffline(ctx context.Context, last *chain.Backup) (bool, string, error) {
	cp, err := b.dom.Checkpoint(ctx, last.Name())
	switch {
	case err == nil:
		if why := notOwn(cp, last); why != "" {
			return false, why, nil
		}
	case !errors.Is(err, virt.ErrNoCheckpoint):
		return false, "", virt.CheckpointErr(ctx, b.dom, last.Name(), err)
	}
	return true, "", nil
}

// decideOffline checks every image to be read (no other process writes
// it) and makes a disk whose image lacks a whole bitmap of the last
// checkpoint a full one, saying why.
func (b *Backup) decideOffline(ctx context.Context) error {
	if b.req.Push {
		return fmt.Errorf("domain %q is shut off: --push needs libvirt to run the backup job, which needs the domain running; leave out --push (vbackup then reads the images itself) or start the domain", b.dom.Name())
	}
	images := b.images()
	if err := images.check(ctx); err != nil {
		return fmt.Errorf("domain %q is shut off, and vbackup reads its images with qemu-img and qemu-nbd: %w", b.dom.Name(), err)
	}
	if b.req.DryRun {
		b.would = append(b.would, "the domain is shut off: its images would be read with qemu-nbd"+images.where()+", and it could not start until the backup is in place")
	}
	incremental := 0
	var whys []string
	for i, c := range b.dec.Disks {
		d, _ := b.domainDisk(c.Name)
		if d.Type != "file" && d.Type != "block" {
			return fmt.Errorf("disk %s of the shut-off domain %q is a %s disk: vbackup reads a shut-off domain's files and block devices only; start the domain to back it up", c.Name, b.dom.Name(), d.Type)
		}
		bitmaps, err := imageInfo(ctx, images, d.Source, imageFormat(d))
		if err != nil {
			return fmt.Errorf("disk %s: %w", c.Name, err)
		}
		if c.Level != chain.Incremental {
			continue
		}
		from := b.dec.From.Name()
		why := ""
		if m, ok := findBitmap(bitmaps, from); !ok {
			why = fmt.Sprintf("its image holds no bitmap of checkpoint %s, so its changes since are not known", from)
		} else if bad := m.usableFor(); bad != "" {
			why = fmt.Sprintf("its image's bitmap of checkpoint %s is %s", from, bad)
		}
		if why == "" {
			incremental++
			continue
		}
		b.dec.Disks[i].Level, b.dec.Disks[i].Reason = chain.Full, why
		whys = append(whys, c.Name+": "+why)
	}
	if b.dec.Level != chain.Incremental || incremental > 0 {
		return nil
	}
	if b.req.Level == chain.WantInc {
		return fmt.Errorf("no disk of domain %q can be backed up incrementally (%s); use --level full (or auto)", b.dom.Name(), strings.Join(whys, "; "))
	}
	b.dec.Level, b.dec.From = chain.Full, nil
	b.dec.Reason = "no disk can build on the last backup (" + strings.Join(whys, "; ") + ")"
	return nil
}

func (b *Backup) domainDisk(name string) (virt.Disk, bool) {
	for _, d := range b.domainDisks {
		if d.Target == name {
			return d, true
		}
	}
	return virt.Disk{}, false
}

// imageFormat is a disk's image format; libvirt takes raw when the XML
// does not say.
func imageFormat(d virt.Disk) string {
	if d.Format == "" {
		return "raw"
	}
	return d.Format
}

// runOffline is run for a shut-off domain.
func (b *Backup) runOffline(ctx context.Context, printer progress.Printer, committing func() error) (*chain.Backup, error) {
	b.announce()
	images := b.images()
	b.notes.Infof("Domain %s is shut off: reading its images with qemu-nbd%s (it cannot start until the backup is in place)", b.dom.Name(), images.where())
	var err error
	if b.pending, err = b.store.Begin(b.name); err != nil {
		return nil, err
	}
	started := b.req.Now()
	if b.made, err = b.offlineCheckpoint(ctx, started); err != nil {
		return nil, err
	}
	// 1. The new checkpoint's bitmaps, before anything is read.
	var added []string
	undo := func() {
		for _, path := range added {
			_ = removeBitmap(context.WithoutCancel(ctx), images, path, b.name)
		}
	}
	for _, c := range b.dec.Disks {
		if d, _ := b.domainDisk(c.Name); d.CanCarryBitmap() && imageFormat(d) == "qcow2" {
			// One of this name is what a run killed within this same second
			// left: no checkpoint and no backup has the name.
			if bitmaps, err := imageInfo(ctx, images, d.Source, "qcow2"); err == nil {
				if _, ok := findBitmap(bitmaps, b.name); ok {
					_ = removeBitmap(ctx, images, d.Source, b.name)
				}
			}
			if err := addBitmap(ctx, images, d.Source, b.name); err != nil {
				undo()
				return nil, fmt.Errorf("disk %s: adding the bitmap of checkpoint %s: %w", c.Name, b.name, err)
			}
			added = append(added, d.Source)
		}
	}
	// 2. Served read-only until the backup is in place.
	servers, err := b.serveImages(ctx, images)
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	if err != nil {
		undo()
		return nil, err
	}
	done, err := b.readOffline(ctx, printer, committing, servers, started)
	if err != nil {
		for _, s := range servers {
			s.Close()
		}
		undo()
		return nil, err
	}
	// 3. The checkpoint, now that the folder holds what it claims.
	wctx := context.WithoutCancel(ctx)
	if _, err := b.dom.CreateCheckpoint(wctx, b.made.xml, virt.CreateFlags{Redefine: true}); err != nil {
		b.notes.Notef("warning: backup %s is in place, but defining its checkpoint in libvirt failed (%v); the next backup defines it from %s",
			b.name, err, filepath.Join(done.Dir, "checkpoint.xml"))
	}
	for _, s := range servers {
		s.Close()
	}
	b.pruneOffline(wctx, images)
	return done, nil
}

// serveImages starts a read-only qemu-nbd on every image to be read, an
// incremental one with the last checkpoint's bitmap.
func (b *Backup) serveImages(ctx context.Context, images imageHost) (map[string]imageServer, error) {
	servers := map[string]imageServer{}
	for _, c := range b.dec.Disks {
		d, _ := b.domainDisk(c.Name)
		bitmap := ""
		if c.Level == chain.Incremental {
			bitmap = b.dec.From.Name()
		}
		s, err := images.serve(ctx, d.Source, imageFormat(d), bitmap)
		if err != nil {
			if strings.Contains(err.Error(), "lock") {
				err = fmt.Errorf("%w (the domain started%s, or another process opened its image, while the backup began)", err, images.where())
			}
			return servers, fmt.Errorf("disk %s: %w", c.Name, err)
		}
		servers[c.Name] = s
	}
	return servers, nil
}

// readOffline copies the served images into the pending backup, checksums
// and commits it.
func (b *Backup) readOffline(ctx context.Context, printer progress.Printer, committing func() error, servers map[string]imageServer, started time.Time) (*chain.Backup, error) {
	var disks []exportfetch.Disk
	for _, c := range b.dec.Disks {
		fd := exportfetch.Disk{Name: c.Name, URI: servers[c.Name].URI(), Format: "qcow2",
			Path: filepath.Join(b.pending.Dir(), c.Name+".qcow2"), Compress: b.req.Compress}
		if c.Level == chain.Incremental {
			fd.Bitmap = qemunbd.BitmapContext(b.dec.From.Name())
			prev, _ := b.dec.From.Disk(c.Name)
			fd.Backing = b.pending.Backing(b.dec.From, prev)
		}
		disks = append(disks, fd)
	}
	copied, err := b.fetch(ctx, printer, disks)
	if err != nil {
		return nil, fmt.Errorf("reading the images: %w", err)
	}
	m, err := b.manifest(ctx, started, copied)
	if err != nil {
		return nil, err
	}
	m.Mode = "offline"
	if err := committing(); err != nil {
		return nil, err
	}
	done, err := b.pending.Commit(m)
	if done == nil {
		return nil, err
	}
	if err != nil {
		b.notes.Notef("warning: %v", err)
	}
	return done, nil
}

// offlineCheckpoint is the definition of the checkpoint an offline backup
// makes: a bitmap of its name on every qcow2 disk backed up, the others
// left out, the domain's definition, and as parent the checkpoint it
// builds on when libvirt has it.
func (b *Backup) offlineCheckpoint(ctx context.Context, created time.Time) (*madeCheckpoint, error) {
	doc, err := b.dom.XML(ctx, true)
	if err != nil {
		return nil, err
	}
	var domain libvirtxml.Domain
	if err := domain.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("domain %q: reading its XML: %w", b.dom.Name(), err)
	}
	def := libvirtxml.DomainCheckpoint{Name: b.name, Description: checkpointDescription(b.req.Dir, b.folder),
		CreationTime: strconv.FormatInt(created.Unix(), 10), Disks: &libvirtxml.DomainCheckpointDisks{}, Domain: &domain}
	cp := virt.Checkpoint{Name: b.name, Description: def.Description}
	if b.dec.From != nil {
		if _, err := b.dom.Checkpoint(ctx, b.dec.From.Name()); err == nil {
			def.Parent = &libvirtxml.DomainCheckpointParent{Name: b.dec.From.Name()}
			cp.Parent = b.dec.From.Name()
		}
	}
	chosen := map[string]bool{}
	for _, c := range b.dec.Disks {
		chosen[c.Name] = true
	}
	for _, d := range b.domainDisks {
		x := libvirtxml.DomainCheckpointDisk{Name: d.Target, Checkpoint: "no"}
		if chosen[d.Target] && d.CanCarryBitmap() && imageFormat(d) == "qcow2" {
			x.Checkpoint, x.Bitmap = "bitmap", b.name
		}
		def.Disks.Disks = append(def.Disks.Disks, x)
		cp.Disks = append(cp.Disks, virt.CheckpointDisk{Name: x.Name, Checkpoint: x.Checkpoint, Bitmap: x.Bitmap})
	}
	out, err := def.Marshal()
	if err != nil {
		return nil, err
	}
	cp.Created, _ = createdAt(out)
	return &madeCheckpoint{cp: cp, xml: out}, nil
}

// pruneOffline is pruneCheckpoints for a shut-off domain, where libvirt
// deletes only a checkpoint's metadata: every other bitmap of this
// folder goes from the images (its earlier checkpoints', and any an
// interrupted backup left), and then the metadata of the earlier
// checkpoints whose bitmaps are gone. What cannot be removed (the domain
// started meanwhile) stays for the next backup to prune.
func (b *Backup) pruneOffline(ctx context.Context, images imageHost) {
	kept := map[string]bool{} // bitmaps that could not be removed
	for _, c := range b.dec.Disks {
		d, _ := b.domainDisk(c.Name)
		if imageFormat(d) != "qcow2" {
			continue
		}
		bitmaps, err := imageInfo(ctx, images, d.Source, "qcow2")
		if err != nil {
			b.notes.Notef("note: the earlier bitmaps of %s stay for now: %v", c.Name, err)
			continue
		}
		for _, m := range bitmaps {
			if m.Name == b.name || (nameFolder(m.Name) != b.folder && !b.inStore(m.Name)) {
				continue
			}
			if err := removeBitmap(ctx, images, d.Source, m.Name); err != nil {
				kept[m.Name] = true
			}
		}
	}
	var gone []string
	for _, earlier := range b.store.Backups {
		if earlier.Name() == b.name || kept[earlier.Name()] {
			continue
		}
		if cp, err := b.dom.Checkpoint(ctx, earlier.Name()); err != nil || notOwn(cp, earlier) != "" {
			continue
		}
		if err := b.dom.DeleteCheckpoint(ctx, earlier.Name(), virt.DeleteFlags{MetadataOnly: true}); err != nil {
			b.notes.Notef("note: the checkpoint of the earlier backup %s was not deleted: %v", earlier.Name(), err)
			continue
		}
		gone = append(gone, earlier.Name())
	}
	if len(gone) > 0 {
		b.notes.Infof("Deleted from libvirt the checkpoint of the earlier backup %s, and its bitmaps from the images: only the newest is built on (%s keeps its XML).",
			strings.Join(gone, ", "), b.req.Dir)
	}
}

// inStore reports a backup of the folder named name (its checkpoint's
// bitmaps are the folder's, whatever their name's form).
func (b *Backup) inStore(name string) bool {
	_, err := b.store.Find(name)
	return err == nil && name != "" && name != "latest"
}
