"""benchmarks/report.py: which accuracy rows RESULTS.md shows when partial re-measurements
(results/accuracy_remeasured*.json) sit beside a full run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def report(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    import report

    return report


def _run(started: str, accuracy: float, kinds: list[str] | None = None) -> dict[str, Any]:
    row = {"method": "spikeport", "accuracy": {"4": accuracy}}
    doc: dict[str, Any] = {"started": started, "models": {"net": {"ann": 1.0, "rows": [row]}}}
    if kinds is not None:
        doc["row_kinds"] = kinds
    return doc


def _shown(report: Any, full: dict[str, Any], tmp_path: Path) -> float:
    merged = report.with_remeasured(full, tmp_path)
    return merged["models"]["net"]["rows"][0]["accuracy"]["4"]


def test_a_later_partial_run_replaces_the_full_runs_rows(report: Any, tmp_path: Path) -> None:
    (tmp_path / "accuracy_remeasured_2.json").write_text(
        json.dumps(_run("2026-12-05 10:00:00", 0.9, ["t_aware"]))
    )
    assert _shown(report, _run("2026-12-04 09:00:00", 0.8), tmp_path) == 0.9


def test_a_full_run_supersedes_the_partial_runs_before_it(report: Any, tmp_path: Path) -> None:
    """The partial runs had kept overriding a newer full run of every row (2026-12-06)."""
    (tmp_path / "accuracy_remeasured_2.json").write_text(
        json.dumps(_run("2026-12-05 10:00:00", 0.9, ["t_aware"]))
    )
    (tmp_path / "accuracy_remeasured_3.json").write_text(
        json.dumps(_run("2026-12-07 10:00:00", 0.7))
    )
    full = _run("2026-12-06 05:03:29", 0.8)
    assert _shown(report, full, tmp_path) == 0.7  # _3 is newer than the full run
    (tmp_path / "accuracy_remeasured_3.json").unlink()
    assert _shown(report, full, tmp_path) == 0.8
    assert "remeasured" not in report.with_remeasured(full, tmp_path)
