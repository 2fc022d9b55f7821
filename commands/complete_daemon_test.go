package commands

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vbackup/internal/testbed"
	"vbackup/virt"
	"vbackup/virt/libvirtconn"
)

// completionDomains are domains of the test bed for the completion tests.
// Their names share a prefix that no other test's domains have, so that
// completing that prefix gives exactly these, whatever else runs on the bed.
type completionDomains struct {
	prefix      string
	checkpoints string // running, disks vda (qcow2) and vdb (raw), checkpoints monday and tuesday
	running     string // running, no checkpoint
	stopped     string // defined, not running
}

func newCompletionDomains(t *testing.T, bed *testbed.Bed) completionDomains {
	t.Helper()
	d := completionDomains{checkpoints: bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M"), running: bed.Domain(t)}
	d.prefix = d.checkpoints[:strings.LastIndex(d.checkpoints, "-")+1]
	if !strings.HasPrefix(d.running, d.prefix) {
		t.Fatalf("domains %s and %s do not share a prefix", d.checkpoints, d.running)
	}
	d.stopped = d.prefix + "stopped"
	defineStopped(t, bed, d.stopped)
	for _, cp := range []string{"monday", "tuesday"} {
		bed.Virsh(t, "checkpoint-create-as", d.checkpoints, cp, "--diskspec", "vdb,checkpoint=no")
	}
	return d
}

// defineStopped defines domains that never run (no disk: they only need to
// be listed); tb's cleanup undefines them. One virsh call defines them all.
func defineStopped(tb testing.TB, bed *testbed.Bed, names ...string) {
	tb.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	var define, undefine []string
	for i, name := range names {
		file := filepath.Join(dir, fmt.Sprintf("%d.xml", i))
		doc := fmt.Sprintf("<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory>"+
			"<os><type arch='x86_64'>hvm</type></os><devices><emulator>%s</emulator></devices></domain>", name, qemu)
		if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
			tb.Fatal(err)
		}
		define = append(define, "define "+file)
		undefine = append(undefine, "undefine "+name)
	}
	tb.Cleanup(func() {
		if _, err := bed.TryVirsh(strings.Join(undefine, " ; ")); err != nil {
			tb.Errorf("undefining the stopped domains: %v", err)
		}
	})
	bed.Virsh(tb, strings.Join(define, " ; "))
}

// bedOpen opens the bed's connection when the completion names none.
func bedOpen(bed *testbed.Bed) OpenFunc {
	return func(ctx context.Context, uri string, debug io.Writer) (virt.Conn, error) {
		if uri == "" {
			uri = bed.URI()
		}
		c, err := libvirtconn.Open(ctx, uri, libvirtconn.Options{Debug: debug})
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// What each command's DOMAIN completes to, as virsh's completer filters:
// running domains for a backup, domains with checkpoints for the checkpoint
// commands but the two that create one.
func TestCompleteRealDaemon(t *testing.T) {
	bed := testbed.Get(t)
	d := newCompletionDomains(t, bed)
	open := bedOpen(bed)
	check := func(want []string, words ...string) {
		t.Helper()
		slices.Sort(want)
		if _, got := completeOut(t, open, nil, words...); !slices.Equal(got, want) {
			t.Errorf("%q: got %q, want %q", words, got, want)
		}
	}
	for _, cmd := range []string{"backup-begin", "backup-end", "backup-status", "backup-dumpxml", "backup-fetch"} {
		check([]string{d.checkpoints, d.running}, cmd, d.prefix)
	}
	// 'backup' reads a shut-off domain's images too.
	check([]string{d.checkpoints, d.running, d.stopped}, "backup", d.prefix)
	for _, cmd := range []string{"checkpoint-create", "checkpoint-create-as"} {
		check([]string{d.checkpoints, d.running, d.stopped}, cmd, d.prefix)
	}
	for _, cmd := range []string{"checkpoint-list", "checkpoint-info", "checkpoint-dumpxml", "checkpoint-parent", "checkpoint-delete", "checkpoint-edit"} {
		check([]string{d.checkpoints}, cmd, d.prefix)
	}
	check([]string{"monday", "tuesday"}, "checkpoint-info", d.checkpoints, "")
	check([]string{"--from=tuesday"}, "checkpoint-list", d.checkpoints, "--from=t")
	check([]string{"monday"}, "-c", bed.URI(), "backup-begin", d.checkpoints, "--incremental", "m")
	check([]string{"vda", "vdb"}, "backup-begin", d.checkpoints, "--disk", "")
	check([]string{"vdb"}, "backup", d.checkpoints, "--to", "/b", "--disk", "vda", "--disk", "")
	check(nil, "backup", d.checkpoints, "--disk", "vda,")
	check([]string{"vda,incremental=monday", "vda,incremental=tuesday"}, "backup-begin", d.checkpoints, "--disk", "vda,incremental=")
	check([]string{"vdb"}, "checkpoint-create-as", d.checkpoints, "--diskspec", "vda", "--diskspec", "")
	check(nil, "checkpoint-info", d.running, "")
}

// BenchmarkComplete measures completions on the local socket of a bed with
// 200 domains (one running, with 100 checkpoints; 199 defined, stopped).
// "lookup" is the libvirt calls of one completion, on a connection opened
// once; "binary" is the whole program as a shell runs it: start, connect,
// look up, print.
//
//	VBACKUP_TESTBED=/tmp/bed go test ./commands -run '^$' -bench Complete
func BenchmarkComplete(b *testing.B) {
	bed := testbed.Get(b)
	dom := bed.Domain(b, "vda:qcow2:64M", "vdb:raw:16M")
	var cmds []string
	for i := range 100 {
		cmds = append(cmds, fmt.Sprintf("checkpoint-create-as %s cp%03d --diskspec vdb,checkpoint=no", dom, i))
	}
	bed.Virsh(b, strings.Join(cmds, " ; "))
	var stopped []string
	for i := range 199 {
		stopped = append(stopped, fmt.Sprintf("%s-s%03d", dom, i))
	}
	defineStopped(b, bed, stopped...)

	conn, err := bedOpen(bed)(context.Background(), "", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	env, _, _ := testEnv(func(context.Context, string, io.Writer) (virt.Conn, error) { return keepOpen{conn}, nil }, nil)
	root := newRoot(env)
	for _, bc := range []struct {
		name  string
		words []string
		least int
	}{
		{"lookup/running domains", []string{"backup-begin", ""}, 1},
		{"lookup/all domains", []string{"checkpoint-create", ""}, 200},
		{"lookup/domains with checkpoints", []string{"checkpoint-list", ""}, 1},
		{"lookup/100 checkpoints", []string{"checkpoint-info", dom, ""}, 100},
		{"lookup/disks", []string{"backup-begin", dom, "--disk", ""}, 2},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if c := complete(context.Background(), env, root, bc.words); len(c.cands) < bc.least {
					b.Fatalf("%q: %d candidates, want at least %d", bc.words, len(c.cands), bc.least)
				}
			}
		})
	}
	bin := vbackupBinary(b)
	for _, bc := range []struct {
		name  string
		words []string
	}{
		{"binary/running domains", []string{"backup-begin", ""}},
		{"binary/domains with checkpoints", []string{"checkpoint-list", ""}},
		{"binary/100 checkpoints", []string{"checkpoint-info", dom, ""}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(bin, append([]string{"__complete", "bash", "--", "-c", bed.URI()}, bc.words...)...)
				if out, err := cmd.Output(); err != nil || strings.Count(string(out), "\n") < 2 {
					b.Fatalf("%v: %v\n%s", cmd.Args, err, out)
				}
			}
		})
	}
}
