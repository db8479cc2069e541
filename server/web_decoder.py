"""The in-browser decoder's files of the loaded model, built from its weights once and held in memory.

The page decodes a stored file itself (static/decoder/) with two files bound to the model id that wrote
it: `entropy-path.json` (codec.web_export: the exact entropy path and the synthesis gains) and
`synthesis.onnx` (codec.onnx_runtime's graph). They follow from the shipped weights, so the server derives
them on the first request (a few seconds, then from memory) instead of shipping them beside the weights;
nothing is fetched.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codec.model import ScalableCodec

MEDIA_TYPES = {"entropy-path.json": "application/json", "synthesis.onnx": "application/octet-stream"}


class WebDecoderFiles:
    """`files()` builds both files on first call (a few seconds) and then answers from memory."""

    def __init__(self, model: ScalableCodec) -> None:
        self.model = model
        self.model_id = model.model_id.hex()
        self._lock = threading.Lock()
        self._files: dict[str, bytes] | None = None

    def files(self) -> dict[str, bytes]:
        with self._lock:
            if self._files is None:
                from codec.onnx_runtime import graph_bytes
                from codec.web_export import export_entropy_path

                exported = json.dumps(export_entropy_path(self.model), separators=(",", ":")).encode()
                self._files = {"entropy-path.json": exported, "synthesis.onnx": graph_bytes(self.model, "synthesis")}
            return self._files
