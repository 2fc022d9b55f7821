package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"vbackup/chain"
	"vbackup/qsd"
	"vbackup/virt"
)

// ServeRequest is an NBD export of a backup point's disks, read-only.
type ServeRequest struct {
	From  string
	At    string
	Disks []string // all when empty
	// Where: a unix socket path, or a TCP host and port.
	Socket string
	Host   string
	Port   int
	TLSDir string // with TCP: the server's x509 folder; "" for plain NBD
}

// Served is a running export.
type Served struct {
	Backup *chain.Backup
	URIs   map[string]string // disk name -> NBD URI
	Disks  []string          // in the backup's order
	nbd    *qsd.NBD
	unlock func()
}

// Serve starts the export; Wait blocks until ctx ends, then stops it.
// The folder is locked for reading (prune waits) while it runs.
func Serve(ctx context.Context, req ServeRequest) (*Served, error) {
	if _, err := OpenFolder(req.From); err != nil {
		return nil, err
	}
	unlock, err := chain.LockReading(req.From)
	if err != nil {
		return nil, err
	}
	s := &Served{unlock: unlock, URIs: map[string]string{}}
	fail := func(err error) (*Served, error) {
		unlock()
		return nil, err
	}
	store, err := OpenFolder(req.From)
	if err != nil {
		return fail(err)
	}
	if s.Backup, err = store.Find(req.At); err != nil {
		return fail(err)
	}
	var names []string
	for _, d := range s.Backup.Disks {
		names = append(names, d.Name)
	}
	if err := virt.CheckDiskNames("backup "+s.Backup.Name(), names, req.Disks); err != nil {
		return fail(err)
	}
	nreq := qsd.NBDRequest{Socket: req.Socket, Host: req.Host, Port: req.Port, TLSDir: req.TLSDir, VerifyPeer: req.TLSDir != ""}
	for _, d := range s.Backup.Disks {
		if !virt.Wanted(req.Disks, d.Name) {
			continue
		}
		top, err := filepath.Abs(s.Backup.File(d))
		if err != nil {
			return fail(err)
		}
		nreq.Exports = append(nreq.Exports, qsd.Export{Name: d.Name, Image: qsd.Image{Path: top, Format: d.Format}})
		s.Disks = append(s.Disks, d.Name)
		s.URIs[d.Name] = nbdURI(req, d.Name)
	}
	if req.Socket != "" {
		if _, err := os.Lstat(req.Socket); err == nil {
			return fail(fmt.Errorf("--socket %s: a file is already there; remove it or pick another path", req.Socket))
		}
	} else if req.Port != 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(strings.Trim(req.Host, "[]"), strconv.Itoa(req.Port)))
		if err != nil {
			return fail(fmt.Errorf("--tcp %s: cannot listen there: %w", net.JoinHostPort(req.Host, strconv.Itoa(req.Port)), err))
		}
		l.Close()
	}
	if s.nbd, err = qsd.StartNBD(ctx, nreq); err != nil {
		return fail(fmt.Errorf("serving backup %s: %w", s.Backup.Name(), err))
	}
	return s, nil
}

// nbdURI is an export's address in the syntax nbdinfo, nbdcopy and
// qemu-img take.
func nbdURI(req ServeRequest, export string) string {
	scheme := "nbd"
	if req.TLSDir != "" {
		scheme = "nbds"
	}
	if req.Socket != "" {
		return scheme + "+unix:///" + export + "?socket=" + req.Socket
	}
	return scheme + "://" + net.JoinHostPort(strings.Trim(req.Host, "[]"), strconv.Itoa(req.Port)) + "/" + export
}

// Wait serves until ctx ends (Ctrl-C) or the server stops by itself, and
// then stops it, removes the socket and releases the folder. It returns
// ctx's cause, or why the server stopped.
func (s *Served) Wait(ctx context.Context, socket string) error {
	var err error
	select {
	case <-ctx.Done():
		err = context.Cause(ctx)
	case <-s.nbd.Exited():
		err = s.nbd.Err()
	}
	if serr := s.nbd.Stop(); serr != nil {
		err = errors.Join(err, serr)
	}
	if socket != "" {
		os.Remove(socket)
	}
	s.unlock()
	return err
}
