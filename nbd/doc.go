// Package nbd is a client of the Network Block Device protocol, enough to
// read a disk that libvirt's pull-mode backup exports through QEMU's NBD
// server, and to write a target through qemu-nbd. It follows the NBD
// project's doc/proto.md and doc/uri.md, and QEMU's docs/interop/nbd.txt
// for the "qemu:" metadata contexts; it uses only the standard library.
//
// # Connecting
//
// Dial takes an NBD URI: nbd://host[:port]/export, nbd+unix:///export?socket=PATH,
// or nbds:// and nbds+unix:// for TLS (with the tls-certificates,
// tls-hostname and tls-verify-peer query parameters, or Options.TLS).
// It runs the fixed newstyle handshake: STARTTLS when TLS is asked for,
// STRUCTURED_REPLY, SET_META_CONTEXT for Options.MetaContexts, and GO
// with block size constraints (falling back to EXPORT_NAME on servers
// without GO). Info (NBD_OPT_INFO) and ListMetaContexts
// (NBD_OPT_LIST_META_CONTEXT) ask without entering transmission, and end
// with NBD_OPT_ABORT.
//
//	c, err := nbd.Dial(ctx, "nbd+unix:///vda?socket=/run/backup.sock",
//		nbd.Options{MetaContexts: []string{nbd.ContextAllocation, "qemu:dirty-bitmap:backup-vda"}})
//	defer c.Close()
//	dirty, err := c.BlockStatus(ctx, "qemu:dirty-bitmap:backup-vda", 0, c.Export().Size)
//
// # Requests
//
// A Conn is safe for concurrent use and keeps many requests in flight on
// one socket: callers' requests are written one at a time, and one
// goroutine reads the replies and hands each to its request by cookie.
// Reads and writes larger than the server's maximum block size (32 MiB
// when it names none) are split into requests sent together; reads and
// block status queries not aligned to the minimum block size are widened
// and cut back, while unaligned writes are refused (ErrAlignment).
// DialMulti opens several connections when the export advertises
// NBD_FLAG_CAN_MULTI_CONN.
//
// # Errors
//
// ReadAt returns nil only when every byte came from the server. Any
// failure of a request is an *Error naming the export, the operation and
// its range:
//
//	nbd: export "vda": read at offset 1048576 (65536 bytes): EIO
//
// wrapping a *ServerError (errors.Is(err, nbd.EIO), or syscall.EIO), or
// ErrDisconnected when the connection was lost (every request in flight
// then fails at once), or ErrProtocol when the server broke the protocol:
// reply chunks that overlap or fall outside the request, a read reply
// that claims success without covering the whole range, unknown cookies
// or chunk types. The connection is dropped on such a violation, except
// a reply that is merely incomplete, which fails its request alone.
//
// # Copying
//
// Copy reads a whole export into an io.WriterAt with many reads in
// flight, skipping what base:allocation and offset-hole chunks say reads
// as zeroes, and with CopyOptions.Dirty only the extents a dirty bitmap
// marks: the core of a full or incremental backup.
package nbd
