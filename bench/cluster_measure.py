"""The cluster benchmark's measurements: the scale-out deployment on loopback, as `Figures`.

The cluster of docker-compose.yml's `cluster` profile, without containers: PostgreSQL (index and job
queue) and moto's S3 server (bench/engines.py), two API servers that do not encode, encode workers
(`python -m server worker`), and nginx in front with the compose file's own server block
(deploy/nginx/codec.conf) on a loopback port. The alternative measured in the same run is one API
server asked directly, as the single-container deployment is.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
import psycopg

from bench import engines, processes
from bench.load import Answer, LoadResult, burst, http_load
from bench.processes import REPO, Running
from bench.service_measure import WRITE_KEY, getter, uploader

DIRECT = "1 API server, direct"
ONE_BEHIND_NGINX = "nginx → 1 API server"
TWO_BEHIND_NGINX = "nginx → 2 API servers"
SERVER_BLOCK = REPO / "deploy" / "nginx" / "codec.conf"
NGINX_CONFIG = """\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream codec_api {{
{servers}
        keepalive 32;
    }}
{server_block}
}}
"""


@dataclass(frozen=True)
class Plan:
    """What one `python -m bench.cluster` run measures (its options, less where it writes)."""

    weights: str | None
    images: Path
    uploads: int
    duration: float
    concurrency: list[int]
    workers: list[int]
    torch_threads: int


@dataclass
class HttpRow:
    """One read phase: which request, through which front, from how many clients."""

    request: str
    front: str
    concurrency: int
    result: LoadResult


@dataclass
class BurstRow:
    """Uploads sent at once through nginx while `workers` worker processes take the queued jobs."""

    workers: int
    answers: list[Answer]
    jobs_per_worker: list[int]  # done jobs of this burst by each worker, most first

    @property
    def seconds(self) -> float:
        return max(answer.seconds for answer in self.answers)


@dataclass
class Figures:
    """Everything a run measured: what bench/cluster_report.py turns into tables."""

    nginx_version: str
    postgres_version: str
    moto_version: str
    picture_bytes: int = 0
    first_end: int = 0
    http: list[HttpRow] = field(default_factory=list)
    bursts: list[BurstRow] = field(default_factory=list)


def nginx_config(root: Path, port: int, upstreams: list[Running]) -> str:
    """The compose file's server block, listening on a loopback port, in front of `upstreams`."""
    block = re.sub(r"listen\s+[^;]+;", f"listen 127.0.0.1:{port};", SERVER_BLOCK.read_text(), count=1)
    servers = "\n".join(f"        server 127.0.0.1:{upstream.port};" for upstream in upstreams)
    return NGINX_CONFIG.format(root=root, servers=servers, server_block=block)


def start_front(root: Path, name: str, upstreams: list[Running]) -> Running:
    nginx = processes.nginx_binary()
    if nginx is None:
        raise SystemExit("nginx is not installed: run scripts/ensure-system-packages")
    home = root / name
    home.mkdir()
    root.chmod(0o755)  # nginx's worker runs as nobody when started by root

    def command(port: int) -> list[str]:
        config = home / "nginx.conf"
        config.write_text(nginx_config(home, port, upstreams))
        return [nginx, "-p", str(home), "-c", str(config), "-e", str(home / "error.log")]

    return processes.start(name, command, root, "/ready")


def start_api(name: str, root: Path, env: dict[str, str], weights: Path | None) -> Running:
    return processes.start(name, lambda port: processes.server_command(port, root / name, weights), root, "/ready", env)


def done_jobs_by_worker(url: str, since: float) -> list[int]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT count(*) FROM encode_jobs WHERE state = 'done' AND created >= %s GROUP BY worker ORDER BY 1 DESC",
            (since,),
        ).fetchall()
    return [count for (count,) in rows]


async def measure(plan: Plan, root: Path) -> Figures:
    from codec.data import list_images

    paths = list_images(plan.images)[: plan.uploads]
    if not paths:
        raise SystemExit(f"no images in {plan.images}")
    pictures = [(path.name, path.read_bytes()) for path in paths]
    postgres = engines.start_postgres()
    moto = engines.start_moto(root, authenticate=False)
    running: list[Running] = []
    workers: list = []
    try:
        url = postgres.database()
        env = processes.server_environment(
            {
                "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
                "CODEC_SERVER_INDEX_URL": url,
                "CODEC_SERVER_BLOB_URL": f"s3://{engines.BUCKET}/bench",
                "CODEC_SERVER_S3_ENDPOINT": moto.url,
                "CODEC_SERVER_CLAIM_JOBS": "false",
                "CODEC_SERVER_TORCH_THREADS": str(plan.torch_threads),
                "CODEC_SERVER_QUEUE_SIZE": str(4 * plan.uploads),
                **moto.aws_env(),
            }
        )
        weights = Path(plan.weights) if plan.weights else None
        print("bench.cluster: PostgreSQL, moto, 2 API servers, nginx", file=sys.stderr)
        api = [start_api(name, root, env, weights) for name in ("api-a", "api-b")]
        running += api
        fronts = {ONE_BEHIND_NGINX: start_front(root, "nginx-1", api[:1])}
        fronts[TWO_BEHIND_NGINX] = start_front(root, "nginx-2", api)
        running += fronts.values()
        figures = Figures(processes.nginx_version(), postgres.version(), metadata.version("moto"))
        workers.append(processes.start_worker(root / "w1", env, root / "worker-1.log", weights))
        both = fronts[TWO_BEHIND_NGINX]
        first = (await burst(uploader(both.url, pictures[:1]), 1))[0]
        if first.status != 201:
            raise RuntimeError(f"the first upload answered {first.status}")
        info = first.document
        layers = len(info["layers"])
        picture_path = f"/image/{info['id']}?layers={layers}"
        figures.first_end = info["layers"][0]["end"]
        for server in api:  # every process's cache holds the picture before the clock starts
            figures.picture_bytes = len(httpx.get(server.url + picture_path, timeout=120).raise_for_status().content)
        await read_phases(plan, figures, {DIRECT: api[0], **fronts}, info, picture_path)
        for count in plan.workers:
            while len(workers) < count:
                n = len(workers) + 1
                workers.append(processes.start_worker(root / f"w{n}", env, root / f"worker-{n}.log", weights))
            print(f"bench.cluster: a burst of {plan.uploads} uploads over {count} worker(s)", file=sys.stderr)
            since = time.time()
            answers = await burst(uploader(both.url, pictures), plan.uploads)
            figures.bursts.append(BurstRow(count, answers, done_jobs_by_worker(url, since)))
        return figures
    finally:
        for worker in workers:
            processes.stop(worker)
        for process in running:
            process.stop()
        moto.stop()
        engines.remove(postgres)


async def read_phases(plan: Plan, figures: Figures, fronts: dict[str, Running], info: dict, picture_path: str) -> None:
    first_layer = {"Range": f"bytes=0-{figures.first_end - 1}"}
    picture = f"picture, cached (`?layers={len(info['layers'])}`)"
    for concurrency in plan.concurrency:
        print(f"bench.cluster: reads, {concurrency} client(s)", file=sys.stderr)
        for front, server in fronts.items():
            result = await http_load(
                getter(server.url + picture_path), concurrency=concurrency, duration=plan.duration, expect=200,
                expect_bytes=figures.picture_bytes,
            )  # fmt: skip
            figures.http.append(HttpRow(picture, front, concurrency, result))
            result = await http_load(
                getter(f"{server.url}/image/{info['id']}/bitstream", first_layer),
                concurrency=concurrency, duration=plan.duration, expect=206, expect_bytes=figures.first_end,
            )  # fmt: skip
            figures.http.append(HttpRow("bitstream `Range` (header + layer 1)", front, concurrency, result))
