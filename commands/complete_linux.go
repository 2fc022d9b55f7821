package commands

import (
	"os"
	"syscall"
)

// isolateCompletion cuts a completion off from the terminal the user types
// in, so that nothing it starts can prompt there: without a controlling
// terminal, ssh (libvirt's ssh transport, say for a URI that libvirt's
// config aliases to one) cannot open /dev/tty to ask for a password, and
// without a display it cannot pop up a password dialog either. Tests that
// complete in their own process replace it.
var isolateCompletion = func() {
	for _, v := range []string{"DISPLAY", "WAYLAND_DISPLAY", "SSH_ASKPASS"} {
		_ = os.Unsetenv(v)
	}
	if _, err := syscall.Setsid(); err == nil {
		return
	}
	// A process group leader cannot start a session, but can still give
	// the terminal up; a session leader must not: that hangs up the shell.
	if sid, _, _ := syscall.RawSyscall(syscall.SYS_GETSID, 0, 0, 0); int(sid) == os.Getpid() {
		return
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer tty.Close()
	_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, tty.Fd(), syscall.TIOCNOTTY, 0)
}
