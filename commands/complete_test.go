package commands

import (
	"context"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/virt"
	"vbackup/virt/libvirtconn"
	"vbackup/xmlgen"
)

var update = flag.Bool("update", false, "rewrite the completion scripts committed under completions/")

// In-process completions must not detach the test binary from its terminal.
func init() { isolateCompletion = func() {} }

// completeOut runs 'vbackup __complete zsh -- words...' and returns its
// first line and the candidates' values; it fails t on anything printed to
// stderr or a non-zero exit.
func completeOut(t *testing.T, open OpenFunc, environ map[string]string, words ...string) (head string, values []string) {
	t.Helper()
	r := vbEnv(t, open, environ, append([]string{"__complete", "zsh", "--"}, words...)...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("__complete %q: exit %d, stderr %q", words, r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	for _, l := range lines[1:] {
		v, _, _ := strings.Cut(l, "\t")
		values = append(values, v)
	}
	return lines[0], values
}

// noConn is the connection of completions that must not need one.
func noConn(t *testing.T) OpenFunc {
	return func(context.Context, string, io.Writer) (virt.Conn, error) {
		t.Error("this completion opened a connection")
		return nil, virt.ErrConnect
	}
}

func TestCompleteWithoutLibvirt(t *testing.T) {
	checkpointCommands := []string{"checkpoint-create", "checkpoint-create-as", "checkpoint-list", "checkpoint-dumpxml",
		"checkpoint-info", "checkpoint-parent", "checkpoint-delete", "checkpoint-edit"}
	tests := []struct {
		words []string
		head  string // "words" unless given
		want  []string
	}{
		{words: []string{"checkpoint-"}, want: checkpointCommands},
		{words: []string{"co"}, want: []string{"completion"}},
		{words: []string{"nosuch", ""}},
		{words: []string{"__complete", ""}},
		{words: []string{"-"}, want: []string{"--connect", "-c", "--debug", "--help", "-h", "--version", "-v"}},
		{words: []string{"--d"}, want: []string{"--debug"}},
		{words: []string{"--debug", "checkpoint-l"}, want: []string{"checkpoint-list"}},
		{words: []string{"-c", ""}, want: []string{"qemu:///system", "qemu:///session"}},
		{words: []string{"--connect=qemu:///sy"}, want: []string{"--connect=qemu:///system"}},
		{words: []string{"completion", ""}, want: []string{"bash", "zsh", "fish", "pwsh"}},
		{words: []string{"help", "checkpoint-i"}, want: []string{"checkpoint-info"}},

		// Flags: the command's and the global ones, less those given already.
		{words: []string{"checkpoint-list", "vm1", "--t"}, want: []string{"--tree", "--topological"}},
		{words: []string{"checkpoint-list", "vm1", "--tree", "--t"}, want: []string{"--topological"}},
		{words: []string{"checkpoint-parent", "vm1", "cp", ""}, want: []string{"--help", "-h", "--connect", "-c", "--debug"}},
		{words: []string{"checkpoint-parent", "vm1", "cp", "--", "-"}},
		{words: []string{"checkpoint-create-as", "vm1", "--diskspec", "vda", "--d"}, want: []string{"--description", "--diskspec", "--debug"}},
		{words: []string{"backup-begin", "vm1", "--ch"}, want: []string{"--checkpoint", "--checkpoint-description", "--checkpointxml"}},

		// Arguments and flag values that are paths or fixed words.
		{words: []string{"checkpoint-create", "vm1", ""}, head: "files\t"},
		{words: []string{"checkpoint-create-as", "vm1", "n"}},
		{words: []string{"backup-begin", "vm1", "--backupxml", "/tm"}, head: "files\t"},
		{words: []string{"backup-begin", "vm1", "--checkpointxml=/tm"}, head: "files\t--checkpointxml="},
		{words: []string{"backup-begin", "vm1", "--target-dir", ""}, head: "dirs\t"},
		{words: []string{"backup-begin", "vm1", "--scratch-dir=/"}, head: "dirs\t--scratch-dir="},
		{words: []string{"backup-begin", "vm1", "--checkpoint", ""}},
		{words: []string{"backup-begin", "vm1", "--format", ""}, want: []string{"qcow2", "raw"}},
		{words: []string{"backup-begin", "vm1", "--format=r"}, want: []string{"--format=raw"}},
		{words: []string{"backup-begin", "vm1", "--server", ""}, want: []string{"unix:", "tcp:"}},
		{words: []string{"backup-begin", "vm1", "--server", "unix:/ru"}, head: "files\tunix:"},
		{words: []string{"backup-begin", "vm1", "--server=unix:"}, head: "files\t--server=unix:"},
		{words: []string{"backup-begin", "vm1", "--server", "tcp:l"}},

		// --disk: after a comma, the keys the job's mode takes.
		{words: []string{"backup-begin", "vm1", "--disk", "vda,"},
			want: []string{"vda,skip", "vda,full", "vda,incremental=", "vda,type=", "vda,target=", "vda,format="}},
		{words: []string{"backup-begin", "vm1", "--pull", "--disk", "vda,"},
			want: []string{"vda,skip", "vda,full", "vda,incremental=", "vda,type=", "vda,scratch=", "vda,export=", "vda,bitmap="}},
		{words: []string{"backup-begin", "vm1", "--disk", "vda,full,"}, want: []string{"vda,full,type=", "vda,full,target=", "vda,full,format="}},
		{words: []string{"backup-begin", "vm1", "--disk", "vda,skip,"}},
		{words: []string{"backup-begin", "vm1", "--disk", "vda,target=/b/x,f"}, want: []string{"vda,target=/b/x,full", "vda,target=/b/x,format="}},
		{words: []string{"backup-begin", "vm1", "--disk=vda,t"}, want: []string{"--disk=vda,type=", "--disk=vda,target="}},
		{words: []string{"backup-begin", "vm1", "--disk", "vda,format="}, want: []string{"vda,format=qcow2", "vda,format=raw"}},
		{words: []string{"backup-begin", "vm1", "--disk", "vda,type=b"}, want: []string{"vda,type=block"}},
		{words: []string{"backup-begin", "vm1", "--disk", "vda,target=/tm"}, head: "files\tvda,target="},
		{words: []string{"backup-begin", "vm1", "--pull", "--disk=vda,scratch="}, head: "files\t--disk=vda,scratch="},
		{words: []string{"backup-begin", "vm1", "--disk", "vda,export="}},
		{words: []string{"backup-begin", "vm1", "--disk", "a,,b,"},
			want: []string{"a,,b,skip", "a,,b,full", "a,,b,incremental=", "a,,b,type=", "a,,b,target=", "a,,b,format="}},

		// backup, restore, verify and backups: folders, levels, formats.
		{words: []string{"backup", "vm1", "--to", ""}, head: "dirs\t"},
		{words: []string{"backup", "vm1", "--to=/v"}, head: "dirs\t--to="},
		{words: []string{"backup", "vm1", "--level", ""}, want: []string{"auto", "full", "inc"}},
		{words: []string{"backup", "vm1", "--level=i"}, want: []string{"--level=inc"}},
		{words: []string{"backup", "vm1", "--l"}, want: []string{"--level"}},
		{words: []string{"backup", "--disk", ""}}, // the domain is not typed yet
		{words: []string{"backups", ""}, head: "dirs\t"},
		{words: []string{"backups", "/srv/vm1", ""}, want: []string{"--json", "--help", "-h", "--connect", "-c", "--debug"}},
		{words: []string{"restore", "--from", ""}, head: "dirs\t"},
		{words: []string{"restore", "--to", ""}, head: "dirs\t"},
		{words: []string{"restore", "--from", "/srv/vm1", "--to=/r"}, head: "dirs\t--to="},
		{words: []string{"restore", "--format", ""}, want: []string{"qcow2", "raw"}},
		{words: []string{"restore", "--define", ""}},
		{words: []string{"restore", "--at", ""}, want: []string{"latest"}}, // no --from yet
		{words: []string{"restore", "--disk", ""}},
		{words: []string{"verify", "--from=/"}, head: "dirs\t--from="},
		{words: []string{"verify", "--at", ""}, want: []string{"latest", "all"}},
		{words: []string{"verify", "--at=a"}, want: []string{"--at=all"}},
		{words: []string{"mount", "--from", ""}, head: "dirs\t"},
		{words: []string{"mount", "--from", "/srv/vm1", ""}, head: "dirs\t"},
		{words: []string{"umount", ""}, head: "dirs\t"},
		{words: []string{"serve", "--socket", ""}},

		// --diskspec: checkpoint-create-as's keys.
		{words: []string{"checkpoint-create-as", "vm1", "--diskspec", "vdb,"}, want: []string{"vdb,checkpoint=", "vdb,bitmap="}},
		{words: []string{"checkpoint-create-as", "vm1", "--diskspec", "vdb,checkpoint=n"}, want: []string{"vdb,checkpoint=no"}},
		{words: []string{"checkpoint-create-as", "vm1", "--diskspec", "vdb,checkpoint=no,"}},
		{words: []string{"checkpoint-create-as", "vm1", "--diskspec", "vdb,checkpoint=bitmap,"}, want: []string{"vdb,checkpoint=bitmap,bitmap="}},
	}
	for _, tt := range tests {
		head, got := completeOut(t, noConn(t), nil, tt.words...)
		want := tt.head
		if want == "" {
			want = "words"
		}
		if head != want || !slices.Equal(got, tt.want) {
			t.Errorf("%q:\n got %q %q\nwant %q %q", tt.words, head, got, want, tt.want)
		}
	}
}

// The keys --disk completes are the keys xmlgen.ParseBackupDisk takes.
func TestCompleteDiskKeysAreTheParsers(t *testing.T) {
	var offered []string
	for _, pull := range []bool{false, true} {
		for _, k := range backupDiskKeys(pull) {
			if !slices.Contains(offered, k.name) {
				offered = append(offered, k.name)
			}
		}
	}
	_, err := xmlgen.ParseBackupDisk("vda,nosuchkey")
	_, list, ok := strings.Cut(errText(err), "keys are ")
	if !ok {
		t.Fatalf("ParseBackupDisk no longer lists its keys: %v", err)
	}
	parsed := strings.Split(list, ", ")
	slices.Sort(parsed)
	slices.Sort(offered)
	if !slices.Equal(offered, parsed) {
		t.Errorf("--disk completion offers keys %q; ParseBackupDisk takes %q", offered, parsed)
	}
	for _, k := range checkpointDiskKeys {
		if _, err := xmlgen.ParseDiskSpec("vda," + k.name + "=" + append(k.values, "x")[0]); err != nil {
			t.Errorf("--diskspec completion offers %s=, which ParseDiskSpec refuses: %v", k.name, err)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestShellUnquote(t *testing.T) {
	for in, want := range map[string]string{
		`vm1`:          "vm1",
		`'my vm'`:      "my vm",
		`"my vm"`:      "my vm",
		`my\ vm`:       "my vm",
		`'my v`:        "my v",
		`"a\"b\$c\d"`:  `a"b$c\d`,
		`--disk=vda,x`: "--disk=vda,x",
	} {
		if got := shellUnquote(in); got != want {
			t.Errorf("shellUnquote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCompletionURI(t *testing.T) {
	env := func(def string) *Env {
		return &Env{Getenv: func(k string) string { return map[string]string{"LIBVIRT_DEFAULT_URI": def}[k] }}
	}
	tests := []struct{ typed, def, want string }{
		{"", "", ""},
		{"", "qemu:///system", "qemu:///system"},
		{"qemu:///session", "qemu:///system", "qemu:///session"},
		{"qemu+ssh://root@h/system", "", "qemu+ssh://root@h/system?no_tty=1"},
		{"", "qemu+ssh://h/system?keyfile=/k", "qemu+ssh://h/system?keyfile=/k&no_tty=1"},
		{"qemu+ssh://h/system?no_tty=0", "", "qemu+ssh://h/system?no_tty=0"},
		{"qemu+tcp://h/system", "", "qemu+tcp://h/system"},
	}
	for _, tt := range tests {
		if got := completionURI(env(tt.def), tt.typed); got != tt.want {
			t.Errorf("completionURI(typed %q, default %q) = %q, want %q", tt.typed, tt.def, got, tt.want)
		}
	}
}

func TestRemoteURI(t *testing.T) {
	for uri, want := range map[string]bool{
		"qemu:///system":                    false,
		"qemu+unix:///session?socket=/x":    false,
		"test:///default":                   false,
		"qemu+ssh://root@host/system":       true,
		"qemu+tcp://10.0.0.1:16509/system":  true,
		"qemu+unix://host/system?socket=/s": false,
	} {
		if got := remote(uri); got != want {
			t.Errorf("remote(%q) = %v, want %v", uri, got, want)
		}
	}
}

// The connection a completion opens is the one -c names, else
// $LIBVIRT_DEFAULT_URI.
func TestCompleteConnection(t *testing.T) {
	var got []string
	open := func(_ context.Context, uri string, _ io.Writer) (virt.Conn, error) {
		got = append(got, uri)
		return nil, virt.ErrConnect
	}
	environ := map[string]string{"LIBVIRT_DEFAULT_URI": "qemu:///default"}
	completeOut(t, open, environ, "backup-begin", "")
	completeOut(t, open, environ, "-c", "qemu:///one", "backup-begin", "")
	completeOut(t, open, environ, "checkpoint-list", "--connect=qemu:///two", "")
	completeOut(t, open, environ, "checkpoint-list", "vm1", "--connect", "qemu+ssh://h/system", "--from", "")
	want := []string{"qemu:///default", "qemu:///one", "qemu:///two", "qemu+ssh://h/system?no_tty=1"}
	if !slices.Equal(got, want) {
		t.Errorf("opened %q, want %q", got, want)
	}
}

func TestCompleteTestDriver(t *testing.T) {
	open := testDriver(t)
	check := func(want []string, words ...string) {
		t.Helper()
		if _, got := completeOut(t, open, nil, words...); !slices.Equal(got, want) {
			t.Errorf("%q: got %q, want %q", words, got, want)
		}
	}
	check([]string{"vm1"}, "backup-begin", "")
	check([]string{"vm1"}, "checkpoint-create", "v")
	check(nil, "checkpoint-list", "") // no checkpoints yet
	check([]string{"vda", "vdb"}, "backup-begin", "vm1", "--disk", "")
	check([]string{"vdb"}, "backup-begin", "vm1", "--disk", "vda,skip", "--disk", "")
	check([]string{"--disk=vdb"}, "backup-begin", "vm1", "--disk=vda", "--disk=v")
	check([]string{"vda"}, "checkpoint-create-as", "vm1", "--diskspec", "vdb,checkpoint=no", "--diskspec", "")

	// backup and backup-fetch --disk take a disk's name, not a spec.
	check([]string{"vm1"}, "backup", "")
	check([]string{"vm1"}, "backup", "other", "") // backup takes DOMAIN...
	check(nil, "backup-begin", "vm1", "v")        // backup-begin takes one
	check([]string{"vda", "vdb"}, "backup", "vm1", "--disk", "")
	check([]string{"vdb"}, "backup", "vm1", "--disk", "vda", "--disk", "")
	check([]string{"--disk=vdb"}, "backup", "vm1", "--disk=vda", "--disk=v")
	check(nil, "backup", "vm1", "--disk", "vda,")
	check([]string{"vda", "vdb"}, "backup-fetch", "vm1", "--to", "/b", "--disk", "")
	check(nil, "backup-fetch", "vm1", "--disk", "vda,")

	for _, name := range []string{"monday", "tuesday"} {
		wantCode(t, vb(t, open, "checkpoint-create-as", "vm1", name), 0)
	}
	check([]string{"vm1"}, "checkpoint-list", "")
	check([]string{"monday", "tuesday"}, "checkpoint-info", "vm1", "")
	check([]string{"tuesday"}, "checkpoint-delete", "vm1", "t")
	check([]string{"monday", "tuesday"}, "checkpoint-list", "vm1", "--from", "")
	check(nil, "backup-begin", "--incremental", "") // the domain is not typed yet
	check([]string{"monday"}, "backup-begin", "vm1", "--incremental", "m")
	check([]string{"--incremental=monday"}, "backup-begin", "vm1", "--incremental=m")
	check([]string{"vda,incremental=monday", "vda,incremental=tuesday"}, "backup-begin", "vm1", "--disk", "vda,incremental=")
	check(nil, "checkpoint-info", "nosuch", "")
	check(nil, "checkpoint-info", "vm1", "monday", "x")
}

// A connection that lists the domains with checkpoints in one call is asked
// that once, instead of each domain for its checkpoints.
func TestCompleteDomainsWithCheckpointsInOneCall(t *testing.T) {
	base := testDriver(t)
	var calls int
	open := func(ctx context.Context, uri string, debug io.Writer) (virt.Conn, error) {
		c, err := base(ctx, uri, debug)
		return oneCallLister{c, &calls}, err
	}
	// vm1 has no checkpoint: only the one call can have said it has.
	if _, got := completeOut(t, open, nil, "checkpoint-info", ""); !slices.Equal(got, []string{"vm1"}) || calls != 1 {
		t.Errorf("got %q after %d calls, want [vm1] after 1", got, calls)
	}
}

type oneCallLister struct {
	virt.Conn
	calls *int
}

func (l oneCallLister) DomainsWithCheckpoints(context.Context) ([]string, error) {
	*l.calls++
	return []string{"gone", "vm1"}, nil
}

// A daemon that is down, or one that never answers, gives no candidates,
// within the budget, and prints nothing.
func TestCompleteUnreachable(t *testing.T) {
	dir := t.TempDir()
	silent := filepath.Join(dir, "silent.sock")
	l, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	t.Cleanup(func() {
		l.Close()
		for len(accepted) > 0 {
			(<-accepted).Close()
		}
	})
	go func() { // accept and never answer, as a stuck daemon does
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c:
			default:
				c.Close()
			}
		}
	}()
	open := func(ctx context.Context, uri string, debug io.Writer) (virt.Conn, error) {
		c, err := libvirtconn.Open(ctx, uri, libvirtconn.Options{Debug: debug})
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	for _, uri := range []string{
		"qemu+unix:///session?socket=" + filepath.Join(dir, "none.sock"),
		"qemu+unix:///session?socket=" + silent,
	} {
		start := time.Now()
		head, got := completeOut(t, open, nil, "-c", uri, "backup-begin", "")
		took := time.Since(start)
		if head != "words" || len(got) != 0 {
			t.Errorf("%s: got %q %q, want no candidates", uri, head, got)
		}
		// The silent daemon never answers: without the budget the
		// completion would hang until the test's own deadline.
		if took > lookupBudget+10*time.Second {
			t.Errorf("%s: the completion took %v; the budget is %v", uri, took, lookupBudget)
		}
	}
}

// The scripts under completions/ are what 'vbackup completion SHELL' prints;
// go test ./commands -run Committed -update rewrites them.
func TestCompletionScriptsCommitted(t *testing.T) {
	for shell, file := range committedScripts {
		r := vb(t, noConn(t), "completion", shell)
		wantCode(t, r, 0)
		path := filepath.Join("..", "completions", file)
		if *update {
			if err := os.WriteFile(path, []byte(r.stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		committed, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test ./commands -run Committed -update writes it)", err)
		}
		if string(committed) != r.stdout {
			t.Errorf("%s differs from 'vbackup completion %s' (go test ./commands -run Committed -update rewrites it)", path, shell)
		}
	}
	if r := vb(t, noConn(t), "completion", "pwsh"); !strings.Contains(r.stdout, "Register-ArgumentCompleter") {
		t.Errorf("completion pwsh printed:\n%s", r.stdout)
	}
	r := vb(t, noConn(t), "completion", "tcsh")
	wantCode(t, r, ExitUsage)
	wantStderr(t, r, `unknown shell "tcsh": bash, zsh, fish or pwsh`)
}
