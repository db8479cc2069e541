"""The codec holds the codec alone: it imports no network library, and the client reaches it only
through its public surface (`codec.__all__`)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import codec
light = sorted(name for name in ("torch", "numpy", "PIL") if name in sys.modules)
import codec.api, codec.__main__
missing = [name for name in codec.__all__ if not hasattr(codec, name)]
network = sorted(name for name in sys.modules if name.split(".")[0] in ("httpx", "websockets", "client"))
print(json.dumps({"light": light, "missing": missing, "network": network}))
"""


def test_the_codec_imports_no_network_library_and_exports_its_surface() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    )
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["network"] == [], "codec/ must not import httpx, websockets or the client"
    assert answer["missing"] == [], "every name of codec.__all__ resolves"
    assert answer["light"] == [], "`import codec` alone stays light: torch, numpy and PIL load on first use"


def test_the_codec_command_line_has_no_fetch() -> None:
    from codec.__main__ import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "fetch" not in commands and "decompress" in commands


def test_the_client_uses_only_the_codec_surface() -> None:
    import codec

    for path in sorted((REPO / "client").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("codec"):
                assert node.module == "codec", f"{path.name} imports {node.module}: use `from codec import ...`"
                assert {alias.name for alias in node.names} <= set(codec.__all__), path.name
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("codec.") for alias in node.names), path.name


def test_the_client_command_refuses_missing_weights(tmp_path: Path, capsys) -> None:
    from client.__main__ import main

    url = f"http://127.0.0.1:9/image/{'0' * 32}"
    assert main(["fetch", url, str(tmp_path / "out.png"), "--weights", str(tmp_path / "none.pt")]) == 2
    assert capsys.readouterr().err.startswith(f"error: no trained weights at {tmp_path / 'none.pt'}")
    assert not (tmp_path / "out.png").exists()
