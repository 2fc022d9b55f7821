package commands

import (
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v3"
)

// splitTargets reads restore's --disk values: NAME selects a disk, and
// NAME=TARGET also names the existing block device or file it is written
// onto. It returns every disk named, and the targets.
func splitTargets(cmd *cli.Command, values []string) ([]string, map[string]string, error) {
	names := make([]string, 0, len(values))
	var targets map[string]string
	for _, v := range values {
		name, path, ok := strings.Cut(v, "=")
		if name == "" || (ok && path == "") {
			return nil, nil, usageErrorf(cmd, "--disk %q: give a disk name (vda), or a disk and its target (vda=/dev/vg/lv)", v)
		}
		for _, n := range names {
			if n == name {
				return nil, nil, usageErrorf(cmd, "--disk %s is given twice", name)
			}
		}
		names = append(names, name)
		if !ok {
			continue
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, nil, err
		}
		if targets == nil {
			targets = map[string]string{}
		}
		targets[name] = abs
	}
	return names, targets, nil
}
