package commands

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

// These drive each shell's own completion entry point with the committed
// scripts of completions/ and the binary built from this tree, against the
// domains of the test bed: bash calls the function its 'complete -p'
// registered with COMP_WORDS and COMP_CWORD set as readline sets them; zsh
// gets the line and a TAB on a pseudo-terminal (testdata/complete); fish
// answers 'complete -C LINE'.

const bashCompletion = "/usr/share/bash-completion/bash_completion"

// need skips t when a program the test drives is missing, and fails it
// under CI=true, where make test has installed it (scripts/install-deps.sh).
func need(t *testing.T, what, path string) {
	t.Helper()
	var err error
	if filepath.IsAbs(path) {
		_, err = os.Stat(path)
	} else {
		_, err = exec.LookPath(path)
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (%v); scripts/install-deps.sh installs it", what, err)
	}
	t.Skipf("%s is missing: %v", what, err)
}

// shellRun is a shell ready to complete vbackup command lines.
type shellRun struct {
	t       *testing.T
	env     []string
	scripts string // the completions/ folder
	testdir string // commands/testdata/complete
}

func newShellRun(t *testing.T, bin, uri string) shellRun {
	root, err := testbed.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	scripts := filepath.Join(root, "completions")
	env := append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "LIBVIRT_DEFAULT_URI="+uri,
		"TERM=dumb", "VBACKUP_ZSH_FPATH="+scripts)
	return shellRun{t: t, env: env, scripts: scripts, testdir: filepath.Join(root, "commands", "testdata", "complete")}
}

// run runs a shell command line and returns its stdout; anything on stderr
// fails the test: a completion prints nothing but candidates.
func (s shellRun) run(name string, args ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = s.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		s.t.Fatalf("%s %q: %v\nstdout:\n%s\nstderr:\n%s", name, args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// bashProgram completes line as bash with bash-completion does: it loads
// the script, finds the function 'complete -p vbackup' names, sets COMP_*
// as readline would (splitting words at blanks and at '=' and ':', which are
// in COMP_WORDBREAKS) and prints COMPREPLY.
func (s shellRun) bashProgram(line string) string {
	words := readlineWords(line)
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = shellQuote(w)
	}
	return strings.Join([]string{
		"source " + bashCompletion,
		"source " + shellQuote(filepath.Join(s.scripts, "vbackup.bash")),
		`fn=$(complete -p vbackup) && fn=${fn##*-F } && fn=${fn%% *}`,
		"COMP_LINE=" + shellQuote(line) + "; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9; COMP_KEY=9",
		"COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))",
		`"$fn" vbackup "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"`,
		`printf '%s\n' "${COMPREPLY[@]}"`,
	}, "\n")
}

func (s shellRun) bash(line string) []string {
	out := s.run("bash", "--norc", "--noprofile", "-c", s.bashProgram(line))
	// Readline puts each reply in place of the text after the last '=' or
	// ':' of the word; the whole word is the text before and the reply.
	prefix := shellWordBefore(line)
	var got []string
	for _, l := range lines(out) {
		got = append(got, prefix+l)
	}
	return got
}

// shellWordBefore is the part of the last blank-separated word of line up
// to its last '=' or ':': what readline keeps when it inserts a reply.
func shellWordBefore(line string) string {
	word := line[strings.LastIndexAny(line, " \t")+1:]
	return word[:strings.LastIndexAny(word, "=:")+1]
}

// readlineWords splits line as readline fills COMP_WORDS: at blanks, and
// around each run of word-break characters ('=' and ':' here).
func readlineWords(line string) []string {
	var words []string
	for _, f := range strings.Fields(line) {
		start := 0
		for i := 0; i < len(f); {
			if strings.IndexByte("=:", f[i]) < 0 {
				i++
				continue
			}
			if i > start {
				words = append(words, f[start:i])
			}
			j := i
			for j < len(f) && strings.IndexByte("=:", f[j]) >= 0 {
				j++
			}
			words = append(words, f[i:j])
			i, start = j, j
		}
		if start < len(f) {
			words = append(words, f[start:])
		}
	}
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	return words
}

func (s shellRun) zsh(line string) []string {
	out := s.run("zsh", "-f", filepath.Join(s.testdir, "zsh-complete.zsh"), line)
	return lines(out)
}

func (s shellRun) fish(line string) []string {
	out := s.run("fish", "--no-config", "-c", "source "+shellQuote(filepath.Join(s.scripts, "vbackup.fish"))+"; complete -C "+shellQuote(line))
	var got []string
	for _, l := range lines(out) {
		v, _, _ := strings.Cut(l, "\t")
		got = append(got, v)
	}
	return got
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, "\r"); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// shellQuote quotes s for bash and fish alike.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

func TestCompleteShells(t *testing.T) {
	bed := testbed.Get(t)
	d := newCompletionDomains(t, bed)
	bin := vbackupBinary(t)
	sh := newShellRun(t, bin, bed.URI())
	files := t.TempDir()
	for _, f := range []string{"disk-a.qcow2", "disk-b.qcow2"} {
		if err := os.WriteFile(filepath.Join(files, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store := filepath.Join(files, "vm1-backups")
	b := backupFolder(t, store)
	dom := d.checkpoints
	cases := []struct {
		line string
		want []string // the whole words the shell would put in place
	}{
		{"vbackup checkpoint-l", []string{"checkpoint-list"}},
		{"vbackup backup-begin " + d.prefix, []string{d.checkpoints, d.running}},
		{"vbackup checkpoint-create " + d.prefix, []string{d.checkpoints, d.running, d.stopped}},
		{"vbackup checkpoint-list " + d.prefix, []string{d.checkpoints}},
		{"vbackup checkpoint-info " + dom + " ", []string{"monday", "tuesday"}},
		{"vbackup -c " + bed.URI() + " backup-begin " + dom + " --incremental t", []string{"tuesday"}},
		{"vbackup backup-begin " + dom + " --incremental=m", []string{"--incremental=monday"}},
		{"vbackup backup-begin " + dom + " --disk ", []string{"vda", "vdb"}},
		{"vbackup backup-begin " + dom + " --disk vda,incremental=t", []string{"vda,incremental=tuesday"}},
		{"vbackup backup-begin " + dom + " --disk vda,t", []string{"vda,type=", "vda,target="}},
		{"vbackup backup-begin " + dom + " --disk vda,target=" + files + "/disk-",
			[]string{"vda,target=" + files + "/disk-a.qcow2", "vda,target=" + files + "/disk-b.qcow2"}},
		{"vbackup checkpoint-create-as " + dom + " x --diskspec vdb,checkpoint=no --diskspec ", []string{"vda"}},
		{"vbackup checkpoint-create " + dom + " " + files + "/disk-", []string{files + "/disk-a.qcow2", files + "/disk-b.qcow2"}},
		{"vbackup backup-begin " + dom + " --tar", []string{"--target-dir"}},
		{"vbackup backup-begin " + dom + " --server u", []string{"unix:"}},
		{"vbackup backup " + d.prefix, []string{d.checkpoints, d.running, d.stopped}},
		{"vbackup backup-status " + d.prefix, []string{d.checkpoints, d.running}},
		{"vbackup backup " + dom + " --disk ", []string{"vda", "vdb"}},
		{"vbackup backup " + dom + " --level ", []string{"auto", "full", "inc"}},
		{"vbackup backups " + files + "/vm1-b", []string{store}},
		{"vbackup restore --from " + store + " --at ", []string{b[0], b[1], b[2], "latest"}},
		{"vbackup verify --from=" + store + " --at=vbackup-20261124T03", []string{"--at=" + b[2]}},
		{"vbackup restore --from " + store + " --at " + b[0] + " --disk ", []string{"vda", "vdb"}},
	}
	shells := []struct {
		name     string
		need     func(t *testing.T)
		complete func(line string) []string
	}{
		{"bash", func(t *testing.T) { need(t, "bash", "bash"); need(t, "bash-completion", bashCompletion) }, sh.bash},
		{"zsh", func(t *testing.T) { need(t, "zsh", "zsh") }, sh.zsh},
		{"fish", func(t *testing.T) { need(t, "fish", "fish") }, sh.fish},
	}
	for _, shell := range shells {
		t.Run(shell.name, func(t *testing.T) {
			shell.need(t)
			sh.t = t
			for _, c := range cases {
				got := shell.complete(c.line)
				for i, g := range got {
					// fish adds the slash of a folder; bash and zsh leave it to the display
					got[i] = strings.TrimSuffix(g, "/")
				}
				slices.Sort(got)
				got = slices.Compact(got)
				want := slices.Clone(c.want)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s: got %q, want %q", c.line, got, want)
				}
			}
			// A daemon that is down: no candidates, at once, and quiet
			// (run fails the test on anything printed to stderr). "At
			// once" is measured against a completion that needs no
			// libvirt, run just before in the same shell: a shell's own
			// start takes seconds on a loaded machine, waiting out the
			// lookup budget takes lookupBudget more.
			start := time.Now()
			shell.complete("vbackup checkpoint-l")
			alone := time.Since(start)
			start = time.Now()
			down := "vbackup -c qemu+unix:///session?socket=" + filepath.Join(files, "none.sock") + " backup-begin "
			if got := shell.complete(down); len(got) != 0 {
				t.Errorf("%s: got %q from a daemon that is down", down, got)
			}
			if took := time.Since(start); took > alone+lookupBudget*2/3 {
				t.Errorf("%s: took %v, against %v for a completion without libvirt: it waited for a daemon that is down", down, took, alone)
			}
		})
	}
}

// A connection that would ask for a password gets none of the terminal: a
// fake ssh that tries to prompt on /dev/tty and then hangs gives no
// candidates within the budget, nothing on the terminal, and was started in
// batch mode. bash runs on a pseudo-terminal (script), as a user's would.
func TestCompleteNeverPrompts(t *testing.T) {
	need(t, "bash", "bash")
	need(t, "bash-completion", bashCompletion)
	need(t, "script (util-linux)", "script")
	bin := vbackupBinary(t)
	fake := t.TempDir()
	log := filepath.Join(fake, "ssh.log")
	ssh := "#!/bin/sh\n" +
		"echo \"$*\" >> " + shellQuote(log) + "\n" +
		"if (exec 3<>/dev/tty) 2>/dev/null; then printf 'vbtest password: ' >/dev/tty; read -r pw </dev/tty; fi\n" +
		"sleep 60\n"
	if err := os.WriteFile(filepath.Join(fake, "ssh"), []byte(ssh), 0o755); err != nil {
		t.Fatal(err)
	}
	sh := newShellRun(t, bin, "")
	sh.env = append(sh.env, "PATH="+fake+":"+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	line := "vbackup -c qemu+ssh://vbtest.invalid/system backup-begin "
	program := filepath.Join(fake, "complete.bash")
	if err := os.WriteFile(program, []byte(sh.bashProgram(line)+"\necho vbtest-done\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out := sh.run("script", "-qec", "bash --norc --noprofile "+shellQuote(program), "/dev/null")
	took := time.Since(start)
	if strings.Contains(out, "password") || strings.TrimSpace(strings.ReplaceAll(out, "\r", "")) != "vbtest-done" {
		t.Errorf("the terminal showed:\n%q\nwant only the script's own end mark", out)
	}
	// The fake ssh hangs for a minute: a completion that waited for it
	// would take that long; one that kept to lookupBudget ends well before,
	// however loaded the machine.
	if took > 30*time.Second {
		t.Errorf("the completion took %v: it waited for ssh beyond its budget of %v", took, lookupBudget)
	}
	ran, err := os.ReadFile(log)
	if err != nil {
		t.Fatalf("libvirt never ran ssh: %v", err)
	}
	if !strings.Contains(string(ran), "BatchMode=yes") {
		t.Errorf("ssh ran without batch mode: %s", ran)
	}
}
