"""Kills the process at one step of storing a bitstream, for tests/hardening/test_crash.py.

Python imports `sitecustomize` at start-up from the first folder on its path that has one; the crash
test puts this folder first in PYTHONPATH of a server it starts, with CODEC_TEST_CRASH_AT naming
the step. The server's code is not changed: the os functions it calls are wrapped here.
- `blob-write`: the bytes are in the temp file, before its fsync (nothing is durable yet);
- `rename`: the temp file is durable, before it is renamed to the blob's name;
- `index-insert`: the blob is renamed and its folder fsynced, before the index row is inserted.
"""

from __future__ import annotations

import os
import signal
import stat

_STEP = os.environ.get("CODEC_TEST_CRASH_AT", "")
_fsync, _replace = os.fsync, os.replace


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _path_of(descriptor: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}")
    except OSError:
        return ""


def _crashing_fsync(descriptor: int) -> None:
    if _STEP == "blob-write" and ".sric." in _path_of(descriptor):  # a blob's temp file, not the probe
        _die()
    _fsync(descriptor)
    if _STEP == "index-insert" and stat.S_ISDIR(os.fstat(descriptor).st_mode) and "/blobs/" in _path_of(descriptor):
        _die()


def _crashing_replace(source: str | os.PathLike, destination: str | os.PathLike, **kwargs: object) -> None:
    if _STEP == "rename" and str(destination).endswith(".sric"):
        _die()
    _replace(source, destination, **kwargs)


if _STEP:
    os.fsync = _crashing_fsync
    os.replace = _crashing_replace
