package engine

import (
	"context"
	"errors"
	"path/filepath"

	"vbackup/progress"
	"vbackup/qcow2"
)

// The two merges of a prune, done by moving the clusters a layer holds as
// they are stored (qcow2.MoveClusters): a compressed backup stays
// compressed, which qemu-img commit and rebase (QEMU 7.2) do not keep,
// and each costs the layer it moves. An image the mover does not handle
// is merged by qemu-img, which the output says; what the mover did before
// it stopped reads the same, so qemu-img can take over from there.

// commitDown moves every cluster of next's overlay into r's full image
// below it. The steps inside are crash points: "commit written",
// "commit mapped", "commit freed".
func commitDown(ctx context.Context, nextImg, rImg string, notes progress.Notifier) error {
	_, err := qcow2.MoveClusters(ctx, qcow2.Move{Src: nextImg, Dst: rImg, Over: true,
		Step: func(s string) error { return stop("commit " + s) }})
	var u *qcow2.UnsupportedError
	if errors.As(err, &u) {
		notes.Notef("note: %v; merging with qemu-img commit instead, which stores the data it moves uncompressed", err)
		_, err = qemuImg(ctx, filepath.Dir(nextImg), "commit", "-q", "-d", "-f", "qcow2", filepath.Base(nextImg))
	}
	return err
}

// copyUp moves into next's image the clusters of r's overlay below it
// that next does not hold, then rebases next onto belowName (relative to
// next's folder) in its header only: next then reads as it did through r.
// Crash points: "rebase written", "rebase mapped".
func copyUp(ctx context.Context, rImg, nextImg, belowName string, notes progress.Notifier) error {
	dir, base := filepath.Dir(nextImg), filepath.Base(nextImg)
	_, err := qcow2.MoveClusters(ctx, qcow2.Move{Src: rImg, Dst: nextImg,
		Step: func(s string) error { return stop("rebase " + s) }})
	var u *qcow2.UnsupportedError
	if errors.As(err, &u) {
		// qemu-img runs in next's folder with the relative name: it then
		// sees that the new backing file is in the old chain and reads
		// only what lies above it, r's overlay.
		notes.Notef("note: %v; merging with qemu-img rebase instead, which stores the data it moves uncompressed", err)
		_, err = qemuImg(ctx, dir, "rebase", "-q", "-f", "qcow2", "-F", "qcow2", "-b", belowName, base)
		return err
	}
	if err != nil {
		return err
	}
	_, err = qemuImg(ctx, dir, "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", belowName, base)
	return err
}
