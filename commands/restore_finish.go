package commands

import (
	"context"
	"strings"

	"vbackup/engine"
)

func runRestoreFinish(ctx context.Context, env *Env, opts restoreOptions) error {
	conn, err := env.Conn(ctx)
	if err != nil {
		return err
	}
	out := newOutput(env, opts.JSON, opts.Quiet)
	noteRedials(conn, out.notes)
	ctx, intr := interruptible(ctx, env, interruptText{ending: "stopping the copy; the domain keeps running on its overlays"})
	defer intr.stop()
	req := engine.FinishRequest{Domain: opts.Finish, From: opts.From, Conn: conn, Now: env.Now}
	res, err := engine.Finish(ctx, req, out.printer, out.notes)
	if err != nil {
		return intr.wrap(err)
	}
	switch {
	case res.Released:
		out.notes.Infof("Domain %s is gone; %s no longer keeps backup %s for it.", res.Domain, res.Dir, res.Backup)
	case len(res.Pulled) == 0:
		out.notes.Infof("Domain %s reads nothing from %s already; its record there is gone.", res.Domain, res.Dir)
	default:
		out.notes.Infof("Domain %s now holds all its data in its own images (disks %s) and reads nothing from %s.", res.Domain, strings.Join(res.Pulled, ", "), res.Dir)
	}
	if res.Grants > 0 {
		out.notes.Infof("The read access given to QEMU's user in %s was taken back (%d ACL entries).", res.Dir, res.Grants)
	}
	return nil
}
