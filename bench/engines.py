"""The shared state of a cluster, as real engines on loopback: PostgreSQL from Debian's package and moto's
S3 server (moto[server], the test extras). One home for both: the fixtures of tests/server/conftest.py and
the cluster benchmark (bench/cluster.py) start them here.

PostgreSQL: `initdb` into a temporary directory (owned by an unprivileged user when the tests run as root,
since PostgreSQL refuses root), `pg_ctl start` on a free loopback port, password authentication
(scram-sha-256) on. Missing binaries fail loudly (scripts/ensure-system-packages installs them).

moto: a subprocess on a free loopback port; with `authenticate` its first unauthenticated requests create a
user, its policy and its key, so wrong credentials fail as they do on AWS.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg
from botocore.config import Config

from bench import processes

SUPERUSER = "codec"
PASSWORD = "codec-test-password"
BUCKET = "codec-blobs"
REGION = "us-east-1"
BOOT_ACTIONS = 3  # requests moto serves before it checks credentials: create_user, put_user_policy, create_access_key
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH: "
        "run scripts/ensure-system-packages (installs the Debian package postgresql)"
    )


def as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres (else nobody) user."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", owner().pw_name, "--", *command]


def owner() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("no unprivileged user to run PostgreSQL as")


@dataclass
class Postgres:
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres", password: str = PASSWORD, user: str = SUPERUSER) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        command = [str(postgres_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), *args]
        result = subprocess.run(as_owner(command), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = (self.root / "log").read_text(errors="replace") if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl {' '.join(args)}: {result.stdout}{result.stderr}\n{log}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")

    def version(self) -> str:
        with psycopg.connect(self.url()) as connection:
            return str(connection.execute("SHOW server_version").fetchone()[0])

    def database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def start_postgres() -> Postgres:
    binaries = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="codec-pg-"))  # in /tmp, reachable by the unprivileged user
    user = owner()
    os.chown(root, user.pw_uid, user.pw_gid)
    password_file = root / "password"
    password_file.write_text(PASSWORD + "\n")
    os.chown(password_file, user.pw_uid, user.pw_gid)
    initdb = [str(binaries / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "-A", "scram-sha-256"]
    initdb += [f"--pwfile={password_file}", "--no-sync", "-E", "UTF8", "--no-locale"]
    result = subprocess.run(as_owner(initdb), capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")
    server = Postgres(root, processes.free_port())
    server.start()
    return server


def remove(server: Postgres) -> None:
    with contextlib.suppress(RuntimeError):
        server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@dataclass
class Moto:
    process: subprocess.Popen
    port: int
    log_path: Path
    access_key: str = "testing"
    secret_key: str = "testing"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def session(self, access_key: str | None = None, secret_key: str | None = None) -> boto3.Session:
        return boto3.Session(
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=REGION,
        )

    def client(self, service: str = "s3", **keys: str):  # type: ignore[no-untyped-def]
        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
        return self.session(**keys).client(service, endpoint_url=self.url, config=config)

    def aws_env(self, secret_key: str | None = None) -> dict[str, str]:
        """The AWS variables of a `python -m server` that uses this moto."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def log(self) -> str:
        """Its request log, one werkzeug line a request, without the colour codes."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        processes.stop(self.process, 10)


def start_moto(root: Path, authenticate: bool) -> Moto:
    port = processes.free_port()
    log_path = root / f"moto-{port}.log"
    env = dict(os.environ)
    if authenticate:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOT_ACTIONS)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    moto = Moto(process, port, log_path)
    deadline = time.monotonic() + 120
    while True:  # a TCP connect, not a request: every request before the key exists spends a boot action
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}:\n{moto.log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                moto.stop()
                raise RuntimeError(f"moto_server not listening after 120 s:\n{moto.log()}") from None
            time.sleep(0.1)
    if authenticate:
        iam = moto.client("iam", access_key="bootstrap", secret_key="bootstrap")
        iam.create_user(UserName="codec")
        iam.put_user_policy(UserName="codec", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
        key = iam.create_access_key(UserName="codec")["AccessKey"]
        moto.access_key, moto.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    moto.client().create_bucket(Bucket=BUCKET)
    return moto
