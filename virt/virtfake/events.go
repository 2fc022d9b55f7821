package virtfake

import (
	"context"
	"time"

	"vbackup/virt"
)

type subscriber struct {
	ch chan virt.Event
}

// send never blocks: as with libvirtconn, a subscriber that stopped
// reading loses events rather than stalling the domain.
func (s *subscriber) send(ev virt.Event) {
	select {
	case s.ch <- ev:
	default:
	}
}

// emit tells every subscriber of the domain. Callers hold c.mu.
func (d *Domain) emit(ev virt.Event) {
	for s := range d.subs {
		s.send(ev)
	}
}

// Events delivers the domain's job events until ctx ends, when the channel
// is closed.
func (d *Domain) Events(ctx context.Context) (<-chan virt.Event, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.enter("Events", "virConnectDomainEventRegisterAny"); err != nil {
		return nil, err
	}
	s := &subscriber{ch: make(chan virt.Event, 256)}
	d.subs[s] = struct{}{}
	go func() {
		<-ctx.Done()
		d.c.mu.Lock()
		defer d.c.mu.Unlock()
		delete(d.subs, s)
		close(s.ch)
	}()
	return s.ch, nil
}

// SetBackupRecord keeps rec in the running domain's live metadata. What is
// kept is what libvirtconn's XML keeps: Started to the second, in UTC.
func (d *Domain) SetBackupRecord(ctx context.Context, rec virt.BackupRecord) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainSetMetadata"
	if err := d.c.enter("SetBackupRecord", op); err != nil {
		return err
	}
	if !d.active {
		return notRunning(op)
	}
	rec.Started = rec.Started.UTC().Truncate(time.Second)
	d.record = &rec
	return nil
}

// BackupRecord reads the record back; ok is false when there is none.
func (d *Domain) BackupRecord(ctx context.Context) (virt.BackupRecord, bool, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainGetMetadata"
	if err := d.c.enter("BackupRecord", op); err != nil {
		return virt.BackupRecord{}, false, err
	}
	if !d.active {
		return virt.BackupRecord{}, false, notRunning(op)
	}
	if d.record == nil {
		return virt.BackupRecord{}, false, nil
	}
	return *d.record, true, nil
}

// ClearBackupRecord forgets the record.
func (d *Domain) ClearBackupRecord(ctx context.Context) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainSetMetadata"
	if err := d.c.enter("ClearBackupRecord", op); err != nil {
		return err
	}
	if !d.active {
		return notRunning(op)
	}
	d.record = nil
	return nil
}
