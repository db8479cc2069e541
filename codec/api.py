"""The codec as a library: `encode`, `Decoder` and `load_model`.

model = load_model()                    # weights/codec.pt
data = encode("photo.png", model)       # one layered bitstream
decoder = Decoder(data[:n], model)      # any prefix of it
pixels = decoder.decode(2)              # (H, W, 3) uint8 from 2 layers
decoder.feed(data[n:]); decoder.decode()  # one more RNN step per layer
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from codec import container
from codec.coding import decode_layer, encode_layer, to_pixels
from codec.effort import DEFAULT_EFFORT, check_effort
from codec.errors import InvalidImageError, ModelMismatchError, TruncatedLayerError, WeightsError
from codec.filter_windows import HALO, assemble, filter_windows, tile_part
from codec.imageio import read_image
from codec.model import (
    DERIVED_TABLES,
    CodecConfig,
    RecurrentState,
    ScalableCodec,
    padded_size,
    split_state,
    stack_states,
)
from codec.onnx_runtime import InferenceNetworks
from codec.search import search_offsets

WEIGHTS_FORMAT = "scalable-rnn-codec-weights"
WEIGHTS_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "codec.pt"
WEIGHTS_ENV = "CODEC_WEIGHTS"


def default_weights_path() -> Path:
    """`$CODEC_WEIGHTS` if set, else weights/codec.pt beside the package."""
    return Path(os.environ.get(WEIGHTS_ENV, DEFAULT_WEIGHTS))


# The analysis and synthesis networks run in float32. Their rounding depends
# on the thread count and the device, so pixels agree within ±1 across
# machines, not bit for bit; the bitstream does not depend on it, because the
# entropy parameters (and hence the rANS symbols) come from the exact
# fixed-point path (exact.py), which always runs in float64 on the CPU.
INFERENCE_DTYPE = torch.float32


def _weights_as_stored(model: ScalableCodec) -> dict[str, torch.Tensor]:
    """The state dict as written to disk: float32 for every float tensor."""
    return {
        name: tensor.detach().cpu().float() if tensor.is_floating_point() else tensor.detach().cpu()
        for name, tensor in model.state_dict().items()
    }


# The post-filter only changes the picture shown, never the bitstream, so it
# is left out of the model id: files keep decoding when only the filter changes.
_DISPLAY_ONLY_CONFIG = ("post_filter_channels", "post_filter_depth")
_DISPLAY_ONLY_WEIGHTS = "post_filter."
# Options added after weights were published, at their value of "off": left
# out of the model id, so those weights keep their id and their files decode.
_LATER_OPTIONS_OFF = {"context_channels": 0, "transform": "lapped"}


def _model_id(model: ScalableCodec) -> bytes:
    config = {
        k: v
        for k, v in model.config.to_dict().items()
        if k not in _DISPLAY_ONLY_CONFIG and _LATER_OPTIONS_OFF.get(k, object()) != v
    }
    digest = hashlib.sha256(repr(sorted(config.items())).encode())
    for name, tensor in sorted(_weights_as_stored(model).items()):
        if name.startswith(_DISPLAY_ONLY_WEIGHTS):
            continue
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.digest()[: container.MODEL_ID_BYTES]


def _prepare(model: ScalableCodec, trained: bool, info: dict) -> ScalableCodec:
    model.model_id = _model_id(model)
    model.to(INFERENCE_DTYPE)
    model.eval()
    model.requires_grad_(False)
    model.trained = trained
    model.training_info = info
    return model


def fresh_model(config: CodecConfig | None = None, seed: int = 0) -> ScalableCodec:
    """An untrained model with its coding tables built: for tests and smoke runs."""
    torch.manual_seed(seed)
    model = ScalableCodec(config)
    model.update(force=True)
    return _prepare(model, trained=False, info={})


def save_weights(model: ScalableCodec, path: Path, info: dict | None = None) -> None:
    """Write the model only (no optimizer), building its coding tables if it has none.

    `info` lands in the file (steps, wall time, ...); `trained` defaults to
    whether the model came from training rather than `fresh_model`.
    """
    model.update(force=False)
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v for k, v in _weights_as_stored(model).items() if k not in DERIVED_TABLES},
        "info": {"trained": getattr(model, "trained", True), **(info or {})},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


RUNTIMES = ("onnx", "torch")


def load_model(
    path: str | Path | None = None, device: str | torch.device = "cpu", runtime: str = "onnx"
) -> ScalableCodec:
    """Load weights written by `save_weights` (default: `default_weights_path()`).

    `runtime="onnx"` (the default on the CPU) runs the analysis and synthesis networks through ONNX
    Runtime (`codec.onnx_runtime`), which was faster; "torch" keeps them in torch. On a GPU they
    stay in torch. Either way the symbols are the same and the pixels within ±1."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    path = Path(path) if path is not None else default_weights_path()
    if not path.exists():
        raise WeightsError(
            f"no trained weights at {path}: train with `python -m codec train` and export them, or pass --weights"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a damaged file
        raise WeightsError(f"cannot read weights {path}: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path} is not a weights file of this codec")
    if payload.get("version") != WEIGHTS_VERSION:
        raise WeightsError(f"{path} has weights format version {payload.get('version')}")
    try:
        model = ScalableCodec(CodecConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise WeightsError(f"{path} does not match this codec's architecture: {error}") from error
    info = payload.get("info", {})
    model = _prepare(model.to(device), trained=bool(info.get("trained", True)), info=info)
    if runtime == "onnx" and torch.device(device).type == "cpu":
        model.inference = InferenceNetworks(model)
    return model


def _as_pixels(image: np.ndarray | bytes | str | Path) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidImageError("pixel arrays must be (H, W, 3) uint8")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InvalidImageError("image has no pixels")
        return image
    return read_image(image)


def _tile_tensor(pixels: np.ndarray, tile: container.Tile, like: torch.Tensor) -> torch.Tensor:
    """One tile of the picture as the network's input, padded by edge replication."""
    crop = pixels[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
    tensor = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float().div(255.0)
    padded_height, padded_width = padded_size(tile.height, tile.width)
    tensor = F.pad(tensor, (0, padded_width - tile.width, 0, padded_height - tile.height), mode="replicate")
    return tensor.to(like)


Progress = Callable[[int, int], None]


# Tiles coded together run each layer's networks once, as one batch: fewer, larger operations.
# This bounds a batch's pixels, and with them its working memory.
BATCH_PIXELS = 1 << 20


def tile_batches(tiles: tuple[container.Tile, ...] | list[container.Tile]) -> list[list[container.Tile]]:
    """The tiles in batches of one padded size and at most BATCH_PIXELS, in raster order within each."""
    by_size: dict[tuple[int, int], list[container.Tile]] = {}
    for tile in tiles:
        by_size.setdefault(padded_size(tile.height, tile.width), []).append(tile)
    batches = []
    for (height, width), group in by_size.items():
        per_batch = max(1, BATCH_PIXELS // (height * width))
        batches += [group[start : start + per_batch] for start in range(0, len(group), per_batch)]
    return batches


def encode(
    image: np.ndarray | bytes | str | Path,
    model: ScalableCodec,
    layers: int | None = None,
    tile_size: int = container.DEFAULT_TILE_SIZE,
    progress: Progress | None = None,
    effort: int = DEFAULT_EFFORT,
) -> bytes:
    """Encode an image (path, file bytes or RGB array) into a layered container.

    Tiles are coded in batches of one size (`tile_batches`), so memory follows
    the batch, not the picture. `progress(done, total)` is called after every
    tile's layer.
    `effort` above 1 searches each tile's symbols first (`codec.search`):
    fewer bits for the same quality, at many times the encode time; the
    decoder is the same.
    """
    layers = model.config.layers if layers is None else layers
    if not 1 <= layers <= model.config.layers:
        raise ValueError(f"layers must be within 1..{model.config.layers}")
    check_effort(effort)
    pixels = _as_pixels(image)
    height, width, _ = pixels.shape
    container.check_tile_size(width, height, tile_size)  # before any network work
    tiles = container.tile_grid(width, height, tile_size)
    payloads: list[list[bytes]] = [[b""] * len(tiles) for _ in range(layers)]
    like = next(model.parameters())
    done = 0
    for batch in tile_batches(tiles):
        tensor = torch.cat([_tile_tensor(pixels, tile, like) for tile in batch])
        searched = [search_offsets(model, tile_tensor[None], effort, layers) for tile_tensor in tensor]
        state = model.initial_state(tensor)
        for k in range(layers):
            offset = None if searched[0] is None else torch.cat([offsets[k] for offsets in searched])
            for tile, payload in zip(batch, encode_layer(model, tensor, state, offset), strict=True):
                payloads[k][tile.index] = payload
                done += 1
                if progress is not None:
                    progress(done, len(tiles) * layers)
    return container.serialize(model.model_id, width, height, tile_size, payloads)


Region = tuple[int, int, int, int]
# visit(tile, n, picture): a tile's shown picture (its own height x width x 3, uint8) after layer n
LayerVisit = Callable[[container.Tile, int, np.ndarray], None]
# The recurrent states a Decoder keeps: about 3.5 MB per 256x256 tile, so a
# 16 MP picture's tiles all fit and a 100 MP one decodes in bounded memory.
DEFAULT_STATE_BUDGET = 1 << 30
# Shown pictures of every layer decoded (8-bit): 6 layers of a 12 MP picture.
DEFAULT_PICTURE_BUDGET = 256 << 20


class Decoder:
    """Incremental decoder of one container.

    Keeps the tiles' RNN states between calls, so decoding layer n+1 after
    layer n costs one iteration per tile, and a region decodes only the tiles
    it touches. The pictures of every layer shown are kept too, so going
    back to a layer shown before costs nothing (a layer only passed through
    on the way is not made into a picture: the post-filter would cost as much
    as the layer's synthesis). Both are bounded in
    bytes (`state_budget`, `picture_budget`): past them the least recently
    used tiles' entries are dropped (and decoded again from the first layer
    if asked for), so a huge picture decodes in bounded memory. Bytes may
    arrive in pieces through `feed`.
    Not thread-safe: one decoder serves one caller at a time.
    """

    def __init__(
        self,
        data: bytes,
        model: ScalableCodec,
        state_budget: int = DEFAULT_STATE_BUDGET,
        picture_budget: int = DEFAULT_PICTURE_BUDGET,
    ) -> None:
        self.model = model
        self.state_budget = state_budget
        self._pictures = _PictureCache(picture_budget)
        self._data = bytearray()
        self._header: container.ContainerHeader | None = None
        self._states: OrderedDict[int, RecurrentState] = OrderedDict()
        self._state_bytes: dict[int, int] = {}
        self._layers_shown = 0
        self._symbol_checksums: dict[tuple[int, int], int] = {}  # (layer, tile) -> CRC-32 of its symbols
        self.iterations = 0  # RNN iterations run, over all tiles: what decoding has cost so far
        self.feed(data)

    def feed(self, more: bytes) -> int:
        """Append bytes that follow those already held; returns `layers_available`."""
        self._data += more
        if self._header is None and len(self._data) >= container.FIXED_HEADER_BYTES:
            if len(self._data) >= container.required_header_bytes(bytes(self._data)):
                self._accept_header(container.parse_header(bytes(self._data)))
        return self.layers_available

    def _accept_header(self, header: container.ContainerHeader) -> None:
        if header.model_id != self.model.model_id:
            raise ModelMismatchError(
                f"file needs model {header.model_id.hex()}, loaded model is {self.model.model_id.hex()}"
            )
        self._header = header

    @property
    def header(self) -> container.ContainerHeader:
        if self._header is None:
            container.parse_header(bytes(self._data))  # raises the precise error
        assert self._header is not None
        return self._header

    @property
    def bytes_held(self) -> int:
        return len(self._data)

    @property
    def layers_available(self) -> int:
        return self._header.layers_within(len(self._data)) if self._header else 0

    @property
    def layers_decoded(self) -> int:
        """How many layers the last `decode` showed (0 before the first)."""
        return self._layers_shown

    def symbol_checksum(self, layer: int) -> int:
        """CRC-32 over the tiles' symbol checksums of `layer`, in tile order (every tile decoded once)."""
        tiles = self.header.tiles
        missing = [t.index for t in tiles if (layer, t.index) not in self._symbol_checksums]
        if missing:
            raise ValueError(f"layer {layer} of tiles {missing} has not been decoded")
        crcs = b"".join(self._symbol_checksums[(layer, t.index)].to_bytes(4, "little") for t in tiles)
        return zlib.crc32(crcs)

    def decode(self, layers: int | None = None, region: Region | None = None) -> np.ndarray:
        """Pixels (h, w, 3 uint8) after `layers` layers (default: all available).

        `region` is (x, y, width, height) in pixels; only the tiles it touches
        are decoded. Default: the whole picture.
        """
        header = self.header
        layers = self.layers_available if layers is None else layers
        if layers < 1 or layers > header.layer_count:
            raise ValueError(f"layers must be within 1..{header.layer_count}")
        if layers > self.layers_available:
            raise TruncatedLayerError(
                f"layer {layers} needs {header.end_of_layer(layers)} bytes, only {len(self._data)} present"
            )
        region = check_region(region, header.width, header.height)
        x, y, width, height = region
        pixels = np.empty((height, width, 3), dtype=np.uint8)

        def place(tile: container.Tile, picture: np.ndarray) -> None:
            left, top = max(x, tile.x), max(y, tile.y)
            right, bottom = min(x + width, tile.x + tile.width), min(y + height, tile.y + tile.height)
            pixels[top - y : bottom - y, left - x : right - x] = picture[
                top - tile.y : bottom - tile.y, left - tile.x : right - tile.x
            ]

        self._tile_pictures([tile for tile in header.tiles if tile.touches(*region)], layers, place)
        self._layers_shown = layers
        return pixels

    def decode_every_layer(self, visit: LayerVisit, layers: int | None = None) -> None:
        """`visit(tile, n, picture)` for every tile after each layer n = 1..`layers` (default: all available).

        One RNN pass per tile, in the memory of one batch of tiles: how the server checks (and measures)
        every layer of a new upload, however large, where `decode(n)` for each n would keep every tile's
        state between the calls or, past the budget, decode tiles again from the first layer. Only on a
        decoder that has decoded nothing yet, so that no layer of any tile is skipped.
        """
        layers = self.layers_available if layers is None else layers
        if self._states or self._symbol_checksums:
            raise ValueError("decode_every_layer needs a decoder that has decoded nothing yet")
        if not 1 <= layers <= self.layers_available:
            raise ValueError(f"layers must be within 1..{self.layers_available} (the layers held)")
        self._tile_pictures(list(self.header.tiles), layers, lambda tile, picture: None, visit)
        self._layers_shown = layers

    def _tile_pictures(
        self,
        tiles: list[container.Tile],
        layers: int,
        place: Callable[[container.Tile, np.ndarray], None],
        visit: LayerVisit | None = None,
    ) -> None:
        """`place(tile, picture)` for each of `tiles` with its shown picture after `layers` layers: from the
        picture cache, else filtered in windows of the assembled picture (`codec.filter_windows`: the
        post-filter reaches across tile borders, so a window takes in its neighbours' edges too). A
        window's tiles are decoded first, in batches that share a padded size and a layer. The layer
        asked for is cached, within its budget; the layers passed through on the way are made into
        pictures (and cached) only for `visit`: a picture costs about as much as the layer's synthesis,
        and a region decoded from scratch at layer 6 would pay it six times. Pictures are placed window
        by window, and a tile's reconstructions are kept only while a later window needs them, so memory
        follows the window, not the picture."""
        missing = []
        for tile in tiles:
            if (cached := self._pictures.get((tile.index, layers))) is not None:
                place(tile, cached)
            else:
                missing.append(tile)
        halo = HALO if self.model.post_filter is not None else 0
        windows = filter_windows(self.header.tiles, missing, halo, BATCH_PIXELS)
        last_use = {tile.index: number for number, window in enumerate(windows) for tile in window.sources}
        shown_layers = range(1, layers + 1) if visit is not None else range(layers, layers + 1)
        reconstructions: dict[int, dict[int, torch.Tensor]] = {}  # tile -> layer -> padded reconstruction
        for number, window in enumerate(windows):
            needed = [tile for tile in window.sources if tile.index not in reconstructions]
            reconstructions.update(self._reconstructions(needed, layers, every_layer=visit is not None))
            for layer in shown_layers:
                picture = assemble(window, {tile.index: reconstructions[tile.index][layer] for tile in window.sources})
                shown = self.model.shown_picture(picture, layer)
                for tile in window.tiles:
                    pixels = to_pixels(tile_part(shown, window, tile), tile.height, tile.width).cpu().numpy()
                    self._pictures.put((tile.index, layer), pixels)
                    if visit is not None:
                        visit(tile, layer, pixels)
                    if layer == layers:
                        place(tile, pixels)
            for tile in window.sources:
                if last_use[tile.index] == number:
                    del reconstructions[tile.index]

    def _reconstructions(
        self, tiles: list[container.Tile], layers: int, every_layer: bool
    ) -> dict[int, dict[int, torch.Tensor]]:
        """Each tile's padded reconstruction (1, 3, h, w) after `layers` layers (and after every layer
        before, if `every_layer`), by tile and layer: continued from a held state where one is at or
        below `layers`, else decoded from the first layer; the states are held afterwards."""
        header = self.header
        groups: dict[tuple[int, int, int], list[container.Tile]] = {}
        held: dict[int, RecurrentState] = {}  # the states to continue from (new ones are made per batch)
        for tile in tiles:
            state = self._states.get(tile.index)
            start = 0
            if state is not None and state.layer <= layers:
                held[tile.index] = state
                start = state.layer
            groups.setdefault((*padded_size(tile.height, tile.width), start), []).append(tile)
        like = next(self.model.parameters())
        found: dict[int, dict[int, torch.Tensor]] = {tile.index: {} for tile in tiles}
        for (height, width, _), group in groups.items():
            for batch in tile_batches(group):
                state = stack_states(
                    [
                        held.pop(tile.index) if tile.index in held
                        else self.model.initial_state(like.new_zeros(1, 3, height, width))
                        for tile in batch
                    ]
                )  # fmt: skip
                while state.layer < layers:
                    layer = state.layer + 1
                    payloads = [container.tile_payload(header, self._data, layer, tile.index) for tile in batch]
                    checksums = decode_layer(self.model, payloads, state, header.version)
                    self.iterations += len(batch)
                    for i, (tile, checksum) in enumerate(zip(batch, checksums, strict=True)):
                        self._symbol_checksums[(layer, tile.index)] = checksum
                        if every_layer:
                            found[tile.index][layer] = state.reconstruction[i : i + 1]
                for i, tile in enumerate(batch):
                    found[tile.index][layers] = state.reconstruction[i : i + 1]
                for tile, tile_state in zip(batch, split_state(state), strict=True):
                    self._hold(tile.index, tile_state)
        return found

    def _hold(self, index: int, state: RecurrentState) -> None:
        """Keep `state` as the most recently used; drop the oldest others beyond the budget."""
        self._states[index] = state
        self._states.move_to_end(index)
        self._state_bytes[index] = state_bytes(state)
        while len(self._states) > 1 and sum(self._state_bytes.values()) > self.state_budget:
            oldest, _ = self._states.popitem(last=False)
            del self._state_bytes[oldest]


class _PictureCache:
    """Shown tile pictures by (tile, layers), least recently used first out past `budget` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def get(self, key: tuple[int, int]) -> np.ndarray | None:
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, key: tuple[int, int], pixels: np.ndarray) -> None:
        self.used += pixels.nbytes - (self._items[key].nbytes if key in self._items else 0)
        self._items[key] = pixels
        self._items.move_to_end(key)
        while self.used > self.budget and self._items:
            _, dropped = self._items.popitem(last=False)
            self.used -= dropped.nbytes


def state_bytes(state: RecurrentState) -> int:
    """Memory held by one tile's recurrent state."""
    total = 0
    for value in vars(state).values():
        for tensor in value if isinstance(value, tuple) else (value,):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def check_region(region: Region | None, width: int, height: int) -> Region:
    """The region as (x, y, w, h) inside a width x height picture, or a ValueError saying why not."""
    if region is None:
        return (0, 0, width, height)
    if len(region) != 4 or not all(isinstance(v, (int, np.integer)) for v in region):
        raise ValueError("a region is four integers: x, y, width, height")
    x, y, w, h = (int(v) for v in region)
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise ValueError("a region needs x, y >= 0 and a width and height of at least 1")
    if x + w > width or y + h > height:
        raise ValueError(f"region {x},{y},{w},{h} reaches outside the {width}x{height} picture")
    return (x, y, w, h)
