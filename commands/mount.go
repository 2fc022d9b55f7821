package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/urfave/cli/v3"

	"vbackup/engine"
	"vbackup/progress"
)

// pointOptions name one filesystem of a backup point: what mount, ls
// and cat share.
type pointOptions struct {
	From      string
	At        string
	Disk      string
	Partition int
}

func pointFlags(fromRequired bool) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "from", Usage: "the backup folder `DIR`", Required: fromRequired},
		&cli.StringFlag{Name: "at", Usage: "the backup to read: its `CHECKPOINT` name, or latest", Value: "latest"},
		&cli.StringFlag{Name: "disk", Usage: "the disk `NAME` (needed when the backup has several)"},
		&cli.StringFlag{Name: "partition", Usage: "partition `N` of the disk (needed when it holds several filesystems)"},
	}
}

func readPoint(cmd *cli.Command) (pointOptions, error) {
	p := pointOptions{From: cmd.String("from"), At: cmd.String("at"), Disk: cmd.String("disk")}
	if cmd.IsSet("partition") {
		n, err := strconv.Atoi(cmd.String("partition"))
		if err != nil || n < 1 {
			return p, usageErrorf(cmd, "--partition %q: give a partition number, 1 or more", cmd.String("partition"))
		}
		p.Partition = n
	}
	return p, nil
}

func (p pointOptions) request(mountpoint, records string) engine.MountRequest {
	return engine.MountRequest{From: p.From, At: p.At, Disk: p.Disk, Partition: p.Partition, Mountpoint: mountpoint, Records: records}
}

type mountOptions struct {
	pointOptions
	Mountpoint string // "": list vbackup's mounts
	JSON       bool
}

const mountRecordsHelp = "vbackup keeps a record of each mount it made in " + engine.DefaultMountRecords + "/ (with\n" +
	"the overlay and the daemon's files); 'vbackup umount' undoes only what such a record names.\n" +
	"While a mount lives, the folder is locked for reading: prune waits until it is unmounted."

func newMountCommand(env *Env, run func(context.Context, *Env, mountOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "show the files of a backed-up disk, read-only, without copying it",
		ArgsUsage: "MOUNTPOINT",
		Description: "Mounts one filesystem (ext2/3/4, xfs or vfat; the whole disk, or an MBR or GPT\n" +
			"partition) of a disk at a backup point on the empty folder MOUNTPOINT, read-only, in\n" +
			"seconds whatever the disk's size: qemu-storage-daemon exports the point's qcow2 chain\n" +
			"as a file, and a loop device mounts it. The backup folder is never written: a journal\n" +
			"that must be replayed (a backup of a running guest that was not frozen) is replayed\n" +
			"into a throwaway overlay, and vbackup says so. 'vbackup umount MOUNTPOINT' undoes it.\n" +
			"Without MOUNTPOINT, lists the mounts vbackup made.\n\n" + mountRecordsHelp,
		Flags: append(pointFlags(false),
			&cli.BoolFlag{Name: "json", Usage: "print the mount (or the list) as JSON"}),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "[MOUNTPOINT]")
			if err != nil {
				return err
			}
			p, err := readPoint(cmd)
			if err != nil {
				return err
			}
			if a[0] == "" && (cmd.IsSet("from") || cmd.IsSet("at") || cmd.IsSet("disk") || cmd.IsSet("partition")) {
				return usageErrorf(cmd, "missing MOUNTPOINT argument")
			}
			if a[0] != "" && !cmd.IsSet("from") {
				return usageErrorf(cmd, "--from DIR is required: the backup folder to mount from")
			}
			return run(ctx, env, mountOptions{pointOptions: p, Mountpoint: a[0], JSON: cmd.Bool("json")})
		},
	}
}

func runMount(ctx context.Context, env *Env, opts mountOptions) error {
	if opts.Mountpoint == "" {
		return listMounts(env, opts.JSON)
	}
	ctx, intr := interruptible(ctx, env, interruptText{ending: "stopping; nothing stays mounted"})
	defer intr.stop()
	m, err := engine.Mount(ctx, opts.request(opts.Mountpoint, ""))
	if err != nil {
		return intr.wrap(err)
	}
	if opts.JSON {
		return json.NewEncoder(env.Stdout).Encode(m)
	}
	fmt.Fprintf(env.Stdout, "Mounted backup %s, disk %s, %s read-only on %s\n", m.Backup, m.Disk, describeMounted(m), m.Mountpoint)
	if m.Dirty {
		fmt.Fprintf(env.Stderr, "note: the filesystem was not cleanly frozen when it was backed up (a running guest, no freeze): "+
			"its journal was replayed into a throwaway overlay to show it; the backup itself is unchanged\n")
	}
	if m.Driver == "fusefat" {
		fmt.Fprintf(env.Stderr, "note: this kernel has no vfat driver: mounted with fusefat, which shows 8.3 names in capitals and the volume label as a file\n")
	}
	fmt.Fprintf(env.Stderr, "'vbackup umount %s' unmounts it.\n", m.Mountpoint)
	return nil
}

func describeMounted(m engine.Mounted) string {
	where := "the whole disk"
	if m.Partition > 0 {
		where = fmt.Sprintf("partition %d", m.Partition)
	}
	label := ""
	if m.Label != "" {
		label = fmt.Sprintf(" %q", m.Label)
	}
	return fmt.Sprintf("%s (%s%s, %s)", where, m.FSType, label, progress.Capacity(uint64(m.Size)))
}

func listMounts(env *Env, asJSON bool) error {
	all, err := engine.Mounts("")
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		for _, m := range all {
			if err := enc.Encode(m); err != nil {
				return err
			}
		}
		return nil
	}
	if len(all) == 0 {
		fmt.Fprintln(env.Stderr, "vbackup has mounted nothing.")
		return nil
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MOUNTPOINT\tBACKUP\tDISK\tFILESYSTEM\tFOLDER")
	for _, m := range all {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Mountpoint, m.Backup, m.Disk, describeMounted(m), m.Folder)
	}
	return w.Flush()
}

type umountOptions struct {
	Mountpoint string
}

func newUmountCommand(env *Env, run func(context.Context, *Env, umountOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "umount",
		Usage:     "undo a 'vbackup mount': unmount it and stop what served it",
		ArgsUsage: "MOUNTPOINT",
		Description: "Unmounts the filesystem, frees its loop device, stops the qemu-storage-daemon,\n" +
			"removes the throwaway overlay and releases the backup folder's lock. A folder that\n" +
			"vbackup did not mount is refused and left as it is.\n\n" + mountRecordsHelp,
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "MOUNTPOINT")
			if err != nil {
				return err
			}
			return run(ctx, env, umountOptions{Mountpoint: a[0]})
		},
	}
}

func runUmount(ctx context.Context, env *Env, opts umountOptions) error {
	m, err := engine.Unmount(ctx, "", opts.Mountpoint)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "Unmounted %s (backup %s, disk %s).\n", m.Mountpoint, m.Backup, m.Disk)
	return nil
}
