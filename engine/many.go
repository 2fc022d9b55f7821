package engine

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"vbackup/chain"
	"vbackup/progress"
	"vbackup/virt"
)

// ManyRequest is one run over several domains: each is backed up into a
// folder of its own under Root, Parallel at a time.
type ManyRequest struct {
	// Names are the domains, in this order (a name, UUID or ID, as virsh
	// takes them). With All, every domain of the connection instead.
	Names   []string
	All     bool
	Exclude []string // with All: globs (path.Match) of the names left out
	Root    string   // each domain's backups go into Root/FolderName(name)
	// Parallel is how many backups run at once, 1 or more.
	Parallel int
	// Backup is every domain's request; its Dir is set per domain.
	Backup BackupRequest
}

// ManyOutput is where a run's domains say what they do. Both are called
// from the domain's own goroutine.
type ManyOutput struct {
	// Domain gives the printer and notifier of one domain's backup,
	// once, when it starts.
	Domain func(name string) (progress.Printer, progress.Notifier)
	// Done, when not nil, is called as each domain's backup ends, before
	// its slot goes to the next domain.
	Done func(DomainResult)
}

// Outcome is how one domain's part of a run ended.
type Outcome string

const (
	OutcomeOK          Outcome = "ok"
	OutcomeFailed      Outcome = "failed"
	OutcomeInterrupted Outcome = "interrupted" // it ran when the run was stopped: undone
	OutcomeNotRun      Outcome = "not-run"     // the run was stopped before it started
	OutcomeSkipped     Outcome = "skipped"     // --all: a domain that cannot be backed up as asked (shut off, in a push)
)

// DomainResult is one domain's part of a run.
type DomainResult struct {
	Domain  string // its name (as given, when it was not found)
	Dir     string // its backup folder
	Outcome Outcome
	Level   string // chain.Full or chain.Incremental, once decided
	Copied  uint64 // bytes read from the domain
	Elapsed time.Duration
	Backup  *chain.Backup // OutcomeOK: what it holds
	Err     error         // OutcomeFailed, OutcomeInterrupted, OutcomeNotRun
	Reason  string        // OutcomeSkipped: why
}

// FolderName is the folder of a domain's backups under a run's root. It is
// the name itself when the name is made of letters, digits and
// ._+-@,=: only and does not begin with a dot; any other byte (a '/', a
// space, a control character, '%' itself, a leading '.') is written %XX, as
// in a URL. Bytes of UTF-8 letters are kept. The mapping is one-to-one, so
// two domains never share a folder, and a folder name is never hidden,
// "." or "..".
func FolderName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if safeFolderByte(c) && !(i == 0 && c == '.') {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func safeFolderByte(c byte) bool {
	switch {
	case c >= 0x80: // part of a UTF-8 character
		return true
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("._+-@,=:", c) >= 0
}

// skipReason says why --all leaves a domain in state st out, "" when it is
// backed up. A shut-off domain is backed up from its images (offline.go),
// as a single backup does, except in a push, which needs libvirt to run
// the job: named, such a domain fails; with --all it is skipped.
func skipReason(st virt.DomainState, push bool) string {
	if !st.Active && push {
		return "shut off: a push needs it running (without --push its images are read directly)"
	}
	return ""
}

// manyTarget is one domain of a run, looked up.
type manyTarget struct {
	res DomainResult
	dom virt.Domain // nil when it was not found (res says why)
}

// BackupMany backs up each domain of req into its folder, Parallel at a
// time, and returns one result per domain in the order given (with All,
// the connection's, sorted by name). One domain's failure does not stop
// the others. When ctx ends, the running backups are undone as a single
// backup's would be, and those not yet started are not run. The error is
// for a run refused before anything started: the domains cannot be
// listed, or two names are the same domain.
func BackupMany(ctx context.Context, conn virt.Conn, req ManyRequest, out ManyOutput) ([]DomainResult, error) {
	if req.Parallel < 1 {
		return nil, fmt.Errorf("parallel %d: give 1 or more backups at a time", req.Parallel)
	}
	targets, err := selectDomains(ctx, conn, req)
	if err != nil {
		return nil, err
	}
	results := make([]DomainResult, len(targets))
	slots := make(chan struct{}, req.Parallel)
	var wg sync.WaitGroup
	for i, t := range targets {
		if t.dom == nil {
			results[i] = t.res
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			// A slot may have been free too: the run stopped all the same.
			results[i] = t.res
			results[i].Outcome, results[i].Err = OutcomeNotRun, context.Cause(ctx)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			results[i] = backupOne(ctx, t, req.Backup, out)
			if out.Done != nil {
				out.Done(results[i])
			}
		}()
	}
	wg.Wait()
	return results, nil
}

// selectDomains looks up the run's domains: a name not found becomes a
// failed result, a shut-off domain of --all a skipped one. Two names of the
// same domain (its name and its UUID, say) are refused: they would back it
// up twice into two folders.
func selectDomains(ctx context.Context, conn virt.Conn, req ManyRequest) ([]manyTarget, error) {
	names := req.Names
	if req.All {
		all, err := conn.Domains(ctx, false)
		if err != nil {
			return nil, fmt.Errorf("listing the domains of %s: %w", conn.URI(), err)
		}
		names = nil
		for _, n := range all {
			if !excluded(n, req.Exclude) {
				names = append(names, n)
			}
		}
	}
	var targets []manyTarget
	byFolder := map[string]string{} // folder -> the name that took it
	for _, name := range names {
		t := manyTarget{res: DomainResult{Domain: name, Dir: filepath.Join(req.Root, FolderName(name))}}
		dom, err := conn.Domain(ctx, name)
		if err != nil {
			t.res.Outcome, t.res.Err = OutcomeFailed, notFound(ctx, conn, name, err)
			targets = append(targets, t)
			continue
		}
		t.dom = dom
		t.res.Domain = dom.Name()
		t.res.Dir = filepath.Join(req.Root, FolderName(dom.Name()))
		folder := FolderName(dom.Name())
		if first, ok := byFolder[folder]; ok {
			return nil, fmt.Errorf("%q and %q are the same domain %s: name it once", first, name, dom.Name())
		}
		byFolder[folder] = name
		if req.All {
			st, err := dom.State(ctx)
			if err != nil {
				t.res.Outcome, t.res.Err, t.dom = OutcomeFailed, fmt.Errorf("domain %q: %w", name, err), nil
			} else if why := skipReason(st, req.Backup.Push); why != "" {
				t.res.Outcome, t.res.Reason, t.dom = OutcomeSkipped, why, nil
			}
		}
		targets = append(targets, t)
	}
	return targets, nil
}

func excluded(name string, globs []string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// ValidGlob checks an --exclude pattern (path.Match's syntax).
func ValidGlob(glob string) error {
	_, err := path.Match(glob, "")
	return err
}

// notFound words a failed lookup; an unknown name lists what the
// connection has.
func notFound(ctx context.Context, conn virt.Conn, name string, err error) error {
	if !errors.Is(err, virt.ErrNoDomain) {
		return fmt.Errorf("domain %q: %w", name, err)
	}
	names, lerr := conn.Domains(ctx, false)
	if lerr != nil {
		return fmt.Errorf("domain %q not found on %s: %w", name, conn.URI(), err)
	}
	return noDomain{fmt.Sprintf("domain %q not found on %s; %s", name, conn.URI(), virt.Listing("domains", names))}
}

// noDomain is a name not found, worded with what the connection has; it
// is a virt.ErrNoDomain.
type noDomain struct{ msg string }

func (e noDomain) Error() string { return e.msg }
func (e noDomain) Unwrap() error { return virt.ErrNoDomain }

// backupOne is one domain's backup, as 'vbackup backup DOMAIN' makes it.
func backupOne(ctx context.Context, t manyTarget, tmpl BackupRequest, out ManyOutput) (res DomainResult) {
	res = t.res
	printer, notes := out.Domain(res.Domain)
	now := tmpl.Now
	if now == nil {
		now = time.Now
	}
	start := now()
	defer func() { res.Elapsed = now().Sub(start) }()
	req := tmpl
	req.Dir = res.Dir
	b, err := PrepareBackup(ctx, t.dom, req, notes)
	if err != nil {
		return failed(ctx, res, err)
	}
	defer b.Close()
	res.Level = b.Decision().Level
	// A stop asked for while the backup is being put in place comes too
	// late to matter: the backup is kept, as a single one is.
	committing := func() error {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return nil
	}
	done, err := b.Run(ctx, printer, committing)
	if err != nil {
		return failed(ctx, res, err)
	}
	res.Outcome, res.Backup, res.Level = OutcomeOK, done, done.Level
	for _, d := range done.Disks {
		res.Copied += d.Copied
	}
	return res
}

func failed(ctx context.Context, res DomainResult, err error) DomainResult {
	res.Outcome, res.Err = OutcomeFailed, err
	if ctx.Err() != nil {
		res.Outcome = OutcomeInterrupted
		if cause := context.Cause(ctx); !errors.Is(err, cause) {
			res.Err = fmt.Errorf("%w (%w)", err, cause)
		}
	}
	return res
}
