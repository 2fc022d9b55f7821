package sshhost

import (
	"context"
	"strings"
	"sync"
)

// A pull backup's forward is started as soon as the socket's path on the
// host is known, while libvirt begins the job, rather than after: its SSH
// login (a quarter of a second here) then overlaps the job's start. The
// forward connects to the host's socket only when something connects to
// it here, so the socket need not exist yet.

// early is a forward started before anyone asked for it.
type early struct {
	ready chan struct{} // closed once f or err is set
	f     *Forward
	err   error
}

// Prepare starts forwarding a new local socket to the host's socket
// remote, in the background, for the next Forward of remote to take.
// DropPrepared ends those never taken.
func (h *Host) Prepare(ctx context.Context, remote string) {
	e := &early{ready: make(chan struct{})}
	h.mu.Lock()
	if h.early == nil {
		h.early = map[string]*early{}
	}
	if _, ok := h.early[remote]; ok {
		h.mu.Unlock()
		return
	}
	h.early[remote] = e
	h.mu.Unlock()
	go func() {
		e.f, e.err = h.startForward(context.WithoutCancel(ctx), remote)
		close(e.ready)
	}()
}

// prepared takes the forward Prepare started for remote, if any.
func (h *Host) prepared(remote string) *early {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.early[remote]
	delete(h.early, remote)
	return e
}

// DropPrepared ends the forwards Prepare started that no Forward took,
// of the host's sockets whose path ends in suffix (one domain's, as
// "/DOMAIN/nbd.sock": the host is shared by the domains of a run, whose
// jobs begin side by side).
func (h *Host) DropPrepared(suffix string) {
	h.mu.Lock()
	var left []*early
	for remote, e := range h.early {
		if strings.HasSuffix(remote, suffix) {
			left = append(left, e)
			delete(h.early, remote)
		}
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range left {
		wg.Go(func() {
			<-e.ready
			if e.f != nil {
				e.f.Close()
			}
		})
	}
	wg.Wait()
}
