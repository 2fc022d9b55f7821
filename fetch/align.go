package fetch

import (
	"vbackup/qcow2"
)

const clusterSize = qcow2.ClusterSize

// span is a run of whole qcow2 clusters, data or zero.
type span struct {
	first, n uint64 // guest cluster indices
	zero     bool
}

func (r span) end() uint64 { return r.first + r.n }

// clusterAligned fits a plan to whole qcow2 clusters. A cluster any byte
// of which must be copied is read and written whole (the export reads as
// the disk, so the widened parts are right too); a cluster wholly inside a
// zero piece (up to the disk's end) becomes a zero cluster, which masks the
// backing file. The last piece stops at the disk's end (the rest of the
// image's last cluster reads as zeroes). Like the plan, the result is worked
// out as it is consumed.
func clusterAligned(in plan, size uint64) plan {
	return func(yield func(piece, error) bool) {
		var pend span   // the run being extended
		var next uint64 // the cluster after the last one put
		emit := func(r span) bool {
			off := r.first * clusterSize
			return yield(piece{off: off, len: min(r.n*clusterSize, size-off), zero: r.zero}, nil)
		}
		// put adds r, whose first cluster may be the last one put: a
		// cluster two pieces share is never a zero cluster (that lies
		// wholly inside one zero piece), so it is data for both, and
		// is put once.
		put := func(r span) bool {
			if r.first < next {
				skip := min(next-r.first, r.n)
				r.first, r.n = r.first+skip, r.n-skip
			}
			if r.n == 0 {
				return true
			}
			next = r.end()
			if pend.n > 0 && pend.zero == r.zero && pend.end() == r.first && pend.n < mergeCap/clusterSize {
				pend.n += r.n
				return true
			}
			if pend.n > 0 && !emit(pend) {
				return false
			}
			pend = r
			return true
		}
		for x, err := range in {
			if err != nil {
				yield(piece{}, err)
				return
			}
			first, last := x.off/clusterSize, (x.end()-1)/clusterSize
			if !x.zero {
				if !put(span{first: first, n: last - first + 1}) {
					return
				}
				continue
			}
			// Whole clusters: from the first starting in x to the last
			// ending in it (the disk's end ends the last cluster).
			zfirst := (x.off + clusterSize - 1) / clusterSize
			zend := x.end() / clusterSize
			if x.end() == size {
				zend = last + 1
			}
			if zfirst >= zend {
				if !put(span{first: first, n: last - first + 1}) {
					return
				}
				continue
			}
			if !put(span{first: first, n: zfirst - first}) ||
				!put(span{first: zfirst, n: zend - zfirst, zero: true}) ||
				!put(span{first: zend, n: last + 1 - zend}) {
				return
			}
		}
		if pend.n > 0 {
			emit(pend)
		}
	}
}
