package progress

import (
	"fmt"
	"strings"
)

// Capacity writes a byte count as virsh does (vshPrettyCapacity: "1.000
// GiB"), for the tables and result lines that stand beside virsh's own.
// The bars and progress lines use the shorter formatBytes ("1.0 GiB"):
// they redraw several times a second, where three decimals only flicker.
func Capacity(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return strings.TrimSpace(fmt.Sprintf("%.3f %s", v, units[i]))
}

// Percent writes done/total as virsh's domjobinfo does ("12.5 %"), "-"
// when the total is unknown. The bars use whole percents (percent), which
// reach 100 only when done.
func Percent(done, total uint64) string {
	if total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f %%", 100*float64(done)/float64(total))
}
