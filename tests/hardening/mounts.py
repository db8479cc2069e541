"""Real filesystems for fault tests: a small tmpfs that fills up, and a read-only bind mount.

Mounting needs root or passwordless sudo (CI has one or the other: scripts/ensure-system-packages
installs with apt-get the same way). A failure says so instead of silently testing less.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _privileged(*command: str) -> None:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` failed ({result.stderr.strip()}): the storage fault tests need root or "
            "passwordless sudo to mount a small tmpfs and a read-only bind mount"
        )


@contextmanager
def small_filesystem(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "4m") owned by the current user, unmounted afterwards."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    _privileged(
        "mount", "-t", "tmpfs", "-o", f"size={size},mode=0700,uid={os.getuid()},gid={os.getgid()}",
        "tmpfs", str(mountpoint),
    )  # fmt: skip
    try:
        yield mountpoint
    finally:
        _privileged("umount", "--lazy", str(mountpoint))


@contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """`directory` seen read-only (a read-only bind mount over itself) until the block ends.

    Files a process already holds open stay writable through their descriptors, as on a real
    remount; every new open, create, rename or unlink fails with EROFS.
    """
    _privileged("mount", "--bind", str(directory), str(directory))
    try:
        _privileged("mount", "-o", "remount,bind,ro", str(directory))
        yield directory
    finally:
        _privileged("umount", str(directory))


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no space left; returns it (delete it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):  # smaller and smaller, down to the last byte of the last page
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while handle.write(block):
                    pass
    return filler
