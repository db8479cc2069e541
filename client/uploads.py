"""Uploading: `POST /encode` answers an encode job (202), which the client follows to the stored image.

The job's server-sent events (`/jobs/{id}/events`) carry its state and progress; a failed job
raises `ServerError` with the status, code and message the upload would have answered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx

from client.errors import ClientError, ProtocolError, ServerError
from client.ranges import server_error
from protocol import ENCODE_PATH, JOB_FINAL_STATES

JobWatcher = Callable[[dict], None]  # called with the job document at every change


def _events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) of every complete server-sent event of a streamed response."""
    event, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])


def upload(
    server: str, data: bytes, name: str = "image", key: str | None = None, progress: JobWatcher | None = None
) -> dict:
    """Upload `data` to the server at `server` (http://host:port) and wait for it to be stored: the info document."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=httpx.Timeout(60, read=None)) as http:
        try:
            accepted = http.post(ENCODE_PATH, files={"file": (name, data)})
            if accepted.status_code != 202:
                raise server_error(accepted)
            job = accepted.json()
            with http.stream("GET", job["urls"]["events"]) as events:
                if events.status_code != 200:
                    events.read()
                    raise server_error(events)
                for kind, text in _events(events):
                    if kind == "job":
                        job = json.loads(text)
                        if progress is not None:
                            progress(job)
        except httpx.TransportError as error:
            raise ClientError(f"cannot reach {server}: {error}") from error
    if job["state"] not in JOB_FINAL_STATES:
        raise ProtocolError(f"the job's events ended while it was {job['state']}")
    if job["state"] == "failed":
        error = job["error"]
        raise ServerError(error["status"], error["code"], error["message"])
    if job["image"] is None:
        raise ServerError(404, "image_not_found", "the image was deleted right after it was stored")
    return job["image"]
