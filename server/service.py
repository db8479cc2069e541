"""What one running app holds: the model, storage, pool, caches and encode jobs (`server.deps` hands them to routes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.config import Settings
from server.decoders import Reconstructions
from server.metrics import Metrics
from server.pool import ModelPool, PoolBusy
from server.storage import Storage

if TYPE_CHECKING:
    from codec.model import ScalableCodec
    from server.encode_jobs import EncodeJobs
    from server.web_decoder import WebDecoderFiles


@dataclass
class Service:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    model: ScalableCodec | None = None
    device: str = "cpu"
    storage: Storage | None = None
    pool: ModelPool | None = None
    reconstructions: Reconstructions | None = None
    encode_jobs: EncodeJobs | None = None
    web_decoder: WebDecoderFiles | None = None  # the browser decoder's files of the model
    streams: int = 0  # open WebSocket streams

    @property
    def ready(self) -> bool:
        return self.model is not None and self.storage is not None and self.pool is not None

    def refuse_if_busy(self) -> None:
        """PoolBusy (429) while every worker and queue slot is taken: an upload asks before its body is
        read and before it is inspected, not only when its encode job would be refused."""
        pool = self.pool
        if pool is not None and pool.admitted >= pool.capacity:
            self.metrics.rejected.inc()
            raise PoolBusy(pool.retry_after)
