"""Reconstructions: decoded pictures per (image, layers, format), from incremental decoders.

Two bounded LRUs, both touched only on the event loop:

* pictures: encoded PNG/WebP/JPEG bytes, bounded by total bytes;
* decoders: one `codec.api.Decoder` per image, bounded by count and by pixels,
  so that asking for layer n+1 after layer n costs one RNN iteration.

A decoder is not thread-safe, so each image has an asyncio lock: one job per
image at a time, while different images decode in parallel on the pool.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from codec.api import Decoder, Region
from codec.imageio import write_image
from server.metrics import Metrics
from server.pool import ModelPool, PoolBusy
from server.storage import Storage, StoredImage

T = TypeVar("T")

PICTURE_FORMATS = {"png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp"), "jpeg": ("JPEG", "image/jpeg")}


@dataclass
class _Slot:
    decoder: Decoder
    pixels: int


class _ByteLRU:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()

    def get(self, key: tuple) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple, value: bytes) -> None:
        if len(value) > self.budget:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= len(old)
        self._items[key] = value
        self.used += len(value)
        while self.used > self.budget:
            _, evicted = self._items.popitem(last=False)
            self.used -= len(evicted)

    def drop(self, predicate: Callable[[tuple], bool]) -> None:
        for key in [key for key in self._items if predicate(key)]:
            self.used -= len(self._items.pop(key))


class Reconstructions:
    def __init__(
        self,
        model,
        storage: Storage,
        pool: ModelPool,
        metrics: Metrics,
        decoder_slots: int,
        decoder_pixels: int,
        picture_bytes: int,
    ) -> None:
        self.model = model
        self.storage = storage
        self.pool = pool
        self.metrics = metrics
        self.decoder_slots = decoder_slots
        self.decoder_pixels = decoder_pixels
        self._decoders: OrderedDict[str, _Slot] = OrderedDict()
        self._pictures = _ByteLRU(picture_bytes)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def picture(
        self, image: StoredImage, layers: int, fmt: str, *, region: Region | None = None, wait: float = 0.0
    ) -> bytes:
        """The reconstruction from the first `layers` layers, encoded as `fmt` (png, webp, jpeg).

        `region` (x, y, w, h) crops it, decoding only the tiles the region touches.
        """
        key = (image.id, layers, fmt, region)
        cached = self._pictures.get(key)
        if cached is not None:
            self.metrics.cache.labels("picture", "hit").inc()
            return cached
        async with self._lock(image.id):
            cached = self._pictures.get(key)  # made while this request waited for the lock
            if cached is not None:
                self.metrics.cache.labels("picture", "hit").inc()
                return cached
            self.metrics.cache.labels("picture", "miss").inc()
            data = await self._with_decoder(
                image, lambda decoder: self._render(decoder, image, layers, fmt, region), wait
            )
            self._pictures.put(key, data)
            return data

    async def pixels(
        self, image: StoredImage, layers: int, *, region: Region | None = None, wait: float = 0.0
    ) -> np.ndarray:
        """The decoded (h, w, 3) pixels of `region` from the first `layers` layers, for callers that resize or
        recolour them (IIIF); only the tiles the region touches are decoded, by the image's cached decoder."""
        async with self._lock(image.id):
            return await self._with_decoder(image, lambda decoder: self._decode(decoder, image, layers, region), wait)

    async def _with_decoder(
        self, image: StoredImage, job: Callable[[Decoder | None], tuple[Decoder, T]], wait: float
    ) -> T:
        """Run `job` on the pool with the image's cached decoder (or None) and keep the decoder it returns.

        Call it holding the image's lock: a decoder serves one job at a time."""
        slot = self._decoders.pop(image.id, None)
        self.metrics.cache.labels("decoder", "hit" if slot else "miss").inc()
        decoder = slot.decoder if slot else None
        try:
            decoder, result = await self.pool.run(lambda: job(decoder), wait=wait)
        except PoolBusy:
            if slot is not None:
                self._decoders[image.id] = slot  # untouched: keep it for the retry
            raise
        self.adopt(image, decoder)
        return result

    def _decode(
        self, decoder: Decoder | None, image: StoredImage, layers: int, region: Region | None
    ) -> tuple[Decoder, np.ndarray]:
        """On a worker thread: feed the missing bytes and decode."""
        need = image.end_of_layer(layers)
        with self.metrics.stage("decode", "read"):
            if decoder is None:
                decoder = Decoder(self.storage.read(image, 0, need), self.model)
            elif decoder.bytes_held < need:
                decoder.feed(self.storage.read(image, decoder.bytes_held, need))
        before = decoder.iterations
        with self.metrics.stage("decode", "layers"):
            pixels = decoder.decode(layers, region)
        self.metrics.layers_decoded.inc(decoder.iterations - before)
        return decoder, pixels

    def _render(
        self, decoder: Decoder | None, image: StoredImage, layers: int, fmt: str, region: Region | None
    ) -> tuple[Decoder, bytes]:
        """On a worker thread: decode, then encode the picture."""
        decoder, pixels = self._decode(decoder, image, layers, region)
        with self.metrics.stage("decode", "picture"):
            data = write_image(pixels, format=PICTURE_FORMATS[fmt][0])
        return decoder, data

    def adopt(self, image: StoredImage, decoder: Decoder) -> None:
        """Keep a decoder (e.g. the one that verified an upload) for later requests."""
        pixels = image.width * image.height
        if self.decoder_slots == 0 or pixels > self.decoder_pixels:
            return
        self._decoders.pop(image.id, None)
        self._decoders[image.id] = _Slot(decoder, pixels)
        total = sum(slot.pixels for slot in self._decoders.values())
        while len(self._decoders) > self.decoder_slots or total > self.decoder_pixels:
            _, evicted = self._decoders.popitem(last=False)
            total -= evicted.pixels

    def forget(self, image_id: str) -> None:
        self._decoders.pop(image_id, None)
        self._pictures.drop(lambda key: key[0] == image_id)

    def _lock(self, image_id: str) -> _LockLease:
        return _LockLease(self._locks, image_id)


class _LockLease:
    """`async with` an image's lock; the lock is dropped from the table when nobody holds or awaits it."""

    def __init__(self, table: dict[str, tuple[asyncio.Lock, int]], key: str) -> None:
        self.table = table
        self.key = key

    async def __aenter__(self) -> None:
        lock, users = self.table.get(self.key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self.table[self.key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.table[self.key][0].release()
        self._release_user()

    def _release_user(self) -> None:
        lock, users = self.table[self.key]
        if users <= 1:
            del self.table[self.key]
        else:
            self.table[self.key] = (lock, users - 1)
