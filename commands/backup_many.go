package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"vbackup/engine"
	"vbackup/job"
	"vbackup/progress"
	"vbackup/virt"
)

// manyOptions are backup's options for more than one domain in a run.
type manyOptions struct {
	On       bool     // more than one DOMAIN, or --all: DIR holds a folder per domain
	Domains  []string // the DOMAIN arguments, in order
	All      bool
	Exclude  []string // with --all: globs of names left out
	Parallel int      // backups at a time
}

const manyHelp = "\n\nMANY DOMAINS: 'vbackup backup DOMAIN... --to DIR' (two or more) and\n" +
	"'vbackup backup --all [--exclude GLOB]... --to DIR' back up each domain into\n" +
	"DIR/DOMAIN/, a chain of its own, --parallel N at a time (default 1), in one\n" +
	"process. A name with characters other than letters, digits and ._+-@,=: gets\n" +
	"them written %XX in its folder name ('a/b' -> DIR/a%2Fb). One domain failing\n" +
	"stops none of the others; a name not found fails that domain only. --all backs\n" +
	"up shut-off domains too, from their images (with --push it skips them, saying\n" +
	"so: a push needs the domain running). Progress and each domain's account go to stderr,\n" +
	"each line after the domain's name (on a terminal: a bar per running disk); the\n" +
	"result is the summary table on stdout (DOMAIN LEVEL COPIED TIME RESULT), the\n" +
	"data a script or a monitor reads, or with --json one object per domain and\n" +
	"nothing else. Exit status 1 if any domain failed. Ctrl-C ends the running\n" +
	"backups (undone, as a single one) and starts no other (\"not-run\")."

// withManyFlags adds the many-domain flags to the backup command.
func withManyFlags(cmd *cli.Command) *cli.Command {
	cmd.ArgsUsage = "DOMAIN..."
	cmd.Description += manyHelp
	cmd.Flags = append(cmd.Flags,
		&cli.BoolFlag{Name: "all", Usage: "back up every domain of the connection, each into DIR/DOMAIN/"},
		&cli.StringSliceFlag{Name: "exclude", Usage: "with --all: leave out the domains whose name matches `GLOB` (*, ?, [a-z]; repeatable)"},
		&cli.StringFlag{Name: "parallel", Usage: "with several domains: back up `N` at a time", Value: "1"},
	)
	return cmd
}

// backupArgs is backup's DOMAIN arguments: one or more, or none with
// --all; a[0] is "" then.
func backupArgs(cmd *cli.Command) ([]string, error) {
	got := cmd.Args().Slice()
	switch {
	case cmd.Bool("all") && len(got) > 0:
		return nil, usageErrorf(cmd, "--all backs up every domain: give no DOMAIN with it (%q), or leave --all out", got[0])
	case cmd.Bool("all"):
		return []string{""}, nil
	case len(got) == 0:
		return nil, usageErrorf(cmd, "missing DOMAIN argument (or --all for every domain)")
	}
	return got, nil
}

// manyFlags checks the many-domain flags; a run of one DOMAIN without
// --all stays the single backup (zero manyOptions).
func manyFlags(cmd *cli.Command, domains []string) (manyOptions, error) {
	all := cmd.Bool("all")
	if cmd.IsSet("exclude") && !all {
		return manyOptions{}, usageErrorf(cmd, "--exclude needs --all: it leaves domains out of every domain")
	}
	n, err := count(cmd.String("parallel"))
	if err != nil || n < 1 {
		return manyOptions{}, usageErrorf(cmd, "--parallel %q: give how many backups run at once, 1 or more", cmd.String("parallel"))
	}
	if !all && len(domains) == 1 {
		return manyOptions{}, nil
	}
	m := manyOptions{On: true, All: all, Parallel: n}
	if !all {
		m.Domains = domains
	}
	seen := map[string]bool{}
	for _, d := range m.Domains {
		if seen[d] {
			return manyOptions{}, usageErrorf(cmd, "domain %q is named twice: name each domain once", d)
		}
		seen[d] = true
	}
	for _, g := range cmd.StringSlice("exclude") {
		if err := engine.ValidGlob(g); err != nil {
			return manyOptions{}, usageErrorf(cmd, "--exclude %q: %v; use *, ? and [a-z] as in the shell", g, err)
		}
		m.Exclude = append(m.Exclude, g)
	}
	if cmd.IsSet("disk") {
		return manyOptions{}, usageErrorf(cmd, "--disk names one domain's disks: it cannot be used with several domains")
	}
	return m, nil
}

// runBackupMany backs up several domains, each into its folder under
// opts.Dir, and prints the summary.
func runBackupMany(ctx context.Context, env *Env, opts backupOptions) error {
	conn, err := env.Conn(ctx)
	if errors.Is(err, virt.ErrConnect) {
		return fmt.Errorf("%w; is libvirtd running there (systemctl start libvirtd)? Name another connection with -c URI, e.g. -c qemu:///system", err)
	}
	if err != nil {
		return err
	}
	socks, err := job.SocketsFor(conn.URI(), env.Getenv)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	// No Reconnect: the other domains' handles belong to the connection
	// it would replace.
	tmpl := engine.BackupRequest{Level: opts.Level, Push: opts.Push, MaxChain: opts.MaxChain, Compress: opts.Compress, Now: env.Now,
		Host: host, PID: os.Getpid(), Sockets: socks}
	var told io.Writer // one limiter for every domain: the cap is the run's
	if !opts.Quiet {
		told = env.Stderr
	}
	tmpl.Limit = newLimiter(progress.NewNotifier(told, nil), opts.BWLimit)
	req := engine.ManyRequest{Names: opts.Many.Domains, All: opts.Many.All, Exclude: opts.Many.Exclude, Root: opts.Dir,
		Parallel: opts.Many.Parallel, Backup: tmpl}
	out := newManyOutput(env, opts.Quiet)
	// The connection is every domain's: its line is nobody's in particular.
	noteRedials(conn, progress.NewNotifier(nil, out.sink.Writer("")))
	ctx, intr := interruptible(ctx, env, interruptText{
		ending: "ending the running backups (nothing of them will be kept) and starting no other",
		again:  "If a job is left, the next 'vbackup backup' of its domain ends it and deletes its checkpoint.",
	})
	defer intr.stop()
	results, err := engine.BackupMany(ctx, conn, req, engine.ManyOutput{Domain: out.domain, Done: out.done})
	if err != nil {
		return err
	}
	switch {
	case opts.JSON:
		printManyJSON(env.Stdout, results)
	case !opts.Quiet:
		printManyTable(env.Stdout, results)
	}
	return manyOutcome(ctx, results)
}

// manyOutput gives each domain its lines: progress and account on stderr,
// after the domain's name; nothing but errors with --quiet.
type manyOutput struct {
	quiet   bool
	printer func(name string) progress.Printer
	sink    interface{ Writer(prefix string) io.Writer }
	mu      sync.Mutex
	notes   map[string]progress.Notifier
}

func newManyOutput(env *Env, quiet bool) *manyOutput {
	o := &manyOutput{quiet: quiet, notes: map[string]progress.Notifier{}}
	switch {
	case quiet:
		o.sink = progress.NewPrefixer(env.Stderr)
		o.printer = func(string) progress.Printer { return progress.NewQuiet() }
	case env.StderrTTY:
		board := progress.NewBoard(env.Stderr, env.Width())
		o.sink, o.printer = board, board.Printer
	default:
		pre := progress.NewPrefixer(env.Stderr)
		o.sink = pre
		o.printer = func(name string) progress.Printer {
			return progress.NewPlain(pre.Writer(name+": "), progress.DefaultPlainEvery)
		}
	}
	return o
}

func (o *manyOutput) domain(name string) (progress.Printer, progress.Notifier) {
	w := o.sink.Writer(name + ": ")
	info := w
	if o.quiet {
		info = io.Discard
	}
	n := progress.NewNotifier(info, w)
	o.mu.Lock()
	o.notes[name] = n
	o.mu.Unlock()
	return o.printer(name), n
}

// done says how a domain's backup ended, as it ends.
func (o *manyOutput) done(r engine.DomainResult) {
	o.mu.Lock()
	n := o.notes[r.Domain]
	o.mu.Unlock()
	switch {
	case n == nil:
	case r.Outcome == engine.OutcomeOK:
		_ = reportBackup(output{notes: n}, r.Backup)
	default:
		n.Notef("error: %v", r.Err)
	}
}

func resultText(r engine.DomainResult) string {
	switch r.Outcome {
	case engine.OutcomeOK:
		return "ok"
	case engine.OutcomeSkipped:
		return "skipped: " + r.Reason
	case engine.OutcomeNotRun:
		return "not run (interrupted before it started)"
	}
	return string(r.Outcome) + ": " + strings.ReplaceAll(fmt.Sprint(r.Err), "\n", "; ")
}

func printManyTable(w io.Writer, results []engine.DomainResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tLEVEL\tCOPIED\tTIME\tRESULT")
	for _, r := range results {
		level, copied, took := "-", "-", "-"
		if r.Level != "" {
			level = r.Level
		}
		if r.Outcome == engine.OutcomeOK {
			copied = progress.Capacity(r.Copied)
		}
		if r.Outcome != engine.OutcomeSkipped && r.Outcome != engine.OutcomeNotRun {
			took = r.Elapsed.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Domain, level, copied, took, resultText(r))
	}
	tw.Flush()
}

// jsonDomain is one line of backup --json over many domains (stable field
// names; every field is always there).
type jsonDomain struct {
	Type      string `json:"type"` // "domain"
	Domain    string `json:"domain"`
	Dir       string `json:"dir"`
	Result    string `json:"result"` // ok, failed, interrupted, not-run, skipped
	Level     string `json:"level"`  // full or incremental; "" when not decided
	Backup    string `json:"backup"` // the backup made, "" unless ok
	Bytes     uint64 `json:"bytes"`  // copied from the domain
	ElapsedMS int64  `json:"elapsed_ms"`
	Error     string `json:"error"`  // why it failed or was not run
	Reason    string `json:"reason"` // why it was skipped
}

func printManyJSON(w io.Writer, results []engine.DomainResult) {
	enc := json.NewEncoder(w)
	for _, r := range results {
		j := jsonDomain{Type: "domain", Domain: r.Domain, Dir: r.Dir, Result: string(r.Outcome), Level: r.Level,
			Bytes: r.Copied, ElapsedMS: r.Elapsed.Milliseconds(), Reason: r.Reason}
		if r.Backup != nil {
			j.Backup = r.Backup.Name()
		}
		if r.Err != nil {
			j.Error = r.Err.Error()
		}
		_ = enc.Encode(j)
	}
}

// manyOutcome is the run's error, for the exit status: interrupted (130)
// when a signal stopped it, else a failure (1) naming the domains that
// failed.
func manyOutcome(ctx context.Context, results []engine.DomainResult) error {
	var failed, stopped []string
	for _, r := range results {
		switch r.Outcome {
		case engine.OutcomeFailed:
			failed = append(failed, r.Domain)
		case engine.OutcomeInterrupted, engine.OutcomeNotRun:
			stopped = append(stopped, r.Domain)
		}
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrInterrupted) {
		return fmt.Errorf("%w: %d of %d domains not backed up (%s)", cause, len(stopped)+len(failed), len(results), strings.Join(append(stopped, failed...), ", "))
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d domains failed: %s", len(failed), len(results), strings.Join(failed, ", "))
	}
	if len(stopped) > 0 { // stopped by something other than a signal
		return fmt.Errorf("%d of %d domains not backed up: %s", len(stopped), len(results), strings.Join(stopped, ", "))
	}
	return nil
}
