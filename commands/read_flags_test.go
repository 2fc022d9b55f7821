package commands

import (
	"strings"
	"testing"
)

func TestMountLsCatFlags(t *testing.T) {
	got, r := parse(t, newMountCommand, "mount", "/mnt/x", "--from", "/b", "--at", "c1", "--disk", "vdb", "--partition", "2")
	wantCode(t, r, ExitOK)
	if got.Mountpoint != "/mnt/x" || got.From != "/b" || got.At != "c1" || got.Disk != "vdb" || got.Partition != 2 {
		t.Errorf("mount options %+v", got)
	}
	if got, r := parse(t, newMountCommand, "mount"); r.code != ExitOK || got.Mountpoint != "" {
		t.Errorf("mount without arguments (the list): %+v, %+v", got, r)
	}
	ls, r := parse(t, newLsCommand, "ls", "--from", "/b", "--json")
	wantCode(t, r, ExitOK)
	if ls.Path != "/" || !ls.JSON || ls.At != "latest" {
		t.Errorf("ls options %+v", ls)
	}
	cat, r := parse(t, newCatCommand, "cat", "/etc/hosts", "--from", "/b", "--partition", "1")
	wantCode(t, r, ExitOK)
	if cat.Path != "/etc/hosts" || cat.Partition != 1 {
		t.Errorf("cat options %+v", cat)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mount", "/mnt/x"}, "--from DIR is required"},
		{[]string{"mount", "--from", "/b"}, "missing MOUNTPOINT argument"},
		{[]string{"mount", "/mnt/x", "--from", "/b", "--partition", "0"}, `--partition "0": give a partition number, 1 or more`},
		{[]string{"mount", "/mnt/x", "--from", "/b", "--partition", "two"}, `--partition "two"`},
		{[]string{"mount", "/mnt/x", "/mnt/y", "--from", "/b"}, `unexpected argument "/mnt/y"`},
	} {
		_, r := parse(t, newMountCommand, tc.args...)
		wantCode(t, r, ExitUsage)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.args, r.stderr, tc.want)
		}
	}
	if _, r := parse(t, newCatCommand, "cat", "--from", "/b"); r.code != ExitUsage || !strings.Contains(r.stderr, "missing PATH argument") {
		t.Errorf("cat without PATH: %+v", r)
	}
	if _, r := parse(t, newLsCommand, "ls", "/"); r.code != ExitUsage || !strings.Contains(r.stderr, `"from" not set`) {
		t.Errorf("ls without --from: %+v", r)
	}
	if _, r := parse(t, newUmountCommand, "umount"); r.code != ExitUsage || !strings.Contains(r.stderr, "missing MOUNTPOINT argument") {
		t.Errorf("umount without MOUNTPOINT: %+v", r)
	}
}

func TestServeFlags(t *testing.T) {
	got, r := parse(t, newServeCommand, "serve", "--from", "/b", "--disk", "vda", "--disk", "vdb", "--tcp", "127.0.0.1")
	wantCode(t, r, ExitOK)
	if !got.TCP || got.Server.Spec.Host != "127.0.0.1" || got.Server.Spec.Port != 10809 || len(got.Disks) != 2 || got.TLSDir != "" {
		t.Errorf("serve options %+v", got)
	}
	got, r = parse(t, newServeCommand, "serve", "--from", "/b", "--tcp", "192.0.2.1:10900", "--tls", "--tls-certs", "/pki")
	wantCode(t, r, ExitOK)
	if got.Server.Spec.Port != 10900 || got.TLSDir != "/pki" {
		t.Errorf("serve --tls options %+v", got)
	}
	got, r = parse(t, newServeCommand, "serve", "--from", "/b", "--tcp", "0.0.0.0:10900", "--insecure")
	wantCode(t, r, ExitOK)
	if got, r := parse(t, newServeCommand, "serve", "--from", "/b", "--socket", "rel.sock"); r.code != ExitOK || !strings.HasPrefix(got.Socket, "/") {
		t.Errorf("--socket is not made absolute: %+v", got)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--from", "/b", "--tcp", "0.0.0.0:10900"}, "--tcp 0.0.0.0:10900 would serve the disks unencrypted to the network; add --tls, or --insecure"},
		{[]string{"serve", "--from", "/b", "--tcp", "example.org"}, "would serve the disks unencrypted"},
		{[]string{"serve", "--from", "/b", "--socket", "/s", "--tcp", "127.0.0.1"}, "--socket and --tcp cannot be used together"},
		{[]string{"serve", "--from", "/b", "--tls"}, "--tls"},
		{[]string{"serve", "--from", "/b", "--insecure"}, "--insecure"},
		{[]string{"serve", "--tcp", "127.0.0.1"}, `"from" not set`},
	} {
		_, r := parse(t, newServeCommand, tc.args...)
		wantCode(t, r, ExitUsage)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.args, r.stderr, tc.want)
		}
	}
}
