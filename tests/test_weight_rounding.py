"""Weights rounded with error feedback (spikeport/quantize/rounding.py) and its quantize option."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from spikeport.cli.main import main
from spikeport.errors import BadInput
from spikeport.ir import load, save
from spikeport.ir.ops import ROW_LAYERS
from spikeport.quantize import get_profile, quantize, rounding


def _rates(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Correlated nonnegative inputs, as neurons' rates are."""
    return np.maximum(rng.normal(size=(rows, cols)) @ rng.normal(size=(cols, cols)), 0)


def _nearest(steps: np.ndarray, lim: int = 127) -> np.ndarray:
    return np.clip(np.floor(steps + 0.5), -lim, lim)


def test_feedback_leaves_a_smaller_output_error_than_rounding_each_weight_alone():
    rng = np.random.default_rng(0)
    x = _rates(rng, 2000, 24)
    steps = rng.normal(scale=20, size=(16, 24))
    q = rounding.round_with_feedback(steps, (x.T @ x)[None], 127)

    def output_error(w: np.ndarray) -> float:
        return float(((x @ (w - steps).T) ** 2).sum())

    assert np.array_equal(q, np.round(q)) and np.abs(q).max() <= 127
    assert not np.array_equal(q, _nearest(steps))
    assert output_error(q) < 0.8 * output_error(_nearest(steps))  # 0.62 here


def test_weights_already_on_the_grid_keep_their_integers():
    """finetune --qat trains the weights onto the grid: quantize must keep them."""
    rng = np.random.default_rng(1)
    x = _rates(rng, 500, 12)
    steps = rng.integers(-127, 128, size=(8, 12)).astype(np.float64)
    assert np.array_equal(rounding.round_with_feedback(steps, (x.T @ x)[None], 127), steps)


def test_groups_are_rounded_apart_and_the_limit_holds():
    rng = np.random.default_rng(2)
    xs = [_rates(rng, 300, 9) for _ in range(2)]
    grams = np.stack([x.T @ x for x in xs])
    steps = rng.normal(scale=90, size=(6, 9))  # some beyond +-127
    both = rounding.round_with_feedback(steps, grams, 127)
    apart = [rounding.round_with_feedback(steps[3 * g : 3 * g + 3], grams[g : g + 1], 127)
             for g in (0, 1)]  # fmt: skip
    assert np.array_equal(both, np.concatenate(apart))
    assert np.abs(both).max() == 127


def test_an_input_that_is_never_active_takes_its_nearest_integer():
    rng = np.random.default_rng(3)
    x = _rates(rng, 400, 10)
    x[:, 4] = 0
    steps = rng.normal(scale=10, size=(5, 10))
    q = rounding.round_with_feedback(steps, (x.T @ x)[None], 127)
    assert np.all(np.isfinite(q))
    assert np.array_equal(q[:, 0], _nearest(steps[:, 0]))  # the first column has no feedback yet


def _weights(graph) -> dict[str, np.ndarray]:  # noqa: ANN001
    return {
        n.name: n.params["weight_q"].astype(np.int64)
        for n in graph.nodes
        if n.op in ROW_LAYERS and "weight_q" in n.params
    }


def test_quantize_rounds_to_nearest_by_default_and_with_feedback_when_asked(cases):
    case = cases["digits_cnn"]
    calib = np.load(case.calib)["x"]
    fed = quantize(case.snn, calib, get_profile("sim"), weight_rounding="feedback")
    assert case.int.meta["quantization"]["weight_rounding"] == "nearest"
    assert fed.meta["quantization"]["weight_rounding"] == "feedback"
    ints, plain = _weights(fed), _weights(case.int)
    assert ints.keys() == plain.keys() and len(ints) == 3
    moved = {k: int((ints[k] != plain[k]).sum()) for k in ints}
    assert all(moved.values()), moved  # every layer: each is weighed on the calibration data
    for node in case.int.nodes:  # the same grid: only the integers move
        assert np.array_equal(case.int.scales[node.output], fed.scales[node.output])


def test_weighted_rounding_within_its_memory_or_nearest_with_a_note(cases, monkeypatch):
    case = cases["digits_cnn"]
    calib = np.load(case.calib)["x"]
    near = _weights(case.int)
    monkeypatch.setattr(rounding, "GRAM_BYTES", 0)
    q = quantize(case.snn, calib, get_profile("sim"), weight_rounding="feedback")
    assert _weights(q).keys() == near.keys()
    assert all(np.array_equal(_weights(q)[k], near[k]) for k in near)
    assert "3 weight layers rounded to nearest" in " ".join(q.meta["quantization"]["notes"])


def test_an_unknown_rounding_is_refused(cases):
    with pytest.raises(BadInput, match="unknown weight rounding 'up'"):
        quantize(cases["digits_mlp"].snn, np.zeros((1, 64)), get_profile("sim"),
                 weight_rounding="up")  # fmt: skip


def test_cli_quantize_weight_rounding(cases, tmp_path):
    case = cases["digits_mlp"]
    spk = tmp_path / "m.spk"
    save(case.snn, spk)
    args = ["quantize", str(spk), "--calib", str(case.calib), "--weight-rounding"]
    done = CliRunner().invoke(main, [*args, "feedback", "-o", str(tmp_path / "q.spk")])
    assert done.exit_code == 0, done.output
    assert load(tmp_path / "q.spk").meta["quantization"]["weight_rounding"] == "feedback"
    refused = CliRunner().invoke(main, [*args, "up", "-o", str(tmp_path / "r.spk")])
    assert refused.exit_code == 2 and not (tmp_path / "r.spk").exists()


def test_a_convolution_rounded_with_feedback_errs_less_on_its_calibration_inputs(cases):
    """Through quantize: the first convolution of digits_cnn, fed the calibration images as
    the simulator encodes them, is closer to its real output with feedback than to nearest."""
    import torch
    import torch.nn.functional as F

    from spikeport.sim.simulator import encode_inputs

    case = cases["digits_cnn"]
    calib = np.load(case.calib)["x"]
    fed = quantize(case.snn, calib, get_profile("sim"), weight_rounding="feedback")

    def output_error(q) -> float:  # noqa: ANN001
        conv = next(n for n in q.nodes if n.op == "conv2d")
        codes = torch.as_tensor(encode_inputs(q, calib)[conv.inputs[0]], dtype=torch.float64)
        rows = F.unfold(codes, conv.params["weight"].shape[2:], padding=conv.attrs["pads"][0])
        steps = conv.params["weight"].astype(np.float64) * (
            q.scales[conv.inputs[0]] / q.scales[conv.output].reshape(-1, 1, 1, 1)
        )
        diff = torch.as_tensor((conv.params["weight_q"] - steps).reshape(len(steps), -1))
        return float(((diff @ rows) ** 2).sum())

    assert output_error(fed) < 0.9 * output_error(case.int)
