package job

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/progress"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// Plan is what a job will be started with.
type Plan struct {
	Pull                     bool
	Checkpoint               string // created with the job; "" for none
	BackupXML, CheckpointXML string
	Freeze                   Freeze // the guest's filesystems while the job starts
}

// PlanRequest is the job a user asks for: built from Spec, or sent as
// written (BackupXML, CheckpointXML, read from the files named for
// messages).
type PlanRequest struct {
	Spec                  xmlgen.BackupSpec // aligned with the domain's disks here
	Server                ServerRequest
	CheckpointDescription string
	BackupXML             string
	BackupXMLFile         string
	CheckpointXML         string
	CheckpointXMLFile     string
	ReuseExternal         bool        // the targets (push) or scratch files (pull) exist already
	Local                 bool        // libvirtd runs on this host (ports can be tried here)
	Disks                 []virt.Disk // the domain's, when the caller has them; else asked for
	Sockets               Sockets
	Now                   time.Time
}

// NewPlan builds the documents of the job req asks for, and checks what
// can be checked before anything starts; notes gets what was filled in.
// It changes nothing but the pull socket's private folder.
func NewPlan(ctx context.Context, dom virt.Domain, req PlanRequest, notes progress.Notifier) (Plan, error) {
	plan := Plan{BackupXML: req.BackupXML, CheckpointXML: req.CheckpointXML, Checkpoint: req.Spec.Checkpoint}
	var incremental string
	if req.BackupXMLFile != "" {
		var def libvirtxml.DomainBackup
		if err := def.Unmarshal(req.BackupXML); err != nil {
			return plan, fmt.Errorf("--backupxml %s is not a <domainbackup> document: %w", req.BackupXMLFile, err)
		}
		plan.Pull, incremental = def.Pull != nil, def.Incremental
	} else {
		incremental = req.Spec.Incremental
	}
	if req.CheckpointXMLFile != "" {
		var def libvirtxml.DomainCheckpoint
		if err := def.Unmarshal(req.CheckpointXML); err != nil {
			return plan, fmt.Errorf("--checkpointxml %s is not a <domaincheckpoint> document: %w", req.CheckpointXMLFile, err)
		}
		plan.Checkpoint = def.Name
	}
	if incremental != "" {
		if _, err := dom.Checkpoint(ctx, incremental); err != nil {
			return plan, virt.CheckpointErr(ctx, dom, incremental, err)
		}
	}
	if req.BackupXMLFile != "" && req.CheckpointXMLFile != "" {
		return plan, nil
	}
	disks := req.Disks
	if disks == nil {
		var err error
		if disks, err = dom.Disks(ctx); err != nil {
			return plan, fmt.Errorf("domain %q: %w", dom.Name(), err)
		}
	}
	spec := req.Spec
	if req.BackupXMLFile == "" {
		plan.Pull = spec.Pull
		var err error
		if spec.Pull {
			if spec.Server, err = prepareServer(ctx, req.Sockets, dom.Name(), disks, req.Server, req.Local); err != nil {
				return plan, err
			}
		}
		var filled []string
		if spec, filled, err = xmlgen.AlignBackup(spec, dom.Name(), disks, req.Now); err != nil {
			return plan, fmt.Errorf("domain %q: %w", dom.Name(), err)
		}
		for _, n := range filled {
			notes.Notef("note: %s", n)
		}
		if err := checkTargets(spec, req.ReuseExternal); err != nil {
			return plan, err
		}
		if plan.BackupXML, err = xmlgen.BackupXML(spec); err != nil {
			return plan, err
		}
	}
	if req.CheckpointXMLFile == "" && spec.Checkpoint != "" {
		var err error
		if plan.CheckpointXML, err = checkpointXML(ctx, dom, spec, req.CheckpointDescription, disks); err != nil {
			return plan, err
		}
	}
	return plan, nil
}

// checkpointXML builds the checkpoint made with a job: a bitmap on exactly
// the disks the job backs up, so that it never claims a disk's changes were
// saved when that disk was left out of the job.
func checkpointXML(ctx context.Context, dom virt.Domain, spec xmlgen.BackupSpec, description string, disks []virt.Disk) (string, error) {
	switch _, err := dom.Checkpoint(ctx, spec.Checkpoint); {
	case err == nil:
		return "", fmt.Errorf("domain %q already has a checkpoint %q; choose another --checkpoint name", dom.Name(), spec.Checkpoint)
	case !errors.Is(err, virt.ErrNoCheckpoint):
		return "", virt.CheckpointErr(ctx, dom, "", err)
	}
	cp := xmlgen.CheckpointSpec{Name: spec.Checkpoint, Description: description}
	byName := map[string]virt.Disk{}
	for _, d := range disks {
		byName[d.Target] = d
	}
	bitmaps := 0
	for _, d := range spec.Disks {
		mode := "no"
		if !d.Skip && byName[d.Name].CanCarryBitmap() {
			mode, bitmaps = "bitmap", bitmaps+1
		}
		cp.Disks = append(cp.Disks, xmlgen.DiskSpec{Name: d.Name, Checkpoint: mode})
	}
	if bitmaps == 0 {
		return "", fmt.Errorf("domain %q: --checkpoint %s would track no disk: none of the disks this job backs up can carry a bitmap (only qcow2 disks can)", dom.Name(), spec.Checkpoint)
	}
	return xmlgen.CheckpointXML(cp)
}

// checkTargets refuses to start a job that would write over an existing
// file, and a --reuse-external job whose files are missing.
func checkTargets(spec xmlgen.BackupSpec, reuse bool) error {
	for _, path := range spec.Targets() {
		_, err := os.Stat(path)
		switch {
		case err == nil && !reuse:
			return fmt.Errorf("%s exists already; vbackup never writes over a backup: move it away, pick another --target-dir, or pass --reuse-external to write into it", path)
		case errors.Is(err, os.ErrNotExist) && reuse:
			return fmt.Errorf("--reuse-external: %s does not exist; create it first (qemu-img create), or leave out --reuse-external", path)
		}
	}
	return nil
}

// Begin records the job under rec and starts it, with the guest's
// filesystems frozen as plan.Freeze says. Recorded first: should
// vbackup die right after the job starts, the next invocation still knows
// which checkpoint came with it. A job that does not start leaves no
// checkpoint and no record.
func Begin(ctx context.Context, dom virt.Domain, plan Plan, reuse bool, rec virt.BackupRecord, notes progress.Notifier) error {
	rec.Freezing = plan.Freeze.Freeze
	if err := dom.SetBackupRecord(ctx, rec); err != nil {
		return fmt.Errorf("domain %q: recording the job: %w", dom.Name(), err)
	}
	err := freezeAround(ctx, dom, plan.Freeze, notes, func() error {
		return dom.BeginBackup(ctx, plan.BackupXML, plan.CheckpointXML, virt.BeginFlags{ReuseExternal: reuse})
	})
	if err == nil && rec.Freezing {
		// Thawed: a vbackup killed from here on leaves nothing frozen.
		rec.Freezing = false
		if serr := dom.SetBackupRecord(context.WithoutCancel(ctx), rec); serr != nil {
			notes.Notef("warning: domain %s: recording that the guest is thawed: %v", dom.Name(), serr)
		}
	}
	if err != nil {
		_ = dom.ClearBackupRecord(ctx)
		if plan.Checkpoint != "" {
			if _, cerr := dom.Checkpoint(ctx, plan.Checkpoint); cerr == nil {
				_ = Discard(ctx, dom, plan.Checkpoint, notes)
			}
		}
		if errors.Is(err, virt.ErrUnsupported) {
			return NoJobsError(dom, err)
		}
		return fmt.Errorf("domain %q: the backup did not start: %w", dom.Name(), err)
	}
	return nil
}
