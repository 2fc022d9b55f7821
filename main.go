// Command vbackup backs up the disks of running libvirt/QEMU domains.
package main

import (
	"context"
	"io"
	"os"
	"runtime/pprof"

	"vbackup/commands"
	"vbackup/virt"
	"vbackup/virt/libvirtconn"
)

func main() {
	// VBACKUP_CPUPROFILE=FILE writes a CPU profile, for the benchmarks.
	if path := os.Getenv("VBACKUP_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			_ = pprof.StartCPUProfile(f)
			code := commands.Main(context.Background(), os.Args, commands.OSEnv(open))
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(code)
		}
	}
	os.Exit(commands.Main(context.Background(), os.Args, commands.OSEnv(open)))
}

func open(ctx context.Context, uri string, debug io.Writer) (virt.Conn, error) {
	c, err := libvirtconn.Open(ctx, uri, libvirtconn.Options{Debug: debug})
	if err != nil {
		return nil, err
	}
	return c, nil
}
