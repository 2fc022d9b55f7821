package commands

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/urfave/cli/v3"
	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

type checkpointEditOptions struct {
	Domain     string
	Checkpoint string
}

func newCheckpointEditCommand(env *Env, run func(context.Context, *Env, checkpointEditOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "checkpoint-edit",
		Usage:     "edit a checkpoint's XML in $EDITOR and redefine it (as virsh checkpoint-edit)",
		ArgsUsage: "DOMAIN CHECKPOINT",
		Description: "Opens the checkpoint's XML in $VISUAL, $EDITOR or vi; when the file was\n" +
			"changed, redefines the checkpoint from it. A checkpoint cannot be renamed: an\n" +
			"edit that changes <name> is refused, and nothing changes.",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN", "CHECKPOINT")
			if err != nil {
				return err
			}
			return run(ctx, env, checkpointEditOptions{Domain: a[0], Checkpoint: a[1]})
		},
	}
}

func runCheckpointEdit(ctx context.Context, env *Env, opts checkpointEditOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	before, err := dom.CheckpointXML(ctx, opts.Checkpoint, virt.XMLFlags{SecurityInfo: true})
	if err != nil {
		return virt.CheckpointErr(ctx, dom, opts.Checkpoint, err)
	}
	dir, err := os.MkdirTemp("", "vbackup-edit-")
	if err != nil {
		return err
	}
	file := filepath.Join(dir, opts.Checkpoint+".xml")
	if err := os.WriteFile(file, []byte(before), 0o600); err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(dir)
		}
	}()
	if err := runEditor(env, file); err != nil {
		return err
	}
	after, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if string(after) == before {
		_, err := fmt.Fprintf(env.Stdout, "Checkpoint %s XML configuration not changed.\n", opts.Checkpoint)
		return err
	}
	var def libvirtxml.DomainCheckpoint
	if err := def.Unmarshal(string(after)); err != nil {
		keep = true
		return fmt.Errorf("the edited XML is not a <domaincheckpoint> document (%v); nothing changed; your edit is kept in %s", err, file)
	}
	if def.Name != opts.Checkpoint {
		keep = true
		return fmt.Errorf("checkpoint-edit cannot rename checkpoint %q to %q; nothing changed; your edit is kept in %s", opts.Checkpoint, def.Name, file)
	}
	if _, err := dom.CreateCheckpoint(ctx, string(after), virt.CreateFlags{Redefine: true}); err != nil {
		keep = true
		return fmt.Errorf("%w; nothing changed; your edit is kept in %s", virt.CheckpointErr(ctx, dom, opts.Checkpoint, err), file)
	}
	_, err = fmt.Fprintf(env.Stdout, "Domain checkpoint %s edited.\n", opts.Checkpoint)
	return err
}

// runEditor opens file in the user's editor, which may carry arguments
// ("code --wait"), so it goes through the shell as virsh's does.
func runEditor(env *Env, file string) error {
	editor := env.Getenv("VISUAL")
	if editor == "" {
		editor = env.Getenv("EDITOR")
	}
	if editor == "" {
		editor = "vi"
	}
	cmd := exec.Command("/bin/sh", "-c", editor+` "$1"`, "sh", file)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Stdin, env.Stdout, env.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("editor %q failed: %w; nothing changed", editor, err)
	}
	return nil
}
