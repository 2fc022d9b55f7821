package virt

import "time"

// Redialer is a Conn that opens itself again when libvirtd goes away (a
// package upgrade restarts it at night, say) while QEMU goes on running:
// it waits a bounded time for libvirtd to answer again, looks its domains
// up again on the new connection and makes again the calls that were cut
// off where that is safe (a read, or a call libvirtd never received). A
// call libvirtd may have run fails with ErrConnect, and later calls work.
// Event channels receive EventDisconnected: their listener registers again.
type Redialer interface {
	// OnRedial calls fn after each attempt to reconnect, from the
	// goroutine whose call found the connection lost.
	OnRedial(fn func(Redial))
}

// Redial is one reconnection after libvirtd went away.
type Redial struct {
	Op    string        // the call that found the connection lost
	Lost  string        // how libvirt said it was lost
	After time.Duration // from the loss to the new connection (or to giving up)
	Err   error         // nil: reconnected
}
