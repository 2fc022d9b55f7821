package libvirtconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// StoragePools lists the connection's pools, sorted by name.
func (c *Conn) StoragePools(ctx context.Context) ([]virt.StoragePool, error) {
	var pools []libvirt.StoragePool
	err := c.call(ctx, "virConnectListAllStoragePools", "", func() (err error) {
		pools, err = c.lv.ListAllStoragePools(0)
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []virt.StoragePool
	for i := range pools {
		p := &pools[i]
		name, err := p.GetName()
		if err == nil {
			var active bool
			if active, err = p.IsActive(); err == nil {
				out = append(out, virt.StoragePool{Name: name, Active: active})
			}
		}
		_ = p.Free()
		if err != nil {
			return nil, translate("virStoragePoolGetName", err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// pool looks a pool up by name; the caller frees it.
func (c *Conn) pool(ctx context.Context, name string) (*libvirt.StoragePool, error) {
	var p *libvirt.StoragePool
	err := c.call(ctx, "virStoragePoolLookupByName", name, func() (err error) {
		p, err = c.lv.LookupStoragePoolByName(name)
		return err
	})
	return p, err
}

// StorageVolumes lists the names of pool's volumes.
func (c *Conn) StorageVolumes(ctx context.Context, pool string) ([]string, error) {
	p, err := c.pool(ctx, pool)
	if err != nil {
		return nil, err
	}
	defer p.Free()
	var names []string
	err = c.call(ctx, "virStoragePoolListVolumes", pool, func() (err error) {
		names, err = p.ListStorageVolumes()
		return err
	})
	sort.Strings(names)
	return names, err
}

// UploadVolume makes a volume of the file's size (allocating nothing) and
// streams the file into it. The stream is sparse
// (VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM, libvirt 3.4 and later): the
// file's holes travel as their length, and libvirt seeks over them in the
// new volume, which reads as zeroes there.
func (c *Conn) UploadVolume(ctx context.Context, pool, name, file string, pace virt.Pace) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	p, err := c.pool(ctx, pool)
	if err != nil {
		return "", err
	}
	defer p.Free()
	size := uint64(st.Size())
	doc, err := (&libvirtxml.StorageVolume{Name: name,
		Capacity:   &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: size},
		Allocation: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 0}}).Marshal()
	if err != nil {
		return "", err
	}
	var vol *libvirt.StorageVol
	err = c.call(ctx, "virStorageVolCreateXML", name, func() (err error) {
		vol, err = p.StorageVolCreateXML(doc, 0)
		return err
	})
	if err != nil {
		return "", err
	}
	defer vol.Free()
	var path string
	err = c.call(ctx, "virStorageVolGetPath", name, func() (err error) {
		path, err = vol.GetPath()
		return err
	})
	if err == nil {
		err = c.upload(ctx, vol, name, f, size, pace)
	}
	if err != nil {
		// Deleted also when the upload was interrupted.
		_ = c.call(context.WithoutCancel(ctx), "virStorageVolDelete", name, func() error { return vol.Delete(0) })
		return "", fmt.Errorf("uploading %s into volume %s of pool %s: %w; the volume was deleted", file, name, pool, err)
	}
	return path, nil
}

func (c *Conn) upload(ctx context.Context, vol *libvirt.StorageVol, name string, f *os.File, size uint64, pace virt.Pace) error {
	var stream *libvirt.Stream
	err := c.call(ctx, "virStreamNew", "", func() (err error) {
		stream, err = c.lv.NewStream(0)
		return err
	})
	if err != nil {
		return err
	}
	defer stream.Free()
	err = c.call(ctx, "virStorageVolUpload", name, func() error {
		return vol.Upload(stream, 0, size, libvirt.STORAGE_VOL_UPLOAD_SPARSE_STREAM)
	})
	if err != nil {
		return err
	}
	if err := sendSparse(ctx, stream, f, int64(size), pace); err != nil {
		_ = stream.Abort()
		var lerr libvirt.Error
		if errors.As(err, &lerr) {
			return translate("virStreamSend", err)
		}
		return err // the file's, or the pace's (an interrupt keeps its cause)
	}
	return c.call(ctx, "virStreamFinish", name, stream.Finish)
}

// sendSparse sends f's data regions as data and the gaps between them as
// holes, in order, pacing the data.
func sendSparse(ctx context.Context, stream *libvirt.Stream, f *os.File, size int64, pace virt.Pace) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		data, err := f.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) { // nothing but a hole to the end
			data = size
		} else if err != nil {
			return err
		}
		if data > off {
			if err := stream.SendHole(data-off, 0); err != nil {
				return err
			}
			off = data
			continue
		}
		end, err := f.Seek(off, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for off < end {
			want := min(int64(len(buf)), end-off)
			if pace != nil {
				if err := pace(ctx, uint64(want)); err != nil {
					return err
				}
			}
			n, err := f.ReadAt(buf[:want], off)
			if n > 0 {
				if err := sendAll(stream, buf[:n]); err != nil {
					return err
				}
				off += int64(n)
			}
			if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
				return err
			}
		}
	}
	return nil
}

func sendAll(stream *libvirt.Stream, p []byte) error {
	for len(p) > 0 {
		n, err := stream.Send(p)
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// DeleteVolume removes volume name of pool.
func (c *Conn) DeleteVolume(ctx context.Context, pool, name string) error {
	p, err := c.pool(ctx, pool)
	if err != nil {
		return err
	}
	defer p.Free()
	var vol *libvirt.StorageVol
	err = c.call(ctx, "virStorageVolLookupByName", name, func() (err error) {
		vol, err = p.LookupStorageVolByName(name)
		return err
	})
	if err != nil {
		return err
	}
	defer vol.Free()
	return c.call(ctx, "virStorageVolDelete", name, func() error { return vol.Delete(0) })
}
