"""Acceptance bars of the spine on the shipped digits models, held-out test split, no
fine-tuning. These are real measurements: a regression in conversion or quantization fails them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLES

from spikeport.data import load_data
from spikeport.eval import evaluate
from spikeport.sim import simulate


@pytest.fixture(scope="module")
def test_set():
    return load_data(EXAMPLES / "digits_test.npz", labels=True)


def _acc(report, t):
    return next(r["accuracy"] for r in report["records"] if r["T"] == t)


def test_digits_cnn_integer_mode_is_close_to_the_ann(cases, test_set):
    case = cases["digits_cnn"]
    rep = evaluate(case.int, test_set, [1, 2, 4, 8], "int", str(case.onnx))
    ann = rep["ann"]["accuracy"]
    assert ann > 0.97
    assert _acc(rep, 4) >= ann - 0.02
    assert _acc(rep, 8) >= ann - 0.01
    assert _acc(rep, 2) >= ann - 0.08  # the peer converter's T=2 result on a comparable CNN


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_float_and_integer_modes_agree(cases, test_set, name):
    graph = cases[name].int
    preds = [
        simulate(graph, test_set.x, 8, m).outputs[graph.outputs[0]][-1].argmax(-1)
        for m in ("float", "int")
    ]
    assert np.mean(preds[0] == preds[1]) >= 0.99


def test_test_split_is_disjoint_from_calibration_and_training():
    def rows(name):
        x = np.load(EXAMPLES / f"digits_{name}.npz")["x"]
        return {r.tobytes() for r in x.reshape(len(x), -1)}

    test = rows("test")
    assert not test & rows("calib") and not test & rows("train")


def test_t_aware_conversion_moves_thresholds_deterministically():
    """`convert --t-aware` (experimental): thresholds searched for T on the SNN's own inputs,
    the same on every run, recorded in the artifact, and different from the percentile's."""
    from spikeport.convert import convert

    model, calib = EXAMPLES / "digits_mlp.onnx", EXAMPLES / "digits_calib.npz"

    def thresholds(graph) -> list[np.ndarray]:  # noqa: ANN001
        return [n.params["threshold"] for n in graph.nodes if n.op == "if"]

    base = thresholds(convert(model, calib, timesteps=2))
    a, b = (convert(model, calib, timesteps=2, tune=True) for _ in range(2))
    assert a.meta["conversion"]["t_aware"]["tuned_layers"] == 2
    assert all(np.array_equal(x, y) for x, y in zip(thresholds(a), thresholds(b), strict=True))
    assert any(not np.allclose(x, y) for x, y in zip(thresholds(a), base, strict=True))
