"""bench.audit sorts installed packages into checked (with their advisories), older and unknown."""

from __future__ import annotations

import pytest

from bench import audit


def test_packages_are_checked_only_at_their_latest_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "installed", lambda: {"safe": "2.0", "flagged": "1.0", "old": "1.0", "ours": "0.1"})
    releases = {"safe": ("2.0", []), "flagged": ("1.0", [{"id": "PYSEC-1"}]), "old": ("3.0", []), "ours": None}
    monkeypatch.setattr(audit, "latest_release", releases.__getitem__)

    report = audit.audit()

    assert report["checked"] == {
        "flagged": {"version": "1.0", "advisories": ["PYSEC-1"]},
        "safe": {"version": "2.0", "advisories": []},
    }
    assert report["older_than_latest"] == {"old": {"installed": "1.0", "latest": "3.0"}}
    assert report["unknown_to_pypi"] == ["ours"]
    assert audit.main([]) == 1  # an advisory fails the command
