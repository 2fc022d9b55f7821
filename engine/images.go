package engine

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"vbackup/contentsum"
)

// topLayer lists the ranges an image holds itself, data or zeroes (what an
// overlay changed), and the bytes of data among them.
func topLayer(ctx context.Context, file string) ([]contentsum.Range, uint64, error) {
	// -U: until it is rebased, a push overlay's backing file is the live disk.
	out, err := qemuImg(ctx, "", "map", "-U", "--output=json", "-f", "qcow2", file)
	if err != nil {
		return nil, 0, err
	}
	var extents []struct {
		Start, Length uint64
		Depth         int
		Data, Zero    bool
	}
	if err := json.Unmarshal(out, &extents); err != nil {
		return nil, 0, fmt.Errorf("qemu-img map %s: %w", file, err)
	}
	var ranges []contentsum.Range
	var data uint64
	for _, e := range extents {
		if e.Depth != 0 || !(e.Data || e.Zero) {
			continue
		}
		if e.Data {
			data += e.Length
		}
		if n := len(ranges); n > 0 && ranges[n-1].Off+ranges[n-1].Len == e.Start {
			ranges[n-1].Len += e.Length
			continue
		}
		ranges = append(ranges, contentsum.Range{Off: e.Start, Len: e.Length})
	}
	return ranges, data, nil
}

// backingFile is the backing file name recorded in a qcow2 image's
// header, read here rather than through qemu-img: verify and prune ask it
// of every overlay, and a process per question is most of their time.
func backingFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var h [20]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return "", fmt.Errorf("%s: reading its qcow2 header: %w", path, err)
	}
	if string(h[:4]) != "QFI\xfb" {
		return "", fmt.Errorf("%s is not a qcow2 image", path)
	}
	off, size := binary.BigEndian.Uint64(h[8:16]), binary.BigEndian.Uint32(h[16:20])
	if off == 0 {
		return "", nil
	}
	if size > 1023 {
		return "", fmt.Errorf("%s: its backing file name is %d bytes long, more than qcow2 allows", path, size)
	}
	name := make([]byte, size)
	if _, err := f.ReadAt(name, int64(off)); err != nil {
		return "", fmt.Errorf("%s: reading its backing file name: %w", path, err)
	}
	return string(name), nil
}

// virtualSize is a qcow2 image's disk size, from its header.
func virtualSize(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var h [32]byte
	if _, err := f.ReadAt(h[:], 0); err != nil || string(h[:4]) != "QFI\xfb" {
		return 0, fmt.Errorf("%s is not a qcow2 image", path)
	}
	return binary.BigEndian.Uint64(h[24:32]), nil
}

// qemuImg runs qemu-img in folder dir ("" for this one) and returns its
// output; a failure says what qemu-img said about its last argument, the
// image.
func qemuImg(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Dir = dir
	// vbackup killed outright must not leave qemu-img at work on a backup
	// (the next command would find the image locked); stopping it anywhere
	// is safe, as each step that runs it can be repeated.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err == nil {
		return out, nil
	}
	file := filepath.Join(dir, args[len(args)-1])
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil, fmt.Errorf("qemu-img %s %s: %s", args[0], file, strings.TrimSpace(string(ee.Stderr)))
	}
	return nil, fmt.Errorf("qemu-img %s %s: %w", args[0], file, err)
}
