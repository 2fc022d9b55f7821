package commands

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/urfave/cli/v3"

	"vbackup/checkpoint"
	"vbackup/virt"
)

type checkpointListOptions struct {
	Domain string
	Query  checkpoint.Query // the layout flags (--parent, --tree, --name) too
	JSON   bool
}

func newCheckpointListCommand(env *Env, run func(context.Context, *Env, checkpointListOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "checkpoint-list",
		Usage:     "list a domain's checkpoints (as virsh checkpoint-list)",
		ArgsUsage: "DOMAIN",
		Description: "Lists the checkpoints of DOMAIN sorted by name, with their creation time, in\n" +
			"virsh's layout. --json prints an array of objects (see the README for the fields).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "parent", Usage: "add a column with each checkpoint's parent"},
			&cli.BoolFlag{Name: "roots", Usage: "list only checkpoints without a parent"},
			&cli.BoolFlag{Name: "tree", Usage: "draw the checkpoints as a tree"},
			&cli.BoolFlag{Name: "name", Usage: "print names only, one per line"},
			&cli.BoolFlag{Name: "topological", Usage: "list parents before their children instead of by name"},
			&cli.StringFlag{Name: "from", Usage: "list only the children of `CHECKPOINT`"},
			&cli.BoolFlag{Name: "descendants", Usage: "with --from, list all its descendants, not only its children"},
			&cli.BoolFlag{Name: "leaves", Usage: "list only checkpoints without children"},
			&cli.BoolFlag{Name: "no-leaves", Usage: "list only checkpoints with children"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array instead of a table"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN")
			if err != nil {
				return err
			}
			opts := checkpointListOptions{
				Domain: a[0],
				JSON:   cmd.Bool("json"),
				Query: checkpoint.Query{
					Parent:      cmd.Bool("parent"),
					Roots:       cmd.Bool("roots"),
					Tree:        cmd.Bool("tree"),
					Name:        cmd.Bool("name"),
					Leaves:      cmd.Bool("leaves"),
					NoLeaves:    cmd.Bool("no-leaves"),
					Topological: cmd.Bool("topological"),
					From:        cmd.String("from"),
					Descendants: cmd.Bool("descendants"),
				},
			}
			if err := exclusive(cmd, "json", "tree", "name"); err != nil {
				return err
			}
			if cmd.IsSet("from") && opts.Query.From == "" {
				return usageErrorf(cmd, "--from needs a checkpoint name")
			}
			if err := opts.Query.Validate(); err != nil {
				return &UsageError{Cmd: cmd, Err: err}
			}
			return run(ctx, env, opts)
		},
	}
}

func runCheckpointList(ctx context.Context, env *Env, opts checkpointListOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	cps, err := dom.Checkpoints(ctx)
	if err != nil {
		return virt.CheckpointErr(ctx, dom, "", err)
	}
	nodes := make([]checkpoint.Node, len(cps))
	byName := make(map[string]virt.Checkpoint, len(cps))
	for i, cp := range cps {
		nodes[i] = checkpoint.Node{Name: cp.Name, Parent: cp.Parent, Created: cp.Created}
		byName[cp.Name] = cp
	}
	if opts.Query.From != "" {
		if _, ok := byName[opts.Query.From]; !ok {
			return virt.NoCheckpointIn(dom, opts.Query.From, cps)
		}
	}
	selected, err := checkpoint.Select(nodes, opts.Query)
	if err != nil {
		return err
	}
	if opts.JSON {
		out := make([]jsonCheckpoint, len(selected))
		for i, n := range selected {
			out[i] = toJSONCheckpoint(byName[n.Name], dom.Name(), nodes)
		}
		return writeJSON(env.Stdout, out)
	}
	switch {
	case opts.Query.Tree:
		err = checkpoint.WriteTree(env.Stdout, selected)
	case opts.Query.Name:
		err = checkpoint.WriteNames(env.Stdout, selected)
	default:
		err = checkpoint.WriteTable(env.Stdout, selected, opts.Query.Parent, time.Local)
	}
	if err != nil {
		return err
	}
	_, err = io.WriteString(env.Stdout, checkpoint.CommandTrailer)
	return err
}

// jsonCheckpoint is the stable JSON form of a checkpoint, shared by
// checkpoint-list --json and checkpoint-info --json (fields in the README).
type jsonCheckpoint struct {
	Name         string           `json:"name"`
	Domain       string           `json:"domain"`
	Parent       *string          `json:"parent"`
	CreationTime string           `json:"creation_time"`
	Description  string           `json:"description"`
	Children     int              `json:"children"`
	Descendants  int              `json:"descendants"`
	Disks        []jsonCheckpDisk `json:"disks"`
}

type jsonCheckpDisk struct {
	Name       string `json:"name"`
	Checkpoint string `json:"checkpoint"`
	Bitmap     string `json:"bitmap,omitempty"`
}

func toJSONCheckpoint(cp virt.Checkpoint, domain string, all []checkpoint.Node) jsonCheckpoint {
	j := jsonCheckpoint{
		Name:        cp.Name,
		Domain:      domain,
		Description: cp.Description,
		Children:    len(checkpoint.Children(all, cp.Name)),
		Descendants: len(checkpoint.Descendants(all, cp.Name)),
		Disks:       []jsonCheckpDisk{},
	}
	if cp.Parent != "" {
		p := cp.Parent
		j.Parent = &p
	}
	if !cp.Created.IsZero() {
		j.CreationTime = cp.Created.UTC().Format(time.RFC3339)
	}
	for _, d := range cp.Disks {
		j.Disks = append(j.Disks, jsonCheckpDisk{Name: d.Name, Checkpoint: d.Checkpoint, Bitmap: d.Bitmap})
	}
	return j
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
