package libvirtconn

import (
	"context"
	"sync"
	"time"

	"libvirt.org/go/libvirt"

	"vbackup/virt"
)

// libvirt delivers events (and keepalive answers) only while an event loop
// runs; it must be registered before the first connection opens.
var eventLoop sync.Once

func startEventLoop() {
	eventLoop.Do(func() {
		if err := libvirt.EventRegisterDefaultImpl(); err != nil {
			return
		}
		go func() {
			for {
				if err := libvirt.EventRunDefaultImpl(); err != nil {
					return
				}
			}
		}()
	})
}

// subscribers hears of a lost connection; guarded by Conn.mu.
type subscribers map[chan virt.Event]struct{}

// watchClose tells every subscriber when libvirt reports the connection lv
// (the gen-th reconnection) closed: daemon restarted, keepalive timed out...
// A connection already replaced says nothing.
func (c *Conn) watchClose(lv *libvirt.Connect, gen int) {
	_ = lv.RegisterCloseCallback(func(*libvirt.Connect, libvirt.ConnectCloseReason) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.gen != gen || c.closed {
			return
		}
		c.closed, c.lostAt = true, time.Now()
		for ch := range c.subs {
			send(ch, virt.Event{Kind: virt.EventDisconnected})
		}
	})
}

// send never blocks the event loop: a subscriber that stopped reading
// loses events rather than stalling libvirt.
func send(ch chan virt.Event, ev virt.Event) {
	select {
	case ch <- ev:
	default:
	}
}

var blockJobStatus = map[libvirt.ConnectDomainEventBlockJobStatus]string{
	libvirt.DOMAIN_BLOCK_JOB_COMPLETED: "completed",
	libvirt.DOMAIN_BLOCK_JOB_FAILED:    "failed",
	libvirt.DOMAIN_BLOCK_JOB_CANCELED:  "cancelled",
	libvirt.DOMAIN_BLOCK_JOB_READY:     "ready",
}

// Events delivers the domain's job-completed and block-job events, and a
// lost connection, until ctx ends.
func (d *Domain) Events(ctx context.Context) (<-chan virt.Event, error) {
	ch := make(chan virt.Event, 256)
	var ids []int
	// The registrations belong to this connection: after a reconnection
	// they are gone with it, and the listener registers again.
	d.c.lvMu.RLock()
	lv, gen := d.c.lv, d.c.generation()
	d.c.lvMu.RUnlock()
	err := d.c.call(ctx, "virConnectDomainEventRegisterAny", d.name+" job-completed", func() error {
		id, err := d.c.lv.DomainEventJobCompletedRegister(d.lv, func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainEventJobCompleted) {
			job := virt.Job{State: virt.JobCompleted, Backup: ev.Info.OperationSet && ev.Info.Operation == libvirt.DOMAIN_JOB_OPERATION_BACKUP}
			job.SuccessKnown, job.Success = ev.Info.JobSuccessSet, ev.Info.JobSuccess
			job.Error = ev.Info.ErrorMessage
			if ev.Info.DiskTotalSet {
				job.DataKnown, job.DataTotal, job.DataProcessed = true, ev.Info.DiskTotal, ev.Info.DiskProcessed
			}
			send(ch, virt.Event{Kind: virt.EventJobEnded, Job: job})
		})
		ids = append(ids, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = d.c.call(ctx, "virConnectDomainEventRegisterAny", d.name+" block-job-2", func() error {
		id, err := d.c.lv.DomainEventBlockJob2Register(d.lv, func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainEventBlockJob) {
			if ev.Type != libvirt.DOMAIN_BLOCK_JOB_TYPE_BACKUP {
				return
			}
			if st, ok := blockJobStatus[ev.Status]; ok && st != "ready" {
				send(ch, virt.Event{Kind: virt.EventDiskJobEnded, Disk: ev.Disk, Status: st})
			}
		})
		ids = append(ids, id)
		return err
	})
	if err != nil {
		d.deregister(lv, gen, ids)
		return nil, err
	}
	d.c.mu.Lock()
	if d.c.subs == nil {
		d.c.subs = subscribers{}
	}
	d.c.subs[ch] = struct{}{}
	if d.c.closed {
		send(ch, virt.Event{Kind: virt.EventDisconnected})
	}
	d.c.mu.Unlock()
	go func() {
		<-ctx.Done()
		d.deregister(lv, gen, ids)
		d.c.mu.Lock()
		delete(d.c.subs, ch)
		d.c.mu.Unlock()
	}()
	return ch, nil
}

func (d *Domain) deregister(lv *libvirt.Connect, gen int, ids []int) {
	d.c.mu.Lock()
	gone := d.c.gen != gen || d.c.closed || d.c.closing
	d.c.mu.Unlock()
	if gone {
		return
	}
	for _, id := range ids {
		_ = d.c.once("virConnectDomainEventDeregisterAny", d.name, func() error {
			return lv.DomainEventDeregister(id)
		})
	}
}
