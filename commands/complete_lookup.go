package commands

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"vbackup/virt"
)

// lookupBudget bounds what a completion may wait for libvirt: a daemon that
// is down, a slow host or a connection that wants a password gives no
// candidates rather than a shell that hangs. A second proved too short on
// a loaded 2-core machine (a lookup of a few domains missed it in CI); a
// daemon that is down fails at once whatever the budget.
const lookupBudget = 3 * time.Second

// remoteProbes is how many domains are asked for their checkpoints at once
// over a network connection, when only domains with checkpoints fit and the
// connection cannot list them in one call: parallel calls hide the round
// trips. On the local socket one at a time is fastest (measured with 200
// domains: 56 ms, against 90 ms with 2 or 4 at once); libvirtd is the
// bottleneck there.
const remoteProbes = 8

// lookup asks libvirt for the candidates r wants, within lookupBudget. The
// connection is the completion's own: opened and closed by the goroutine
// that uses it, which may outlive the budget (libvirt's calls cannot be
// interrupted; the process exits before they end).
func lookup(ctx context.Context, env *Env, r request) []candidate {
	return withinBudget(ctx, func(ctx context.Context) []candidate {
		conn, err := env.Open(ctx, completionURI(env, r.uri), nil)
		if err != nil {
			return nil
		}
		defer conn.Close()
		return fetch(ctx, conn, r)
	})
}

// withinBudget runs find in a goroutine of its own and returns what it
// found, or nothing once lookupBudget has passed; find may outlive the
// budget.
func withinBudget(ctx context.Context, find func(context.Context) []candidate) []candidate {
	ctx, cancel := context.WithTimeout(ctx, lookupBudget)
	defer cancel()
	found := make(chan []candidate, 1)
	go func() { found <- find(ctx) }()
	select {
	case c := <-found:
		return c
	case <-ctx.Done():
		return nil
	}
}

func fetch(ctx context.Context, conn virt.Conn, r request) []candidate {
	switch r.kind {
	case wantDomains:
		return domainCandidates(ctx, conn, r.command, r.partial)
	case wantCheckpoints:
		dom, err := conn.Domain(ctx, r.domain)
		if err != nil {
			return nil
		}
		return checkpointCandidates(ctx, dom)
	case wantDisks:
		dom, err := conn.Domain(ctx, r.domain)
		if err != nil {
			return nil
		}
		return diskCandidates(ctx, dom, r.named)
	}
	return nil
}

// domainsFor says which domains fit a command, as virsh's completer does:
// a backup job needs a running domain ('backup' takes shut-off ones too);
// the checkpoint commands but the two that create one need a domain that
// has checkpoints.
type domainsFor int

const (
	anyDomain domainsFor = iota
	runningDomain
	domainWithCheckpoints
)

func domainsFitting(command string) domainsFor {
	switch {
	case strings.HasPrefix(command, "backup-"):
		return runningDomain
	case command == "checkpoint-create" || command == "checkpoint-create-as":
		return anyDomain
	case strings.HasPrefix(command, "checkpoint-"):
		return domainWithCheckpoints
	}
	return anyDomain
}

func domainCandidates(ctx context.Context, conn virt.Conn, command, partial string) []candidate {
	fits := domainsFitting(command)
	names, err := conn.Domains(ctx, fits == runningDomain)
	if err != nil {
		return nil
	}
	// Only the names the shell would show are worth a libvirt call each.
	var matching []string
	for _, n := range names {
		if strings.HasPrefix(n, partial) {
			matching = append(matching, n)
		}
	}
	if fits == domainWithCheckpoints {
		if l, ok := conn.(checkpointedLister); ok {
			have, err := l.DomainsWithCheckpoints(ctx)
			if err != nil {
				return nil
			}
			matching = slices.DeleteFunc(matching, func(n string) bool { return !slices.Contains(have, n) })
		} else {
			matching = withCheckpoints(ctx, conn, matching)
		}
	}
	out := make([]candidate, len(matching))
	for i, n := range matching {
		out[i] = candidate{value: n}
	}
	return out
}

// checkpointedLister is a connection that lists the domains with
// checkpoints in one call (libvirt's VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT,
// as virsh's completer does): about 1 ms for any number of domains, where
// withCheckpoints makes a call or two per domain.
type checkpointedLister interface {
	DomainsWithCheckpoints(ctx context.Context) ([]string, error)
}

// withCheckpoints keeps the domains that have at least one checkpoint,
// asking one domain at a time on the local socket, remoteProbes at a time
// over the network; a domain that cannot be asked is left out.
func withCheckpoints(ctx context.Context, conn virt.Conn, names []string) []string {
	has := make([]bool, len(names))
	next := make(chan int)
	var wg sync.WaitGroup
	probes := 1
	if remote(conn.URI()) {
		probes = remoteProbes
	}
	for range min(probes, len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if ctx.Err() != nil {
					continue
				}
				dom, err := conn.Domain(ctx, names[i])
				if err != nil {
					continue
				}
				cps, err := dom.Checkpoints(ctx)
				has[i] = err == nil && len(cps) > 0
			}
		}()
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()
	var out []string
	for i, n := range names {
		if has[i] {
			out = append(out, n)
		}
	}
	return out
}

// remote reports a URI that reaches its daemon over the network: one with a
// host, through any transport but unix.
func remote(uri string) bool {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || strings.HasSuffix(scheme, "+unix") {
		return false
	}
	host, _, _ := strings.Cut(rest, "/")
	return host != ""
}

func checkpointCandidates(ctx context.Context, dom virt.Domain) []candidate {
	cps, err := dom.Checkpoints(ctx)
	if err != nil {
		return nil
	}
	sort.Slice(cps, func(i, j int) bool { return cps[i].Name < cps[j].Name })
	out := make([]candidate, len(cps))
	for i, cp := range cps {
		desc := "created " + cp.Created.Format("2006-01-02 15:04:05")
		if cp.Parent != "" {
			desc += ", after " + cp.Parent
		}
		out[i] = candidate{value: cp.Name, desc: desc}
	}
	return out
}

// diskCandidates lists the disks that can take part in a backup or a
// checkpoint (not an empty or read-only drive), less those named already.
func diskCandidates(ctx context.Context, dom virt.Domain, named map[string]bool) []candidate {
	disks, err := dom.Disks(ctx)
	if err != nil {
		return nil
	}
	var out []candidate
	for _, d := range disks {
		if d.Empty() || d.ReadOnly || named[d.Target] {
			continue
		}
		desc := d.Source
		if d.Format != "" {
			desc = d.Format + " " + desc
		}
		out = append(out, candidate{value: d.Target, desc: desc})
	}
	return out
}

// completionURI is the connection the typed -c names, else
// $LIBVIRT_DEFAULT_URI ("" leaves the choice to libvirt). An ssh transport
// gets no_tty=1, which makes libvirt run ssh in batch mode: an unknown host
// key or a password fails the connection instead of prompting.
func completionURI(env *Env, typed string) string {
	uri := typed
	if uri == "" && env.Getenv != nil {
		uri = env.Getenv("LIBVIRT_DEFAULT_URI")
	}
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || !strings.HasSuffix(scheme, "+ssh") || strings.Contains(rest, "no_tty=") {
		return uri
	}
	sep := "?"
	if strings.Contains(rest, "?") {
		sep = "&"
	}
	return uri + sep + "no_tty=1"
}
