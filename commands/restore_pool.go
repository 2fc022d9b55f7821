package commands

import "github.com/urfave/cli/v3"

const poolHelp = "\n\nINTO A STORAGE POOL: --define NAME --pool POOL writes each image into POOL, a\n" +
	"libvirt storage pool of the connection's host, as the volume NAME-DISK.FORMAT,\n" +
	"uploaded over the libvirt connection (sparse: holes are not sent), and defines\n" +
	"NAME on those volumes. It works over any URI (-c qemu+ssh://HOST/system): the\n" +
	"remote restore. Each image is first written and checked in a staging folder\n" +
	"(a new folder in --to OUTDIR when given, else in $TMPDIR), removed afterwards.\n" +
	"A pool not there or not started, or a volume name taken, is refused before\n" +
	"anything is written; a failed upload deletes the volumes it made."

func poolFlag() cli.Flag {
	return &cli.StringFlag{Name: "pool", Usage: "with --define: write the images as volumes of the storage pool `POOL`, over the libvirt connection (remote too)"}
}

// poolFlags checks --pool against the other flags.
func poolFlags(cmd *cli.Command, opts restoreOptions) error {
	if !cmd.IsSet("pool") {
		return nil
	}
	switch {
	case opts.Pool == "":
		return usageErrorf(cmd, "--pool needs the name of a storage pool ('virsh pool-list --all' lists them)")
	case opts.Finish != "" || opts.Instant:
		return usageErrorf(cmd, "--pool writes copies of the images into a storage pool: --instant and --finish do not go with it")
	case opts.Define == "":
		return usageErrorf(cmd, "--pool defines a domain on the volumes it writes: name it with --define NAME")
	case len(opts.Targets) > 0:
		return usageErrorf(cmd, "--pool writes every disk as a volume: --disk NAME=TARGET does not go with it")
	}
	return nil
}
