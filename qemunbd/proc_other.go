//go:build !linux

package qemunbd

import "syscall"

// sysProcAttr: only Linux can tie qemu-nbd's life to ours.
func sysProcAttr() *syscall.SysProcAttr { return nil }
