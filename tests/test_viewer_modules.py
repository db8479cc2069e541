"""static/index.html preloads exactly the module graph of static/viewer.js, so that the browser fetches
every module at once instead of one import level after another."""

from __future__ import annotations

import re
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "static"
IMPORT = re.compile(r"""^\s*import\s[^;]*?from\s+"(\./[^"]+|\.\./[^"]+)";""", re.MULTILINE | re.DOTALL)


def imported_modules(module: Path, seen: set[Path]) -> set[Path]:
    """Every module `module` imports, directly or through others (static imports with relative paths)."""
    for relative in IMPORT.findall(module.read_text()):
        target = (module.parent / relative).resolve()
        if target not in seen:
            seen.add(target)
            imported_modules(target, seen)
    return seen


def test_index_html_preloads_the_viewers_module_graph() -> None:
    graph = imported_modules(STATIC / "viewer.js", set())
    preloaded = re.findall(r'<link rel="modulepreload" href="static/([^"]+)">', (STATIC / "index.html").read_text())
    assert {path.relative_to(STATIC).as_posix() for path in graph} == set(preloaded)
    assert len(preloaded) == len(set(preloaded)) and "decoder/kernel.js" in preloaded
