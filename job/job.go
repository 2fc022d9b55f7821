// Package job is one libvirt backup job, whoever started it: what runs
// (Current, the one reader of the job's XML), how it is started (Plan,
// Begin), watched (Watch), read (Fetch) and ended (End, Discard), and how
// what an earlier job left is settled (Settle). It never prints: user text
// goes through a progress.Notifier or a progress.Printer.
package job

import (
	"context"
	"errors"
	"fmt"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
	"vbackup/xmlgen"
)

// Job is the backup job running on a domain, as libvirt reports it, with
// vbackup's record of it when vbackup started it.
type Job struct {
	Stats       virt.Job
	Pull        bool
	Incremental string // the checkpoint the whole job is incremental from, "" if none
	Disks       []Disk // the disks taking part
	Server      xmlgen.Server
	Record      virt.BackupRecord
	HasRecord   bool
}

// Disk is one disk taking part in a job, push or pull alike.
type Disk struct {
	Name         string
	Incremental  string // "" for a full backup of the disk
	Target       string // push: the target file or device
	Scratch      string // pull: the scratch file or device
	ExportName   string // pull
	ExportBitmap string // pull, incremental
}

// Checkpoint is the checkpoint created with the job, as vbackup recorded
// it: "" when vbackup did not start the job or it made none.
func (j *Job) Checkpoint() string {
	if !j.HasRecord {
		return ""
	}
	return j.Record.Checkpoint
}

// Mode is "pull" or "push".
func (j *Job) Mode() string {
	if j.Pull {
		return "pull"
	}
	return "push"
}

// DiskNames lists the names of the job's disks, in its order.
func (j *Job) DiskNames() []string {
	names := make([]string, len(j.Disks))
	for i, d := range j.Disks {
		names[i] = d.Name
	}
	return names
}

// Current returns the backup job running on dom; ok is false when none
// runs, and then the Job holds only the domain's job statistics.
func Current(ctx context.Context, dom virt.Domain) (j *Job, ok bool, err error) {
	j = &Job{}
	if j.Stats, err = dom.Job(ctx, false); err != nil {
		if errors.Is(err, virt.ErrUnsupported) {
			return j, false, NoJobsError(dom, err)
		}
		return j, false, fmt.Errorf("domain %q: reading its job: %w", dom.Name(), err)
	}
	if j.Stats.State != virt.JobRunning || !j.Stats.Backup {
		return j, false, nil
	}
	doc, err := dom.BackupXML(ctx)
	if err != nil {
		// A push can end between the two calls.
		if again, jerr := dom.Job(ctx, false); jerr == nil && again.State != virt.JobRunning {
			j.Stats = again
			return j, false, nil
		}
		return j, false, fmt.Errorf("domain %q: reading its backup job: %w", dom.Name(), err)
	}
	if err := j.parse(doc); err != nil {
		return j, false, fmt.Errorf("domain %q: the backup job's XML: %w", dom.Name(), err)
	}
	if j.Record, j.HasRecord, err = dom.BackupRecord(ctx); err != nil {
		return j, false, fmt.Errorf("domain %q: reading vbackup's record of the job: %w", dom.Name(), err)
	}
	return j, true, nil
}

// Started reads the job dom has just begun, from its XML alone: a push of
// small disks can be over before its statistics are read. ok is false when
// the job is over already.
func Started(ctx context.Context, dom virt.Domain) (j *Job, ok bool, err error) {
	doc, err := dom.BackupXML(ctx)
	if err != nil {
		if stats, jerr := dom.Job(ctx, false); jerr == nil && stats.State != virt.JobRunning {
			return &Job{Stats: stats}, false, nil
		}
		return nil, false, fmt.Errorf("domain %q: reading its backup job: %w", dom.Name(), err)
	}
	j = &Job{}
	if err := j.parse(doc); err != nil {
		return nil, false, fmt.Errorf("domain %q: the backup job's XML: %w", dom.Name(), err)
	}
	return j, true, nil
}

// parse reads the job's <domainbackup>, as libvirt filled it in.
func (j *Job) parse(doc string) error {
	var def libvirtxml.DomainBackup
	if err := def.Unmarshal(doc); err != nil {
		return err
	}
	j.Incremental = def.Incremental
	if def.Push != nil && def.Push.Disks != nil {
		for _, d := range def.Push.Disks.Disks {
			if d.Backup != "no" {
				j.Disks = append(j.Disks, Disk{Name: d.Name, Incremental: incrementalOf(d.BackupMode, d.Incremental), Target: sourcePath(d.Target)})
			}
		}
	}
	if def.Pull != nil {
		j.Pull = true
		j.Server = serverOf(def.Pull.Server)
		if def.Pull.Disks != nil {
			for _, d := range def.Pull.Disks.Disks {
				if d.Backup != "no" {
					j.Disks = append(j.Disks, Disk{Name: d.Name, Incremental: incrementalOf(d.BackupMode, d.Incremental), Scratch: sourcePath(d.Scratch),
						ExportName: d.ExportName, ExportBitmap: d.ExportBitmap})
				}
			}
		}
	}
	return nil
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

// ExportURI is the NBD URI of one of a pull job's disks.
func (j *Job) ExportURI(d Disk) string { return NBDURI(j.Server, d.ExportName) }

// NoJobsError is the error for a driver that runs no backup jobs
// (libvirt's test driver, say).
func NoJobsError(dom virt.Domain, err error) error {
	return fmt.Errorf("domain %q: this libvirt driver cannot run backup jobs (%w); vbackup needs the QEMU driver (qemu:///system or qemu:///session)", dom.Name(), err)
}

// NoneRunning is the error for a command that needs a running backup job.
func NoneRunning(dom virt.Domain) error {
	return fmt.Errorf("domain %q has no backup job running; start one with 'vbackup backup-begin %s'", dom.Name(), dom.Name())
}

// Running refuses a domain that is not running: libvirt runs backup jobs
// on running domains only.
func Running(ctx context.Context, dom virt.Domain) error {
	st, err := dom.State(ctx)
	if err != nil {
		return err
	}
	if !st.Active {
		return fmt.Errorf("domain %q is %s: a backup needs a running domain; start it with 'virsh start %s'", dom.Name(), st.State, dom.Name())
	}
	return nil
}
