package commands

import (
	"context"
	"errors"
	"fmt"
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
		return nil, nil, fmt.Errorf("domain %q not found on %s; %s", name, conn.URI(), virt.Listing("domains", names))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("domain %q: %w", name, err)
	}
	return conn, dom, nil
}

// unsupportedFlags reports libvirt refusing a flag this driver or version
// does not know (virCheckFlags says "unsupported flags (0x…)").
func unsupportedFlags(err error) bool {
	return errors.Is(err, virt.ErrUnsupported) || strings.Contains(err.Error(), "unsupported flags")
}
