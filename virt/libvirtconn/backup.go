package libvirtconn

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"time"

	"libvirt.org/go/libvirt"

	"vbackup/virt"
)

// BeginBackup starts a backup job.
func (d *Domain) BeginBackup(ctx context.Context, backupXML, checkpointXML string, flags virt.BeginFlags) error {
	var lf libvirt.DomainBackupBeginFlags
	if flags.ReuseExternal {
		lf |= libvirt.DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL
	}
	return d.c.call(ctx, "virDomainBackupBegin", d.name, func() error {
		return d.lv.BackupBegin(backupXML, checkpointXML, lf)
	})
}

// BackupXML is the running backup job's XML.
func (d *Domain) BackupXML(ctx context.Context) (string, error) {
	var doc string
	err := d.c.call(ctx, "virDomainBackupGetXMLDesc", d.name, func() (err error) {
		doc, err = d.lv.BackupGetXMLDesc(0)
		return err
	})
	return doc, err
}

// AbortJob ends the domain's running job.
func (d *Domain) AbortJob(ctx context.Context) error {
	return d.c.call(ctx, "virDomainAbortJob", d.name, func() error {
		return d.lv.AbortJob()
	})
}

var jobStates = map[libvirt.DomainJobType]virt.JobState{
	libvirt.DOMAIN_JOB_NONE:      virt.JobNone,
	libvirt.DOMAIN_JOB_BOUNDED:   virt.JobRunning,
	libvirt.DOMAIN_JOB_UNBOUNDED: virt.JobRunning,
	libvirt.DOMAIN_JOB_COMPLETED: virt.JobCompleted,
	libvirt.DOMAIN_JOB_FAILED:    virt.JobFailed,
	libvirt.DOMAIN_JOB_CANCELLED: virt.JobCancelled,
}

var operations = map[libvirt.DomainJobOperationType]string{
	libvirt.DOMAIN_JOB_OPERATION_START:           "start",
	libvirt.DOMAIN_JOB_OPERATION_SAVE:            "save",
	libvirt.DOMAIN_JOB_OPERATION_RESTORE:         "restore",
	libvirt.DOMAIN_JOB_OPERATION_MIGRATION_IN:    "incoming migration",
	libvirt.DOMAIN_JOB_OPERATION_MIGRATION_OUT:   "outgoing migration",
	libvirt.DOMAIN_JOB_OPERATION_SNAPSHOT:        "snapshot",
	libvirt.DOMAIN_JOB_OPERATION_SNAPSHOT_REVERT: "snapshot revert",
	libvirt.DOMAIN_JOB_OPERATION_DUMP:            "dump",
	libvirt.DOMAIN_JOB_OPERATION_BACKUP:          "backup",
}

// Job reads the domain's job statistics. Completed statistics are read with
// KEEP_COMPLETED so that another reader (virsh domjobinfo, a second
// vbackup) still finds them.
func (d *Domain) Job(ctx context.Context, completed bool) (virt.Job, error) {
	var lf libvirt.DomainGetJobStatsFlags
	if completed {
		lf = libvirt.DOMAIN_JOB_STATS_COMPLETED | libvirt.DOMAIN_JOB_STATS_KEEP_COMPLETED
	}
	var info *libvirt.DomainJobInfo
	err := d.c.call(ctx, "virDomainGetJobStats", d.name, func() (err error) {
		info, err = d.lv.GetJobStats(lf)
		return err
	})
	if err != nil {
		return virt.Job{}, err
	}
	job := virt.Job{State: jobStates[info.Type]}
	if job.State == "" {
		job.State = virt.JobNone
	}
	if info.OperationSet {
		job.Operation = operations[info.Operation]
		job.Backup = info.Operation == libvirt.DOMAIN_JOB_OPERATION_BACKUP
	}
	if info.TimeElapsedSet {
		job.Elapsed = time.Duration(info.TimeElapsed) * time.Millisecond
	}
	// A backup reports its copy as disk_* (virsh's "File processed"); data_*
	// is the same sum for jobs that also move memory.
	switch {
	case info.DiskTotalSet || info.DiskProcessedSet:
		job.DataKnown = true
		job.DataTotal, job.DataProcessed, job.DataRemaining = info.DiskTotal, info.DiskProcessed, info.DiskRemaining
	case info.DataTotalSet || info.DataProcessedSet:
		job.DataKnown = true
		job.DataTotal, job.DataProcessed, job.DataRemaining = info.DataTotal, info.DataProcessed, info.DataRemaining
	}
	if info.DiskTempTotalSet || info.DiskTempUsedSet {
		job.TempKnown = true
		job.TempUsed, job.TempTotal = info.DiskTempUsed, info.DiskTempTotal
	}
	if info.JobSuccessSet {
		job.SuccessKnown, job.Success = true, info.JobSuccess
	}
	if info.ErrorMessageSet {
		job.Error = info.ErrorMessage
	}
	return job, nil
}

// BlockJob is the block job on disk, if one runs.
func (d *Domain) BlockJob(ctx context.Context, disk string) (virt.BlockJob, bool, error) {
	var info *libvirt.DomainBlockJobInfo
	err := d.c.call(ctx, "virDomainGetBlockJobInfo", disk, func() (err error) {
		info, err = d.lv.GetBlockJobInfo(disk, 0)
		return err
	})
	if err != nil {
		return virt.BlockJob{}, false, err
	}
	// libvirt answers an all-zero record when the disk has no block job.
	if info.Type == 0 && info.End == 0 && info.Cur == 0 {
		return virt.BlockJob{}, false, nil
	}
	return virt.BlockJob{
		Backup: info.Type == libvirt.DOMAIN_BLOCK_JOB_TYPE_BACKUP,
		Pull:   info.Type == libvirt.DOMAIN_BLOCK_JOB_TYPE_PULL,
		Cur:    info.Cur,
		End:    info.End,
	}, true, nil
}

// The backup record lives in the domain's live metadata under vbackup's
// own namespace: it goes away with the running domain, as the job does.
const (
	recordNS     = "urn:vbackup:backup-job:1"
	recordPrefix = "vbackup"
)

type recordXML struct {
	XMLName    xml.Name  `xml:"job"`
	Checkpoint string    `xml:"checkpoint,omitempty"`
	Mode       string    `xml:"mode"`
	Started    string    `xml:"started"`
	Discard    *struct{} `xml:"discard"`
	Freezing   *struct{} `xml:"freezing"`
	Dir        string    `xml:"dir,omitempty"`
	Host       string    `xml:"host,omitempty"`
	PID        int       `xml:"pid,omitempty"`
}

// SetBackupRecord remembers the job vbackup started.
func (d *Domain) SetBackupRecord(ctx context.Context, rec virt.BackupRecord) error {
	x := recordXML{Checkpoint: rec.Checkpoint, Mode: "push", Started: rec.Started.UTC().Format(time.RFC3339),
		Dir: rec.Dir, Host: rec.Host, PID: rec.PID}
	if rec.Pull {
		x.Mode = "pull"
	}
	if rec.Discard {
		x.Discard = &struct{}{}
	}
	if rec.Freezing {
		x.Freezing = &struct{}{}
	}
	doc, err := xml.Marshal(x)
	if err != nil {
		return err
	}
	return d.c.call(ctx, "virDomainSetMetadata", d.name, func() error {
		return d.lv.SetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, string(doc), recordPrefix, recordNS, libvirt.DOMAIN_AFFECT_LIVE)
	})
}

// BackupRecord reads the record back; ok is false when there is none.
func (d *Domain) BackupRecord(ctx context.Context) (virt.BackupRecord, bool, error) {
	var doc string
	absent := false
	err := d.c.call(ctx, "virDomainGetMetadata", d.name, func() (err error) {
		doc, err = d.lv.GetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, recordNS, libvirt.DOMAIN_AFFECT_LIVE)
		var lerr libvirt.Error
		if errors.As(err, &lerr) && lerr.Code == libvirt.ERR_NO_DOMAIN_METADATA {
			absent = true
		}
		return err
	})
	if absent {
		return virt.BackupRecord{}, false, nil
	}
	if err != nil {
		return virt.BackupRecord{}, false, err
	}
	var x recordXML
	if err := xml.Unmarshal([]byte(doc), &x); err != nil {
		return virt.BackupRecord{}, false, fmt.Errorf("domain %s: vbackup's job record: %w", d.name, err)
	}
	rec := virt.BackupRecord{Checkpoint: x.Checkpoint, Pull: x.Mode == "pull", Discard: x.Discard != nil,
		Freezing: x.Freezing != nil, Dir: x.Dir, Host: x.Host, PID: x.PID}
	rec.Started, _ = time.Parse(time.RFC3339, x.Started)
	return rec, true, nil
}

// ClearBackupRecord forgets the record.
func (d *Domain) ClearBackupRecord(ctx context.Context) error {
	return d.c.call(ctx, "virDomainSetMetadata", d.name, func() error {
		return d.lv.SetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, "", "", recordNS, libvirt.DOMAIN_AFFECT_LIVE)
	})
}
