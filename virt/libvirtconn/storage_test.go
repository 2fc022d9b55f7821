package libvirtconn_test

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"vbackup/internal/testbed"
)

var poolSeq atomic.Int64

// bedPool defines a directory pool on the bed in a folder of its own,
// started when active; t's cleanup removes it with its volumes.
func bedPool(t *testing.T, bed *testbed.Bed, active bool) string {
	t.Helper()
	name := fmt.Sprintf("vbpool-%d-%d", poolSeq.Add(1), os.Getpid())
	bed.Virsh(t, "pool-define-as", name, "dir", "--target", bed.Folder(t))
	t.Cleanup(func() {
		_, _ = bed.TryVirsh("pool-destroy", name)
		_, _ = bed.TryVirsh("pool-undefine", name)
	})
	if active {
		bed.Virsh(t, "pool-start", name)
	}
	return name
}
