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
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from codec import container
from codec.coding import decode_layer, encode_layer, to_pixels
from codec.errors import InvalidImageError, ModelMismatchError, TruncatedLayerError, WeightsError
from codec.imageio import read_image
from codec.model import CodecConfig, RecurrentState, ScalableCodec, padded_size

WEIGHTS_FORMAT = "scalable-rnn-codec-weights"
WEIGHTS_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "codec.pt"
WEIGHTS_ENV = "CODEC_WEIGHTS"


def default_weights_path() -> Path:
    """`$CODEC_WEIGHTS` if set, else weights/codec.pt beside the package."""
    return Path(os.environ.get(WEIGHTS_ENV, DEFAULT_WEIGHTS))


# Inference runs in float64. Float32 convolutions, matrix products and even
# elementwise tanh round differently with 1 or 2 threads (the work is split at
# other places), and a last-bit difference can flip an 8-bit pixel: measured
# on Kodak, float32 decodes differed between 1 and 2 threads, float64 ones did
# not. The entropy parameters do not rely on this: they are exact (exact.py).
INFERENCE_DTYPE = torch.float64


def _weights_as_stored(model: ScalableCodec) -> dict[str, torch.Tensor]:
    """The state dict as written to disk: float32 for every float tensor."""
    return {
        name: tensor.detach().cpu().float() if tensor.is_floating_point() else tensor.detach().cpu()
        for name, tensor in model.state_dict().items()
    }


def _model_id(model: ScalableCodec) -> bytes:
    digest = hashlib.sha256(repr(sorted(model.config.to_dict().items())).encode())
    for name, tensor in sorted(_weights_as_stored(model).items()):
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
        "state_dict": _weights_as_stored(model),
        "info": {"trained": getattr(model, "trained", True), **(info or {})},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> ScalableCodec:
    """Load weights written by `save_weights` (default: `default_weights_path()`)."""
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
    return _prepare(model.to(device), trained=bool(info.get("trained", True)), info=info)


def _as_pixels(image: np.ndarray | bytes | str | Path) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidImageError("pixel arrays must be (H, W, 3) uint8")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InvalidImageError("image has no pixels")
        return image
    return read_image(image)


def _image_tensor(pixels: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    height, width, _ = pixels.shape
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float().div(255.0)
    padded_height, padded_width = padded_size(height, width)
    tensor = F.pad(tensor, (0, padded_width - width, 0, padded_height - height), mode="replicate")
    return tensor.to(like)


def encode(image: np.ndarray | bytes | str | Path, model: ScalableCodec, layers: int | None = None) -> bytes:
    """Encode an image (path, file bytes or RGB array) into a layered container."""
    layers = model.config.layers if layers is None else layers
    if not 1 <= layers <= model.config.layers:
        raise ValueError(f"layers must be within 1..{model.config.layers}")
    pixels = _as_pixels(image)
    height, width, _ = pixels.shape
    tensor = _image_tensor(pixels, next(model.parameters()))
    state = model.initial_state(tensor)
    payloads = [encode_layer(model, tensor, state) for _ in range(layers)]
    return container.serialize(model.model_id, width, height, payloads)


class Decoder:
    """Incremental decoder of one container.

    Keeps the RNN states between calls, so decoding layer n+1 after layer n
    costs one iteration. Bytes may arrive in pieces through `feed`.
    Not thread-safe: one decoder serves one caller at a time.
    """

    def __init__(self, data: bytes, model: ScalableCodec) -> None:
        self.model = model
        self._data = bytearray()
        self._header: container.ContainerHeader | None = None
        self._state: RecurrentState | None = None
        self._pixels: dict[int, np.ndarray] = {}
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
        return self._state.layer if self._state is not None else 0

    def decode(self, layers: int | None = None) -> np.ndarray:
        """Pixels (H, W, 3 uint8) after `layers` layers (default: all available)."""
        header = self.header
        layers = self.layers_available if layers is None else layers
        if layers < 1 or layers > header.layer_count:
            raise ValueError(f"layers must be within 1..{header.layer_count}")
        if layers > self.layers_available:
            raise TruncatedLayerError(
                f"layer {layers} needs {header.end_of_layer(layers)} bytes, only {len(self._data)} present"
            )
        if layers in self._pixels:
            return self._pixels[layers]
        if self._state is None or self._state.layer > layers:
            height, width = padded_size(header.height, header.width)
            blank = next(self.model.parameters()).new_zeros(1, 3, height, width)
            self._state = self.model.initial_state(blank)
        while self._state.layer < layers:
            index = self._state.layer + 1
            decode_layer(self.model, container.layer_payload(header, self._data, index), self._state)
            pixels = to_pixels(self._state.reconstruction, header.height, header.width).cpu().numpy()
            self._pixels[index] = pixels
        return self._pixels[layers]
