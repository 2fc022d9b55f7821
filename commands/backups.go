package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"vbackup/chain"
	"vbackup/engine"
	"vbackup/progress"
)

type backupsOptions struct {
	Dir  string
	JSON bool
}

func newBackupsCommand(env *Env, run func(context.Context, *Env, backupsOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "backups",
		Usage:     "list the backups a folder holds, oldest first",
		ArgsUsage: "DIR",
		Description: "One line per backup: when it was taken, its checkpoint, its level, and per disk\n" +
			"its level, the bytes copied from the domain and the space its image takes in DIR.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object per backup (the manifest without the XML documents)"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DIR")
			if err != nil {
				return err
			}
			return run(ctx, env, backupsOptions{Dir: a[0], JSON: cmd.Bool("json")})
		},
	}
}

// listedDisk is a disk of a listed backup.
type listedDisk struct {
	chain.Disk
	Stored uint64 `json:"stored"` // bytes the image takes in DIR
}

// listedBackup is one backup, as --json prints it.
type listedBackup struct {
	Backup string       `json:"backup"`
	Time   time.Time    `json:"time"`
	Level  string       `json:"level"`
	Mode   string       `json:"mode"`
	Domain string       `json:"domain"`
	UUID   string       `json:"uuid"`
	Parent string       `json:"parent,omitempty"`
	Dir    string       `json:"dir"`
	Disks  []listedDisk `json:"disks"`
	InUse  []string     `json:"in_use_by,omitempty"` // domains an instant restore runs from it
}

func runBackups(ctx context.Context, env *Env, opts backupsOptions) error {
	store, err := engine.OpenFolder(opts.Dir)
	if err != nil {
		return err
	}
	inUse, err := store.InUse()
	if err != nil {
		return err
	}
	var list []listedBackup
	for _, b := range store.Backups {
		l := listedBackup{Backup: b.Name(), Time: b.Time, Level: b.Level, Mode: b.Mode, Domain: b.Domain.Name, UUID: b.Domain.UUID,
			Parent: b.Checkpoint.Parent, Dir: b.Dir}
		for _, d := range b.Disks {
			ld := listedDisk{Disk: d}
			if fi, err := os.Stat(b.File(d)); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					ld.Stored = uint64(st.Blocks) * 512
				}
			}
			l.Disks = append(l.Disks, ld)
		}
		for _, u := range inUse {
			if u.Reads(b.Name()) {
				l.InUse = append(l.InUse, u.Domain)
			}
		}
		list = append(list, l)
	}
	if opts.JSON {
		enc := json.NewEncoder(env.Stdout)
		for _, l := range list {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return nil
	}
	if len(list) == 0 {
		fmt.Fprintf(env.Stderr, "%s holds no backups\n", opts.Dir)
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tBACKUP\tLEVEL\tDISKS")
	for _, l := range list {
		var disks []string
		for _, d := range l.Disks {
			disks = append(disks, fmt.Sprintf("%s %s %s (%s stored)", d.Name, short(d.Level), progress.Capacity(d.Copied), progress.Capacity(d.Stored)))
		}
		use := ""
		if len(l.InUse) > 0 {
			use = "  in use by " + strings.Join(l.InUse, ", ") + " (instant restore)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\n", l.Time.Local().Format("2006-01-02 15:04:05"), l.Backup, l.Level, strings.Join(disks, ", "), use)
	}
	return tw.Flush()
}

func short(level string) string {
	if level == chain.Incremental {
		return "inc"
	}
	return level
}
