package virtfake

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"golang.org/x/sys/unix"

	"vbackup/virt"
)

var (
	errNoPool    = errClass{"Storage pool not found: ", virt.ErrNoPool}
	errVolExists = errClass{"", virt.ErrVolumeExists}
)

// pool is a directory pool: its volumes are files in dir, as libvirt's
// dir pools keep them.
type pool struct {
	dir    string
	active bool
	vols   []string
}

// AddPool defines a directory storage pool whose volumes are files in dir
// (which must exist), started when active.
func (c *Conn) AddPool(name, dir string, active bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pools == nil {
		c.pools = map[string]*pool{}
	}
	c.pools[name] = &pool{dir: dir, active: active}
}

// StoragePools lists the pools, sorted by name.
func (c *Conn) StoragePools(ctx context.Context) ([]virt.StoragePool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("StoragePools", "virConnectListAllStoragePools"); err != nil {
		return nil, err
	}
	var out []virt.StoragePool
	for name, p := range c.pools {
		out = append(out, virt.StoragePool{Name: name, Active: p.active})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// activePool is pool name, refused as libvirt refuses one missing or not
// started.
func (c *Conn) activePool(op, name string) (*pool, error) {
	p, ok := c.pools[name]
	if !ok {
		return nil, newErr(op, errNoPool, "no storage pool with matching name '%s'", name)
	}
	if !p.active {
		return nil, newErr(op, errOperationInvalid, "storage pool '%s' is not active", name)
	}
	return p, nil
}

// StorageVolumes lists the names of pool's volumes.
func (c *Conn) StorageVolumes(ctx context.Context, name string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("StorageVolumes", "virStoragePoolListVolumes"); err != nil {
		return nil, err
	}
	p, err := c.activePool("virStoragePoolListVolumes", name)
	if err != nil {
		return nil, err
	}
	out := slices.Clone(p.vols)
	sort.Strings(out)
	return out, nil
}

// UploadVolume copies file into a new file of the pool's folder.
func (c *Conn) UploadVolume(ctx context.Context, poolName, name, file string, pace virt.Pace) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("UploadVolume", "virStorageVolCreateXML"); err != nil {
		return "", err
	}
	p, err := c.activePool("virStorageVolCreateXML", poolName)
	if err != nil {
		return "", err
	}
	if slices.Contains(p.vols, name) {
		return "", newErr("virStorageVolCreateXML", errVolExists, "storage volume '%s' exists already", name)
	}
	path := filepath.Join(p.dir, name)
	if err := copyFile(ctx, file, path, pace); err != nil {
		os.Remove(path)
		return "", err
	}
	p.vols = append(p.vols, name)
	return path, nil
}

// copyFile copies the data regions of from into a new sparse file to of
// the same size, pacing them as libvirtconn paces what it sends.
func copyFile(ctx context.Context, from, to string, pace virt.Pace) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer dst.Close()
	if err := dst.Truncate(st.Size()); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off, size := int64(0), st.Size(); off < size; {
		data, err := src.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // a hole to the end
		} else if err != nil {
			return err
		}
		end, err := src.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for off = data; off < end; {
			want := min(int64(len(buf)), end-off)
			if pace != nil {
				if err := pace(ctx, uint64(want)); err != nil {
					return err
				}
			}
			n, err := src.ReadAt(buf[:want], off)
			if n > 0 {
				if _, err := dst.WriteAt(buf[:n], off); err != nil {
					return err
				}
				off += int64(n)
			}
			if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
				return err
			}
		}
	}
	return dst.Close()
}

// DeleteVolume removes the volume and its file.
func (c *Conn) DeleteVolume(ctx context.Context, poolName, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("DeleteVolume", "virStorageVolDelete"); err != nil {
		return err
	}
	p, err := c.activePool("virStorageVolLookupByName", poolName)
	if err != nil {
		return err
	}
	i := slices.Index(p.vols, name)
	if i < 0 {
		return newErr("virStorageVolLookupByName", errClass{"Storage volume not found: ", nil}, "no storage vol with matching name '%s'", name)
	}
	p.vols = slices.Delete(p.vols, i, i+1)
	return os.Remove(filepath.Join(p.dir, name))
}
