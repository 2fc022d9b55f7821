package fetch

import (
	"vbackup/qcow2"
)

// alignPlan fits a plan to whole qcow2 clusters. A cluster any byte of
// which must be copied is read and written whole (the export reads as the
// disk, so the widened parts are right too); a cluster wholly inside a
// zero piece becomes a zero cluster, which masks the backing file. The
// last piece stops at the disk's end; the target pads its last cluster.
func alignPlan(p plan, size uint64) (plan, []qcow2.Cluster) {
	const cs = qcow2.ClusterSize
	var clusters []qcow2.Cluster
	// mark records cluster i as data or zero; data wins, and pieces come in
	// order, so only the last cluster recorded can be revisited.
	mark := func(i uint64, zero bool) {
		if n := len(clusters); n > 0 && clusters[n-1].Index == i {
			clusters[n-1].Zero = clusters[n-1].Zero && zero
			return
		}
		clusters = append(clusters, qcow2.Cluster{Index: i, Zero: zero})
	}
	for _, x := range p {
		first, last := x.off/cs, (x.off+x.len-1)/cs
		for i := first; i <= last; i++ {
			whole := i*cs >= x.off && (i+1)*cs <= x.off+x.len
			mark(i, x.zero && whole)
		}
	}
	var out plan
	for _, c := range clusters {
		off := c.Index * cs
		out = add(out, piece{off: off, len: min(cs, size-off), zero: c.Zero})
	}
	return out, clusters
}
