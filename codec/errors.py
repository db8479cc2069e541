"""The codec's own exception types. Every failure to read a file or an image
raises one of these, never a bare struct, zlib or torch error."""


class CodecError(Exception):
    """Base class: anything the codec refuses to read or write."""


class BadMagicError(CodecError):
    """The bytes are not a container of this codec."""


class UnsupportedVersionError(CodecError):
    """The container uses a format version this build does not know."""


class TruncatedHeaderError(CodecError):
    """The bytes end before the header and its layer table do."""


class CorruptHeaderError(CodecError):
    """The header parses but is inconsistent or fails its checksum."""


class TruncatedLayerError(CodecError):
    """A requested layer is not completely present."""


class ChecksumError(CodecError):
    """A layer's bytes do not match the CRC32 in the layer table."""


class ModelMismatchError(CodecError):
    """The file was written by other weights than the ones loaded."""


class CorruptLayerError(CodecError):
    """A layer passed its checksum but its payload does not decode."""


class InvalidImageError(CodecError):
    """The input is not an image the codec can encode."""


class WeightsError(CodecError):
    """The weights file is missing, unreadable or not for this codec."""
