"""benchmarks/report.py: which accuracy and few-step rows RESULTS.md shows when partial
re-measurements (results/accuracy_remeasured*.json, few_step_*.json) sit beside a full run."""

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


def test_a_partial_runs_note_names_its_own_data_file(report: Any, tmp_path: Path) -> None:
    """The note had named results/accuracy.json, the full run's file, for every partial run."""
    later = _run("2026-12-05 10:00:00", 0.9, ["t_aware"])
    later.update(benchmark="accuracy", command="benchmarks/run.py --only accuracy", seconds=1.0,
                 load_average_at_start=0.5, machine={"torch_threads": 1})  # fmt: skip
    (tmp_path / "accuracy_remeasured_7.json").write_text(json.dumps(later))
    merged = report.with_remeasured(_run("2026-12-04 09:00:00", 0.8), tmp_path)
    note = "".join(report._remeasured_note(merged))
    assert "data: [results/accuracy_remeasured_7.json](results/accuracy_remeasured_7.json)" in note


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


def _few_step_run(started: str, seed_scores: list[float], label: str) -> dict[str, Any]:
    """A few-step run as benchmarks/run.py writes it: one model, one recipe."""
    rows = [
        {
            "seed": k,
            "variant": label,
            "distill": 1.0,
            "accuracy": {"2": a},
            "finetune_seconds": 10.0,
        }
        for k, a in enumerate(seed_scores)
    ]
    net = {"ann": 0.99, "conversion": {"accuracy": {"2": 0.9}}, "rows": rows}
    return {
        "benchmark": "few_step", "command": "benchmarks/run.py --only few_step", "started": started,
        "seconds": 1.0, "load_average_at_start": 0.5, "machine": {"torch_threads": 1}, "T": 2,
        "epochs": 100, "temperature": 4.0, "finetune_command": "finetune -T 2",
        "variants": [{"label": label, "epochs": 300, "mixup": 0.0}], "models": {"net": net},
    }  # fmt: skip


def test_later_few_step_runs_get_tables_of_their_own(report: Any, tmp_path: Path) -> None:
    """Partial few-step runs (results/few_step_*.json) had no place in RESULTS.md: section 1b
    showed the full run alone, however old. A run started before the full one is left out."""
    full = _few_step_run("2026-12-03 13:00:00", [0.98, 0.98, 0.98], "distilled")
    (tmp_path / "few_step_new.json").write_text(
        json.dumps(_few_step_run("2026-12-07 16:00:00", [0.97, 0.99, 0.99], "mixup"))
    )
    (tmp_path / "few_step_old.json").write_text(
        json.dumps(_few_step_run("2026-12-01 16:00:00", [0.5, 0.5, 0.5], "stale"))
    )
    text = "\n".join(report.few_step_md(report.with_later_few_step(full, tmp_path)))
    assert "### Re-measured later: net (mixup)" in text
    assert "[results/few_step_new.json](results/few_step_new.json)" in text
    assert "| net | 99.00 | 90.00 | mixup | 300 | 97.00 | 99.00 | 99.00 | 2.00 | 10 |" in text
    assert "stale" not in text


def test_few_step_gap_names_the_worst_seeds_paired_counts(report: Any) -> None:
    """Where eval recorded the paired comparison, the gap cell carries the worst seed's."""
    run = _few_step_run("2026-12-07 16:00:00", [0.97, 0.99, 0.98], "mixup")
    pairs = [(12, 0.001), (2, 1.0), (7, 0.06)]
    for row, (b, p) in zip(run["models"]["net"]["rows"], pairs, strict=True):
        row["paired_with_ann"] = {"2": {"ann_only": b, "snn_only": 1, "p_value": p}}
    text = "\n".join(report.few_step_md(run))
    assert "| 97.00 | 99.00 | 98.00 | 2.00 (12 / 1, p 0.001) | 10 |" in text


def _encoder_row(label: str, cosine: float, before: float | None = None) -> dict[str, Any]:
    """A row as benchmarks/encoder.py's run() writes it, after a JSON round trip."""
    row: dict[str, Any] = {
        "label": label,
        "spike_bits": 1,
        "test_sentences": 64,
        "extra_neurons": {"budget": 0.0625, "made": 184, "features": 16128},
        "cosine_to_ann": {"16": cosine},
        "relative_error_to_ann": {"16": 0.175},
        "bar": {"T": 16, "cosine_to_ann": 0.99, "met": cosine >= 0.99},
        "seconds": {"convert": 750.2, "quantize": 11.0, "eval": 36.5},
    }
    if before is not None:
        row["finetune"] = {"cosine_to_ann_before": {"16": before}}
        row["seconds"]["finetune"] = 4395.6
    return row


def test_the_encoder_tables_state_the_bar_per_row(report: Any) -> None:
    rows = [_encoder_row("default", 0.98440), _encoder_row("tuned", 0.99041, 0.98727)]
    doc = {"benchmark": "encoder_fidelity", "started": "2026-12-06 07:47:50", "seconds": 1.0,
           "command": "make bench", "load_average_at_start": 0.1,
           "machine": {"torch_threads": 2}, "model": "all_minilm_l6_v2", "rows": rows}  # fmt: skip
    table = [line for line in report.encoder_fidelity_md(doc) if line.startswith("| ")][1:]
    assert table[0].startswith("| default | 184 (1 % of 16,128) | 0.9844 | 0.175 | no | 750 | - |")
    assert table[1].startswith("| tuned | 184 (1 % of 16,128) | 0.9904 (0.9873 before) |")
    assert table[1].endswith("| yes | 750 | 4396 |")
    skipped = report.encoder_fidelity_tuned_md({"skipped": "zoo files missing"})
    assert skipped[-1] == "Skipped: zoo files missing."
