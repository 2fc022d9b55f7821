// Package qsd runs qemu-storage-daemon over a backup's qcow2 chain: as a
// FUSE file that a loop device can mount, or as NBD exports. The chain is
// always opened read-only; what a mount must write (an ext4 or xfs journal
// replayed) goes to a throwaway overlay the caller places outside the
// backup.
package qsd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Binary is the program run.
const Binary = "qemu-storage-daemon"

// Image is one disk's chain: its top image, whose backing files QEMU
// opens from the image's own header.
type Image struct {
	Path   string // absolute
	Format string // qcow2 (or raw)
}

// blockdevs returns the --blockdev options that open img read-only as the
// node name.
func blockdevs(img Image, name string) []string {
	return []string{
		"--blockdev", opts("driver=file", "node-name="+name+"-file", "filename="+img.Path, "read-only=on", "auto-read-only=off"),
		"--blockdev", opts("driver="+img.Format, "node-name="+name, "file="+name+"-file", "read-only=on"),
	}
}

// opts joins QEMU key=value options. A value with a comma would need the
// comma doubled: file names are the only free text, and check refuses
// what QEMU could misread.
func opts(kv ...string) string { return strings.Join(kv, ",") }

func checkPath(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%s: qsd needs an absolute path", p)
	}
	if strings.ContainsAny(p, ",\n") {
		return fmt.Errorf("%s: a path with a comma or a newline cannot be given to qemu-storage-daemon", p)
	}
	return nil
}

// Fuse is a daemon exporting one chain as a file.
type Fuse struct {
	PID  int    // of the daemon, which outlives this process
	File string // the exported disk, a regular file of the disk's size
}

// FuseRequest says what StartFuse exports and where.
type FuseRequest struct {
	Image Image
	// Overlay is an empty qcow2 (made by CreateOverlay) laid over the
	// chain: the export is writable, and every write lands in it.
	Overlay string
	File    string // the file to export on; created
	PIDFile string
	LogFile string // the daemon's messages
	// Inherit are files the daemon keeps open while it runs, such as a
	// lock that must be held as long as the export lives.
	Inherit []*os.File
}

// StartFuse starts a daemon that exports req.Image (under req.Overlay) as
// req.File and detaches from this process: it runs until Stop. It
// returns once the export is in place (qemu-storage-daemon's --daemonize
// returns only then). When it fails, or ctx ends while it starts, no
// daemon is left running.
func StartFuse(ctx context.Context, req FuseRequest) (*Fuse, error) {
	for _, p := range []string{req.Image.Path, req.Overlay, req.File, req.PIDFile} {
		if err := checkPath(p); err != nil {
			return nil, err
		}
	}
	if _, err := exec.LookPath(Binary); err != nil {
		return nil, fmt.Errorf("%w (install QEMU's qemu-system-common package)", err)
	}
	f, err := os.OpenFile(req.File, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	args := blockdevs(req.Image, "chain")
	args = append(args,
		"--blockdev", opts("driver=file", "node-name=overlay-file", "filename="+req.Overlay),
		"--blockdev", opts("driver=qcow2", "node-name=overlay", "file=overlay-file", "backing=chain"),
		"--export", opts("type=fuse", "id=disk", "node-name=overlay", "mountpoint="+req.File, "writable=on"),
		"--pidfile", req.PIDFile, "--daemonize")
	log, err := os.Create(req.LogFile)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	// Not CommandContext: on Ctrl-C it would kill this parent, but the
	// daemon it has already forked would run on, holding req.Inherit (the
	// folder's lock) with nobody knowing its number. The parent returns
	// as soon as the export is up or has failed; ctx is checked after.
	cmd := exec.Command(Binary, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = req.Inherit
	// Its own session: the terminal's Ctrl-C, meant for a later command
	// of the shell, must not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(req.LogFile)
		err = fmt.Errorf("%s: %w: %s", Binary, err, strings.TrimSpace(string(msg)))
		return nil, errors.Join(err, StopPIDFile(req.PIDFile))
	}
	pid, err := readPID(req.PIDFile)
	if err == nil {
		err = context.Cause(ctx) // nil unless ctx ended while it started
	}
	if err != nil {
		return nil, errors.Join(err, StopPIDFile(req.PIDFile))
	}
	return &Fuse{PID: pid, File: req.File}, nil
}

// readPID is ReadPID; a test makes it fail.
var readPID = ReadPID

// ReadPID reads a daemon's pid file.
func ReadPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("%s does not hold a process id", path)
	}
	return pid, nil
}

// CreateOverlay makes an empty qcow2 of size bytes, with no backing file
// in its header: StartFuse names its backing, so the file never points
// into a backup.
func CreateOverlay(ctx context.Context, path string, size uint64) error {
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", path, strconv.FormatUint(size, 10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create %s: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Running reports whether pid is a qemu-storage-daemon: a pid file can
// outlive its process, and its number be given to another.
func Running(pid int) bool {
	// Not comm, which the kernel cuts to 15 bytes ("qemu-storage-da").
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	if filepath.Base(argv0) != Binary {
		return false
	}
	// A zombie has exited: a container's init may never reap it.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// StopPIDFile ends the daemon that was started with --pidfile path, if
// it runs: the one the file names, or, when the file is missing or holds
// no number (a start cut short), the one whose command line names the
// file. It undoes a start that failed, whatever the daemon got to.
func StopPIDFile(path string) error {
	var pids []int
	if pid, err := ReadPID(path); err == nil && startedWith(pid, path) {
		pids = append(pids, pid)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && !slices.Contains(pids, pid) && startedWith(pid, path) {
			pids = append(pids, pid)
		}
	}
	var errs []error
	for _, pid := range pids {
		errs = append(errs, Stop(pid))
	}
	return errors.Join(errs...)
}

// startedWith reports whether pid is a running daemon given --pidfile path.
func startedWith(pid int, path string) bool {
	if !Running(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(cmdline), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--pidfile" && args[i+1] == path {
			return true
		}
	}
	return false
}

const stopTimeout = 10 * time.Second

// Stop ends the daemon pid: SIGTERM, on which it closes its exports and
// exits, then SIGKILL if it lingers. A daemon already gone is no error.
func Stop(pid int) error {
	if !Running(pid) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stopping %s (pid %d): %w", Binary, pid, err)
	}
	deadline := time.Now().Add(stopTimeout)
	for time.Now().Before(deadline) {
		if !Running(pid) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("%s (pid %d) did not exit within %v of SIGTERM and was killed", Binary, pid, stopTimeout)
}
