package sshhost

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
)

// fastCiphers go first in the data forward's cipher list when this CPU
// has AES instructions: measured here, 1 GiB through ssh took 3.3 s with
// aes128-gcm and 8.0 s with OpenSSH's first choice, chacha20-poly1305.
const fastCiphers = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"

// cipherOpts is the data forward's cipher preference: AES-GCM first, but
// only where the admin has not chosen ciphers for this host (its
// effective list, ssh -G, is then ssh's built-in one) and the CPU has AES
// instructions. Only the order changes: the server still picks from it.
func (h *Host) cipherOpts(ctx context.Context) []string {
	if !cpuHasAES() {
		return nil
	}
	mine := effective(ctx, h.Binary, append(append([]string{}, h.Opts...), "-G", "--", h.Name))
	builtin := effective(ctx, "ssh", []string{"-F", "none", "-G", "--", h.Name})
	if mine == "" || mine != builtin {
		return nil
	}
	return []string{"-o", "Ciphers=" + fastCiphers}
}

// effective is the ciphers line of ssh -G: the configuration ssh would
// use, without connecting.
func effective(ctx context.Context, binary string, args []string) string {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdout = &out
	if cmd.Run() != nil {
		return ""
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(l, "ciphers "); ok {
			return v
		}
	}
	return ""
}

func cpuHasAES() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (strings.TrimSpace(k) == "flags" || strings.TrimSpace(k) == "Features") {
			for _, f := range strings.Fields(v) {
				if f == "aes" {
					return true
				}
			}
			return false
		}
	}
	return false
}
