package fetch

import (
	"reflect"
	"testing"

	"vbackup/qcow2"
)

func TestAlignPlan(t *testing.T) {
	const cs = qcow2.ClusterSize
	tests := []struct {
		name         string
		in           plan
		size         uint64
		want         plan
		wantClusters []qcow2.Cluster
	}{
		{"aligned data stays", plan{{off: cs, len: 2 * cs}}, 8 * cs,
			plan{{off: cs, len: 2 * cs}}, []qcow2.Cluster{{Index: 1}, {Index: 2}}},
		{"unaligned data widens to whole clusters", plan{{off: cs + 10, len: 100}}, 8 * cs,
			plan{{off: cs, len: cs}}, []qcow2.Cluster{{Index: 1}}},
		{"a zero piece: whole clusters zero, partial edges read as data",
			plan{{off: cs / 2, len: 3 * cs, zero: true}}, 8 * cs,
			plan{{off: 0, len: cs}, {off: cs, len: 2 * cs, zero: true}, {off: 3 * cs, len: cs}},
			[]qcow2.Cluster{{Index: 0}, {Index: 1, Zero: true}, {Index: 2, Zero: true}, {Index: 3}}},
		{"data wins over zero in a shared cluster",
			plan{{off: 0, len: cs / 2}, {off: cs / 2, len: cs + cs/2, zero: true}}, 8 * cs,
			plan{{off: 0, len: cs}, {off: cs, len: cs, zero: true}},
			[]qcow2.Cluster{{Index: 0}, {Index: 1, Zero: true}}},
		{"the last cluster stops at the disk's end", plan{{off: 2 * cs, len: 1000}}, 2*cs + 1024,
			plan{{off: 2 * cs, len: 1024}}, []qcow2.Cluster{{Index: 2}}},
		{"nothing", nil, 8 * cs, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, clusters := alignPlan(tt.in, tt.size)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan %+v, want %+v", got, tt.want)
			}
			if !reflect.DeepEqual(clusters, tt.wantClusters) {
				t.Errorf("clusters %+v, want %+v", clusters, tt.wantClusters)
			}
		})
	}
}
