package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// The persistent bitmaps of a shut-off domain's qcow2 images, handled
// with qemu-img as libvirt would have QEMU handle them: libvirt 9.0 keeps
// one enabled bitmap per checkpoint, named after it, each recording every
// write since it was added (docs/kbase/incrementalbackupinternals.rst).
// So the changes since checkpoint C are C's bitmap alone, and a new
// checkpoint is a new enabled bitmap beside the others. Every QEMU block
// tool that writes the image updates the enabled ones.

// imageBitmap is one persistent bitmap of a qcow2 image.
type imageBitmap struct {
	Name  string   `json:"name"`
	Flags []string `json:"flags"`
}

// usableFor says why the bitmap cannot list the changes since it was
// added, or "" when it can.
func (m imageBitmap) usableFor() string {
	switch {
	case slices.Contains(m.Flags, "in-use"):
		return "inconsistent (the image was not closed cleanly, as when QEMU is killed)"
	case !slices.Contains(m.Flags, "auto"):
		return "disabled: it stopped recording writes"
	}
	return ""
}

// imageInfo reads an image's bitmaps (none for a raw one). It takes
// QEMU's lock as a reader would: an image another process holds open for
// writing is an error that says so.
func imageInfo(ctx context.Context, h imageHost, path, format string) ([]imageBitmap, error) {
	out, err := h.qemuImg(ctx, "info", "--output=json", "-f", format, path)
	if err != nil {
		if strings.Contains(err.Error(), "lock") {
			return nil, fmt.Errorf("%s%s is open for writing by another process (the domain started, or a tool opened it), and a shut-off domain's images must not change while they are backed up: %w", path, h.where(), err)
		}
		return nil, err
	}
	var info struct {
		Specific struct {
			Data struct {
				Bitmaps []imageBitmap `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return nil, fmt.Errorf("qemu-img info %s%s: %w", path, h.where(), err)
	}
	return info.Specific.Data.Bitmaps, nil
}

func findBitmap(bitmaps []imageBitmap, name string) (imageBitmap, bool) {
	for _, m := range bitmaps {
		if m.Name == name {
			return m, true
		}
	}
	return imageBitmap{}, false
}

// addBitmap adds an enabled persistent bitmap to a qcow2 image that no
// process holds.
func addBitmap(ctx context.Context, h imageHost, path, name string) error {
	_, err := h.qemuImg(ctx, "bitmap", "--add", "-f", "qcow2", path, name)
	return err
}

// removeBitmap removes a persistent bitmap from a qcow2 image that no
// process holds.
func removeBitmap(ctx context.Context, h imageHost, path, name string) error {
	_, err := h.qemuImg(ctx, "bitmap", "--remove", "-f", "qcow2", path, name)
	return err
}

// nameFolder is the folder identity a checkpoint name of vbackup carries
// (vbackup-<time>-<id>, or vbackup-<time>-<id>-<n>), or "".
func nameFolder(name string) string {
	parts := strings.Split(name, "-")
	if len(parts) < 3 || parts[0] != "vbackup" || len(parts[2]) != 2*folderIDBytes {
		return ""
	}
	return parts[2]
}
