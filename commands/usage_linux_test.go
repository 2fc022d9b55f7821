package commands

import (
	"os"
	"syscall"
)

// usedBytes is the disk space a file takes (its allocated blocks).
func usedBytes(fi os.FileInfo) int64 {
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}
