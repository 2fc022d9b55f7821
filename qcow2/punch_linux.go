package qcow2

import (
	"os"
	"syscall"
)

// punchHole gives the space of n bytes at off back to the file system,
// keeping the file's length; they then read as zeroes.
func punchHole(f *os.File, off, n int64) error {
	const punchHole, keepSize = 0x02, 0x01 // FALLOC_FL_PUNCH_HOLE, FALLOC_FL_KEEP_SIZE
	return syscall.Fallocate(int(f.Fd()), punchHole|keepSize, off, n)
}
