package sshhost

import (
	"fmt"
	"strings"
)

// Why SSH refused, as told by ssh's own messages.
type Reason int

const (
	OtherFailure   Reason = iota
	UnknownHostKey        // not in known_hosts, or changed
	NoAcceptedKey         // permission denied: no key the host accepts
	Unreachable           // no such host, refused, timed out, no route
)

// RefusedError is SSH's refusal to reach the host, with what to do.
type RefusedError struct {
	Host   *Host
	Reason Reason
	Said   string // ssh's own words
	Advice string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("SSH to %s failed: %s (ssh said: %s)", e.Host.Where(), e.Advice, e.Said)
}

// Explain reads a message of ssh (its stderr, or libvirt's error that
// quotes it) and says what was wrong; ok is false when it is not SSH's
// refusal.
func (h *Host) Explain(msg string) (*RefusedError, bool) {
	e := &RefusedError{Host: h, Said: said(msg)}
	switch {
	case strings.Contains(msg, "Host key verification failed"),
		strings.Contains(msg, "REMOTE HOST IDENTIFICATION HAS CHANGED"),
		strings.Contains(msg, "host key is known"):
		e.Reason = UnknownHostKey
		e.Advice = fmt.Sprintf("the host key of %s is not in known_hosts, or it changed; check its fingerprint and add it "+
			"(log in once with 'ssh %s', or ssh-keyscan %s >> ~/.ssh/known_hosts), or, on a trusted network only, add no_verify=1 to the URI",
			h.Name, h.login(), h.Name)
	case strings.Contains(msg, "Permission denied"):
		e.Reason = NoAcceptedKey
		e.Advice = fmt.Sprintf("%s accepted none of the keys offered (keyfile= in the URI, ~/.ssh/id_*, the ssh agent); "+
			"add the backup server's public key to ~/.ssh/authorized_keys of %s there, or name the right key with ?keyfile=PATH",
			h.Name, h.user())
	case strings.Contains(msg, "Could not resolve hostname"),
		strings.Contains(msg, "Connection refused"),
		strings.Contains(msg, "No route to host"),
		strings.Contains(msg, "Connection timed out"),
		strings.Contains(msg, "Network is unreachable"),
		strings.Contains(msg, "Operation timed out"):
		e.Reason = Unreachable
		e.Advice = fmt.Sprintf("cannot reach %s; check the host name and port in the URI, that sshd runs there and that no firewall is in the way", h.Name)
	default:
		return nil, false
	}
	return e, true
}

// refused is the error for an ssh run that failed by SSH's fault.
func (h *Host) refused(stderr string, err error) error {
	if e, ok := h.Explain(stderr); ok {
		return e
	}
	return &RefusedError{Host: h, Reason: OtherFailure, Said: said(stderr + " " + err.Error()),
		Advice: "check that 'ssh " + h.login() + "' works from this host"}
}

func (h *Host) login() string {
	if h.User != "" {
		return h.User + "@" + h.Name
	}
	return h.Name
}

func (h *Host) user() string {
	if h.User != "" {
		return h.User
	}
	return "your user"
}

// said is ssh's message on one line.
func said(msg string) string {
	var keep []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "; ")
}
