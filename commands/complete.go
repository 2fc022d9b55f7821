package commands

import (
	"context"
	"io"
	"strings"

	"github.com/urfave/cli/v3"
)

// completeCommandName is the hidden command the completion scripts call:
//
//	vbackup __complete SHELL -- WORD... CURRENT
//
// WORDs are the words typed after "vbackup" before the cursor's word;
// CURRENT is that word up to the cursor ("" after a blank). bash sends its
// words as typed, quotes included; zsh and fish send them unquoted.
//
// The answer, on stdout, is a first line that says what to complete and then
// one candidate per line:
//
//	words                 the candidates follow, "VALUE" or "VALUE<TAB>DESCRIPTION"
//	files<TAB>PREFIX      the shell completes a path itself, after PREFIX
//	dirs<TAB>PREFIX       the same for a folder
//
// Each VALUE is the whole current word (flag and spec prefixes included) and
// starts with CURRENT. A VALUE ending in '=', ',', ':' or '/' is unfinished:
// the shell adds no space after it. Nothing else is printed, on stdout or
// stderr, and the exit status is 0 whatever happens: a completion that cannot
// reach libvirt within lookupBudget offers nothing.
const completeCommandName = "__complete"

func newCompleteCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:            completeCommandName,
		Usage:           "answer a shell completion script (see 'vbackup completion')",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a := cmd.Args().Slice()
			if len(a) == 0 {
				return nil
			}
			shell, words := a[0], a[1:]
			if len(words) > 0 && words[0] == "--" {
				words = words[1:]
			}
			if len(words) == 0 {
				words = []string{""}
			}
			if shell == "bash" {
				for i, w := range words {
					words[i] = shellUnquote(w)
				}
			}
			isolateCompletion()
			complete(ctx, env, cmd.Root(), words).write(env.Stdout)
			return nil
		},
	}
}

// completion is the answer to one request.
type completion struct {
	paths      string // "files" or "dirs" when the shell is to complete a path
	pathPrefix string // the part of the word before the path
	cands      []candidate
}

type candidate struct {
	value, desc string
}

func (c completion) write(w io.Writer) {
	var b strings.Builder
	if c.paths != "" {
		b.WriteString(c.paths + "\t" + c.pathPrefix + "\n")
	} else {
		b.WriteString("words\n")
	}
	for _, cand := range c.cands {
		// A name with a line break or tab would break the protocol; such a
		// name cannot be typed at a prompt anyway.
		if cand.value == "" || strings.ContainsAny(cand.value, "\n\t") {
			continue
		}
		b.WriteString(cand.value)
		if d := strings.Join(strings.Fields(cand.desc), " "); d != "" {
			b.WriteString("\t" + d)
		}
		b.WriteString("\n")
	}
	_, _ = io.WriteString(w, b.String())
}

// complete answers words, the last of which is the one being completed.
func complete(ctx context.Context, env *Env, root *cli.Command, words []string) completion {
	r := parseLine(root, words)
	switch r.kind {
	case wantFiles:
		return completion{paths: "files", pathPrefix: r.prefix}
	case wantDirs:
		return completion{paths: "dirs", pathPrefix: r.prefix}
	case wantStatic:
		return completion{cands: r.filter(r.static)}
	case wantDomains, wantCheckpoints, wantDisks:
		return completion{cands: r.filter(lookup(ctx, env, r))}
	case wantBackups, wantBackupDisks:
		return completion{cands: r.filter(storeLookup(ctx, env, r))}
	}
	return completion{}
}

// want is what the current word asks for.
type want int

const (
	wantNothing     want = iota
	wantStatic           // request.static
	wantFiles            // a path, completed by the shell
	wantDirs             // a folder, completed by the shell
	wantDomains          // the connection's domains, filtered for the command
	wantCheckpoints      // request.domain's checkpoints
	wantDisks            // request.domain's disk targets, less request.named
	wantBackups          // the backups in request.from, then latest (and all)
	wantBackupDisks      // the disks of backup request.at in request.from, less request.named
)

// request is the current word's meaning, read from the words before it.
type request struct {
	kind    want
	prefix  string // typed part kept before every candidate: "--incremental=", "vda,target="
	partial string // the rest of the word, which every candidate must start with
	static  []candidate

	uri     string          // -c/--connect as typed; "" for the default
	command string          // the vbackup command, which says which domains fit
	domain  string          // the DOMAIN argument, when typed already
	named   map[string]bool // disks named by earlier --disk/--diskspec
	from    string          // restore and verify: --from as typed, the backup folder
	at      string          // restore: --at as typed, a backup of from ("" for the latest)
}

// filter keeps the candidates that start with the partial word and puts the
// prefix back in front.
func (r request) filter(cands []candidate) []candidate {
	var out []candidate
	for _, c := range cands {
		if strings.HasPrefix(c.value, r.partial) {
			out = append(out, candidate{value: r.prefix + c.value, desc: c.desc})
		}
	}
	return out
}

// flagInfo is what completion needs to know of one flag.
type flagInfo struct {
	name        string // the first, long name
	names       []string
	takesValue  bool
	repeatable  bool
	placeholder string // from the usage: `CHECKPOINT`, `FILE`, ...
	usage       string // without the backquotes
}

func describeFlag(f cli.Flag) flagInfo {
	fi := flagInfo{names: f.Names()}
	fi.name = fi.names[0]
	if d, ok := f.(cli.DocGenerationFlag); ok {
		fi.takesValue = d.TakesValue()
		fi.placeholder, fi.usage = unquote(d.GetUsage())
	}
	if m, ok := f.(cli.DocGenerationMultiValueFlag); ok {
		fi.repeatable = m.IsMultiValueFlag()
	}
	return fi
}

// unquote splits a flag usage into its `PLACEHOLDER` and the usage without
// the backquotes, as the CLI library's help does.
func unquote(usage string) (placeholder, text string) {
	i := strings.IndexByte(usage, '`')
	if i < 0 {
		return "", usage
	}
	j := strings.IndexByte(usage[i+1:], '`')
	if j < 0 {
		return "", usage
	}
	placeholder = usage[i+1 : i+1+j]
	return placeholder, usage[:i] + placeholder + usage[i+1+j+1:]
}

// flagSet is the flags valid at one point of the line, by every name.
type flagSet struct {
	list   []flagInfo
	byName map[string]flagInfo
}

func newFlagSet(groups ...[]cli.Flag) flagSet {
	s := flagSet{byName: map[string]flagInfo{}}
	for _, g := range groups {
		for _, f := range g {
			fi := describeFlag(f)
			if _, dup := s.byName[fi.name]; dup || fi.name == "" {
				continue
			}
			s.list = append(s.list, fi)
			for _, n := range fi.names {
				s.byName[n] = fi
			}
		}
	}
	return s
}

// globalFlags are the root's own flags, valid after the command name too;
// the library's --help and --version are added where they apply.
func globalFlags(root *cli.Command) []cli.Flag {
	var out []cli.Flag
	for _, f := range root.Flags {
		if n := f.Names()[0]; n != "help" && n != "version" {
			out = append(out, f)
		}
	}
	return out
}

// parseLine reads the words before the current one, as the CLI library
// would parse them, to tell what the current word is.
func parseLine(root *cli.Command, words []string) request {
	cur, before := words[len(words)-1], words[:len(words)-1]
	r := request{named: map[string]bool{}}
	cmd := root
	flags := newFlagSet(globalFlags(root), []cli.Flag{cli.HelpFlag, cli.VersionFlag})
	seen := map[string]bool{}
	values := map[string][]string{}
	var positional []string
	var pending *flagInfo
	afterDashes := false

	for _, w := range before {
		switch {
		case pending != nil:
			values[pending.name] = append(values[pending.name], w)
			pending = nil
		case afterDashes:
			positional = append(positional, w)
		case w == "--" && cmd != root:
			afterDashes = true
		case len(w) > 1 && w[0] == '-':
			name, value, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
			fi, ok := flags.byName[name]
			if !ok {
				continue
			}
			seen[fi.name] = true
			switch {
			case fi.takesValue && hasValue:
				values[fi.name] = append(values[fi.name], value)
			case fi.takesValue:
				pending = &fi
			}
		case cmd == root || len(positional) == 0 && subcommand(cmd, w) != nil:
			sub := subcommand(cmd, w)
			if sub == nil {
				return request{} // not a command vbackup knows: nothing fits
			}
			cmd = sub
			r.command = sub.Name
			flags = newFlagSet(sub.Flags, globalFlags(root), []cli.Flag{cli.HelpFlag})
		default:
			positional = append(positional, w)
		}
	}
	if v := values["connect"]; len(v) > 0 {
		r.uri = v[len(v)-1]
	}
	slots := argSlots(cmd)
	for i, s := range slots {
		if s == "DOMAIN" && i < len(positional) {
			r.domain = positional[i]
		}
	}

	switch {
	case pending != nil:
		r.partial = cur
		r.flagValue(*pending, values, seen)
	case !afterDashes && strings.HasPrefix(cur, "-") && strings.Contains(cur, "="):
		name, value, _ := strings.Cut(strings.TrimLeft(cur, "-"), "=")
		if fi, ok := flags.byName[name]; ok && fi.takesValue {
			r.prefix, r.partial = cur[:len(cur)-len(value)], value
			r.flagValue(fi, values, seen)
		}
	case !afterDashes && strings.HasPrefix(cur, "-"):
		r.kind, r.partial, r.static = wantStatic, cur, flagCandidates(flags, seen, cur)
	case cmd == root:
		r.kind, r.partial, r.static = wantStatic, cur, commandCandidates(root)
	default:
		r.partial = cur
		slot := ""
		if len(positional) < len(slots) {
			slot = slots[len(positional)]
		} else if len(slots) > 0 && strings.HasSuffix(cmd.ArgsUsage, "...") {
			slot = slots[len(slots)-1] // "DOMAIN...": any number of them
		}
		r.argument(cmd, root, slot)
		if r.kind == wantNothing && cur == "" && !afterDashes {
			// Nothing to say about this argument: the options are the
			// useful next words.
			r.kind, r.static = wantStatic, flagCandidates(flags, seen, cur)
		}
	}
	return r
}

// argSlots reads a command's positional arguments from its ArgsUsage:
// "DOMAIN [XMLFILE]" is DOMAIN, XMLFILE.
func argSlots(cmd *cli.Command) []string {
	var out []string
	for _, f := range strings.Fields(cmd.ArgsUsage) {
		f = strings.Trim(f, "[].")
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// argument sets what the positional argument named slot takes.
func (r *request) argument(cmd, root *cli.Command, slot string) {
	switch {
	case cmd.Name == "help":
		if slot != "" || len(argSlots(cmd)) == 0 {
			r.kind, r.static = wantStatic, commandCandidates(root)
		}
	case cmd != root && len(commandCandidates(cmd)) > 0: // completion bash|zsh|fish|pwsh
		r.kind, r.static = wantStatic, commandCandidates(cmd)
	case slot == "DOMAIN":
		r.kind = wantDomains
	case slot == "CHECKPOINT" && r.domain != "":
		r.kind = wantCheckpoints
	case slot == "XMLFILE" || slot == "FILE":
		r.kind = wantFiles
	case slot == "DIR" || slot == "MOUNTPOINT":
		r.kind = wantDirs
	}
}

// flagCandidates lists the flags that may come next: all but those given
// already that cannot be repeated.
func flagCandidates(flags flagSet, seen map[string]bool, cur string) []candidate {
	var out []candidate
	for _, fi := range flags.list {
		if seen[fi.name] && !fi.repeatable {
			continue
		}
		for _, n := range fi.names {
			dash := "--"
			if len(n) == 1 {
				if strings.HasPrefix(cur, "--") {
					continue
				}
				dash = "-"
			}
			out = append(out, candidate{value: dash + n, desc: fi.usage})
		}
	}
	return out
}

// subcommand is cmd's subcommand called name (or aliased so), but this
// hidden one and the library's "help" below the top.
func subcommand(cmd *cli.Command, name string) *cli.Command {
	sub := cmd.Command(name)
	if sub == nil || sub.Name == completeCommandName || sub.Name == "help" && cmd != cmd.Root() {
		return nil
	}
	return sub
}

// commandCandidates lists the visible subcommands of cmd; the library's
// "help" only at the top, where it takes a command name.
func commandCandidates(cmd *cli.Command) []candidate {
	var out []candidate
	for _, c := range cmd.Commands {
		if c.Hidden || c.Name == "help" && cmd.Root() != cmd {
			continue
		}
		out = append(out, candidate{value: c.Name, desc: c.Usage})
	}
	return out
}
