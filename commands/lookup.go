package commands

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"vbackup/virt"
)

// openDomain connects and looks the domain up; an unknown name gets an error
// that lists the domains the connection has.
func openDomain(ctx context.Context, env *Env, name string) (virt.Conn, virt.Domain, error) {
	conn, err := env.Conn(ctx)
	if errors.Is(err, virt.ErrConnect) {
		return nil, nil, fmt.Errorf("%w; is libvirtd running there (systemctl start libvirtd)? Name another connection with -c URI, e.g. -c qemu:///system", err)
	}
	if err != nil {
		return nil, nil, err
	}
	dom, err := conn.Domain(ctx, name)
	if errors.Is(err, virt.ErrNoDomain) {
		names, lerr := conn.Domains(ctx, false)
		if lerr != nil {
			return nil, nil, fmt.Errorf("domain %q not found on %s", name, conn.URI())
		}
		return nil, nil, fmt.Errorf("domain %q not found on %s; %s", name, conn.URI(), listing("domains", names))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("domain %q: %w", name, err)
	}
	return conn, dom, nil
}

// openRunningDomain opens a domain that a backup can run on: a running one.
func openRunningDomain(ctx context.Context, env *Env, name string) (virt.Conn, virt.Domain, error) {
	conn, dom, err := openDomain(ctx, env, name)
	if err != nil {
		return nil, nil, err
	}
	if st, err := dom.State(ctx); err != nil {
		return nil, nil, err
	} else if !st.Active {
		return nil, nil, fmt.Errorf("domain %q is %s: a backup needs a running domain; start it with 'virsh start %s'", dom.Name(), st.State, dom.Name())
	}
	return conn, dom, nil
}

// noCheckpoint is the error for a checkpoint name the domain does not have.
func noCheckpoint(ctx context.Context, dom virt.Domain, name string) error {
	cps, err := dom.Checkpoints(ctx)
	if err != nil {
		return fmt.Errorf("domain %q has no checkpoint %q", dom.Name(), name)
	}
	return noCheckpointIn(dom, name, cps)
}

// noCheckpointIn is noCheckpoint for a caller that has the list already.
func noCheckpointIn(dom virt.Domain, name string, cps []virt.Checkpoint) error {
	names := make([]string, len(cps))
	for i, cp := range cps {
		names[i] = cp.Name
	}
	return fmt.Errorf("domain %q has no checkpoint %q; %s", dom.Name(), name, listing("checkpoints", names))
}

// checkpointErr names the domain and checkpoint an error concerns, turning
// "not found" into the list of those that exist and "unsupported" into a
// sentence about the driver.
func checkpointErr(ctx context.Context, dom virt.Domain, name string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, virt.ErrNoCheckpoint):
		return noCheckpoint(ctx, dom, name)
	case errors.Is(err, virt.ErrUnsupported) || errors.Is(err, virt.ErrOperationInvalid):
		// Most of these mean the domain is not running; say so plainly.
		if st, serr := dom.State(ctx); serr == nil && !st.Active {
			return fmt.Errorf("domain %q is %s, and this needs it running (libvirt: %w); start it with 'virsh start %s'", dom.Name(), st.State, err, dom.Name())
		}
		if errors.Is(err, virt.ErrOperationInvalid) {
			break
		}
		return fmt.Errorf("domain %q: this libvirt driver cannot do that: %w", dom.Name(), err)
	case name == "":
		return fmt.Errorf("domain %q: %w", dom.Name(), err)
	}
	return fmt.Errorf("domain %q, checkpoint %q: %w", dom.Name(), name, err)
}

// listing says which names exist, briefly: "its domains are a, b" or "it
// has no domains".
func listing(what string, names []string) string {
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

// unsupportedFlags reports libvirt refusing a flag this driver or version
// does not know (virCheckFlags says "unsupported flags (0x…)").
func unsupportedFlags(err error) bool {
	return errors.Is(err, virt.ErrUnsupported) || strings.Contains(err.Error(), "unsupported flags")
}
