package fetch

import (
	"errors"
	"reflect"
	"slices"
	"testing"
)

// planOf is a plan yielding the pieces.
func planOf(pieces ...piece) plan {
	return func(yield func(piece, error) bool) {
		for _, x := range pieces {
			if !yield(x, nil) {
				return
			}
		}
	}
}

func collect(t *testing.T, p plan) []piece {
	t.Helper()
	var out []piece
	for x, err := range p {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	return out
}

func TestClusterAligned(t *testing.T) {
	const cs = clusterSize
	tests := []struct {
		name string
		in   []piece
		size uint64
		want []piece
	}{
		{"aligned data stays", []piece{{off: cs, len: 2 * cs}}, 8 * cs,
			[]piece{{off: cs, len: 2 * cs}}},
		{"unaligned data widens to whole clusters", []piece{{off: cs + 10, len: 100}}, 8 * cs,
			[]piece{{off: cs, len: cs}}},
		{"a zero piece: whole clusters zero, partial edges read as data",
			[]piece{{off: cs / 2, len: 3 * cs, zero: true}}, 8 * cs,
			[]piece{{off: 0, len: cs}, {off: cs, len: 2 * cs, zero: true}, {off: 3 * cs, len: cs}}},
		{"data wins over zero in a shared cluster",
			[]piece{{off: 0, len: cs / 2}, {off: cs / 2, len: cs + cs/2, zero: true}}, 8 * cs,
			[]piece{{off: 0, len: cs}, {off: cs, len: cs, zero: true}}},
		{"data pieces sharing clusters merge",
			[]piece{{off: 100, len: 100}, {off: 300, len: cs}, {off: 2*cs + 5, len: 5}}, 8 * cs,
			[]piece{{off: 0, len: 3 * cs}}},
		{"a zero piece within one cluster is data", []piece{{off: 10, len: 100, zero: true}}, 8 * cs,
			[]piece{{off: 0, len: cs}}},
		{"the last cluster stops at the disk's end", []piece{{off: 2 * cs, len: 1000}}, 2*cs + 1024,
			[]piece{{off: 2 * cs, len: 1024}}},
		{"a zero piece to the disk's end makes its last cluster zero", []piece{{off: cs, len: cs + 1024, zero: true}}, 2*cs + 1024,
			[]piece{{off: cs, len: cs + 1024, zero: true}}},
		{"runs merge up to 1 GiB", []piece{{off: 0, len: mergeCap - 10}, {off: mergeCap - 10, len: mergeCap + 10}, {off: 2 * mergeCap, len: cs}}, 4 * mergeCap,
			[]piece{{off: 0, len: mergeCap}, {off: mergeCap, len: mergeCap}, {off: 2 * mergeCap, len: cs}}},
		{"nothing", nil, 8 * cs, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := collect(t, clusterAligned(planOf(tt.in...), tt.size)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMerged(t *testing.T) {
	const cs = clusterSize
	in := []piece{{off: 0, len: 100}, {off: 100, len: 100}, {off: 200, len: 50, zero: true}, {off: 250, len: 10, zero: true},
		{off: 1000, len: 10}, {off: 1010, len: mergeCap}, {off: 1010 + mergeCap, len: cs - 1010}, {off: mergeCap + cs, len: cs}}
	want := []piece{{off: 0, len: 200}, {off: 200, len: 60, zero: true},
		{off: 1000, len: mergeCap + cs - 1000}, {off: mergeCap + cs, len: cs}} // cut at the first cluster end past 1 GiB
	if got := collect(t, merged(planOf(in...))); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// An error ends the plan at once, through every stage.
func TestPlanError(t *testing.T) {
	boom := errors.New("boom")
	in := func(yield func(piece, error) bool) {
		if yield(piece{off: 0, len: clusterSize}, nil) {
			yield(piece{}, boom)
		}
	}
	var got []error
	for _, err := range clusterAligned(merged(in), 8*clusterSize) {
		got = append(got, err)
	}
	if !slices.Equal(got, []error{boom}) {
		t.Errorf("errors %v, want only boom", got)
	}
}
