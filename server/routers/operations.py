"""What operators and orchestrators poll: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from server.deps import ServiceDep, error_responses
from server.errors import ApiError
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.schemas import Health, Ready
from server.storage import StorageError

router = APIRouter()


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready", response_model=Ready, responses=error_responses(503), summary="Readiness: model loaded, storage writable"
)
async def ready(service: ServiceDep) -> Ready:
    if not service.ready or service.model is None or service.storage is None:
        raise ApiError(503, "not_ready", "the model is not loaded")
    try:
        await run_in_threadpool(service.storage.check_writable)
    except StorageError as error:
        raise ApiError(503, "not_ready", f"storage is not writable: {error}") from error
    model = service.model
    return Ready(
        status="ready",
        model=model.model_id.hex(),
        trained=bool(getattr(model, "trained", False)),
        device=service.device,
        layers=model.config.layers,
    )


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)
