"""The remote image the client plans with, and the reconstruction that turns whole layers into pictures.

Both transports share them: the image (from the server's info document or a bare container's header)
says how many bytes each layer needs and picks the layer to stop at; the reconstruction holds the
bytes received so far and decodes each whole layer once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

import numpy as np

from client.errors import ClientError, ProtocolError
from codec import CodecError, ContainerHeader, Decoder, LayerEntry, LayerTable, ModelMismatchError, ScalableCodec


@dataclass(frozen=True)
class RemoteImage(LayerTable):
    """The image as the server's info document or a bare container header describes it, before any
    layer arrives: sizes, the layer table (the codec's `LayerTable` arithmetic) and the server's PSNR."""

    width: int
    height: int
    model: str | None
    header_bytes: int
    layers: tuple[LayerEntry, ...]
    psnr: tuple[float | None, ...]
    etag: str | None = None

    @classmethod
    def from_info(cls, info: object) -> RemoteImage:
        if not isinstance(info, dict):
            raise ProtocolError("the info document is not a JSON object")
        try:
            layers = info["layers"]
            image = cls(
                width=int(info["width"]),
                height=int(info["height"]),
                model=str(info["model"]),
                header_bytes=int(info["header_bytes"]),
                layers=tuple(
                    LayerEntry(int(layer["index"]), int(layer["offset"]), int(layer["size"]), int(layer["crc32"]))
                    for layer in layers
                ),
                psnr=tuple(None if layer.get("psnr") is None else float(layer["psnr"]) for layer in layers),
                etag=info.get("etag"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ProtocolError(f"the info document lacks the layer table ({error!r})") from None
        # Each layer starts where the one before ends (the first at the header's end); the first holds bytes.
        starts = [image.end_of_layer(n) for n in range(image.layer_count)]
        if (
            not image.layers
            or image.layers[0].size <= 0
            or any(entry.offset != start or entry.size < 0 for entry, start in zip(image.layers, starts))
        ):
            raise ProtocolError("the info document's layer table is not in order")
        return image

    @classmethod
    def from_header(cls, header: ContainerHeader, etag: str | None) -> RemoteImage:
        return cls(
            width=header.width,
            height=header.height,
            model=header.model_id.hex(),
            header_bytes=header.header_bytes,
            layers=header.layers,
            psnr=(None,) * header.layer_count,
            etag=etag,
        )

    def target(self, max_layers: int | None, max_bytes: int | None, psnr_target: float | None) -> int:
        """The layer to stop at: at most `max_layers`, the last whole layer within `max_bytes`, or the
        first layer the server measured at `psnr_target` dB (all layers when none reaches it)."""
        if sum(rule is not None for rule in (max_layers, max_bytes, psnr_target)) > 1:
            raise ClientError("give at most one of max_layers, max_bytes and psnr_target")
        if max_layers is not None:
            if not 1 <= max_layers <= self.layer_count:
                raise ClientError(f"layers must be within 1..{self.layer_count} for this image")
            return max_layers
        if max_bytes is not None:
            fitting = self.layers_within(max_bytes)
            if fitting == 0:
                raise ClientError(f"{max_bytes} bytes hold no whole layer: layer 1 needs {self.end_of_layer(1)}")
            return fitting
        if psnr_target is not None:
            if any(value is None for value in self.psnr):
                raise ClientError("the server reports no PSNR for this image: use max_layers or max_bytes")
            reached = [index for index, value in enumerate(self.psnr, 1) if value is not None and value >= psnr_target]
            return reached[0] if reached else self.layer_count
        return self.layer_count

    def check_header(self, header: ContainerHeader) -> None:
        """The container's own header must describe the same layers as the table the client planned with."""
        if (header.width, header.height, header.header_bytes, header.layers) != (
            self.width,
            self.height,
            self.header_bytes,
            self.layers,
        ):
            raise ProtocolError("the container header disagrees with the server's layer table")


@dataclass(frozen=True)
class Refinement:
    """One decoded layer: the picture from layers 1..layer, and what it cost."""

    layer: int
    pixels: np.ndarray
    bytes: int  # bitstream bytes behind this picture: header and layers 1..layer
    bpp: float
    decode_seconds: float


class Fetch:
    """What both transports share: `refine()` yields `Refinement`s; `close()`, also on leaving a `with`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class Reconstruction:
    """The bytes held so far and the incremental decoder that turns whole layers into pictures."""

    def __init__(self, model: ScalableCodec) -> None:
        self.decoder = Decoder(b"", model)
        self.table: RemoteImage | None = None
        self.failure: CodecError | None = None

    @property
    def bytes_held(self) -> int:
        return self.decoder.bytes_held

    def feed(self, data: bytes) -> None:
        """Append bytes that follow those held; once the header is whole, it must match the table."""
        before = self.decoder.bytes_held
        try:
            self.decoder.feed(data)
        except CodecError as error:
            self.failure = error
            raise
        if self.table is not None and before < self.table.header_bytes <= self.decoder.bytes_held:
            self.table.check_header(self.decoder.header)

    def refinements(self, upto: int) -> Iterator[Refinement]:
        """Decode every whole layer held, up to `upto`, that is not decoded yet."""
        if self.failure is not None:
            raise self.failure  # the held bytes are damaged: a later call fails the same way
        table = self.table
        assert table is not None
        while self.decoder.layers_decoded < min(upto, self.decoder.layers_available):
            layer = self.decoder.layers_decoded + 1
            started = time.perf_counter()
            try:
                pixels = self.decoder.decode(layer)
            except CodecError as error:
                self.failure = error
                raise
            seconds = time.perf_counter() - started
            yield Refinement(layer, pixels, table.end_of_layer(layer), table.bpp(layer), seconds)


def check_model(table: RemoteImage, model: ScalableCodec) -> None:
    """The image must have been written by the loaded weights."""
    if table.model is not None and table.model != model.model_id.hex():
        raise ModelMismatchError(
            f"the image was written by model {table.model}, the loaded weights are {model.model_id.hex()}: "
            "fetch with the server's weights (--weights)"
        )
