package commands

import (
	"context"
	"path/filepath"
	"strings"

	"vbackup/chain"
	"vbackup/progress"
)

// storeLookup reads the backup folder r names for the candidates it wants,
// within lookupBudget like a libvirt lookup: the folder may be on a network
// file system that does not answer.
func storeLookup(ctx context.Context, env *Env, r request) []candidate {
	return withinBudget(ctx, func(context.Context) []candidate {
		var store *chain.Store
		if r.from != "" {
			// A folder that cannot be read, or whose chain is broken, offers
			// no backups; restore and verify say what is wrong with it.
			store, _ = chain.Open(expandHome(env, r.from))
		}
		if r.kind == wantBackupDisks {
			return backupDiskCandidates(store, r.at, r.named)
		}
		return backupCandidates(store, r.command)
	})
}

// backupCandidates lists the values of --at: the backups in store (nil when
// unknown), oldest first, then the words that name one or all of them.
func backupCandidates(store *chain.Store, command string) []candidate {
	var out []candidate
	latest := "the newest backup"
	if store != nil {
		for _, b := range store.Backups {
			out = append(out, candidate{value: b.Name(), desc: b.Time.Local().Format("2006-01-02 15:04:05") + ", " + b.Level})
		}
		if b := store.Last(); b != nil {
			latest += ", " + b.Name()
		}
	}
	if command == "verify" {
		return append(out, candidate{"latest", latest}, candidate{"all", "every backup (the default)"})
	}
	return append(out, candidate{"latest", latest + " (the default)"})
}

// backupDiskCandidates lists the disks of backup at ("" or latest for the
// newest), less those named already.
func backupDiskCandidates(store *chain.Store, at string, named map[string]bool) []candidate {
	if store == nil {
		return nil
	}
	b, err := store.Find(at)
	if err != nil {
		return nil
	}
	var out []candidate
	for _, d := range b.Disks {
		if !named[d.Name] {
			out = append(out, candidate{value: d.Name, desc: progress.Capacity(d.VirtualSize) + ", " + d.Level})
		}
	}
	return out
}

// expandHome reads a leading ~ as the shell will when the command runs
// (--from ~/vm1): the completion gets the word as typed.
func expandHome(env *Env, path string) string {
	if path != "~" && !strings.HasPrefix(path, "~/") {
		return path
	}
	home := ""
	if env.Getenv != nil {
		home = env.Getenv("HOME")
	}
	if home == "" {
		return path
	}
	return filepath.Join(home, path[1:])
}
