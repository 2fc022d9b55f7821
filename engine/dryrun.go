package engine

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"strings"

	"vbackup/chain"
	"vbackup/virt"
)

// DryRun is what the next backup of a domain into its folder would do,
// found without changing anything: an admin's answer to "why was last
// night's backup a full one?".
type DryRun struct {
	Domain string       `json:"domain"`
	Dir    string       `json:"dir"`
	Backup string       `json:"backup"` // the name it would get
	Level  string       `json:"level"`
	Reason string       `json:"reason"`
	From   string       `json:"from,omitempty"` // the backup an incremental builds on
	Disks  []DryRunDisk `json:"disks"`
	Ended  []string     `json:"ended,omitempty"` // disks whose chain would end (not in the domain, or not named)
	// First is what the run would do before the backup: settle an
	// earlier job, redefine a checkpoint, finish an interrupted prune,
	// remove an unfinished backup.
	First []string `json:"first,omitempty"`
}

// DryRunDisk is one disk's part in a DryRun.
type DryRunDisk struct {
	Name   string `json:"name"`
	Level  string `json:"level"`
	From   string `json:"from,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// DryRun says what Run would do, for a backup prepared with
// BackupRequest.DryRun; nothing changes. A running domain's bitmaps are
// asked after here, where a real run finds a broken one only when its
// job begins.
func (b *Backup) DryRun(ctx context.Context) (DryRun, error) {
	if !b.req.DryRun {
		return DryRun{}, fmt.Errorf("backup %s was not prepared as a dry run", b.name)
	}
	if err := b.dryBitmaps(ctx); err != nil {
		return DryRun{}, err
	}
	out := DryRun{Domain: b.dom.Name(), Dir: b.req.Dir, Backup: b.name, Level: b.dec.Level, Reason: b.dec.Reason, Ended: b.dec.Ended}
	if b.dec.From != nil {
		out.From = b.dec.From.Name()
	}
	for _, d := range b.dec.Disks {
		dd := DryRunDisk{Name: d.Name, Level: d.Level, Reason: d.Reason}
		if d.Level == chain.Incremental {
			dd.From = out.From
		}
		out.Disks = append(out.Disks, dd)
	}
	out.First = append(out.First, b.would...)
	if b.store.RemovalLeft() {
		what := "the record of an interrupted prune's removal would be cleared"
		if b.store.Removing != nil {
			what = fmt.Sprintf("the removal of backup %s, which a prune began, would be completed", b.store.Removing.Name())
		}
		out.First = append(out.First, what)
	}
	entries, err := os.ReadDir(b.req.Dir)
	if err != nil && !os.IsNotExist(err) {
		return out, err
	}
	for _, e := range entries {
		if n := e.Name(); e.IsDir() && strings.HasPrefix(n, ".") && strings.HasSuffix(n, ".partial") {
			out.First = append(out.First, fmt.Sprintf("the unfinished backup %s that an interrupted run left would be removed", n[1:len(n)-len(".partial")]))
		}
	}
	return out, nil
}

// dryJob is checkDomain's look at the domain's job in a dry run: what
// job.Ready would settle is only said.
func (b *Backup) dryJob(ctx context.Context) error {
	stats, err := b.dom.Job(ctx, false)
	if err != nil {
		return fmt.Errorf("domain %q: %w", b.dom.Name(), err)
	}
	rec, ok, err := b.dom.BackupRecord(ctx)
	if err != nil {
		return err
	}
	switch {
	case stats.State == virt.JobRunning && ok && rec.Dir != "":
		b.would = append(b.would, fmt.Sprintf("the backup job into %s started %s would be ended if its vbackup process (pid %d on %s) is gone, and its checkpoint %s deleted; otherwise the backup is refused while it runs",
			rec.Dir, rec.Started.Local().Format("2006-01-02 15:04:05"), rec.PID, rec.Host, rec.Checkpoint))
	case stats.State == virt.JobRunning:
		return fmt.Errorf("domain %q already has a job running, and libvirt runs one at a time; wait for it, or end it (for a backup: 'vbackup backup-end %s')", b.dom.Name(), b.dom.Name())
	case ok:
		b.would = append(b.would, fmt.Sprintf("the record of the earlier backup job started %s would be settled (checkpoint %s deleted unless its data was saved)",
			rec.Started.Local().Format("2006-01-02 15:04:05"), rec.Checkpoint))
	}
	return nil
}

// dryBitmaps makes an incremental that a broken bitmap would turn into a
// full one (a real run finds out as its job begins) a full one. A
// checkpoint still to be redefined has its bitmaps checked by libvirt
// then: its note says what happens when they are missing.
func (b *Backup) dryBitmaps(ctx context.Context) error {
	// A shut-off domain's images were asked already (decideOffline).
	if b.dec.Level != chain.Incremental || b.offline {
		return nil
	}
	from := b.dec.From.Name()
	if _, err := b.dom.Checkpoint(ctx, from); err != nil {
		return nil
	}
	why, err := b.brokenBitmaps(ctx, from)
	if err != nil || why == "" {
		return err
	}
	if b.req.Level == chain.WantInc {
		return fmt.Errorf("the last backup, %s, cannot be built on: %s; use --level full (or auto)", from, why)
	}
	if b.dec, err = chain.Decide(chain.WantFull, b.dom.Name(), nil, false, "", b.diskInfo); err != nil {
		return err
	}
	b.dec.Reason = "the last backup's checkpoint is broken: " + why
	return nil
}

// brokenBitmaps says which disks' bitmaps of checkpoint name libvirt
// cannot size (lost or inconsistent after a crash), or "" when all are
// whole. libvirt sizes a bitmap only while the domain runs.
func (b *Backup) brokenBitmaps(ctx context.Context, name string) (string, error) {
	doc, err := b.dom.CheckpointXML(ctx, name, virt.XMLFlags{Size: true, NoDomain: true})
	if err != nil {
		return "", virt.CheckpointErr(ctx, b.dom, name, err)
	}
	var sized struct {
		Disks []struct {
			Name       string  `xml:"name,attr"`
			Checkpoint string  `xml:"checkpoint,attr"`
			Size       *uint64 `xml:"size,attr"`
		} `xml:"disks>disk"`
	}
	if err := xml.Unmarshal([]byte(doc), &sized); err != nil {
		return "", fmt.Errorf("checkpoint %s: %w", name, err)
	}
	var broken []string
	for _, d := range sized.Disks {
		if d.Checkpoint == "bitmap" && d.Size == nil && b.backsUp(d.Name) {
			broken = append(broken, d.Name)
		}
	}
	if len(broken) == 0 {
		return "", nil
	}
	return fmt.Sprintf("libvirt finds no whole bitmap of checkpoint %s on %s (lost or left inconsistent, as after QEMU was killed)", name, strings.Join(broken, ", ")), nil
}

func (b *Backup) backsUp(disk string) bool {
	for _, d := range b.dec.Disks {
		if d.Name == disk && d.Level == chain.Incremental {
			return true
		}
	}
	return false
}
