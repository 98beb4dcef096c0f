"""benchmarks/shapes.py (the held-out CNN family's 3x32x32 task) and cnn_family's architectures
on each task's input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    import cnn_family
    import shapes

    return shapes, cnn_family


def test_splits_are_deterministic_balanced_and_distinct(bench: Any) -> None:
    shapes, _ = bench
    x, y = shapes.make_split(40, seed=5)
    x2, y2 = shapes.make_split(40, seed=5)
    assert x.shape == (40, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert np.bincount(y, minlength=len(shapes.SHAPES)).tolist() == [4] * len(shapes.SHAPES)
    assert 0.0 <= x.min() and x.max() <= 1.0
    other, _ = shapes.make_split(40, seed=6)
    assert not np.isclose(x[:, None], other[None]).all(axis=(2, 3, 4)).any()


def test_every_shape_differs_from_the_others(bench: Any) -> None:
    shapes, _ = bench
    covers = [shapes._coverage(mask, 16.0, 16.0, 10.0) for mask in shapes.SHAPES.values()]
    for i, a in enumerate(covers):
        assert a.sum() > 20, list(shapes.SHAPES)[i]  # drawn at all
        for b in covers[i + 1 :]:
            assert abs(a - b).sum() > 10


@pytest.mark.parametrize("task", ["digits", "shapes"])
def test_architectures_read_each_task(bench: Any, task: str) -> None:
    _, family = bench
    spec = family.TASKS[task]
    x = torch.zeros(2, spec.channels, spec.side, spec.side)
    built = 0
    for name, make in family.ARCHITECTURES.items():
        try:
            model = make(spec.channels, spec.side).eval()
        except ValueError:
            assert name == "cnn_bn" and task == "shapes"  # the one digits-only architecture
            continue
        assert model(x).shape == (2, 10), name
        built += 1
    assert built >= len(family.ARCHITECTURES) - 1


def test_a_family_run_hands_over_its_rows_after_each_net(bench: Any) -> None:
    """parallel.map_on_cores calls `done` with the rows so far after each item, in order, so
    cnn_family writes its JSON after each net and a run stopped for time keeps its rows."""
    import parallel

    seen: list[list[int]] = []
    rows = parallel.map_on_cores(abs, [-3, 1, -2], 1, lambda r: seen.append(list(r)))
    assert rows == [3, 1, 2] and seen == [[3], [3, 1], [3, 1, 2]]


def test_a_family_runs_out_path_is_checked_before_any_net_trains(
    bench: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out in a folder that does not exist, or naming a folder, is refused in one line (exit
    2) before the hours of training, not when the first net's rows are written."""
    import argparse

    import parallel

    ap = argparse.ArgumentParser(prog="cnn_family.py")
    default = tmp_path / "default.json"
    assert parallel.out_path(ap, None, default) == default
    assert parallel.out_path(ap, str(tmp_path / "mine.json"), default) == tmp_path / "mine.json"
    refused = ((tmp_path / "missing" / "x.json", "does not exist"), (tmp_path, "a directory"))
    for bad, why in refused:
        with pytest.raises(SystemExit) as stop:
            parallel.out_path(ap, str(bad), default)
        assert stop.value.code == 2 and why in capsys.readouterr().err


def test_a_family_run_scores_the_timesteps_it_is_given(bench: Any, tmp_path: Path) -> None:
    """`--timesteps 8,16` converts for and scores at those T: the table, the progress line and
    the plot show those columns, and a T below 1 is refused (the CLI's own -T parser)."""
    import argparse

    _, family = bench
    assert family._timesteps("8,16") == [8, 16]
    for bad in ("0,2", "a", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            family._timesteps(bad)
    row = {"net": "relu_dw:50", "ann": 0.784, "spikingjelly_best": None,
           "spikeport": {"convert_seconds": 1.0, "8": 0.731, "16": 0.763}}  # fmt: skip
    head = family.table([row]).splitlines()[0]
    assert head.endswith("| T=8 | T=16 |") and "T=1 " not in head
    assert "T = 8 / 16: 73.10 / 76.30" in family._line(row)
    family.plot([row], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
