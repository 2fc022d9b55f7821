package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/job"
	"vbackup/progress"
	"vbackup/virt"
	"vbackup/virt/virtfake"
)

// manyBed is a fake libvirt with several running domains, each with one
// qcow2 disk, backed up by push (the fake's push "writes" an empty qcow2).
type manyBed struct {
	conn *virtfake.Conn
	doms map[string]*virtfake.Domain
	root string
	mu   sync.Mutex
	seen []string // the domains whose output was asked for, in order
}

func newManyBed(t *testing.T, names ...string) *manyBed {
	t.Helper()
	b := &manyBed{conn: virtfake.New(), doms: map[string]*virtfake.Domain{}, root: filepath.Join(t.TempDir(), "backups")}
	for _, n := range names {
		d := b.conn.AddDomain(virtfake.DomainSpec{Name: n, Disks: []virt.Disk{{Target: "vda"}}})
		d.OnPushComplete(func(disk, target string) error { return writeQcow2(target) })
		b.doms[n] = d
	}
	return b
}

func (b *manyBed) request(t *testing.T, parallel int, names ...string) ManyRequest {
	return ManyRequest{Names: names, Root: b.root, Parallel: parallel, Backup: BackupRequest{Level: chain.WantAuto, Push: true,
		Now: time.Now, Host: "test-host", PID: os.Getpid(), Sockets: job.Sockets{Base: t.TempDir()}}}
}

func (b *manyBed) output() ManyOutput {
	return ManyOutput{Domain: func(name string) (progress.Printer, progress.Notifier) {
		b.mu.Lock()
		b.seen = append(b.seen, name)
		b.mu.Unlock()
		return progress.NewQuiet(), progress.NewNotifier(nil, nil)
	}}
}

func outcomes(res []DomainResult) []string {
	var out []string
	for _, r := range res {
		out = append(out, r.Domain+"="+string(r.Outcome))
	}
	return out
}

// running lists the domains whose backup job runs now.
func (b *manyBed) running() []string {
	var names []string
	for n, d := range b.doms {
		if st, err := d.Job(context.Background(), false); err == nil && st.State == virt.JobRunning {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Three domains, two at a time, one failing: two jobs really run at once,
// never three; the failure stops nothing; the results come in the order
// given; each good one is a backup in its own folder.
func TestBackupManyParallel(t *testing.T) {
	b := newManyBed(t, "web", "db", "mail")
	b.doms["db"].OnPushComplete(func(disk, target string) error { return errors.New("No space left on device") })
	for _, d := range b.doms {
		d.HoldPush(true)
	}
	// The test ends the held jobs one by one, watching how many run.
	overlap, most := false, 0
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		ended := map[string]bool{}
		for deadline := time.Now().Add(20 * time.Second); len(ended) < 3 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			run := b.running()
			most = max(most, len(run))
			if len(run) == 2 {
				overlap = true
			}
			// End one once two run (or more: the test then fails), or the
			// last one alone.
			if len(run) >= 2 || (len(run) == 1 && len(ended) == 2) {
				ended[run[0]] = true
				b.doms[run[0]].EndJob(true, "")
			}
		}
	}()
	res, err := BackupMany(context.Background(), b.conn, b.request(t, 2, "web", "db", "mail"), b.output())
	<-watched
	if err != nil {
		t.Fatal(err)
	}
	if got, want := outcomes(res), []string{"web=ok", "db=failed", "mail=ok"}; !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	if !overlap || most != 2 {
		t.Errorf("with --parallel 2, at most %d jobs ran at once (overlap seen: %v); want 2", most, overlap)
	}
	if !strings.Contains(res[1].Err.Error(), "No space left on device") {
		t.Errorf("db's error: %v", res[1].Err)
	}
	for _, r := range []DomainResult{res[0], res[2]} {
		if r.Dir != filepath.Join(b.root, r.Domain) || r.Level != chain.Full || r.Backup == nil {
			t.Errorf("%s: %+v", r.Domain, r)
			continue
		}
		s, err := chain.Open(r.Dir)
		if err != nil || len(s.Backups) != 1 || s.Backups[0].Domain.Name != r.Domain {
			t.Errorf("%s's folder: %v, %v", r.Domain, s, err)
		}
	}
	folderAsItWas(t, res[1].Dir)
	if got := checkpoints(t, b.doms["db"]); len(got) != 0 {
		t.Errorf("the failed domain keeps checkpoints %v", got)
	}
}

// One at a time (the default): never two jobs at once.
func TestBackupManySerial(t *testing.T) {
	b := newManyBed(t, "a", "b", "c")
	most := 0
	for _, d := range b.doms {
		d.OnPushComplete(func(disk, target string) error {
			most = max(most, len(b.running()))
			return writeQcow2(target)
		})
	}
	res, err := BackupMany(context.Background(), b.conn, b.request(t, 1, "c", "a", "b"), b.output())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := outcomes(res), []string{"c=ok", "a=ok", "b=ok"}; !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	if !slices.Equal(b.seen, []string{"c", "a", "b"}) {
		t.Errorf("started in the order %v, want c a b", b.seen)
	}
	if most != 1 {
		t.Errorf("%d jobs ran at once with --parallel 1", most)
	}
}

// --all lists every domain, sorted, minus the excluded ones; in a push, a
// shut-off domain is skipped with the reason (a push needs it running).
func TestBackupManyAll(t *testing.T) {
	b := newManyBed(t, "web1", "web2", "test-x", "old")
	b.doms["old"].Stop()
	req := b.request(t, 2)
	req.All, req.Exclude = true, []string{"test-*"}
	res, err := BackupMany(context.Background(), b.conn, req, b.output())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := outcomes(res), []string{"old=skipped", "web1=ok", "web2=ok"}; !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	if res[0].Reason != "shut off: a push needs it running (without --push its images are read directly)" {
		t.Errorf("skip reason %q", res[0].Reason)
	}
	if _, err := os.Stat(filepath.Join(b.root, "test-x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the excluded domain got a folder: %v", err)
	}
	if _, err := os.Stat(res[0].Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the skipped domain got a folder: %v", err)
	}
}

// --all backs up shut-off domains from their images, each into its
// folder, holding the image's content: a domain shut off is not skipped.
func TestBackupManyAllShutOff(t *testing.T) {
	conn := virtfake.New()
	images := t.TempDir()
	sums := map[string]string{}
	for i, n := range []string{"off1", "off2"} {
		img := filepath.Join(images, n+".qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "4M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
		qemuIO(t, img, "qcow2", fmt.Sprintf("write -P %d 0 1M", 0x30+i))
		sums[n] = sumOf(t, img, "qcow2")
		conn.AddDomain(virtfake.DomainSpec{Name: n, Inactive: true, Disks: []virt.Disk{{Target: "vda", Source: img}}})
	}
	root := filepath.Join(t.TempDir(), "backups")
	req := ManyRequest{All: true, Root: root, Parallel: 2, Backup: BackupRequest{Level: chain.WantAuto,
		Now: time.Now, Host: "test-host", PID: os.Getpid(), Sockets: job.Sockets{Base: t.TempDir()}}}
	b := &manyBed{conn: conn}
	res, err := BackupMany(context.Background(), conn, req, b.output())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := outcomes(res), []string{"off1=ok", "off2=ok"}; !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v (errors: %v, %v)", got, want, res[0].Err, res[1].Err)
	}
	for _, r := range res {
		if r.Dir != filepath.Join(root, r.Domain) || r.Backup == nil || r.Level != chain.Full {
			t.Fatalf("%s: %+v", r.Domain, r)
		}
		d, _ := r.Backup.Disk("vda")
		if d.Checksum != sums[r.Domain] {
			t.Errorf("%s: the backup holds %s, its image %s", r.Domain, d.Checksum, sums[r.Domain])
		}
	}
}

// A name not found fails that domain only, naming what exists; a named
// shut-off domain in a push fails (it was asked for), unlike --all's skip.
func TestBackupManyUnknownAndStopped(t *testing.T) {
	b := newManyBed(t, "vm1", "vm2")
	b.doms["vm2"].Stop()
	res, err := BackupMany(context.Background(), b.conn, b.request(t, 1, "nosuch", "vm1", "vm2"), b.output())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := outcomes(res), []string{"nosuch=failed", "vm1=ok", "vm2=failed"}; !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	if e := res[0].Err; !errors.Is(e, virt.ErrNoDomain) || !strings.HasSuffix(e.Error(), "not found on fake:///default; its domains are vm1, vm2") {
		t.Errorf("nosuch: %v", e)
	}
	// Why depends on what PrepareBackup does with a shut-off domain; in a
	// push (this test's), libvirt must run the job.
	if e := res[2].Err; e == nil || !strings.Contains(e.Error(), `"vm2"`) {
		t.Errorf("vm2: %v", e)
	}
}

// The same domain by its name and its UUID is refused before anything
// starts.
func TestBackupManySameDomainTwice(t *testing.T) {
	b := newManyBed(t, "vm1", "vm2")
	uuid, _ := b.doms["vm1"].UUID(context.Background())
	_, err := BackupMany(context.Background(), b.conn, b.request(t, 2, "vm1", "vm2", uuid), b.output())
	if err == nil || !strings.Contains(err.Error(), `"vm1" and "`+uuid+`" are the same domain vm1`) {
		t.Fatalf("err = %v", err)
	}
	if slices.Contains(b.conn.Calls(), "BeginBackup") || len(b.seen) > 0 {
		t.Errorf("something started: calls %v", b.conn.Calls())
	}
	if _, err := os.Stat(b.root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the root was made: %v", err)
	}
}

// Stopped while the first backup runs: it is undone (no checkpoint, folder
// as it was), the others are not run.
func TestBackupManyInterrupted(t *testing.T) {
	b := newManyBed(t, "a", "b", "c")
	b.doms["a"].HoldPush(true)
	stop := errors.New("interrupted by SIGINT")
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && len(b.running()) == 0; time.Sleep(5 * time.Millisecond) {
		}
		cancel(stop)
	}()
	res, err := BackupMany(ctx, b.conn, b.request(t, 1, "a", "b", "c"), b.output())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := outcomes(res), []string{"a=interrupted", "b=not-run", "c=not-run"}; !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	for _, r := range res {
		if !errors.Is(r.Err, stop) {
			t.Errorf("%s: the error lost the cause: %v", r.Domain, r.Err)
		}
	}
	if got := checkpoints(t, b.doms["a"]); len(got) != 0 {
		t.Errorf("checkpoints after an interrupted backup: %v", got)
	}
	folderAsItWas(t, res[0].Dir)
	if !slices.Equal(b.seen, []string{"a"}) {
		t.Errorf("started %v after the stop", b.seen)
	}
}

func TestFolderName(t *testing.T) {
	for name, want := range map[string]string{
		"web-01":      "web-01",
		"db_2.prod":   "db_2.prod",
		"a/b":         "a%2Fb",
		"..":          "%2E.",
		".hidden":     "%2Ehidden",
		"50%":         "50%25",
		"my vm":       "my%20vm",
		"tab\tnl\n":   "tab%09nl%0A",
		"café":        "café",
		"a%2Fb":       "a%252Fb",
		"user@host:1": "user@host:1",
	} {
		if got := FolderName(name); got != want {
			t.Errorf("FolderName(%q) = %q, want %q", name, got, want)
		}
	}
}
