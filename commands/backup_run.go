package commands

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
	"vbackup/contentsum"
	exportfetch "vbackup/fetch"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// usable reports whether the last backup's checkpoint can be built on. One
// libvirt no longer has (the domain was re-created, or moved to another
// host) is redefined from the XML kept in DIR, with libvirt checking that
// the disks still hold its bitmaps; otherwise it would claim changes it
// never tracked.
func (r *backupRun) usable(ctx context.Context, last *chain.Backup) (bool, string, error) {
	_, err := r.dom.Checkpoint(ctx, last.Name())
	if err == nil {
		return true, "", nil
	}
	if !errors.Is(err, virt.ErrNoCheckpoint) {
		return false, "", checkpointErr(ctx, r.dom, last.Name(), err)
	}
	// Oldest first, so that each finds its parent and the tree is as it was.
	var lastErr error
	for _, b := range r.store.Backups {
		if _, err := r.dom.Checkpoint(ctx, b.Name()); !errors.Is(err, virt.ErrNoCheckpoint) {
			continue
		}
		doc := b.Checkpoint.XML
		_, err := r.dom.CreateCheckpoint(ctx, doc, virt.CreateFlags{Redefine: true, RedefineValidate: true})
		if err != nil && b == last {
			// Its parent may be gone for good (deleted, its bitmap with it).
			// Each checkpoint's bitmap records every change since it was made,
			// so the last one stands alone as a root.
			if root, ok := withoutParent(doc); ok {
				_, err = r.dom.CreateCheckpoint(ctx, root, virt.CreateFlags{Redefine: true, RedefineValidate: true})
			}
		}
		if err == nil {
			fmt.Fprintf(r.env.Stderr, "note: checkpoint %s was not in libvirt: redefined from %s\n", b.Name(), filepath.Join(b.Dir, "checkpoint.xml"))
		}
		lastErr = err
	}
	if lastErr != nil {
		return false, fmt.Sprintf("libvirt has no checkpoint %s, and redefining it from %s failed (%v)", last.Name(), last.Dir, lastErr), nil
	}
	return true, "", nil
}

// withoutParent is a checkpoint's XML as a root.
func withoutParent(doc string) (string, bool) {
	var cp libvirtxml.DomainCheckpoint
	if err := cp.Unmarshal(doc); err != nil || cp.Parent == nil {
		return "", false
	}
	cp.Parent = nil
	out, err := cp.Marshal()
	return out, err == nil
}

// run makes the backup: the job, the images, the checksums, the manifest.
func (r *backupRun) run(ctx context.Context) (*chain.Backup, error) {
	r.announce()
	var err error
	if r.pending, err = r.store.Begin(r.name); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	rec := virt.BackupRecord{Checkpoint: r.name, Pull: !r.opts.Push, Started: r.env.Now(), Dir: r.opts.Dir, Host: host, PID: os.Getpid()}
	plan, err := r.plan(ctx)
	if err != nil {
		return nil, err
	}
	err = beginRecorded(ctx, r.env, r.dom, plan, false, rec)
	if errors.Is(err, virt.ErrCheckpointInconsistent) && r.opts.Level == chain.WantAuto && r.dec.Level == chain.Incremental {
		// A bitmap lost after a crash shows only now.
		fmt.Fprintf(r.out, "The checkpoint of backup %s is broken in libvirt (%v): making a full backup instead.\n", r.dec.From.Name(), err)
		// It would go on claiming changes it no longer tracks. A plain delete
		// also removes what is left of its bitmaps; libvirt may refuse it for
		// the broken one, and then only its metadata goes.
		derr := r.dom.DeleteCheckpoint(ctx, r.dec.From.Name(), virt.DeleteFlags{})
		if derr != nil {
			derr = r.dom.DeleteCheckpoint(ctx, r.dec.From.Name(), virt.DeleteFlags{MetadataOnly: true})
		}
		if derr == nil {
			fmt.Fprintf(r.env.Stderr, "note: the broken checkpoint %s is deleted from libvirt (the backup in %s stays)\n", r.dec.From.Name(), r.opts.Dir)
		}
		if r.dec, err = chain.Decide(chain.WantFull, r.dom.Name(), nil, false, "", r.diskInfo); err != nil {
			return nil, err
		}
		r.dec.Reason = "the last backup's checkpoint is broken"
		if plan, err = r.plan(ctx); err != nil {
			return nil, err
		}
		err = beginRecorded(ctx, r.env, r.dom, plan, false, rec)
	}
	if err != nil {
		return nil, err
	}
	r.started = true
	var copied map[string]uint64
	if r.opts.Push {
		copied, err = r.push(ctx)
	} else {
		copied, err = r.pull(ctx)
	}
	if err != nil {
		return nil, err
	}
	m, err := r.manifest(ctx, rec.Started, copied)
	if err != nil {
		return nil, err
	}
	if err := r.beginCommit(ctx); err != nil {
		return nil, err
	}
	b, err := r.pending.Commit(m)
	if b == nil {
		return nil, err
	}
	if err != nil {
		fmt.Fprintf(r.env.Stderr, "warning: %v\n", err)
	}
	// From here the checkpoint holds what the manifest says.
	_ = r.dom.ClearBackupRecord(context.WithoutCancel(ctx))
	r.pruneCheckpoints(context.WithoutCancel(ctx))
	return b, nil
}

// beginCommit marks the run as committing, from when Ctrl-C no longer ends
// it, unless a Ctrl-C has ended it already.
func (r *backupRun) beginCommit(ctx context.Context) error {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	r.committing = true
	return nil
}

// pruneCheckpoints deletes the checkpoints of this folder's earlier
// backups: the next incremental builds on the newest alone (its bitmap
// records every change since it was made), while each checkpoint kept
// costs the running domain a bitmap to update on every write. The folder
// keeps their XML. Checkpoints vbackup did not make for this folder stay.
func (r *backupRun) pruneCheckpoints(ctx context.Context) {
	var gone []string
	for _, b := range r.store.Backups {
		if b.Name() == r.name {
			continue
		}
		if _, err := r.dom.Checkpoint(ctx, b.Name()); err != nil {
			continue
		}
		if err := r.dom.DeleteCheckpoint(ctx, b.Name(), virt.DeleteFlags{}); err != nil {
			fmt.Fprintf(r.env.Stderr, "note: the checkpoint of the earlier backup %s was not deleted: %v\n", b.Name(), err)
			continue
		}
		gone = append(gone, b.Name())
	}
	if len(gone) > 0 {
		fmt.Fprintf(r.out, "Deleted from libvirt the checkpoint of the earlier backup %s: only the newest is built on (%s keeps its XML).\n",
			strings.Join(gone, ", "), r.opts.Dir)
	}
}

// announce says what is about to be backed up, and why at that level.
func (r *backupRun) announce() {
	fmt.Fprintf(r.out, "Backup %s of domain %s: %s (%s)\n", r.name, r.dom.Name(), r.dec.Level, r.dec.Reason)
	for _, d := range r.dec.Disks {
		if d.Reason != "" {
			fmt.Fprintf(r.out, "  %-6s %s: %s\n", d.Name, d.Level, d.Reason)
		}
	}
	for _, name := range r.dec.Ended {
		if slices.Contains(r.domainDisks, name) {
			fmt.Fprintf(r.out, "  %-6s not backed up this time (not named by --disk)\n", name)
			continue
		}
		fmt.Fprintf(r.out, "  %-6s is no longer in the domain: its chain ends at backup %s\n", name, r.store.Last().Name())
	}
}

// plan builds the job: every chosen disk at its level, the checkpoint over
// the disks that can carry a bitmap.
func (r *backupRun) plan(ctx context.Context) (backupPlan, error) {
	spec := xmlgen.BackupSpec{Pull: !r.opts.Push, Checkpoint: r.name}
	for _, c := range r.dec.Disks {
		d := xmlgen.BackupDisk{Name: c.Name, Full: c.Level == chain.Full}
		if c.Level == chain.Incremental {
			d.Incremental = r.dec.From.Name()
		}
		if r.opts.Push {
			d.Target, d.Format = filepath.Join(r.pending.Dir(), c.Name+".qcow2"), "qcow2"
		}
		spec.Disks = append(spec.Disks, d)
	}
	disks := r.allDisks
	var err error
	if spec.Pull {
		var srv serverFlag
		if spec.Server, err = prepareServer(r.env, r.dom.Name(), disks, &srv, false, false, true); err != nil {
			return backupPlan{}, err
		}
	} else if err := handToQEMU(r.pending.Dir(), disks); err != nil {
		return backupPlan{}, err
	}
	// The notes say where scratch files go, which is libvirt's business here.
	spec, _, err = xmlgen.AlignBackup(spec, r.dom.Name(), disks, r.env.Now())
	if err != nil {
		return backupPlan{}, fmt.Errorf("domain %q: %w", r.dom.Name(), err)
	}
	plan := backupPlan{pull: spec.Pull, checkpoint: r.name}
	if plan.backupXML, err = xmlgen.BackupXML(spec); err != nil {
		return plan, err
	}
	plan.checkpointXML, err = jobCheckpointXML(ctx, r.env, r.dom, spec, "vbackup backup into "+r.opts.Dir, disks)
	return plan, err
}

// handToQEMU gives a push's folder to the user QEMU runs as (the owner of
// the domain's images), who writes the images into it.
func handToQEMU(dir string, disks []virt.Disk) error {
	if os.Geteuid() != 0 {
		return nil
	}
	for _, d := range disks {
		if fi, err := os.Stat(d.Source); err == nil && d.Type == "file" {
			st := fi.Sys().(*syscall.Stat_t)
			if err := os.Chown(dir, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
			// QEMU's user must get through the backups' folder to its own;
			// passing through lists nothing.
			parent := filepath.Dir(dir)
			pi, err := os.Stat(parent)
			if err != nil {
				return err
			}
			return os.Chmod(parent, pi.Mode().Perm()|0o011)
		}
	}
	return nil
}

// pull reads every export into the pending backup, then ends the job.
func (r *backupRun) pull(ctx context.Context) (map[string]uint64, error) {
	b, ok, err := currentBackup(ctx, r.dom)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("domain %q: the pull job ended before its exports could be read", r.dom.Name())
	}
	srv := serverOf(b.def.Pull.Server)
	var disks []exportfetch.Disk
	for _, d := range jobDisks(b.def) {
		fd := exportfetch.Disk{Name: d.Name, URI: nbdURI(srv, d.ExportName), Format: "qcow2",
			Path: filepath.Join(r.pending.Dir(), d.Name+".qcow2")}
		if d.ExportBitmap != "" {
			prev, _ := r.dec.From.Disk(d.Name)
			fd.Bitmap, fd.Backing = "qemu:dirty-bitmap:"+d.ExportBitmap, r.pending.Backing(r.dec.From, prev)
		}
		disks = append(disks, fd)
	}
	res, err := exportfetch.Run(ctx, disks, exportfetch.Options{Connections: 4, KeepCache: true, Printer: newPrinter(r.env, r.opts.JSON, r.opts.Quiet), Now: r.env.Now})
	if err != nil {
		return nil, fmt.Errorf("reading the exports: %w", err)
	}
	if err := r.endJob(ctx); err != nil {
		return nil, err
	}
	removeSocketDir(r.env, r.dom.Name())
	copied := map[string]uint64{}
	for _, d := range res.Disks {
		copied[d.Name] = d.Copied
	}
	return copied, nil
}

// endJob ends a pull job whose exports were read.
func (r *backupRun) endJob(ctx context.Context) error {
	if err := r.dom.AbortJob(ctx); err != nil {
		return fmt.Errorf("ending the pull job: %w", err)
	}
	return waitJobEnd(ctx, r.dom, 60*time.Second)
}

// push waits for libvirt to write the images, then gives each incremental
// image its place in the chain: libvirt writes the changed clusters into a
// qcow2 of their own.
func (r *backupRun) push(ctx context.Context) (map[string]uint64, error) {
	r.watching.Store(true)
	err := watchBackup(ctx, r.env, r.dom, watchOptions{Printer: newPrinter(r.env, r.opts.JSON, r.opts.Quiet), KeepRecord: true, Signals: r.toWatcher})
	r.watching.Store(false)
	if err != nil {
		return nil, err
	}
	copied := map[string]uint64{}
	for _, c := range r.dec.Disks {
		file := filepath.Join(r.pending.Dir(), c.Name+".qcow2")
		n, err := allocatedBytes(ctx, file)
		if err != nil {
			return nil, err
		}
		copied[c.Name] = n
		if c.Level != chain.Incremental {
			continue
		}
		prev, _ := r.dec.From.Disk(c.Name)
		backing := r.pending.Backing(r.dec.From, prev)
		// -u: only the header changes; the backing file is read as it is.
		cmd := exec.CommandContext(ctx, "qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", backing, file)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("disk %s: setting the backing file of %s: %v: %s", c.Name, file, err, strings.TrimSpace(string(out)))
		}
	}
	return copied, nil
}

// allocatedBytes is the data an image holds itself (not its backing file's).
func allocatedBytes(ctx context.Context, file string) (uint64, error) {
	_, n, err := topLayer(ctx, file)
	return n, err
}

// topLayer lists the ranges an image holds itself, data or zeroes (what an
// overlay changed), and the bytes of data among them.
func topLayer(ctx context.Context, file string) ([]contentsum.Range, uint64, error) {
	// -U: until it is rebased, a push overlay's backing file is the live disk.
	out, err := exec.CommandContext(ctx, "qemu-img", "map", "-U", "--output=json", "-f", "qcow2", file).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, 0, fmt.Errorf("qemu-img map %s: %s", file, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, 0, fmt.Errorf("qemu-img map %s: %w", file, err)
	}
	var extents []struct {
		Start, Length uint64
		Depth         int
		Data, Zero    bool
	}
	if err := json.Unmarshal(out, &extents); err != nil {
		return nil, 0, fmt.Errorf("qemu-img map %s: %w", file, err)
	}
	var ranges []contentsum.Range
	var data uint64
	for _, e := range extents {
		if e.Depth != 0 || !(e.Data || e.Zero) {
			continue
		}
		if e.Data {
			data += e.Length
		}
		if n := len(ranges); n > 0 && ranges[n-1].Off+ranges[n-1].Len == e.Start {
			ranges[n-1].Len += e.Length
			continue
		}
		ranges = append(ranges, contentsum.Range{Off: e.Start, Len: e.Length})
	}
	return ranges, data, nil
}

// manifest describes the backup, with a checksum of each disk's content
// read back through its chain: what a restore will produce.
func (r *backupRun) manifest(ctx context.Context, started time.Time, copied map[string]uint64) (chain.Manifest, error) {
	m := chain.Manifest{Time: started, Level: r.dec.Level, Mode: "pull"}
	if r.opts.Push {
		m.Mode = "push"
	}
	m.Domain.UUID, m.Domain.Name = r.uuid, r.dom.Name()
	var err error
	if m.Domain.XML, err = r.dom.XML(ctx, true); err != nil {
		return m, err
	}
	cp, err := r.dom.Checkpoint(ctx, r.name)
	if err != nil {
		return m, fmt.Errorf("the checkpoint made with the job: %w", err)
	}
	m.Checkpoint = chain.Checkpoint{Name: r.name, Parent: cp.Parent}
	if m.Checkpoint.XML, err = r.dom.CheckpointXML(ctx, r.name, virt.XMLFlags{}); err != nil {
		return m, err
	}
	tracked := map[string]bool{}
	for _, d := range cp.Disks {
		tracked[d.Name] = d.Checkpoint == "bitmap"
	}
	fmt.Fprintf(r.out, "Reading the backup back to checksum it...\n")
	for _, c := range r.dec.Disks {
		d := chain.Disk{Name: c.Name, File: c.Name + ".qcow2", Format: "qcow2", Level: c.Level, Reason: c.Reason,
			Bitmap: tracked[c.Name], Copied: copied[c.Name]}
		if c.Level == chain.Incremental {
			d.Backing = r.dec.From.Name()
		}
		sum, err := r.checksum(ctx, &d)
		if err != nil {
			return m, fmt.Errorf("disk %s: %w", c.Name, err)
		}
		d.VirtualSize, d.Checksum = sum.Size, sum.String()
		m.Disks = append(m.Disks, d)
	}
	return m, nil
}

// checksum computes a disk's content checksum through its new chain, and
// keeps its chunk digests beside the image. An incremental reads only the
// chunks its overlay changed, taking the others' digests from the backup it
// builds on, once they are proven to be that backup's.
func (r *backupRun) checksum(ctx context.Context, d *chain.Disk) (contentsum.Sum, error) {
	image := filepath.Join(r.pending.Dir(), d.File)
	d.Digests = d.Name + ".sums"
	f, err := os.OpenFile(filepath.Join(r.pending.Dir(), d.Digests), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return contentsum.Sum{}, err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	opts := contentsum.Options{Digests: w}
	if d.Level == chain.Incremental {
		prev, _ := r.dec.From.Disk(d.Name)
		earlier, closeEarlier, err := r.earlier(ctx, prev, image)
		if err != nil {
			return contentsum.Sum{}, err
		}
		defer closeEarlier()
		opts.Earlier = earlier
	}
	sum, err := contentsum.File(ctx, image, d.Format, opts)
	if err != nil {
		return sum, err
	}
	if err := w.Flush(); err != nil {
		return sum, err
	}
	return sum, f.Close()
}

// earlier is the state of a disk in the backup an incremental builds on,
// or nil (everything is then read) when its digests are missing or are
// not those of its checksum.
func (r *backupRun) earlier(ctx context.Context, prev chain.Disk, image string) (*contentsum.Earlier, func(), error) {
	none := func() {}
	if prev.Digests == "" {
		return nil, none, nil
	}
	f, err := os.Open(r.dec.From.File(chain.Disk{File: prev.Digests}))
	if err != nil {
		fmt.Fprintf(r.env.Stderr, "note: %v: reading all of %s to checksum it\n", err, prev.Name)
		return nil, none, nil
	}
	want, perr := contentsum.Parse(prev.Checksum)
	got, err := contentsum.OfDigests(bufio.NewReader(f), prev.VirtualSize)
	if perr != nil || err != nil || !got.Equal(want) {
		f.Close()
		fmt.Fprintf(r.env.Stderr, "note: the chunk digests of %s in backup %s do not match its checksum: reading all of it to checksum it\n", prev.Name, r.dec.From.Name())
		return nil, none, nil
	}
	changed, _, err := topLayer(ctx, image)
	if err != nil {
		f.Close()
		return nil, none, err
	}
	return &contentsum.Earlier{Digests: f, Size: prev.VirtualSize, Changed: changed}, func() { f.Close() }, nil
}

// fail undoes a backup that did not complete: the job ends, its checkpoint
// goes (it would claim data no manifest holds), and DIR is left as it was.
func (r *backupRun) fail(cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var problems []string
	if r.started {
		if rec, ok, err := r.dom.BackupRecord(ctx); err == nil && ok {
			rec.Discard = true
			_ = r.dom.SetBackupRecord(ctx, rec)
		}
		if job, err := r.dom.Job(ctx, false); err == nil && job.State == virt.JobRunning {
			if err := r.dom.AbortJob(ctx); err == nil {
				_ = waitJobEnd(ctx, r.dom, 60*time.Second)
			}
		}
		if err := discardCheckpoint(ctx, r.env, r.dom, r.name); err != nil {
			problems = append(problems, err.Error())
		}
		if err := r.dom.ClearBackupRecord(ctx); err != nil {
			// A domain that stopped took its live record with it.
			if st, serr := r.dom.State(ctx); serr != nil || st.Active {
				problems = append(problems, err.Error())
			}
		}
	}
	if st, err := r.dom.State(ctx); err == nil && !st.Active && !r.opts.Push {
		removeDeadSocketDir(r.env, r.dom.Name())
	} else {
		removeSocketDir(r.env, r.dom.Name())
	}
	if r.pending != nil {
		if err := r.pending.Abort(); err != nil {
			problems = append(problems, err.Error())
		}
	}
	msg := fmt.Sprintf("backup %s of domain %q failed: %v; %s is as it was", r.name, r.dom.Name(), cause, r.opts.Dir)
	if len(problems) > 0 {
		msg += "; while cleaning up: " + strings.Join(problems, "; ")
	}
	return errors.New(msg)
}
