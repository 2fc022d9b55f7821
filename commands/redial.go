package commands

import (
	"vbackup/progress"
	"vbackup/virt"
)

// noteRedials tells the user when libvirtd went away and the connection
// was opened again (a package upgrade restarting it mid-backup). A
// reconnection that failed needs no line: the call that needed it fails,
// saying so.
func noteRedials(conn virt.Conn, notes progress.Notifier) {
	r, ok := conn.(virt.Redialer)
	if !ok {
		return
	}
	r.OnRedial(func(rd virt.Redial) {
		if rd.Err == nil {
			notes.Notef("libvirtd went away (%s); reconnected %.1f s later", rd.Lost, rd.After.Seconds())
		}
	})
}
