// Command vbackup backs up the disks of running libvirt/QEMU domains.
package main

import (
	"context"
	"io"
	"os"

	"vbackup/commands"
	"vbackup/virt"
	"vbackup/virt/libvirtconn"
)

func main() {
	os.Exit(commands.Main(context.Background(), os.Args, commands.OSEnv(open)))
}

func open(ctx context.Context, uri string, debug io.Writer) (virt.Conn, error) {
	c, err := libvirtconn.Open(ctx, uri, libvirtconn.Options{Debug: debug})
	if err != nil {
		return nil, err
	}
	return c, nil
}
