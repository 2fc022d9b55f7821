package testbed

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A booted Linux guest: Debian's kernel, an initramfs of busybox and the QEMU
// guest agent, and an ext4 disk (vda, qcow2) that the guest mounts
// read-write on GuestDataDir. scripts/guest.sh builds it once into a cache
// folder; testbed.sh guest boots a domain of it.

// EnvGuestCache names the environment variable that overrides the folder the
// guest is built in (default: the user's cache folder, vbackup/guest).
const EnvGuestCache = "VBACKUP_GUEST_CACHE"

// GuestDataDir is where the guest mounts its disk vda (ext4).
const GuestDataDir = "/data"

// Time limits of a guest: booting under TCG on a loaded machine takes 10 to
// 30 s from start to the agent's first answer.
const (
	guestBootTimeout = 3 * time.Minute
	agentTimeout     = 10 // seconds, for each agent command but the first pings
)

var (
	guestBuildOnce sync.Once
	guestBuildDir  string
	guestBuildErr  error
)

// buildGuest runs scripts/guest.sh build once per process; the script
// itself does nothing when its cache is up to date.
func buildGuest() (string, error) {
	guestBuildOnce.Do(func() {
		dir := os.Getenv(EnvGuestCache)
		if dir == "" {
			base, err := os.UserCacheDir()
			if err != nil {
				guestBuildErr = err
				return
			}
			dir = filepath.Join(base, "vbackup", "guest")
		}
		root, err := ModuleRoot()
		if err != nil {
			guestBuildErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if _, err := command(ctx, "bash", filepath.Join(root, "scripts", "guest.sh"), "build", dir); err != nil {
			guestBuildErr = err
			return
		}
		guestBuildDir = dir
	})
	return guestBuildDir, guestBuildErr
}

// guestShared is the one guest a test process shares (Guest).
type guestShared struct {
	once sync.Once
	name string
	err  error
}

var sharedGuests sync.Map // *Bed -> *guestShared

// Guest returns the test process's shared guest on the bed: running, its
// disk vda mounted on GuestDataDir, its agent answering. It is booted once
// per process (about 10 to 30 s under TCG) and removed when the tests end
// (testbed.Main); tests that use it must not run in parallel with each other
// (one backup job per domain) and must stop what they start in it. Without
// Main, each call boots a guest that t's cleanup removes. Like Get, it skips
// t when it cannot, or fails it when CI=true.
func (b *Bed) Guest(t testing.TB) string {
	t.Helper()
	if !mainActive.Load() {
		return b.NewGuest(t)
	}
	v, _ := sharedGuests.LoadOrStore(b, &guestShared{})
	g := v.(*guestShared)
	g.once.Do(func() {
		g.name = domainName("guest")
		g.err = b.bootGuest(g.name)
	})
	if g.err != nil {
		unavailable(t, fmt.Errorf("booting the test guest: %w", g.err))
	}
	return g.name
}

// NewGuest boots a guest of t's own (see Guest); t's cleanup removes it.
func (b *Bed) NewGuest(t testing.TB) string {
	t.Helper()
	name := domainName(t.Name())
	t.Cleanup(func() {
		if err := b.removeDomain(name); err != nil {
			t.Errorf("testbed: %v", err)
		}
	})
	if err := b.bootGuest(name); err != nil {
		unavailable(t, fmt.Errorf("booting the test guest: %w", err))
	}
	return name
}

// removeSharedGuests removes the shared guests of this process (at the end
// of Main): a reused bed outlives the process.
func removeSharedGuests() error {
	var errs []string
	sharedGuests.Range(func(k, v any) bool {
		b, g := k.(*Bed), v.(*guestShared)
		if g.name != "" {
			if err := b.removeDomain(g.name); err != nil {
				errs = append(errs, err.Error())
			}
		}
		sharedGuests.Delete(k)
		return true
	})
	if len(errs) > 0 {
		return fmt.Errorf("removing the test guest: %s", strings.Join(errs, "; "))
	}
	return nil
}

func (b *Bed) removeDomain(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := b.run(ctx, "undomain", b.dir, name); err != nil {
		return fmt.Errorf("removing domain %s: %w", name, err)
	}
	return nil
}

// bootGuest builds (once), defines and starts a guest, and waits for its
// agent's first answer.
func (b *Bed) bootGuest(name string) error {
	dir, err := buildGuest()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), guestBootTimeout)
	defer cancel()
	start := time.Now()
	if _, err := b.run(ctx, "guest", b.dir, name, dir); err != nil {
		return err
	}
	b.mu.Lock()
	b.formats[name+"/vda"] = "qcow2"
	b.mu.Unlock()
	for {
		// libvirt answers at once while the agent is not connected yet.
		_, err := b.virsh(ctx, "qemu-agent-command", name, `{"execute":"guest-ping"}`, "--timeout", "2")
		if err == nil {
			fmt.Fprintf(os.Stderr, "testbed: guest %s: its agent answered %.1fs after start\n", name, time.Since(start).Seconds())
			return nil
		}
		select {
		case <-ctx.Done():
			console, _ := os.ReadFile(b.GuestConsole(name))
			return fmt.Errorf("guest %s: no answer from its agent within %v (%v); its console:\n%s", name, guestBootTimeout, err, tail(string(console), 2000))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// GuestConsole is the file the guest's serial console goes to.
func (b *Bed) GuestConsole(name string) string {
	return filepath.Join(b.dir, "images", name, "console.log")
}

// AgentCommand sends one command (JSON, as virsh qemu-agent-command takes
// it) to the guest agent of domain and returns the value of its "return".
func (b *Bed) AgentCommand(t testing.TB, domain, cmd string) json.RawMessage {
	t.Helper()
	out, err := b.TryVirsh("qemu-agent-command", domain, cmd, "--timeout", strconv.Itoa(agentTimeout))
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	var reply struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		t.Fatalf("testbed: agent of %s: reply %q: %v", domain, out, err)
	}
	return reply.Return
}

// GuestStart starts a shell script in the guest (busybox sh, through the
// agent's guest-exec) and returns its PID in the guest, without waiting
// for it. Stop it with GuestRun(t, domain, "kill PID").
func (b *Bed) GuestStart(t testing.TB, domain, script string) int {
	t.Helper()
	cmd, err := json.Marshal(map[string]any{
		"execute":   "guest-exec",
		"arguments": map[string]any{"path": "/bin/sh", "arg": []string{"-c", script}, "capture-output": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	var started struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(b.AgentCommand(t, domain, string(cmd)), &started); err != nil || started.PID == 0 {
		t.Fatalf("testbed: guest-exec in %s: no PID (%v)", domain, err)
	}
	return started.PID
}

// GuestRun runs a shell script in the guest, waits for it to end and
// returns its standard output; a non-zero exit fails t with its output.
func (b *Bed) GuestRun(t testing.TB, domain, script string) string {
	t.Helper()
	pid := b.GuestStart(t, domain, script)
	deadline := time.Now().Add(time.Minute)
	for {
		var st struct {
			Exited   bool   `json:"exited"`
			ExitCode int    `json:"exitcode"`
			Signal   int    `json:"signal"`
			Out      string `json:"out-data"`
			Err      string `json:"err-data"`
		}
		status := fmt.Sprintf(`{"execute":"guest-exec-status","arguments":{"pid":%d}}`, pid)
		if err := json.Unmarshal(b.AgentCommand(t, domain, status), &st); err != nil {
			t.Fatalf("testbed: guest-exec-status in %s: %v", domain, err)
		}
		if st.Exited {
			out, _ := base64.StdEncoding.DecodeString(st.Out)
			errOut, _ := base64.StdEncoding.DecodeString(st.Err)
			if st.ExitCode != 0 || st.Signal != 0 {
				t.Fatalf("testbed: in guest %s: %q: exit code %d, signal %d\n%s%s", domain, script, st.ExitCode, st.Signal, out, errOut)
			}
			return string(out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testbed: in guest %s: %q still runs after a minute", domain, script)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
