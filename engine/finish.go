package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
	"vbackup/progress"
	"vbackup/virt"
)

// FinishRequest finishes one instant restore.
type FinishRequest struct {
	Domain string
	// From, when the domain is gone, names the folder whose record of it
	// is to be released.
	From  string
	Conn  virt.Conn
	Now   func() time.Time
	Every time.Duration // between two looks at the block jobs; 250 ms if 0
}

// Finished is what a finish did.
type Finished struct {
	Domain, Dir, Backup string
	Pulled              []string // disks whose backing data was copied now
	Offline             bool     // the domain was shut off: the copy was made by qemu-img
	Released            bool     // the domain was gone: only its record was dropped
	Grants              int      // ACL entries taken back
}

// Finish copies the backup data an instant-restored domain reads into its
// own overlays, while it runs, by a block pull per disk; then the domain
// reads nothing from the backup folder, and the folder's record of it goes
// with the read access it was given. Stopped (ctx), it cancels the pulls:
// the domain keeps running on its overlays, with what was copied, and the
// next Finish goes on.
func Finish(ctx context.Context, req FinishRequest, printer progress.Printer, notes progress.Notifier) (Finished, error) {
	out := Finished{Domain: req.Domain}
	dom, err := req.Conn.Domain(ctx, req.Domain)
	if errors.Is(err, virt.ErrNoDomain) {
		return release(req, out)
	}
	if err != nil {
		return out, err
	}
	live, err := dom.XML(ctx, false)
	if err != nil {
		return out, err
	}
	meta, ok, err := readInstantMeta(live)
	if err != nil {
		return out, err
	}
	if !ok {
		return out, fmt.Errorf("domain %s is not an instant restore ('vbackup restore --instant' defines those, and marks them in their <metadata>): it has nothing to finish", req.Domain)
	}
	out.Dir, out.Backup = meta.Dir, meta.Backup
	rec, found, err := chain.FindInUse(meta.Dir, req.Domain)
	if err != nil {
		return out, err
	}
	uuid, err := dom.UUID(ctx)
	if err != nil {
		return out, err
	}
	if found && rec.UUID != "" && rec.UUID != uuid {
		return out, fmt.Errorf("%s records an instant restore named %s with UUID %s, not this domain (%s): nothing was changed", meta.Dir, req.Domain, rec.UUID, uuid)
	}
	st, err := dom.State(ctx)
	if err != nil {
		return out, err
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(live); err != nil {
		return out, err
	}
	var disks []string
	for _, d := range virt.DisksOf(&def) {
		if readsFrom(def, d, meta.Dir) {
			disks = append(disks, d.Target)
		}
	}
	if st.Active {
		out.Pulled = disks
		if err := pullAll(ctx, dom, disks, meta.Dir, req, printer); err != nil {
			return out, err
		}
	} else {
		out.Offline = true
		for _, d := range virt.DisksOf(&def) {
			if d.Type != "file" {
				continue
			}
			b, err := backingFile(d.Source)
			if err != nil || b == "" || !under(b, meta.Dir) {
				continue
			}
			notes.Infof("Copying the backup data of disk %s into %s (the domain is shut off: qemu-img rebase)", d.Target, d.Source)
			if _, err := qemuImg(ctx, "", "rebase", "-q", "-f", "qcow2", "-b", "", d.Source); err != nil {
				return out, fmt.Errorf("disk %s: %w; its image still reads from %s, run --finish again", d.Target, err, meta.Dir)
			}
			out.Pulled = append(out.Pulled, d.Target)
		}
	}
	if found {
		if err := dropRecord(meta.Dir, req.Domain, rec.Grants); err != nil {
			return out, err
		}
		out.Grants = len(rec.Grants)
	}
	return out, nil
}

// release drops the record of a domain that is gone.
func release(req FinishRequest, out Finished) (Finished, error) {
	if req.From != "" {
		abs, err := filepath.Abs(req.From)
		if err != nil {
			return out, err
		}
		req.From = abs
	}
	if req.From == "" {
		return out, fmt.Errorf("there is no domain %s; if it was an instant restore that was deleted, 'vbackup restore --finish %s --from DIR' releases what DIR keeps for it", req.Domain, req.Domain)
	}
	rec, found, err := chain.FindInUse(req.From, req.Domain)
	if err != nil {
		return out, err
	}
	if !found {
		return out, fmt.Errorf("there is no domain %s, and %s records no instant restore of that name: nothing to finish", req.Domain, req.From)
	}
	if err := dropRecord(req.From, req.Domain, rec.Grants); err != nil {
		return out, err
	}
	out.Dir, out.Backup, out.Released, out.Grants = req.From, rec.Backup, true, len(rec.Grants)
	return out, nil
}

// readsFrom reports whether disk d of a live definition reads a file of dir.
func readsFrom(def libvirtxml.Domain, d virt.Disk, dir string) bool {
	for _, f := range virt.BackingFiles(&def, d.Target) {
		if under(f, dir) {
			return true
		}
	}
	return false
}

func under(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// pullAll pulls each disk in turn, reporting the progress of all: QEMU
// 7.2 was seen to crash (a segfault, the domain gone) when two pulls of
// one domain ended together, and one at a time is no slower on one host's
// storage. A pull already running (a --finish stopped before) is waited
// for, not started again.
func pullAll(ctx context.Context, dom virt.Domain, disks []string, dir string, req FinishRequest, printer progress.Printer) error {
	every := req.Every
	if every == 0 {
		every = 250 * time.Millisecond
	}
	start := req.Now()
	state := map[string]progress.Disk{}
	for _, d := range disks {
		state[d] = progress.Disk{Name: d, State: progress.DiskRunning}
	}
	update := func() {
		s := progress.Sample{At: req.Now(), Mode: "finish"}
		for _, d := range disks {
			s.Disks = append(s.Disks, state[d])
		}
		printer.Update(s)
	}
	end := func(st string) {
		printer.Finish(progress.Result{At: req.Now(), State: st, Elapsed: req.Now().Sub(start), What: "finish"})
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var total uint64
	for _, d := range disks {
		err := pullOne(ctx, dom, d, dir, tick.C, func(cur, end uint64) {
			state[d] = progress.Disk{Name: d, Done: cur, Total: end, State: progress.DiskRunning}
			update()
		})
		s := state[d]
		switch {
		case err == nil:
			s.State, s.Done = progress.DiskDone, s.Total
			total += s.Total
		case ctx.Err() != nil:
			s.State = progress.DiskCancelled
		default:
			s.State = progress.DiskFailed
		}
		state[d] = s
		update()
		if err != nil {
			if ctx.Err() != nil {
				end(progress.JobCancelled)
				return fmt.Errorf("the copy stopped: domain %s runs on its overlays still, reading from %s; 'vbackup restore --finish %s' goes on: %w",
					dom.Name(), dir, dom.Name(), context.Cause(ctx))
			}
			end(progress.JobFailed)
			return err
		}
	}
	printer.Finish(progress.Result{At: req.Now(), State: progress.JobCompleted, Elapsed: req.Now().Sub(start), Bytes: total, What: "finish"})
	return nil
}

// pullOne pulls disk d and waits for its end; a stopped ctx cancels the
// pull, leaving what it copied.
func pullOne(ctx context.Context, dom virt.Domain, d, dir string, tick <-chan time.Time, report func(cur, end uint64)) error {
	bj, ok, err := dom.BlockJob(ctx, d)
	if err != nil {
		return fmt.Errorf("disk %s: %w", d, err)
	}
	if !(ok && bj.Pull) {
		if ok {
			return fmt.Errorf("disk %s runs another block job (not a pull); wait for it to end", d)
		}
		if err := dom.BlockPull(ctx, d); err != nil {
			return fmt.Errorf("disk %s: %w", d, err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			if err := dom.BlockJobAbort(context.Background(), d); err != nil && !errors.Is(err, virt.ErrInvalidArg) {
				return fmt.Errorf("disk %s: cancelling its pull: %w", d, err)
			}
			return context.Cause(ctx)
		case <-tick:
		}
		bj, ok, err := dom.BlockJob(ctx, d)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return fmt.Errorf("disk %s: %w", d, err)
		}
		if ok {
			report(bj.Cur, bj.End)
			continue
		}
		// The pull ended: it worked if the disk reads nothing from dir.
		doc, err := dom.XML(ctx, false)
		if err != nil {
			return err
		}
		var def libvirtxml.Domain
		if err := def.Unmarshal(doc); err != nil {
			return err
		}
		if readsFrom(def, virt.Disk{Target: d}, dir) {
			return fmt.Errorf("the block pull of disk %s ended, but the disk still reads from %s (the domain's log may say why); run --finish again", d, dir)
		}
		return nil
	}
}
