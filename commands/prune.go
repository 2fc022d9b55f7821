package commands

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"vbackup/engine"
	"vbackup/progress"
)

type pruneOptions struct {
	Dir    string
	Policy engine.Policy
	DryRun bool
	JSON   bool
}

var keepFlags = []string{"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly"}

func newPruneCommand(env *Env, run func(context.Context, *Env, pruneOptions) error) *cli.Command {
	flags := []cli.Flag{&cli.StringFlag{Name: "from", Usage: "the backup folder `DIR`", Required: true}}
	for _, name := range keepFlags {
		period := strings.TrimPrefix(name, "keep-")
		usage := "keep the newest backup of each of the last `N` " + map[string]string{"last": "backups", "hourly": "hours", "daily": "days",
			"weekly": "ISO weeks", "monthly": "months", "yearly": "years"}[period] + " that have one"
		if period == "last" {
			usage = "keep the `N` newest backups"
		}
		flags = append(flags, &cli.StringFlag{Name: name, Usage: usage})
	}
	flags = append(flags,
		&cli.StringFlag{Name: "keep-within", Usage: "keep every backup up to `SPAN` older than the newest, as 1y6m, 14d or 36h"},
		&cli.BoolFlag{Name: "local-time", Usage: "take hours, days, weeks, months and years in local time (default: UTC)"},
		&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "say what would be kept, removed and freed, and change nothing"},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON object: the kept and removed backups and the bytes freed"},
	)
	return &cli.Command{
		Name:  "prune",
		Usage: "remove the backups a retention policy does not keep; every kept point still restores",
		Description: "The policy is restic's forget: each --keep-PERIOD N keeps the newest backup of\n" +
			"each of the N most recent periods that have one, --keep-last N the N newest, and\n" +
			"--keep-within SPAN every backup up to SPAN older than the newest; a backup any rule\n" +
			"keeps is kept. The newest backup is always kept: the next incremental builds on it.\n" +
			"A removed backup that a kept one builds on is merged into it: the oldest full takes\n" +
			"the next backup's data and its place; a middle one's data goes up into the next,\n" +
			"which is rebased onto the one below. Either costs what the overlay holds, not the\n" +
			"disk's size. Each removal is recorded before it starts; a prune stopped at any\n" +
			"moment is completed by the next prune or backup, and says so.",
		Flags: flags,
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			if _, err := args(cmd); err != nil {
				return err
			}
			opts := pruneOptions{Dir: cmd.String("from"), DryRun: cmd.Bool("dry-run"), JSON: cmd.Bool("json")}
			counts := []*int{&opts.Policy.Last, &opts.Policy.Hourly, &opts.Policy.Daily, &opts.Policy.Weekly, &opts.Policy.Monthly, &opts.Policy.Yearly}
			for i, name := range keepFlags {
				if !cmd.IsSet(name) {
					continue
				}
				n, err := count(cmd.String(name))
				if err != nil {
					return usageErrorf(cmd, "--%s %q: %v", name, cmd.String(name), err)
				}
				*counts[i] = n
			}
			if cmd.IsSet("keep-within") {
				w, err := engine.ParseWithin(cmd.String("keep-within"))
				if err != nil {
					return usageErrorf(cmd, "--keep-within: %v", err)
				}
				if w.Zero() {
					return usageErrorf(cmd, "--keep-within %s: give a span above 0, as 14d", w.Text)
				}
				opts.Policy.Within = w
			}
			if opts.Policy.Empty() {
				return usageErrorf(cmd, "say what to keep: at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly (a count above 0) or --keep-within")
			}
			opts.Policy.Loc = time.UTC
			if cmd.Bool("local-time") {
				opts.Policy.Loc = time.Local
			}
			return run(ctx, env, opts)
		},
	}
}

// count reads a --keep-* count: a whole number, 0 or more.
func count(s string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || fmt.Sprint(n) != strings.TrimLeft(s, "+") || n < 0 {
		return 0, fmt.Errorf("give a whole number of backups, 0 or more")
	}
	return n, nil
}

// jsonPruned is prune --json.
type jsonPruned struct {
	DryRun    bool         `json:"dry_run"`
	Kept      []jsonPruneB `json:"kept"`
	Removed   []jsonPruneB `json:"removed"`
	Merges    []jsonMerge  `json:"merges"`
	Freed     uint64       `json:"freed_bytes"`
	Completed string       `json:"completed_removal,omitempty"`
}

type jsonPruneB struct {
	Backup  string    `json:"backup"`
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Reasons []string  `json:"reasons,omitempty"`
}

type jsonMerge struct {
	Removed string `json:"removed"`
	Into    string `json:"into"`
	Disk    string `json:"disk"`
	Down    bool   `json:"into_base"`
	Bytes   uint64 `json:"bytes"`
}

func runPrune(ctx context.Context, env *Env, opts pruneOptions) error {
	out := newOutput(env, opts.JSON, false)
	ctx, intr := interruptible(ctx, env, interruptText{
		ending: "stopping the prune; a removal it leaves half done is completed by the next prune or backup",
	})
	defer intr.stop()
	res, err := engine.Prune(ctx, engine.PruneRequest{Dir: opts.Dir, Policy: opts.Policy, DryRun: opts.DryRun, Now: env.Now}, out.notes)
	if err != nil {
		// Only what was carried out is told; the error says where it stopped.
		if len(res.Removed) > 0 {
			out.notes.Notef("Removed %d backups before the prune stopped: %s", len(res.Removed), strings.Join(res.Removed, ", "))
		}
		return intr.wrap(err)
	}
	if opts.JSON {
		return writePrunedJSON(env, opts, res)
	}
	writePruned(env, opts, res)
	return nil
}

func writePruned(env *Env, opts pruneOptions, res engine.Pruned) {
	fmt.Fprintf(env.Stdout, "Applying the policy: %s\n", opts.Policy)
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	removed := 0
	for _, v := range res.Verdicts {
		what, why := "keep", strings.Join(v.Reasons, ", ")
		if !v.Keep {
			what, why = "remove", ""
			removed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", what, v.Backup.Time.Local().Format(time.DateTime), v.Backup.Name(), v.Level, why)
	}
	tw.Flush()
	for _, line := range strings.SplitAfter(table.String(), "\n") {
		// A removed backup has no reasons: no padding at the end.
		fmt.Fprint(env.Stdout, strings.TrimRight(line, " \n")+strings.Repeat("\n", strings.Count(line, "\n")))
	}
	for _, m := range res.Merges {
		how := "its data goes up into " + m.Into + ", which is rebased onto the backup below"
		if m.Down {
			how = m.Into + "'s data (" + progress.Capacity(m.Bytes) + ") goes into it, and it takes " + m.Into + "'s place"
		}
		fmt.Fprintf(env.Stdout, "  %s, disk %s: %s\n", m.Removed, m.Disk, how)
	}
	kept := len(res.Verdicts) - removed
	if opts.DryRun {
		fmt.Fprintf(env.Stdout, "Would remove %d of %d backups, keep %d, and free about %s (nothing was changed: --dry-run).\n", removed, len(res.Verdicts), kept, progress.Capacity(res.Freed))
		return
	}
	fmt.Fprintf(env.Stdout, "Removed %d of %d backups, kept %d; %s freed.\n", removed, len(res.Verdicts), kept, progress.Capacity(res.Freed))
}

func writePrunedJSON(env *Env, opts pruneOptions, res engine.Pruned) error {
	j := jsonPruned{DryRun: opts.DryRun, Kept: []jsonPruneB{}, Removed: []jsonPruneB{}, Merges: []jsonMerge{}, Freed: res.Freed, Completed: res.Completed}
	for _, v := range res.Verdicts {
		b := jsonPruneB{Backup: v.Backup.Name(), Time: v.Backup.Time, Level: v.Level, Reasons: v.Reasons}
		if v.Keep {
			j.Kept = append(j.Kept, b)
		} else {
			j.Removed = append(j.Removed, b)
		}
	}
	for _, m := range res.Merges {
		j.Merges = append(j.Merges, jsonMerge(m))
	}
	return writeJSON(env.Stdout, j)
}
