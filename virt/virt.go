// Package virt holds the project's own terms for what it asks of libvirt:
// domains, their disks and checkpoints, and the errors a user can act on.
// It is pure Go; the one package that talks to libvirt (virt/libvirtconn)
// implements Conn, and everything else depends only on this package.
package virt

import (
	"context"
	"errors"
	"time"
)

// Errors a caller can branch on. libvirtconn wraps libvirt's error codes into
// these (errors.Is works), keeping libvirt's own sentence as the message.
var (
	ErrNoDomain               = errors.New("no such domain")
	ErrNoCheckpoint           = errors.New("no such checkpoint")
	ErrUnsupported            = errors.New("not supported by this libvirt driver")
	ErrInvalidArg             = errors.New("invalid argument")
	ErrOperationInvalid       = errors.New("operation not valid in the domain's current state")
	ErrCheckpointExists       = errors.New("checkpoint already exists")
	ErrCheckpointInconsistent = errors.New("checkpoint is inconsistent")
	ErrXML                    = errors.New("invalid XML")
	ErrConnect                = errors.New("cannot connect to libvirt")
	ErrNoAgent                = errors.New("no guest agent answers")
)

// Error is a failed libvirt call: Msg is libvirt's own sentence (never the
// binding's "virError(Code=…)" text) and Kind the sentinel it maps to, if any.
type Error struct {
	Op   string // the libvirt call, e.g. "virDomainCheckpointCreateXML"
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

// Disk is one disk of a domain, as far as backups and checkpoints care.
type Disk struct {
	Target   string // "vda": the name libvirt, virsh and the backup XML use
	Device   string // "disk", "cdrom", "floppy", "lun"
	Type     string // source type: "file", "block", "network", "volume"
	Source   string // file or device path; "" when the drive is empty
	Format   string // driver type: "qcow2", "raw", … ; "" when the XML does not say
	ReadOnly bool
}

// Empty reports a drive with no medium (an ejected CD-ROM, say).
func (d Disk) Empty() bool { return d.Source == "" }

// CanCarryBitmap reports whether the disk can take part in a checkpoint:
// libvirt keeps checkpoints as qcow2 persistent bitmaps, so a disk in another
// known format cannot; an unknown format is left for libvirt to judge.
func (d Disk) CanCarryBitmap() bool {
	return !d.Empty() && !d.ReadOnly && (d.Format == "" || d.Format == "qcow2")
}

// CheckpointDisk is one disk's part in a checkpoint.
type CheckpointDisk struct {
	Name       string // disk target
	Checkpoint string // "bitmap" or "no"
	Bitmap     string // bitmap name, for "bitmap"
	Size       uint64 // bytes changed since the checkpoint; set only when asked for
	SizeKnown  bool
}

// Checkpoint is one checkpoint of a domain.
type Checkpoint struct {
	Name        string
	Parent      string // "" for a root
	Description string
	Created     time.Time
	Disks       []CheckpointDisk
}

// CreateFlags qualify CreateCheckpoint.
type CreateFlags struct {
	Redefine         bool // restore metadata of a checkpoint made elsewhere
	RedefineValidate bool // with Redefine: check the disks still hold the bitmaps
	Quiesce          bool // freeze guest filesystems through the guest agent
}

// XMLFlags qualify CheckpointXML.
type XMLFlags struct {
	NoDomain     bool // leave out the <domain> copy
	Size         bool // add each bitmap's current size (running domain only)
	SecurityInfo bool // include secrets of the domain XML
}

// DeleteFlags qualify DeleteCheckpoint.
type DeleteFlags struct {
	Children     bool // the checkpoint and all its descendants
	ChildrenOnly bool // only its descendants
	MetadataOnly bool // forget libvirt's record, leave the bitmaps on disk
}

// DomainState is what a user needs to know about whether a domain runs.
type DomainState struct {
	Active bool
	State  string // "running", "paused", "shut off", …
}

// Conn is an open connection to a libvirt daemon (or driver).
type Conn interface {
	// URI is the connection's canonical URI.
	URI() string
	// Domain looks a domain up by name, UUID or ID, as virsh does.
	Domain(ctx context.Context, name string) (Domain, error)
	// Domains lists the names of the connection's domains, running ones
	// only when active is true, sorted.
	Domains(ctx context.Context, active bool) ([]string, error)
	// DefineDomain makes a persistent domain of xml (not started).
	DefineDomain(ctx context.Context, xml string) (Domain, error)
	// SecurityModels are the security drivers the host's domains run
	// under (its capabilities' secmodel): dac, selinux, apparmor; none for
	// a session daemon.
	SecurityModels(ctx context.Context) ([]SecurityModel, error)
	Close() error
	Storage
}

// SecurityModel is one security driver of a host.
type SecurityModel struct {
	Name string // dac, selinux, apparmor, none
	// BaseLabels are the labels a domain gets by default, by domain type
	// (kvm, qemu); for dac "+UID:+GID", the account QEMU runs as.
	BaseLabels map[string]string
}

// Domain is one domain of a connection.
type Domain interface {
	Name() string
	UUID(ctx context.Context) (string, error)
	State(ctx context.Context) (DomainState, error)
	// XML is the domain's definition: the persistent one when inactive is
	// true (what would be defined again), else the live one. Secrets are
	// left out.
	XML(ctx context.Context, inactive bool) (string, error)
	// Disks lists the domain's disks, from its live XML.
	Disks(ctx context.Context) ([]Disk, error)

	CreateCheckpoint(ctx context.Context, xml string, flags CreateFlags) (name string, err error)
	// Checkpoints lists every checkpoint of the domain with its parent.
	Checkpoints(ctx context.Context) ([]Checkpoint, error)
	Checkpoint(ctx context.Context, name string) (Checkpoint, error)
	CheckpointXML(ctx context.Context, name string, flags XMLFlags) (string, error)
	DeleteCheckpoint(ctx context.Context, name string, flags DeleteFlags) error

	// BeginBackup starts a backup job; checkpointXML, when not "", names a
	// checkpoint libvirt creates as the job starts.
	BeginBackup(ctx context.Context, backupXML, checkpointXML string, flags BeginFlags) error
	// BackupXML is the running backup job's XML, with libvirt's defaults
	// filled in.
	BackupXML(ctx context.Context) (string, error)
	// AbortJob ends the domain's running job.
	AbortJob(ctx context.Context) error
	// Job is the domain's current job; with completed, the last finished
	// one's statistics, left in place for other readers.
	Job(ctx context.Context, completed bool) (Job, error)
	// BlockJob is the block job running on one disk, if any.
	BlockJob(ctx context.Context, disk string) (BlockJob, bool, error)
	// Events delivers the domain's job events until ctx ends, when the
	// channel is closed. A lost connection is an event too.
	Events(ctx context.Context) (<-chan Event, error)

	// The record of the backup job vbackup started, kept by libvirt with the
	// running domain (live metadata), so that another invocation knows which
	// checkpoint came with the job.
	SetBackupRecord(ctx context.Context, rec BackupRecord) error
	BackupRecord(ctx context.Context) (BackupRecord, bool, error)
	ClearBackupRecord(ctx context.Context) error

	Instant
	// The guest's filesystems, through its QEMU guest agent. Each fails
	// with ErrNoAgent when the domain has no agent, or it does not answer.
	// PingAgent waits a few seconds at most.
	PingAgent(ctx context.Context) error
	// FreezeFS freezes every filesystem of the guest (their data and
	// metadata on disk, consistent, until ThawFS); a failed freeze thaws
	// what it froze.
	FreezeFS(ctx context.Context) error
	ThawFS(ctx context.Context) error
}

// BeginFlags qualify BeginBackup.
type BeginFlags struct {
	ReuseExternal bool // targets exist already (push) or scratch files do (pull)
}

// JobState is where a domain job stands.
type JobState string

const (
	JobNone      JobState = "none"
	JobRunning   JobState = "running"
	JobCompleted JobState = "completed"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// Job is a domain job's statistics. Push backups count data; pull backups
// count the scratch space in use.
type Job struct {
	State     JobState
	Backup    bool   // the job is a backup
	Operation string // "backup", "migration", …; "" when libvirt does not say
	Elapsed   time.Duration

	DataKnown                               bool
	DataTotal, DataProcessed, DataRemaining uint64

	TempKnown           bool
	TempUsed, TempTotal uint64

	SuccessKnown bool // set once the job has ended
	Success      bool
	Error        string
}

// BlockJob is one disk's part of a job.
type BlockJob struct {
	Backup   bool // the block job belongs to a backup
	Pull     bool // the block job is a block pull (Instant.BlockPull)
	Cur, End uint64
}

// EventKind says what an Event reports.
type EventKind string

const (
	EventJobEnded     EventKind = "job-ended"      // the domain's job ended; Job holds its final statistics
	EventDiskJobEnded EventKind = "disk-job-ended" // one disk's block job ended; Disk and Status say how
	EventDisconnected EventKind = "disconnected"   // the connection to libvirtd was lost
)

// Event is something libvirt reported about a domain's job.
type Event struct {
	Kind   EventKind
	Disk   string
	Status string // EventDiskJobEnded: "completed", "failed", "cancelled"
	Job    Job    // EventJobEnded: Success, Error and the counts the event carries
}

// BackupRecord is what vbackup remembers of a backup job it started.
type BackupRecord struct {
	Checkpoint string    // created with the job; "" when none
	Pull       bool      // pull mode (push otherwise)
	Started    time.Time // when backup-begin started it
	Discard    bool      // vbackup began ending the job unfinished: its checkpoint must go
	// Freezing is set before the guest's filesystems are frozen for the
	// job's start and cleared once they are thawed: a vbackup killed in
	// between leaves the guest frozen, and the next one thaws it.
	Freezing bool
	// Set by 'vbackup backup', whose checkpoint holds data only once a
	// manifest in Dir names it: the folder, and the process reading the job.
	Dir  string
	Host string
	PID  int
}

// Instant is what an instant restore asks of a domain beyond backups: to
// start it on its overlays, and to copy the backing data into them while it
// runs, one disk at a time.
type Instant interface {
	// Boot starts the (defined, shut off) domain, as 'virsh start' does.
	Boot(ctx context.Context) error
	// BlockPull starts a block pull of disk: every byte its image reads
	// from its backing chain is copied into the image, which then has no
	// backing file. BlockJob reports its progress (Pull set) until it ends.
	BlockPull(ctx context.Context, disk string) error
	// BlockJobAbort cancels disk's block job and waits until it has ended;
	// what a pull copied stays in the image.
	BlockJobAbort(ctx context.Context, disk string) error
	// Undefine removes a shut-off domain's definition (its checkpoint
	// metadata with it), leaving its images and nvram file.
	Undefine(ctx context.Context) error
}

// Errors of storage pools and volumes.
var (
	ErrNoPool       = errors.New("no such storage pool")
	ErrVolumeExists = errors.New("storage volume exists already")
)

// Pace waits, if it must, before n bytes of data are sent (UploadVolume);
// its error ends the upload.
type Pace func(ctx context.Context, n uint64) error

// StoragePool is one storage pool of a connection.
type StoragePool struct {
	Name   string
	Active bool // started: its volumes can be made and written
}

// Storage is what a restore into a storage pool asks of a connection: the
// images go to the pool's host over the connection itself, so it works
// over any URI.
type Storage interface {
	// StoragePools lists the connection's pools, active or not, sorted by
	// name.
	StoragePools(ctx context.Context) ([]StoragePool, error)
	// StorageVolumes lists the names of pool's volumes (ErrNoPool for a
	// pool not there).
	StorageVolumes(ctx context.Context, pool string) ([]string, error)
	// UploadVolume makes volume name in pool holding exactly the bytes of
	// the local file, sent over the connection with its holes sent as
	// holes, and returns the volume's path on the pool's host. pace, when
	// not nil, is called before each part of the data is sent, with its
	// length (holes are not data), and may wait (a bandwidth cap). A name
	// taken is ErrVolumeExists, and nothing is written; a failed upload
	// deletes the volume it made.
	UploadVolume(ctx context.Context, pool, name, file string, pace Pace) (path string, err error)
	// DeleteVolume removes volume name of pool.
	DeleteVolume(ctx context.Context, pool, name string) error
}
