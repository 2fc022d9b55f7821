package commands

import (
	"context"
	"errors"
	"fmt"
	"io"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
	"vbackup/xmlgen"
)

// startBackup records the job, starts it, and prints what the user needs
// next. A job that does not start leaves no checkpoint and no record.
func startBackup(ctx context.Context, env *Env, w io.Writer, dom virt.Domain, plan backupPlan, reuse bool) error {
	rec := virt.BackupRecord{Checkpoint: plan.checkpoint, Pull: plan.pull, Started: env.Now()}
	if err := beginRecorded(ctx, env, dom, plan, reuse, rec); err != nil {
		return err
	}
	return printStarted(ctx, w, dom, plan)
}

// beginRecorded starts the job under rec.
func beginRecorded(ctx context.Context, env *Env, dom virt.Domain, plan backupPlan, reuse bool, rec virt.BackupRecord) error {
	// Recorded first: should vbackup die right after the job starts, the next
	// invocation still knows which checkpoint came with it.
	if err := dom.SetBackupRecord(ctx, rec); err != nil {
		return fmt.Errorf("domain %q: recording the job: %w", dom.Name(), err)
	}
	if err := dom.BeginBackup(ctx, plan.backupXML, plan.checkpointXML, virt.BeginFlags{ReuseExternal: reuse}); err != nil {
		_ = dom.ClearBackupRecord(ctx)
		if plan.checkpoint != "" {
			if _, cerr := dom.Checkpoint(ctx, plan.checkpoint); cerr == nil {
				_ = discardCheckpoint(ctx, env, dom, plan.checkpoint)
			}
		}
		if errors.Is(err, virt.ErrUnsupported) {
			return noBackupJobs(dom, err)
		}
		return fmt.Errorf("domain %q: the backup did not start: %w", dom.Name(), err)
	}
	return nil
}

// printStarted tells, from the job as libvirt filled it in, where each disk
// goes (push) or where to read it (pull).
func printStarted(ctx context.Context, w io.Writer, dom virt.Domain, plan backupPlan) error {
	doc, err := dom.BackupXML(ctx)
	if err != nil {
		// A push of small disks can be over already.
		if plan.pull {
			return fmt.Errorf("domain %q: the pull job started, but reading it back failed: %w", dom.Name(), err)
		}
		fmt.Fprintf(w, "Backup started and already finished: see 'vbackup backup-status %s --completed'\n", dom.Name())
		return nil
	}
	var def libvirtxml.DomainBackup
	if err := def.Unmarshal(doc); err != nil {
		return err
	}
	if plan.pull {
		fmt.Fprintf(w, "Backup started: pull\n")
	} else {
		fmt.Fprintf(w, "Backup started: push\n")
	}
	if plan.checkpoint != "" {
		fmt.Fprintf(w, "Checkpoint %s created with the job\n", plan.checkpoint)
	}
	if def.Pull != nil {
		srv := serverOf(def.Pull.Server)
		for _, d := range jobDisks(def) {
			fmt.Fprintf(w, "  %-6s %s\n", d.Name, nbdURI(srv, d.ExportName))
			if d.ExportBitmap != "" {
				fmt.Fprintf(w, "  %-6s changed blocks: meta context qemu:dirty-bitmap:%s (incremental from %s)\n", "", d.ExportBitmap, d.Incremental)
			}
		}
		fmt.Fprintf(w, "Read the exports, then end the job with: vbackup backup-end %s\n", dom.Name())
		return nil
	}
	for _, d := range jobDisks(def) {
		mode := "full"
		if d.Incremental != "" {
			mode = "incremental from " + d.Incremental
		}
		fmt.Fprintf(w, "  %-6s -> %s (%s)\n", d.Name, d.Target, mode)
	}
	return nil
}

// jobDisk is one disk taking part in a job, push or pull alike.
type jobDisk struct {
	Name         string
	Incremental  string // "" for a full backup of the disk
	Target       string // push: the target file or device
	Scratch      string // pull: the scratch file or device
	ExportName   string // pull
	ExportBitmap string // pull, incremental
}

// jobDisks lists the disks that take part in a job.
func jobDisks(def libvirtxml.DomainBackup) []jobDisk {
	var out []jobDisk
	if def.Push != nil && def.Push.Disks != nil {
		for _, d := range def.Push.Disks.Disks {
			if d.Backup != "no" {
				out = append(out, jobDisk{Name: d.Name, Incremental: incrementalOf(d.BackupMode, d.Incremental), Target: sourcePath(d.Target)})
			}
		}
	}
	if def.Pull != nil && def.Pull.Disks != nil {
		for _, d := range def.Pull.Disks.Disks {
			if d.Backup != "no" {
				out = append(out, jobDisk{Name: d.Name, Incremental: incrementalOf(d.BackupMode, d.Incremental), Scratch: sourcePath(d.Scratch),
					ExportName: d.ExportName, ExportBitmap: d.ExportBitmap})
			}
		}
	}
	return out
}

func incrementalOf(mode, from string) string {
	if mode == "incremental" {
		return from
	}
	return ""
}

func sourcePath(s *libvirtxml.DomainDiskSource) string {
	switch {
	case s == nil:
		return ""
	case s.File != nil:
		return s.File.File
	case s.Block != nil:
		return s.Block.Dev
	}
	return ""
}

func serverOf(s *libvirtxml.DomainBackupPullServer) xmlgen.Server {
	var srv xmlgen.Server
	if s == nil {
		return srv
	}
	if s.UNIX != nil {
		srv.Socket = s.UNIX.Socket
	}
	if s.TCP != nil {
		srv.Host, srv.Port = s.TCP.Name, int(s.TCP.Port)
	}
	srv.TLS = s.TLS == "yes"
	return srv
}
