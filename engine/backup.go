// Package engine is backups kept in a folder: making one (PrepareBackup,
// then Run), restoring one (Restore) and checking them (Verify). Inputs
// are values, not flags; it never prints: user text goes through a
// progress.Notifier, progress through a progress.Printer.
package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"vbackup/chain"
	exportfetch "vbackup/fetch"
	"vbackup/job"
	"vbackup/nbd"
	"vbackup/progress"
	"vbackup/virt"
)

// BackupRequest is one backup of a domain into its folder.
type BackupRequest struct {
	Dir   string   // the domain's backup folder, absolute
	Level string   // chain.WantAuto, WantFull or WantInc
	Disks []string // only these disks; all by default
	Push  bool     // libvirt writes the images (default: vbackup reads the pull export)
	// MaxChain, when above 0, makes the backup a full one once the
	// folder's chain has that many incrementals since its last full.
	MaxChain int
	// Compress is how the images' clusters are compressed: "" (none),
	// "zlib" or "zstd"; QEMU reads them as they are. Pull only: in a push,
	// libvirt writes the images.
	Compress string
	Now      func() time.Time
	Host     string // this host and process, recorded with the job so that
	PID      int    // a later run can tell whether it was orphaned
	Sockets  job.Sockets
	// Reconnect opens the connection again after libvirtd went away while
	// a push is watched; nil: the push's outcome is then unknown.
	Reconnect func(ctx context.Context) (virt.Conn, error)
	// DryRun prepares the backup without changing anything (no lock, no
	// settling, no redefinition): DryRun then says what Run would do.
	DryRun bool
	// Quiesce is whether the guest's filesystems are frozen while the job
	// starts ("": never).
	Quiesce job.Quiesce
	// Limit caps the rate of the data read from the exports or images
	// (pull and shut-off domains; libvirt writes a push); shared by every
	// backup of a run given the same one. nil: no cap.
	Limit *nbd.Limiter
}

// Backup is one backup, prepared: what it was decided to be, and what it
// holds while it runs.
type Backup struct {
	req         BackupRequest
	dom         virt.Domain
	notes       progress.Notifier
	store       *chain.Store
	unlock      func()
	locked      bool   // the folder's lock is held
	name        string // of the checkpoint, and the backup
	folder      string // the folder's identity (identity.go)
	dec         chain.Decision
	diskInfo    []chain.DiskInfo // the disks to back up, as the decision saw them
	domainDisks []virt.Disk      // every disk of the domain
	uuid        string
	pending     *chain.Pending
	started     bool            // the job started: its checkpoint exists
	would       []string        // a dry run: what Run would do before the backup
	offline     bool            // the domain is shut off: its images are read directly
	made        *madeCheckpoint // offline: the checkpoint made, before libvirt has it
	// The disks whose images the fetch summed as it wrote them.
	summed map[string]exportfetch.DiskResult
	freeze job.Freeze     // how the guest's filesystems are frozen while the job starts
	tidy   sync.WaitGroup // what Run waits for before it returns (backup_copy.go)
}

// PrepareBackup takes the folder's lock (when the folder exists), checks
// that the folder is dom's and that no job runs, decides the level of
// every disk and names the backup. It changes nothing but settling what an
// earlier job left in libvirt (with req.DryRun, not even that, and no lock
// is taken); Close releases the lock. A shut-off domain is backed up from
// its images (offline.go).
func PrepareBackup(ctx context.Context, dom virt.Domain, req BackupRequest, notes progress.Notifier) (*Backup, error) {
	st, err := dom.State(ctx)
	if err != nil {
		return nil, err
	}
	// A shut-off domain's images are read directly (offline.go); it has
	// no filesystem in use to freeze.
	if err := checkRemote(req, st.Active); err != nil {
		return nil, err
	}
	b := &Backup{req: req, dom: dom, notes: notes, unlock: func() {}, offline: !st.Active}
	if st.Active {
		if err := b.checkQuiesce(ctx); err != nil {
			return nil, err
		}
	}
	// A folder that is not there yet is made only once the backup starts:
	// a refused backup changes nothing.
	if _, err := os.Stat(req.Dir); err == nil && !req.DryRun {
		if b.unlock, err = chain.Lock(req.Dir); err != nil {
			return nil, err
		}
		b.locked = true
	}
	if b.store, err = chain.Open(req.Dir); err == nil {
		if err = b.checkDomain(ctx); err == nil {
			err = b.decide(ctx)
		}
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Close releases the folder's lock.
func (b *Backup) Close() { b.unlock() }

// Name is the backup's name, and its checkpoint's.
func (b *Backup) Name() string { return b.name }

// Decision is the level chosen for the backup and each disk.
func (b *Backup) Decision() chain.Decision { return b.dec }

// checkDomain makes sure the folder is this domain's and that no job runs.
func (b *Backup) checkDomain(ctx context.Context) error {
	uuid, err := b.dom.UUID(ctx)
	if err != nil {
		return err
	}
	b.uuid = uuid
	if last := b.store.Last(); last != nil && last.Domain.UUID != uuid {
		return fmt.Errorf("%s holds the backups of domain %s (UUID %s), and %s is another domain (UUID %s): give each domain its own folder",
			b.req.Dir, last.Domain.Name, last.Domain.UUID, b.dom.Name(), uuid)
	}
	if b.offline {
		return nil // no job, nor live metadata, without a running QEMU
	}
	if b.req.DryRun {
		return b.dryJob(ctx)
	}
	// A job a killed 'vbackup backup' left is ended here, its checkpoint deleted.
	return job.Ready(ctx, b.dom, b.notes)
}

// Run makes the backup: the job, the images, the checksums, the manifest.
// committing is called once everything is written, just before the backup
// is put in place: from then on the run no longer gives up on ctx, and an
// error from it (the user asked to stop first) undoes the run instead.
// A run that fails ends the job, deletes its checkpoint (it would claim
// data no manifest holds) and leaves the folder as it was.
func (b *Backup) Run(ctx context.Context, printer progress.Printer, committing func() error) (*chain.Backup, error) {
	if b.req.DryRun {
		return nil, errors.New("a dry run's backup is not run")
	}
	defer b.tidy.Wait()
	if err := b.claimFolder(); err != nil {
		return nil, err
	}
	if b.store.RemovalLeft() {
		unlock, err := chain.LockRewriting(b.req.Dir)
		if err != nil {
			return nil, err
		}
		err = completeRemoval(ctx, b.store, b.notes)
		unlock()
		if err != nil {
			return nil, err
		}
	}
	left, err := b.store.Leftovers()
	if err != nil {
		return nil, err
	}
	for _, name := range left {
		b.notes.Notef("note: removed the unfinished backup %s that an interrupted run left in %s", name, b.req.Dir)
	}
	done, err := b.run(ctx, printer, committing)
	if err != nil {
		return nil, b.fail(ctx, err)
	}
	return done, nil
}

// claimFolder makes and locks a folder that did not exist when the backup
// was prepared; another command may have made it meanwhile.
func (b *Backup) claimFolder() error {
	if b.locked {
		return nil
	}
	unlock, err := chain.Lock(b.req.Dir)
	if err != nil {
		return err
	}
	b.unlock, b.locked = unlock, true
	if now, err := chain.Open(b.req.Dir); err != nil || len(now.Backups) > 0 {
		return fmt.Errorf("another vbackup command wrote %s meanwhile; run this one again", b.req.Dir)
	}
	return nil
}

func (b *Backup) run(ctx context.Context, printer progress.Printer, committing func() error) (*chain.Backup, error) {
	if b.offline {
		return b.runOffline(ctx, printer, committing)
	}
	b.announce()
	var err error
	if b.pending, err = b.store.Begin(b.name); err != nil {
		return nil, err
	}
	rec := virt.BackupRecord{Checkpoint: b.name, Pull: !b.req.Push, Started: b.req.Now(), Dir: b.req.Dir, Host: b.req.Host, PID: b.req.PID}
	if err := b.begin(ctx, rec); err != nil {
		return nil, err
	}
	b.started = true
	var copied map[string]uint64
	if b.req.Push {
		copied, err = b.push(ctx, printer)
	} else {
		copied, err = b.pull(ctx, printer)
	}
	if err != nil {
		return nil, err
	}
	m, err := b.manifest(ctx, rec.Started, copied)
	if err != nil {
		return nil, err
	}
	if m.Firmware, err = b.firmware(ctx); err != nil {
		return nil, err
	}
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
	// From here the checkpoint holds what the manifest says.
	_ = b.dom.ClearBackupRecord(context.WithoutCancel(ctx))
	b.pruneCheckpoints(context.WithoutCancel(ctx))
	return done, nil
}

// begin starts the job. A checkpoint whose bitmap was lost after a crash
// shows only now; then the backup becomes a full one.
func (b *Backup) begin(ctx context.Context, rec virt.BackupRecord) error {
	plan, err := b.frozenPlan(ctx)
	if err != nil {
		return err
	}
	err = job.Begin(ctx, b.dom, plan, false, rec, b.notes)
	if !errors.Is(err, virt.ErrCheckpointInconsistent) || b.req.Level != chain.WantAuto || b.dec.Level != chain.Incremental {
		return err
	}
	from := b.dec.From.Name()
	b.notes.Infof("The checkpoint of backup %s is broken in libvirt (%v): making a full backup instead.", from, err)
	// It would go on claiming changes it no longer tracks. A plain delete
	// also removes what is left of its bitmaps; libvirt may refuse it for
	// the broken one, and then only its metadata goes.
	derr := b.dom.DeleteCheckpoint(ctx, from, virt.DeleteFlags{})
	if derr != nil {
		derr = b.dom.DeleteCheckpoint(ctx, from, virt.DeleteFlags{MetadataOnly: true})
	}
	if derr == nil {
		b.notes.Notef("note: the broken checkpoint %s is deleted from libvirt (the backup in %s stays)", from, b.req.Dir)
	}
	if b.dec, err = chain.Decide(chain.WantFull, b.dom.Name(), nil, false, "", b.diskInfo); err != nil {
		return err
	}
	b.dec.Reason = "the last backup's checkpoint is broken"
	if plan, err = b.frozenPlan(ctx); err != nil {
		return err
	}
	return job.Begin(ctx, b.dom, plan, false, rec, b.notes)
}

// announce says what is about to be backed up, and why at that level.
func (b *Backup) announce() {
	b.notes.Infof("Backup %s of domain %s: %s (%s)", b.name, b.dom.Name(), b.dec.Level, b.dec.Reason)
	for _, d := range b.dec.Disks {
		if d.Reason != "" {
			b.notes.Infof("  %-6s %s: %s", d.Name, d.Level, d.Reason)
		}
	}
	b.announceQuiesce()
	for _, name := range b.dec.Ended {
		if b.hasDisk(name) {
			b.notes.Infof("  %-6s not backed up this time (not named by --disk)", name)
			continue
		}
		b.notes.Infof("  %-6s is no longer in the domain: its chain ends at backup %s", name, b.store.Last().Name())
	}
}

func (b *Backup) hasDisk(name string) bool {
	for _, d := range b.domainDisks {
		if d.Target == name {
			return true
		}
	}
	return false
}
