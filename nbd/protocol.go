package nbd

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// All integers on the wire are big-endian.

const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt   = 0x49484156454f5054 // "IHAVEOPT"
	magicOldstyle   = 0x00420281861253
	magicOptReply   = 0x3e889045565a9
	magicRequest    = 0x25609513
	magicSimple     = 0x67446698
	magicStructured = 0x668e33ef

	defaultPort = "10809"
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle  = 1 << 0
	flagNoZeroes       = 1 << 1
	flagCFixedNewstyle = 1 << 0
	flagCNoZeroes      = 1 << 1
)

// Options.
const (
	optExportName     = 1
	optAbort          = 2
	optList           = 3
	optStartTLS       = 5
	optInfo           = 6
	optGo             = 7
	optStructured     = 8
	optListMetaCtx    = 9
	optSetMetaContext = 10
)

var optNames = map[uint32]string{
	optExportName:     "NBD_OPT_EXPORT_NAME",
	optAbort:          "NBD_OPT_ABORT",
	optList:           "NBD_OPT_LIST",
	optStartTLS:       "NBD_OPT_STARTTLS",
	optInfo:           "NBD_OPT_INFO",
	optGo:             "NBD_OPT_GO",
	optStructured:     "NBD_OPT_STRUCTURED_REPLY",
	optListMetaCtx:    "NBD_OPT_LIST_META_CONTEXT",
	optSetMetaContext: "NBD_OPT_SET_META_CONTEXT",
}

// Option replies; errors have bit 31 set.
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4

	repErrBit           = 1 << 31
	repErrUnsup         = repErrBit + 1
	repErrPolicy        = repErrBit + 2
	repErrInvalid       = repErrBit + 3
	repErrPlatform      = repErrBit + 4
	repErrTLSReqd       = repErrBit + 5
	repErrUnknown       = repErrBit + 6
	repErrShutdown      = repErrBit + 7
	repErrBlockSizeReqd = repErrBit + 8
	repErrTooBig        = repErrBit + 9
)

var repErrNames = map[uint32]string{
	repErrUnsup:         "unsupported (NBD_REP_ERR_UNSUP)",
	repErrPolicy:        "forbidden by policy (NBD_REP_ERR_POLICY)",
	repErrInvalid:       "invalid (NBD_REP_ERR_INVALID)",
	repErrPlatform:      "not supported on this platform (NBD_REP_ERR_PLATFORM)",
	repErrTLSReqd:       "TLS required (NBD_REP_ERR_TLS_REQD)",
	repErrUnknown:       "unknown export (NBD_REP_ERR_UNKNOWN)",
	repErrShutdown:      "server shutting down (NBD_REP_ERR_SHUTDOWN)",
	repErrBlockSizeReqd: "block size negotiation required (NBD_REP_ERR_BLOCK_SIZE_REQD)",
	repErrTooBig:        "request too big (NBD_REP_ERR_TOO_BIG)",
}

// Information types of NBD_REP_INFO.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

var cmdNames = map[uint16]string{
	cmdRead:        "read",
	cmdWrite:       "write",
	cmdDisc:        "disconnect",
	cmdFlush:       "flush",
	cmdTrim:        "trim",
	cmdWriteZeroes: "write zeroes",
	cmdBlockStatus: "block status",
}

// Command flags.
const (
	cmdFlagFUA    = 1 << 0
	cmdFlagNoHole = 1 << 1
	cmdFlagReqOne = 1 << 3
)

// Structured reply flags and chunk types.
const (
	replyFlagDone = 1 << 0

	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkErrorBit    = 1 << 15
	chunkError       = chunkErrorBit + 1
	chunkErrorOffset = chunkErrorBit + 2
)

// Transmission flags, as reported by Export.Flags.
const (
	FlagHasFlags        Flags = 1 << 0
	FlagReadOnly        Flags = 1 << 1
	FlagSendFlush       Flags = 1 << 2
	FlagSendFUA         Flags = 1 << 3
	FlagRotational      Flags = 1 << 4
	FlagSendTrim        Flags = 1 << 5
	FlagSendWriteZeroes Flags = 1 << 6
	FlagSendDF          Flags = 1 << 7
	FlagCanMultiConn    Flags = 1 << 8
	FlagSendResize      Flags = 1 << 9
	FlagSendCache       Flags = 1 << 10
	FlagSendFastZero    Flags = 1 << 11
)

// Flags of base:allocation extents. A qemu:dirty-bitmap:NAME extent has
// StateDirty set where the bitmap marks the extent dirty.
const (
	StateHole  uint32 = 1 << 0
	StateZero  uint32 = 1 << 1
	StateDirty uint32 = 1 << 0
)

// Names of the well-known metadata contexts.
const (
	ContextAllocation      = "base:allocation"
	ContextDirtyBitmapBase = "qemu:dirty-bitmap:" // followed by the bitmap's export name
	ContextAllocationDepth = "qemu:allocation-depth"
)

// Request sizes: the protocol's suggested ceiling for a read or write when
// the server names none, and a cap on a reply payload that isn't data, so
// that a hostile length cannot make us allocate gigabytes.
const (
	defaultMaxPayload = 32 << 20
	maxOptionReply    = 1 << 20
	maxStatusPayload  = 64 << 20
	requestHeaderLen  = 28
)
