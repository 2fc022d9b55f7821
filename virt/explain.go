package virt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// CheckpointErr names the domain and checkpoint an error concerns, turning
// "not found" into the list of those that exist and "unsupported" into a
// sentence about the driver.
func CheckpointErr(ctx context.Context, dom Domain, name string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoCheckpoint):
		return NoCheckpoint(ctx, dom, name)
	case errors.Is(err, ErrUnsupported) || errors.Is(err, ErrOperationInvalid):
		// Most of these mean the domain is not running; say so plainly.
		if st, serr := dom.State(ctx); serr == nil && !st.Active {
			return fmt.Errorf("domain %q is %s, and this needs it running (libvirt: %w); start it with 'virsh start %s'", dom.Name(), st.State, err, dom.Name())
		}
		if errors.Is(err, ErrOperationInvalid) {
			break
		}
		return fmt.Errorf("domain %q: this libvirt driver cannot do that: %w", dom.Name(), err)
	case name == "":
		return fmt.Errorf("domain %q: %w", dom.Name(), err)
	}
	return fmt.Errorf("domain %q, checkpoint %q: %w", dom.Name(), name, err)
}

// NoCheckpoint is the error for a checkpoint name the domain does not have.
func NoCheckpoint(ctx context.Context, dom Domain, name string) error {
	cps, err := dom.Checkpoints(ctx)
	if err != nil {
		return fmt.Errorf("domain %q has no checkpoint %q", dom.Name(), name)
	}
	return NoCheckpointIn(dom, name, cps)
}

// NoCheckpointIn is NoCheckpoint for a caller that has the list already.
func NoCheckpointIn(dom Domain, name string, cps []Checkpoint) error {
	names := make([]string, len(cps))
	for i, cp := range cps {
		names[i] = cp.Name
	}
	return fmt.Errorf("domain %q has no checkpoint %q; %s", dom.Name(), name, Listing("checkpoints", names))
}

// Listing says which names exist, briefly: "its domains are a, b" or "it
// has no domains".
func Listing(what string, names []string) string {
	if len(names) == 0 {
		return "it has no " + what
	}
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	const most = 12
	more := ""
	if len(sorted) > most {
		more = fmt.Sprintf(" and %d more", len(sorted)-most)
		sorted = sorted[:most]
	}
	return fmt.Sprintf("its %s are %s%s", what, strings.Join(sorted, ", "), more)
}

// CheckDiskNames refuses a disk name in want that owner (`domain "vm1"`,
// `backup vbackup-…`) does not have, naming those it has, in its order.
func CheckDiskNames(owner string, have, want []string) error {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return fmt.Errorf("%s has no disk %q; its disks are %s", owner, w, strings.Join(have, ", "))
		}
	}
	return nil
}

// Wanted reports whether disk name is among those asked for: all of them
// when none was named.
func Wanted(want []string, name string) bool {
	return len(want) == 0 || slices.Contains(want, name)
}
