package commands

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/engine"
	"vbackup/internal/testbed"
)

// startServe runs 'vbackup serve' as a process of its own and returns it
// with the URIs it printed (disk -> URI), once it printed disks of them.
func startServe(t *testing.T, disks int, args ...string) (*exec.Cmd, map[string]string, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(vbackupBinary(t), append([]string{"serve"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{b: &bytes.Buffer{}}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	uris := map[string]string{}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for len(uris) < disks || !strings.Contains(stderr.String(), "Ctrl-C stops") {
		select {
		case line, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("serve ended: %s", stderr.String())
			}
			disk, uri, _ := strings.Cut(line, " ")
			uris[disk] = uri
		case <-deadline:
			t.Fatalf("serve is not ready after 30 s: %s", stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return cmd, uris, stderr
}

// stopServe sends SIGINT and wants exit status 130 and no daemon left.
func stopServe(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != ExitInterrupted {
		t.Errorf("serve after SIGINT: %v, want exit status %d", err, ExitInterrupted)
	}
}

// serve's exports read as the point's chain with any NBD client:
// qemu-img compare and nbdcopy against the chain, nbdinfo --map for the
// allocation; Ctrl-C ends it with 130 and leaves nothing running; prune
// waits while it serves; the folder is as it was.
func TestServeSocket(t *testing.T) {
	open, bed := realDaemon(t)
	testbed.Need(t, "nbdinfo", "nbdcopy")
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:qcow2:16M")
	bed.Write(t, dom, "vda", 0xcd, 4<<20, 1<<20)
	bed.Write(t, dom, "vdb", 0xab, 0, 512<<10)
	dir := filepath.Join(t.TempDir(), "backups")
	day := time.Date(2026, 11, 1, 1, 0, 0, 0, time.UTC)
	wantCode(t, vbAt(t, open, day, "backup", dom, "--to", dir, "--compress", "zstd"), ExitOK)
	bed.Write(t, dom, "vda", 0xee, 8<<20, 1<<20)
	wantCode(t, vbAt(t, open, day.Add(time.Hour), "backup", dom, "--to", dir), ExitOK)
	before := folderState(t, dir)
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	first, last := store.Backups[0], store.Backups[1]

	sock := filepath.Join(t.TempDir(), "nbd.sock")
	cmd, uris, _ := startServe(t, 2, "--from", dir, "--at", first.Name(), "--socket", sock)
	if len(uris) != 2 || uris["vda"] != "nbd+unix:///vda?socket="+sock || uris["vdb"] != "nbd+unix:///vdb?socket="+sock {
		t.Errorf("URIs printed: %v", uris)
	}
	for _, d := range []string{"vda", "vdb"} {
		md, _ := first.Disk(d)
		tool(t, "qemu-img", "compare", "-f", "qcow2", first.File(md), uris[d])
	}
	vda, _ := last.Disk("vda")
	if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", last.File(vda), uris["vda"]).CombinedOutput(); err == nil {
		t.Errorf("the first point's export reads as the last point: %s", out)
	}
	m := tool(t, "nbdinfo", "--map", uris["vda"])
	if !strings.Contains(m, "4194304     1048576    0  data") {
		t.Errorf("nbdinfo --map does not show the 1 MiB written at 4 MiB as data:\n%s", m)
	}
	raw := filepath.Join(t.TempDir(), "vdb.raw")
	tool(t, "nbdcopy", uris["vdb"], raw)
	vdb, _ := first.Disk("vdb")
	if got, want := fileSum(t, raw), imageSum(t, first.File(vdb), "qcow2"); got != want {
		t.Errorf("nbdcopy of vdb: %s, the chain holds %s", got, want)
	}
	pr := vb(t, open, "prune", "--from", dir, "--keep-last", "1")
	wantCode(t, pr, ExitFailure)
	wantStderr(t, pr, "is reading the backups")
	stopServe(t, cmd)
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("the socket %s is left", sock)
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu-storage-daemon.*"+sock).Output(); len(out) > 0 {
		t.Errorf("qemu-storage-daemon still serves %s: %s", sock, out)
	}

	// One disk, the latest point, over TLS on loopback TCP.
	port := freePort(t)
	cmd, uris, _ = startServe(t, 1, "--from", dir, "--disk", "vda", "--tcp", fmt.Sprintf("127.0.0.1:%d", port), "--tls", "--tls-certs", filepath.Join(bed.Dir(), "pki", "backup"))
	want := fmt.Sprintf("nbds://127.0.0.1:%d/vda", port)
	if len(uris) != 1 || uris["vda"] != want {
		t.Errorf("URIs printed: %v, want vda %s", uris, want)
	}
	tlsURI := want + "?tls-certificates=" + bed.TLSClientDir(t)
	raw = filepath.Join(t.TempDir(), "vda.raw")
	tool(t, "nbdcopy", tlsURI, raw)
	if got, want := fileSum(t, raw), imageSum(t, last.File(vda), "qcow2"); got != want {
		t.Errorf("nbdcopy over TLS: %s, the chain holds %s", got, want)
	}
	if out, err := exec.Command("nbdinfo", strings.Replace(want, "nbds:", "nbd:", 1)).CombinedOutput(); err == nil {
		t.Errorf("a client without TLS was served:\n%s", out)
	}
	stopServe(t, cmd)
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	sameFolder(t, dir, before)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cat whose reader stops early (| head) or that is interrupted by Ctrl-C
// unmounts before it exits: no mount is left behind.
func TestCatLeavesNoMount(t *testing.T) {
	open, bed := realDaemon(t)
	src := sourceTree(t, "catstop")
	dom := imageDomain(t, bed, ext4Image(t, src, "stop", 64<<20), "64M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	mine := func() (n int) {
		all, _ := engine.Mounts("")
		for _, m := range all {
			if m.Folder == dir {
				n++
			}
		}
		return n
	}
	for _, how := range []string{"head", "SIGINT"} {
		cmd := exec.Command(vbackupBinary(t), "cat", "--from", dir, "/big.bin")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The copy has begun, and blocks on the full pipe.
		first := make([]byte, 10)
		if _, err := io.ReadFull(stdout, first); err != nil {
			t.Fatalf("%s: %v; %s", how, err, stderr.String())
		}
		if mine() != 1 {
			t.Errorf("%s: cat's mount is not recorded while it reads", how)
		}
		want := ExitOK
		if how == "head" {
			stdout.Close()
		} else {
			cmd.Process.Signal(syscall.SIGINT)
			time.Sleep(200 * time.Millisecond)
			io.Copy(io.Discard, stdout)
			want = ExitInterrupted
		}
		err = cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != want {
			t.Errorf("%s: exit %d (%v), want %d; stderr:\n%s", how, code, err, want, stderr.String())
		}
		if n := mine(); n != 0 {
			t.Errorf("%s: cat left %d mount(s) behind", how, n)
		}
	}
}
