"""The in-browser decoder's files of the loaded model, built from its weights once and held in memory.

The page decodes a stored file itself (static/decoder/) with two files bound to the model id that wrote
it: `entropy-path.json` (codec.web_export: the exact entropy path, the synthesis network's shapes and
gains) and `synthesis-weights.bin` (the synthesis network's float32 weights). They follow from the shipped
weights, so the server derives them on the first request (a few seconds, then from memory) instead of
shipping them beside the weights; nothing is fetched.

The model id leaves out the post-filter (it never changes the bitstream), so new weights with only a
retrained filter keep the id while these files change: each file's ETag is a digest of its bytes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codec.model import ScalableCodec

MEDIA_TYPES = {"entropy-path.json": "application/json", "synthesis-weights.bin": "application/octet-stream"}


class WebDecoderFiles:
    """`files()` builds both files on first call (a few seconds) and then answers from memory."""

    def __init__(self, model: ScalableCodec) -> None:
        self.model = model
        self.model_id = model.model_id.hex()
        self._lock = threading.RLock()
        self._files: dict[str, bytes] | None = None
        self._etags: dict[str, str] = {}

    def files(self) -> dict[str, bytes]:
        with self._lock:
            if self._files is None:
                from codec.web_export import SYNTHESIS_WEIGHTS, export_entropy_path, synthesis_weights

                exported = json.dumps(export_entropy_path(self.model), separators=(",", ":")).encode()
                self._files = {"entropy-path.json": exported, SYNTHESIS_WEIGHTS: synthesis_weights(self.model)}
            return self._files

    def etag(self, name: str) -> str:
        """The ETag of file `name`: a digest of its bytes, taken once."""
        with self._lock:
            if name not in self._etags:
                self._etags[name] = f'"{hashlib.sha256(self.files()[name]).hexdigest()[:32]}"'
            return self._etags[name]
