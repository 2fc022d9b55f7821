package commands

import (
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/urfave/cli/v3"

	"vbackup/nbd"
	"vbackup/progress"
)

// bwlimitForms is what --bwlimit takes, for its help and its error.
const bwlimitForms = "bytes per second: 500k, 50M, 1.5G or plain bytes (K, M, G, T are powers of 1024, as rsync reads them; KB, MB, GB, TB powers of 1000)"

func bwlimitFlag(what string) cli.Flag {
	return &cli.StringFlag{Name: "bwlimit", Usage: "cap the data " + what + " at `RATE` " + bwlimitForms + ", for the whole run: every disk (and domain) together"}
}

var rateRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)(?:([kKmMgGtT])(iB|B|b)?)?$`)

// parseRate reads a --bwlimit RATE in bytes per second: 1 or more.
// A unit letter alone or with "iB" is a power of 1024 and with "B" a power
// of 1000, as rsync's --bwlimit reads them (restic's --limit-* are KiB/s).
func parseRate(s string) (int64, bool) {
	m := rateRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	if m[2] != "" {
		base := 1024.0
		if m[3] == "B" || m[3] == "b" {
			base = 1000
		}
		v *= math.Pow(base, float64(strings.IndexByte("kmgt", strings.ToLower(m[2])[0])+1))
	}
	v = math.Round(v)
	if v < 1 || v > math.MaxInt64/2 {
		return 0, false
	}
	return int64(v), true
}

// bwlimitOption is --bwlimit's bytes per second, 0 when not given.
func bwlimitOption(cmd *cli.Command) (int64, error) {
	if !cmd.IsSet("bwlimit") {
		return 0, nil
	}
	n, ok := parseRate(cmd.String("bwlimit"))
	if !ok {
		return 0, usageErrorf(cmd, "--bwlimit %q: give the cap in %s, above 0", cmd.String("bwlimit"), bwlimitForms)
	}
	return n, nil
}

// newLimiter is the one limiter of a run capped at bytesPerSecond (nil
// for none), told to the user once.
func newLimiter(notes progress.Notifier, bytesPerSecond int64) *nbd.Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	notes.Infof("Reading at most %s/s (--bwlimit), for the whole run", progress.Capacity(uint64(bytesPerSecond)))
	return nbd.NewLimiter(bytesPerSecond)
}

// restoreBWLimit refuses --bwlimit where a restore reads nothing through
// vbackup's copy: an instant restore (overlays), --finish (QEMU's block
// pull), and a disk written onto its NAME=TARGET (by qemu-img).
func restoreBWLimit(cmd *cli.Command, opts restoreOptions) error {
	switch {
	case opts.BWLimit == 0:
	case opts.Instant || opts.Finish != "":
		return usageErrorf(cmd, "--bwlimit caps the copy of a restore: --instant and --finish copy nothing through vbackup; leave it out")
	case len(opts.Targets) > 0:
		return usageErrorf(cmd, "--bwlimit cannot cap a disk written onto its NAME=TARGET (qemu-img writes it); leave out one of them")
	}
	return nil
}
