package commands

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// jsonRun is 'vbackup ARGS...' (with --json among them) run as its own
// process, its progress read line by line, so that a test can act while
// the data is half copied.
type jsonRun struct {
	cmd    *exec.Cmd
	sc     *bufio.Scanner
	stderr strings.Builder
}

func startJSON(t *testing.T, args ...string) *jsonRun {
	t.Helper()
	r := &jsonRun{cmd: exec.Command(vbackupBinary(t), args...)}
	r.cmd.Stderr = &r.stderr
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.sc = bufio.NewScanner(stdout)
	return r
}

// midway reads progress until a job line reports at least least bytes
// and not all of them copied; false when the output ended first.
func (r *jsonRun) midway(least uint64) bool {
	for r.sc.Scan() {
		var line struct {
			Type        string
			Done, Total uint64
		}
		if json.Unmarshal(r.sc.Bytes(), &line) == nil && line.Type == "job" && line.Total > 0 && line.Done >= least && line.Done < line.Total {
			return true
		}
	}
	return false
}

// wait reads the rest of the output and waits for the process.
func (r *jsonRun) wait() error {
	for r.sc.Scan() {
	}
	return r.cmd.Wait()
}
