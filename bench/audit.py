"""Dependency advisories from PyPI's project JSON, for machines where pip-audit sees nothing.

    python -m bench.audit [--out audit.json]

pip-audit reads advisories from PyPI's per-release JSON (`/pypi/NAME/VERSION/json`) or from OSV. Behind
the package mirror of the development machines neither answers, and pip-audit reports every package as
"could not be audited". The project JSON (`/pypi/NAME/json`) does answer; it lists the advisories of the
latest release. So: a package installed at its latest release is checked; one installed at an older
release is listed as such, with the latest version, for a reader to look up. Run pip-audit where it works.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT_JSON = "https://pypi.org/pypi/{name}/json"


def installed() -> dict[str, str]:
    return {dist.metadata["Name"].lower(): dist.version for dist in importlib.metadata.distributions()}


def latest_release(name: str) -> tuple[str, list[dict]] | None:
    """The latest version on PyPI and its advisories; None when PyPI does not know the project."""
    try:
        with urllib.request.urlopen(PROJECT_JSON.format(name=name), timeout=30) as response:
            document = json.load(response)
    except OSError:
        return None
    return document["info"]["version"], document.get("vulnerabilities") or []


def audit() -> dict:
    packages = installed()
    with ThreadPoolExecutor(8) as pool:
        releases = dict(zip(packages, pool.map(latest_release, packages)))
    report: dict = {"checked": {}, "older_than_latest": {}, "unknown_to_pypi": []}
    for name, version in sorted(packages.items()):
        release = releases[name]
        if release is None:
            report["unknown_to_pypi"].append(name)
        elif release[0] == version:
            report["checked"][name] = {"version": version, "advisories": [v.get("id") for v in release[1]]}
        else:
            report["older_than_latest"][name] = {"installed": version, "latest": release[0]}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = audit()
    flagged = {name: entry for name, entry in report["checked"].items() if entry["advisories"]}
    print(f"{len(report['checked'])} packages at their latest release checked: {len(flagged)} with advisories")
    for name, entry in flagged.items():
        print(f"  {name} {entry['version']}: {', '.join(entry['advisories'])}")
    older = report["older_than_latest"]
    print(f"{len(older)} installed at an older release (not checked here):")
    for name, entry in older.items():
        print(f"  {name} {entry['installed']} (latest {entry['latest']})")
    if report["unknown_to_pypi"]:
        print(f"not on PyPI: {', '.join(report['unknown_to_pypi'])}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
