package sshhost

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// sessionStopWait is how long a session's script may take to tidy up once
// its stdin closed, before its ssh is killed.
var sessionStopWait = 15 * time.Second

// sessionStartWait bounds the wait for a script's first line: a login and
// a qemu-nbd that listens take seconds; one that hangs (a host that stops
// answering mid-login, a tool that neither listens nor exits) must not
// hold the backup for ever.
var sessionStartWait = 2 * time.Minute

// Session is a script running on the host for as long as vbackup holds
// its stdin open: a script started with Start tidies up and exits when
// stdin closes, which happens when Close is called, when the SSH
// connection breaks, and when vbackup dies (its ssh is killed with it).
type Session struct {
	Ready string // the script's first line of output

	host   *Host
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *lockedBuffer
	done   chan struct{} // closed when cmd.Wait returns
	err    error         // cmd.Wait's result, set before done is closed
	once   sync.Once
}

// Start runs script with sh on the host, its arguments quoted, its stdin
// a pipe held by this process, and returns once the script printed its
// first line (Ready). A script that exits before is an error with its
// last message.
func (h *Host) Start(ctx context.Context, script string, args ...string) (*Session, error) {
	cmd := h.command(context.WithoutCancel(ctx), nil, shLine(script, args))
	s := &Session{host: h, cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = s.stderr
	// The session must not outlive vbackup: ssh killed, the connection
	// closes, and the script sees the end of its stdin.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// Pdeathsig fires when the thread that forked exits; a fresh
	// goroutine is never locked to a thread, so Go never ends that thread.
	started := make(chan error, 1)
	go func() { started <- cmd.Start() }()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("running %s: %w", h.Binary, err)
	}
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		lines <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, r)
		s.err = cmd.Wait()
		close(s.done)
	}()
	select {
	case line := <-lines:
		if line != "" {
			s.Ready = line
			return s, nil
		}
		<-s.done
		return nil, s.Err()
	case <-ctx.Done():
		s.Close()
		return nil, context.Cause(ctx)
	case <-time.After(sessionStartWait):
		s.Close()
		told := said(s.stderr.String())
		if told == "" {
			told = "no message"
		}
		return nil, fmt.Errorf("on %s: the script had not started after %v (%s)", h.Name, sessionStartWait, told)
	}
}

// Done is closed when the script has exited.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the script exited, once it has (Done): what it said last,
// or SSH's refusal.
func (s *Session) Err() error {
	var exit *exec.ExitError
	msg := s.stderr.String()
	// Every line: qemu-nbd says why on one, and what to do on the next.
	told := said(msg)
	switch {
	case s.err == nil:
		if told == "" {
			told = "no message"
		}
		return fmt.Errorf("on %s: the script ended: %s", s.host.Name, told)
	case errors.As(s.err, &exit) && exit.ExitCode() != 255:
		if told == "" {
			told = s.err.Error()
		}
		return fmt.Errorf("on %s: %s", s.host.Name, told)
	}
	return s.host.refused(msg, s.err)
}

// Said is what the script wrote to stderr so far.
func (s *Session) Said() string { return s.stderr.String() }

// Close closes the script's stdin and waits for it to exit; a script
// that does not exit within sessionStopWait has its ssh killed (the host
// then sees the connection close). It may be called more than once.
func (s *Session) Close() {
	s.once.Do(func() {
		s.stdin.Close()
		select {
		case <-s.done:
		case <-time.After(sessionStopWait):
			_ = s.cmd.Process.Kill()
			// ssh's pipes close with it; a process of the script that
			// still held them here would keep done open.
			select {
			case <-s.done:
			case <-time.After(sessionStopWait):
			}
		}
	})
}

// lockedBuffer is a bytes.Buffer that the process's stderr copier and its
// readers share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 {
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
