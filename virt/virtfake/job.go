package virtfake

import (
	"context"
	"os"
	"strconv"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// pushTime is how long a push that is not held takes: long enough for a
// test to see it run (and abort it), short enough not to slow tests down.
const pushTime = 50 * time.Millisecond

// diskSize is every disk's virtual size, the block jobs' End.
const diskSize = 64 << 20

type job struct {
	def     *backupDef
	disks   []*backupDisk // those backed up
	started time.Time
	timer   *time.Timer
	done    chan struct{} // closed when the job ends
}

func (j *job) pull() bool { return j.def.pull }

const opBegin = "virDomainBackupBegin"

// BeginBackup starts a backup job as qemuBackupBegin does, checking in its
// order; the checkpoint of checkpointXML is created (and made current) as
// the job starts, and stays whatever becomes of the job. A push that is not
// held (HoldPush) completes by itself after 50 ms; a pull runs until
// AbortJob.
//
// The fake writes no file. The stores libvirt would create (push targets,
// pull scratch files) count as files as long as libvirt would leave them
// (a completed push's targets from then on), besides the files really on
// disk: libvirt refuses to create a store over a file, and ReuseExternal
// needs one.
func (d *Domain) BeginBackup(ctx context.Context, backupXML, checkpointXML string, flags virt.BeginFlags) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = opBegin
	if err := d.c.enter("BeginBackup", op); err != nil {
		return err
	}
	def, err := parseBackup(op, backupXML)
	if err != nil {
		return err
	}
	var cpDef *libvirtxml.DomainCheckpoint
	suffix := strconv.FormatInt(time.Now().Unix(), 10)
	if checkpointXML != "" {
		if cpDef, err = parseCheckpoint(op, checkpointXML, false); err != nil {
			return err
		}
		if cpDef.Name == "" {
			cpDef.Name = suffix
		}
		suffix = cpDef.Name
	}
	if err := d.acquireJob(); err != nil {
		return err
	}
	if !d.active {
		return newErr(op, errOperationUnsup, "cannot perform disk backup for inactive domain")
	}
	if err := alignBackup(op, def, d.live, suffix); err != nil {
		return err
	}
	if def.pull {
		if def.server == nil {
			def.server = &backupServer{transport: "tcp", name: "localhost"}
		}
		if def.server.transport == "tcp" && def.server.port == 0 {
			return newErr(op, errOperationUnsup, "<domainbackup> must specify TCP port for now")
		}
	}
	var cp *checkpoint
	if cpDef != nil {
		if cp, err = d.prepareCheckpoint(op, cpDef); err != nil {
			return err
		}
	}
	disks, err := d.prepareDisks(op, def)
	if err != nil {
		return err
	}
	if err := d.prepareStores(op, disks, flags.ReuseExternal); err != nil {
		return err
	}
	for _, disk := range disks {
		if disk.created {
			d.c.stores[disk.path] = true
		}
		disk.state, disk.end = "running", diskSize
	}
	if cp != nil {
		d.commitCheckpoint(cp)
	}
	j := &job{def: def, disks: disks, started: time.Now(), done: make(chan struct{})}
	d.job = j
	if !def.pull && !d.holdPush {
		j.timer = time.AfterFunc(pushTime, func() { d.completePush(j) })
	}
	return nil
}

// acquireJob waits, as libvirt waits for the domain's state change lock,
// for a running job to end. Callers hold c.mu; it is released while
// waiting.
func (d *Domain) acquireJob() error {
	deadline := time.Now().Add(d.c.lockWait)
	for d.job != nil {
		left := time.Until(deadline)
		if left <= 0 {
			return newErr(opBegin, errTimeout, "cannot acquire state change lock (held by monitor=remoteDispatchDomainBackupBegin)")
		}
		done := d.job.done
		d.c.mu.Unlock()
		select {
		case <-done:
		case <-time.After(left):
		}
		d.c.mu.Lock()
	}
	return nil
}

// prepareDisks is qemuBackupDiskPrepareData: formats, store numbers and
// the bitmaps an incremental backup starts from.
func (d *Domain) prepareDisks(op string, def *backupDef) ([]*backupDisk, error) {
	var disks []*backupDisk
	for _, disk := range def.disks {
		if !disk.backup {
			continue
		}
		disks = append(disks, disk)
		if disk.format == "" {
			disk.format = "qcow2"
		}
		d.storeSeq++
		disk.index = uint(len(virt.DisksOf(d.live))) + d.storeSeq
		if disk.incremental == "" {
			continue
		}
		if d.checkpoint(disk.incremental) == nil {
			return nil, newErr(op, errNoCheckpoint, "Checkpoint '%s' for incremental backup of disk '%s' not found", disk.incremental, disk.name)
		}
		if !d.bitmaps[disk.name][disk.incremental] {
			return nil, newErr(op, errInconsistent, "missing or broken bitmap '%s' for disk '%s'", disk.incremental, disk.name)
		}
		if def.pull && disk.exportbitmap == "" {
			disk.exportbitmap = "backup-" + disk.name
		}
	}
	if len(disks) == 0 {
		return nil, newErr(op, errConfigUnsup, "no disks selected for backup")
	}
	if def.pull {
		for _, disk := range disks {
			if disk.exportname == "" {
				disk.exportname = disk.name
			}
		}
	}
	return disks, nil
}

// prepareStores is qemuBackupDiskPrepareStorage: libvirt creates each file
// store unless told to reuse it, and refuses to create one over a file.
func (d *Domain) prepareStores(op string, disks []*backupDisk, reuse bool) error {
	for _, disk := range disks {
		if disk.path == "" {
			return newErr(op, errInternal, "argument key 'filename' must not have null value")
		}
		exists := d.c.stores[disk.path]
		if !exists {
			_, err := os.Stat(disk.path)
			exists = err == nil
		}
		switch {
		case reuse && !exists:
			return newErr(op, errInternal, "unable to execute QEMU command 'blockdev-add': Could not open '%s': No such file or directory", disk.path)
		case !reuse && disk.storeType == "file" && exists:
			return newErr(op, errInvalidArg, "store '%s' for backup of '%s' exists", disk.path, disk.name)
		case !reuse && disk.storeType == "file":
			disk.created = true
		}
	}
	return nil
}

// BackupXML is the running job's definition with libvirt's defaults.
func (d *Domain) BackupXML(ctx context.Context) (string, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainBackupGetXMLDesc"
	if err := d.c.enter("BackupXML", op); err != nil {
		return "", err
	}
	if d.job == nil {
		return "", newErr(op, errNoBackup, "no domain backup job present")
	}
	return d.job.def.format(), nil
}

// AbortJob cancels the running job: libvirt reports a cancelled push as a
// cancelled job with QEMU's "Operation canceled", and an aborted pull (its
// normal end) as a completed job with that same message.
func (d *Domain) AbortJob(ctx context.Context) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainAbortJob"
	if err := d.c.enter("AbortJob", op); err != nil {
		return err
	}
	if !d.active {
		return notRunning(op)
	}
	if d.job == nil {
		return newErr(op, errOperationInvalid, "no job is active on the domain")
	}
	d.end(d.job, endAborted, "")
	return nil
}

// Job is the running job's statistics, or with completed the last ended
// one's (kept, for any number of readers, even once the domain stopped).
func (d *Domain) Job(ctx context.Context, completed bool) (virt.Job, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainGetJobStats"
	if err := d.c.enter("Job", op); err != nil {
		return virt.Job{}, err
	}
	if completed {
		if d.completed == nil {
			return virt.Job{State: virt.JobNone}, nil
		}
		return *d.completed, nil
	}
	if !d.active {
		return virt.Job{}, notRunning(op)
	}
	if d.job == nil {
		return virt.Job{State: virt.JobNone}, nil
	}
	return d.job.stats(virt.JobRunning), nil
}

func (j *job) stats(state virt.JobState) virt.Job {
	out := virt.Job{State: state, Backup: true, Operation: "backup", Elapsed: time.Since(j.started).Truncate(time.Millisecond)}
	var cur, end uint64
	for _, disk := range j.disks {
		cur, end = cur+disk.cur, end+disk.end
	}
	if j.pull() {
		out.TempKnown, out.TempUsed, out.TempTotal = true, cur, end
	} else {
		out.DataKnown, out.DataTotal, out.DataProcessed = true, end, cur
		if end > cur {
			out.DataRemaining = end - cur
		}
	}
	return out
}

// BlockJob is disk's part of the running job, while it runs.
func (d *Domain) BlockJob(ctx context.Context, disk string) (virt.BlockJob, bool, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainGetBlockJobInfo"
	if err := d.c.enter("BlockJob", op); err != nil {
		return virt.BlockJob{}, false, err
	}
	if !d.active {
		return virt.BlockJob{}, false, notRunning(op)
	}
	if diskByTarget(d.live, disk) == nil {
		return virt.BlockJob{}, false, newErr(op, errInvalidArg, "disk '%s' not found in domain", disk)
	}
	if d.job != nil {
		for _, x := range d.job.disks {
			if x.name == disk && x.state == "running" {
				return virt.BlockJob{Backup: true, Cur: x.cur, End: x.end}, true, nil
			}
		}
	}
	if cur, end, ok := d.stepPull(disk); ok {
		return virt.BlockJob{Pull: true, Cur: cur, End: end}, true, nil
	}
	return virt.BlockJob{}, false, nil
}
