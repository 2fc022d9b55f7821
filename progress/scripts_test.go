package progress

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const (
	MiB = 1 << 20
	GiB = 1 << 30
)

var t0 = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// script is a job as a watcher would report it.
type script struct {
	name    string
	samples []Sample
	result  Result
}

func scripts() []script {
	return []script{pushTwoDisks(), failedJob(), cancelledJob(), pullJob(), unknownJob()}
}

// pushTwoDisks: vdb (512 MiB) finishes at 3s, vda (1 GiB) at 9s.
func pushTwoDisks() script {
	var s []Sample
	for i := 0; i <= 9; i++ {
		a := min(uint64(i)*120*MiB, GiB)
		b := min(uint64(i)*200*MiB, 512*MiB)
		sa, sb := DiskRunning, DiskRunning
		if i == 9 {
			a, sa = GiB, DiskDone
		}
		if b == 512*MiB {
			sb = DiskDone
		}
		s = append(s, Sample{At: at(time.Duration(i) * time.Second), Mode: ModePush,
			Disks: []Disk{{"vda", a, GiB, sa}, {"vdb", b, 512 * MiB, sb}},
			Done:  a + b, Total: GiB + 512*MiB})
	}
	// A sample without job numbers (the watcher's disk event) keeps them.
	s = append(s, Sample{At: at(9*time.Second + 100*time.Millisecond), Mode: ModePush,
		Disks: []Disk{{"vda", GiB, GiB, DiskDone}, {"vdb", 512 * MiB, 512 * MiB, DiskDone}}})
	return script{"push", s, Result{At: at(9 * time.Second), State: JobCompleted,
		Elapsed: 9 * time.Second, Bytes: GiB + 512*MiB}}
}

// failedJob: vdb fails at 40%; the job fails with it, vda still running.
func failedJob() script {
	disks := func(a, b uint64, sb DiskState) []Disk {
		return []Disk{{"vda", a, GiB, DiskRunning}, {"vdb", b, GiB, sb}}
	}
	return script{"failed", []Sample{
		{At: at(0), Mode: ModePush, Disks: disks(0, 0, DiskRunning), Total: 2 * GiB},
		{At: at(2 * time.Second), Mode: ModePush, Disks: disks(300*MiB, 300*MiB, DiskRunning), Done: 600 * MiB, Total: 2 * GiB},
		{At: at(3 * time.Second), Mode: ModePush, Disks: disks(450*MiB, 410*MiB, DiskFailed), Done: 860 * MiB, Total: 2 * GiB},
	}, Result{At: at(3 * time.Second), State: JobFailed, Error: "No space left on device",
		Elapsed: 3 * time.Second, Bytes: 860 * MiB}}
}

// cancelledJob: interrupted; Finish comes with no final sample.
func cancelledJob() script {
	return script{"cancelled", []Sample{
		{At: at(0), Mode: ModePush, Disks: []Disk{{"sda", 0, 10 * GiB, DiskRunning}}, Total: 10 * GiB},
		{At: at(time.Second), Mode: ModePush, Disks: []Disk{{"sda", 100 * MiB, 10 * GiB, DiskRunning}}, Done: 100 * MiB, Total: 10 * GiB},
		{At: at(2500 * time.Millisecond), Mode: ModePush, Disks: []Disk{{"sda", 100 * MiB, 10 * GiB, DiskRunning}}, Done: 100 * MiB, Total: 10 * GiB},
	}, Result{At: at(3 * time.Second), State: JobCancelled, Error: "interrupted",
		Elapsed: 3 * time.Second, Bytes: 100 * MiB}}
}

// pullJob: two exports read by a client; the scratch space fills up.
func pullJob() script {
	var s []Sample
	for i := 0; i <= 6; i++ {
		s = append(s, Sample{At: at(time.Duration(i) * time.Second), Mode: ModePull,
			Disks:    []Disk{{"vda", 0, 0, DiskExporting}, {"vdb", 0, 0, DiskExporting}},
			TempUsed: uint64(i) * 30 * MiB, TempTotal: 2 * GiB})
	}
	return script{"pull", s, Result{At: at(6 * time.Second), State: JobCompleted, Elapsed: 6 * time.Second}}
}

// unknownJob: the connection is lost mid-way.
func unknownJob() script {
	return script{"unknown", []Sample{
		{At: at(0), Mode: ModePush, Disks: []Disk{{"vda", 0, GiB, DiskRunning}}, Total: GiB},
		{At: at(time.Second), Mode: ModePush, Disks: []Disk{{"vda", 0, GiB, DiskRunning}}, Total: GiB},
		{At: at(2 * time.Second), Mode: ModePush, Disks: []Disk{{"vda", 64 * MiB, GiB, DiskRunning}}, Done: 64 * MiB, Total: GiB},
	}, Result{At: at(40 * time.Second), State: JobUnknown, Error: "the connection to libvirtd was lost",
		Elapsed: 40 * time.Second}}
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}
