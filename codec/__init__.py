"""Scalable learned image codec: RNN residual coder with an RNN hyperprior.

The public surface is `__all__`: encode an image (`encode`, at an effort level of `EFFORTS`), decode any layer prefix
(`Decoder`), load or make the networks (`load_model`, `fresh_model`, `ScalableCodec`), read and
write pictures, the container (`ContainerHeader`, the `LayerTable` arithmetic it shares with the
server and the client, `parse_header`, ...) and the errors (`CodecError` and its kinds). The codec
speaks no network protocol; the HTTP and WebSocket client is the `client` package.

`import codec` stays light: the errors and the container are plain Python, and the names that
need torch (the API, the networks, the picture I/O) are imported on first use.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from codec.container import (
    DEFAULT_TILE_SIZE,
    FIXED_HEADER_BYTES,
    ContainerHeader,
    LayerEntry,
    LayerTable,
    Tile,
    parse_header,
    required_header_bytes,
)
from codec.errors import (
    BadMagicError,
    ChecksumError,
    CodecError,
    CorruptHeaderError,
    CorruptLayerError,
    InvalidImageError,
    ModelMismatchError,
    TruncatedHeaderError,
    TruncatedLayerError,
    UnsupportedVersionError,
    WeightsError,
)

if TYPE_CHECKING:
    from codec.api import (
        INFERENCE_DTYPE,
        Decoder,
        Region,
        check_region,
        default_weights_path,
        encode,
        fresh_model,
        load_model,
    )
    from codec.effort import DEFAULT_EFFORT, EFFORTS
    from codec.imageio import read_image, write_image
    from codec.model import CodecConfig, ScalableCodec

# CompressAI imports torch_geometric when it is installed, which calls the deprecated torch.jit.script at
# import time; the warning says nothing about this codec and would open every CLI command's output.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

_LAZY = {
    "encode": "codec.api",
    "Decoder": "codec.api",
    "Region": "codec.api",
    "check_region": "codec.api",
    "load_model": "codec.api",
    "fresh_model": "codec.api",
    "default_weights_path": "codec.api",
    "INFERENCE_DTYPE": "codec.api",
    "EFFORTS": "codec.effort",
    "DEFAULT_EFFORT": "codec.effort",
    "ScalableCodec": "codec.model",
    "CodecConfig": "codec.model",
    "read_image": "codec.imageio",
    "write_image": "codec.imageio",
}

__all__ = [
    # encoding and decoding
    "encode",
    "Decoder",
    "Region",
    "check_region",
    "EFFORTS",
    "DEFAULT_EFFORT",
    # the networks and their weights
    "load_model",
    "fresh_model",
    "default_weights_path",
    "ScalableCodec",
    "CodecConfig",
    "INFERENCE_DTYPE",
    # pictures
    "read_image",
    "write_image",
    # the container
    "ContainerHeader",
    "LayerEntry",
    "LayerTable",
    "Tile",
    "parse_header",
    "required_header_bytes",
    "FIXED_HEADER_BYTES",
    "DEFAULT_TILE_SIZE",
    # the errors
    "CodecError",
    "BadMagicError",
    "UnsupportedVersionError",
    "TruncatedHeaderError",
    "CorruptHeaderError",
    "TruncatedLayerError",
    "ChecksumError",
    "ModelMismatchError",
    "CorruptLayerError",
    "InvalidImageError",
    "WeightsError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'codec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next use finds it without this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
