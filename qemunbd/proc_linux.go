package qemunbd

import "syscall"

// sysProcAttr makes the kernel stop qemu-nbd when we die without calling
// Close: --persistent would otherwise keep it serving, and holding the
// image open, forever.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
